"""One writer per data dir: ``index`` and ``watch`` both take this lock.

A second writer would put the first one's running jobs back in the queue at start
(``JobQueue.recover``) and do the same work twice. The lock dies with the process, also on
``kill -9``; readers (``search``, ``status``, ``serve``) never take it.
"""
from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import IO

from .errors import UsageError


class DataDirBusy(UsageError):
    """Another mediaindex process is writing to this data dir."""


def lock_data_dir(data_dir: Path, command: str) -> IO[str]:
    """Take the data dir's writer lock (non-blocking); keep the returned file open to hold it."""
    path = Path(data_dir) / "writer.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        other = f.read().strip() or "another process"
        f.close()
        raise DataDirBusy(f"{other} is already using {data_dir}; stop it first, or use another --data-dir") from None
    try:  # unbuffered: nothing is left to fail when the file is closed
        os.ftruncate(f.fileno(), 0)
        os.write(f.fileno(), f"`mediaindex {command}` (pid {os.getpid()})".encode())
    except OSError:  # a full disk: the lock is held all the same, only the holder's name is missing
        pass
    return f


def writer_alive(data_dir: Path) -> bool:
    """Whether a writer (``index``, ``watch``) holds this data dir now. Read from the pid it
    wrote in the lock file, without taking the lock (a writer starting meanwhile must not fail)."""
    try:
        text = (Path(data_dir) / "writer.lock").read_text(errors="replace")
    except OSError:
        return False
    m = re.search(r"\(pid (\d+)\)", text)
    if not m:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True
