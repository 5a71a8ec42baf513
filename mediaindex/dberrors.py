"""What a failing SQLite database means for the user: one mapping for every command.

``database_error(e, path)`` turns an SQLite (or OS) error into a :class:`FatalError` that says
what is wrong and what to do: a full disk, a damaged file, a read-only data dir. Any other error
gives None: it is a bug, shown with its traceback.
"""
from __future__ import annotations

import errno
import shlex
import shutil
import sqlite3
from pathlib import Path

from .errors import DatabaseDamaged, DiskFull, FatalError, IndexDamaged, StateDamaged  # noqa: F401

_FULL = {sqlite3.SQLITE_FULL}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_READONLY = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
LOW_SPACE = 4 << 20  # bytes: an I/O error with less free space than this is a full disk


def _code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # the primary code of an extended one


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(e, sqlite3.Error) and (_code(e) in _FULL or "database or disk is full" in str(e))


def _no_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def is_damaged(e: BaseException) -> bool:
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    return _code(e) in _DAMAGED or any(s in str(e) for s in ("malformed", "not a database"))


def disk_full_message(data_dir: Path) -> str:
    return (f"disk full: free space for {data_dir} and try again "
            "(nothing was lost: queued files wait, an interrupted file is redone)")


def index_damaged(path: Path, reason: str) -> IndexDamaged:
    return IndexDamaged(f"the search index {path} is damaged ({reason}); run `mediaindex index` or "
                        "`mediaindex watch` on your folders: it is set aside and rebuilt from the cached "
                        "transcripts (nothing is transcribed again)", path)


def state_damaged(path: Path, reason: str) -> StateDamaged:
    db, saved, aside = (shlex.quote(f"{path}{suffix}") for suffix in ("", ".recovered", ".damaged"))
    return StateDamaged(
        f"the state database {path} is damaged ({reason}). It holds the only copy of the transcripts, so it "
        f"was left as it is. With mediaindex stopped, save what can be read: `sqlite3 {db} .recover | sqlite3 "
        f"{saved}` (`.dump` where `.recover` is missing), then `mv {db} {aside} && mv {saved} {db}`; or move "
        "it aside to start over (every file is then transcribed again)", path)


def database_error(e: BaseException, path: Path, *, index: bool = False) -> FatalError | None:
    """The FatalError to show for an error from the database at ``path`` (the search index when
    ``index``, else the state database), or None when it is none of the known kinds."""
    path = Path(path)
    if isinstance(e, FatalError):
        return e
    if is_disk_full(e) or (_code(e) == sqlite3.SQLITE_IOERR and _no_space(path.parent)):
        # SQLite says "disk I/O error" when it cannot grow its shared-memory file
        return DiskFull(disk_full_message(path.parent))
    if is_damaged(e):
        return index_damaged(path, str(e)) if index else state_damaged(path, str(e))
    if isinstance(e, sqlite3.Error) and _code(e) in _READONLY:
        return FatalError(f"cannot open or write {path}: {e} (is the data dir writable? choose another with "
                          "--data-dir)")
    return None
