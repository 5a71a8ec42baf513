"""Walk folders for media: which files are candidates, and what changed since the last scan."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .probe import MEDIA_EXTENSIONS

# Partial downloads and editor/copy temporaries: never processed, whatever their inner extension.
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".temp", ".download", ".partial", "~", ".swp")
# Files that are certainly not media: not even probed.
NON_MEDIA_EXTENSIONS = frozenset(
    ".txt .md .json .xml .html .htm .csv .pdf .doc .docx .odt .rtf .srt .vtt .lrc .ass .ssa .nfo .cue .log "
    ".jpg .jpeg .png .gif .webp .bmp .tif .tiff .heic .svg .ico .zip .gz .tar .7z .rar .db .sqlite .sqlite3 "
    ".py .js .css .sh .ini .cfg .toml .yaml .yml .exe .dll .so .iso .torrent .m3u .m3u8 .pls .ds_store".split()
)


def is_ignored_name(name: str) -> bool:
    """Hidden files and temporaries of downloads or copies in progress."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(TEMP_SUFFIXES) or name.startswith("~$")


# A file in one of these states needs no work until its size or mtime changes.
DONE_STATUSES = ("indexed", "failed", "ignored")


def is_under(path: str, root: str) -> bool:
    """path is root itself or lies below it (a plain prefix test would take /pod for /podcasts)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_candidate_name(name: str) -> bool:
    """Worth probing: not hidden or temporary, not a known non-media type (unknown types are
    probed). Hidden folders are judged below the root by the caller, so a root under a hidden
    folder (e.g. ~/.local/media) still works."""
    return not is_ignored_name(name) and os.path.splitext(name)[1].lower() not in NON_MEDIA_EXTENSIONS


def is_likely_media(path: str | os.PathLike) -> bool:
    """Has a known media extension (a probe failure on it is an error, not a silent skip)."""
    return Path(path).suffix.lower() in MEDIA_EXTENSIONS


@dataclass
class FileStat:
    path: str
    size: int
    mtime: float


def _storable(path: str) -> bool:
    """A name the state database can hold: valid UTF-8 (os.fsdecode maps other bytes to lone
    surrogates, which SQLite refuses)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(root: str, problems: list[tuple[str, str]] | None = None) -> Iterator[FileStat]:
    """Every candidate file at or below root (a folder or a single file), with size and mtime.

    Paths that cannot be read (a folder without permission, a symlink loop, an I/O error) or
    stored (a name that is not valid UTF-8) are skipped and, when ``problems`` is given, added
    to it as (path, reason): the walk itself never fails because of one odd entry.
    """
    def skip(path: str, reason: str) -> None:
        if problems is not None:
            problems.append((path, reason))

    if os.path.isfile(root):
        if is_candidate_name(os.path.basename(root)):
            if not _storable(root):
                skip(root, "the name is not valid UTF-8 (rename the file)")
                return
            st = os.stat(root)
            yield FileStat(root, st.st_size, st.st_mtime)
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as e:  # permission, symlink loop, I/O error, not a folder
            if not isinstance(e, NotADirectoryError):
                skip(folder, f"cannot read folder: {e.strerror or e}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
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


@dataclass
class ScanPlan:
    """What a scan found: files to (re)index, paths gone, roots that are offline."""

    changed: list[FileStat] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped, kept


def plan_scan(roots: list[str], known: dict[str, tuple[int, float, str]]) -> ScanPlan:
    """Compare the disk with the known files (path → size, mtime, status).

    Unchanged files (same size and mtime, finished) are skipped, so a rescan over 100k files
    costs one stat each. A root that is missing is *offline*: its files are not deleted.
    """
    plan = ScanPlan(roots=roots)
    for root in roots:
        if not os.path.exists(root):
            plan.offline.append(root)
            continue
        seen: set[str] = set()
        problems: list[tuple[str, str]] = []
        for f in walk(root, problems):
            seen.add(f.path)
            old = known.get(f.path)
            if old and old[0] == f.size and old[1] == f.mtime and old[2] in DONE_STATUSES:
                plan.unchanged += 1
            else:
                plan.changed.append(f)
        plan.unreadable.extend(problems)
        # what could not be read is not gone: known files at or under it stay as they are
        blind = [p for p, _ in problems]
        for path in known:
            if is_under(path, root) and path not in seen and not any(is_under(path, b) for b in blind):
                plan.deleted.append(path)
    plan.changed.sort(key=lambda f: f.path)
    return plan
