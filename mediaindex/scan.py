"""Walk folders for media: which files are candidates, and what changed since the last scan."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .backends import ObjectInfo, is_local
from .paths import (MEDIA_EXTENSIONS, NON_MEDIA_EXTENSIONS, TEMP_SUFFIXES, is_candidate_name,  # noqa: F401 (re-exported)
                    is_ignored_name, is_likely_media, is_under)

# A file in one of these states needs no work until its size or mtime changes.
DONE_STATUSES = ("indexed", "failed", "ignored")


def distinct_roots(roots: Iterable[str]) -> list[str]:
    """roots without repeats and without those inside another root (``a a/sub`` is ``a``), in the
    order given: a file under two roots is scanned and counted once."""
    unique = list(dict.fromkeys(roots))
    return [r for r in unique if not any(o != r and is_under(r, o) for o in unique)]


def excluded_in(root: str, folders: Iterable[str]) -> list[str]:
    """Which of folders (the data dir) a walk of root would enter, spelled as under root
    (symlinks resolved); [root] itself when root lies inside one of them. A folder under a
    hidden one (the default ~/.local/share/mediaindex) is never entered anyway."""
    found = []
    real_root = os.path.realpath(root)
    for folder in folders:
        folder = os.path.abspath(folder)
        real = os.path.realpath(folder)
        if is_under(root, folder) or is_under(real_root, real):
            return [root]
        if not is_under(folder, root):
            if not is_under(real, real_root):
                continue
            folder = os.path.normpath(os.path.join(root, os.path.relpath(real, real_root)))
        if not any(part.startswith(".") for part in Path(os.path.relpath(folder, root)).parts):
            found.append(folder)
    return found


def offline_reason(root: str, has_known_files: Callable[[], bool], *, was_mount: bool = False,
                   check_empty: bool = True) -> str | None:
    """Why a root counts as offline (its files stay, nothing under it is removed), or None.

    Offline: missing; a mount point that is no longer mounted (``was_mount``); or, with
    ``check_empty``, an empty or unreadable folder where files are known: an unmounted drive
    leaves its empty mount point behind, and a scan must never purge a library for that.
    The one rule for ``index``, the watcher and every rescan.
    """
    if not os.path.exists(root):
        return "missing"
    if not os.path.isdir(root) or os.path.ismount(root):
        return None
    if was_mount:
        return "no longer mounted"
    if not check_empty:
        return None
    try:
        with os.scandir(root) as it:
            if next(it, None) is not None:
                return None
        reason = "empty, but files were indexed under it: is the drive mounted?"
    except OSError as e:
        reason = f"cannot read it: {e.strerror or e}"
    return reason if has_known_files() else None


def _not_indexed_why(path: str, st: os.stat_result) -> str | None:
    """Why a path named as a root is not indexed (not a regular file, not a candidate), or None."""
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        return f"{kind}: only regular files and folders are indexed"
    name = os.path.basename(path)
    if is_ignored_name(name):
        return "a hidden or temporary file (a download or copy in progress?): not indexed"
    if not is_candidate_name(name):
        return f"not media ({os.path.splitext(name)[1].lower()} files are never indexed)"
    return None


FileStat = ObjectInfo  # the scanner's name for a stat result (``.path`` is the location)


def _storable(path: str) -> bool:
    """A name the state database can hold: valid UTF-8 (os.fsdecode maps other bytes to lone
    surrogates, which SQLite refuses)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(root: str, problems: list[tuple[str, str]] | None = None,
         exclude: Iterable[str] = ()) -> Iterator[FileStat]:
    """Every candidate file at or below root (a folder or a single file), with size and mtime.

    Paths that cannot be read (a folder without permission, a symlink loop, an I/O error) or
    stored (a name that is not valid UTF-8), and a root that is no candidate (a FIFO, a device,
    a .txt), are skipped and, when ``problems`` is given, added to it as (path, reason): the
    walk itself never fails because of one odd entry. Folders in ``exclude`` (the data dir,
    spelled as under root) are never entered.
    """
    def skip(path: str, reason: str) -> None:
        if problems is not None:
            problems.append((path, reason))

    excluded = set(exclude)
    try:
        root_st = os.stat(root)
    except FileNotFoundError:
        return
    except OSError as e:  # a symlink loop, a name too long, an I/O error
        skip(root, f"cannot read: {e.strerror or e}")
        return
    if not stat.S_ISDIR(root_st.st_mode):
        why = _not_indexed_why(root, root_st)
        if why:
            skip(root, why)
        elif not _storable(root):
            skip(root, "the name is not valid UTF-8 (rename the file)")
        else:
            yield FileStat(root, root_st.st_size, root_st.st_mtime)
        return
    stack: list[tuple[str, tuple]] = [(root, ())]
    while stack:
        folder, rules = stack.pop()
        if folder in excluded:
            continue
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as e:  # permission, symlink loop, I/O error, not a folder
            if not isinstance(e, NotADirectoryError):
                skip(folder, f"cannot read folder: {e.strerror or e}")
            continue
        if any(e.name == IGNORE_FILE for e in entries):
            rules = rules + _ignore_rules(folder, skip)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if rules and ignored(entry.path, is_dir, rules):
                    continue
                if is_dir:
                    stack.append((entry.path, rules))
                elif entry.is_file() and is_candidate_name(entry.name):
                    if not _storable(entry.path):
                        skip(entry.path, "the name is not valid UTF-8 (rename the file)")
                        continue
                    st = entry.stat()
                    yield FileStat(entry.path, st.st_size, st.st_mtime)
            except FileNotFoundError:  # deleted while we looked (or a dangling link)
                continue
            except OSError as e:  # permission, symlink loop (ELOOP), I/O error
                if is_candidate_name(entry.name):
                    skip(entry.path, f"cannot read: {e.strerror or e}")
                continue


IGNORE_FILE = ".mediaindexignore"


def _ignore_rules(folder: str, skip) -> tuple:
    """The folder's .mediaindexignore (gitignore syntax, relative to the folder), as a rule."""
    import pathspec

    path = os.path.join(folder, IGNORE_FILE)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return ((folder, pathspec.GitIgnoreSpec.from_lines(f)),)
    except (OSError, ValueError) as e:  # unreadable, or a pattern pathspec refuses
        skip(path, f"cannot use the ignore file: {getattr(e, 'strerror', None) or e}")
        return ()


def ignored(path: str, is_dir: bool, rules: tuple) -> bool:
    """Whether a .mediaindexignore at or above path's folder leaves it out."""
    for base, spec in rules:
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        if spec.match_file(rel + "/" if is_dir else rel):
            return True
    return False


def is_ignored(path: str) -> bool:
    """Whether a .mediaindexignore in a folder above this local path leaves it out (a remove job
    for a file that is still there, but now ignored, removes it; watch mode skips its events)."""
    rules: list = []
    folder = os.path.dirname(path)
    while True:
        if os.path.isfile(os.path.join(folder, IGNORE_FILE)):
            rules[:0] = _ignore_rules(folder, lambda *a: None)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return bool(rules) and ignored(path, False, tuple(rules))


@dataclass
class ScanPlan:
    """What a scan found: files to (re)index, paths gone, roots that are offline."""

    changed: list[FileStat] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped, kept
    offline_why: dict[str, str] = field(default_factory=dict)  # offline root -> reason
    excluded: list[str] = field(default_factory=list)  # folders never scanned (the data dir)


def plan_scan(roots: list[str], known: dict[str, tuple[int, float, str]],
              exclude: Iterable[str] = (), storage_for: Callable | None = None) -> ScanPlan:
    """Compare the disk with the known files (path → size, mtime, status).

    Unchanged files (same size and mtime, finished) are skipped, so a rescan over 100k files
    costs one stat each. A root is scanned once even when named twice or inside another. An
    offline root (see ``offline_reason``) keeps its files. Folders in ``exclude`` (the data
    dir) are never scanned, and their known files are left as they are. A root that is a URI
    (``mem://lib``) is listed through ``storage_for(root)``, its storage backend.
    """
    roots = distinct_roots(roots)
    plan = ScanPlan(roots=roots)
    for root in roots:
        storage = None if is_local(root) or storage_for is None else storage_for(root)
        has_known = lambda: any(is_under(p, root) for p in known)  # noqa: E731
        why = storage.offline_reason(root, has_known) if storage else offline_reason(root, has_known)
        if why:
            plan.offline.append(root)
            plan.offline_why[root] = why
            continue
        skipped = excluded_in(root, exclude) if storage is None else []
        plan.excluded.extend(p for p in skipped if p not in plan.excluded)
        if skipped == [root]:
            continue
        seen: set[str] = set()
        problems: list[tuple[str, str]] = []
        listing = walk(root, problems, skipped) if storage is None else storage.list(root, problems)
        for f in listing:
            seen.add(f.path)
            old = known.get(f.path)
            if old and old[0] == f.size and old[1] == f.mtime and old[2] in DONE_STATUSES:
                plan.unchanged += 1
            else:
                plan.changed.append(f)
        plan.unreadable.extend(problems)
        # what could not be read is not gone: known files at or under it stay as they are
        blind = [p for p, _ in problems] + skipped
        for path in known:
            if is_under(path, root) and path not in seen and not any(is_under(path, b) for b in blind):
                plan.deleted.append(path)
    plan.changed.sort(key=lambda f: f.path)
    return plan
