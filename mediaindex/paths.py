"""Path and file-name tests shared by config, scan, probe, the pipeline and the web app.

A leaf module: it imports nothing from mediaindex, so any module can use it without pulling in
scanning or probing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

# Extensions we try first; anything else is still probed when asked explicitly (watch mode
# probes unknown files too, so a .dat that is really audio is not missed).
MEDIA_EXTENSIONS = frozenset(
    ".mp3 .m4a .m4b .aac .ogg .oga .opus .flac .wav .wma .aiff .aif .amr .ac3 .mka .mp2 .spx .weba "
    ".mp4 .m4v .mkv .webm .mov .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv".split()
)
# Partial downloads and editor/copy temporaries: never processed, whatever their inner extension.
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".temp", ".download", ".partial", "~", ".swp")
# Files that are certainly not media: not even probed.
NON_MEDIA_EXTENSIONS = frozenset(
    ".txt .md .json .xml .html .htm .csv .pdf .doc .docx .odt .rtf .srt .vtt .lrc .ass .ssa .nfo .cue .log "
    ".jpg .jpeg .png .gif .webp .bmp .tif .tiff .heic .svg .ico .zip .gz .tar .7z .rar .db .sqlite .sqlite3 "
    ".py .js .css .sh .ini .cfg .toml .yaml .yml .exe .dll .so .iso .torrent .m3u .m3u8 .pls .ds_store".split()
)


def is_under(path: str, root: str) -> bool:
    """path is root itself or lies below it (a plain prefix test would take /pod for /podcasts)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_ignored_name(name: str) -> bool:
    """Hidden files and temporaries of downloads or copies in progress."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(TEMP_SUFFIXES) or name.startswith("~$")


def is_candidate_name(name: str) -> bool:
    """Worth probing: not hidden or temporary, not a known non-media type (unknown types are
    probed). Hidden folders are judged below the root by the caller, so a root under a hidden
    folder (e.g. ~/.local/media) still works."""
    return not is_ignored_name(name) and os.path.splitext(name)[1].lower() not in NON_MEDIA_EXTENSIONS


def is_likely_media(path: str | os.PathLike) -> bool:
    """Has a known media extension (a probe failure on it is an error, not a silent skip)."""
    return Path(path).suffix.lower() in MEDIA_EXTENSIONS


def open_beside(location: str | os.PathLike | None,
                open_location: Callable[[str], BinaryIO] | None = None) -> Callable[[str], BinaryIO]:
    """``open_beside(name)`` for enrichers: opens ``name`` next to the media at ``location`` (a
    path or a ``scheme://`` URI) for binary reading, with ``open_location`` (the storage's
    ``open``; plain ``open`` by default): ``talk.srt`` beside ``talk.mp4``. A name with a folder
    in it is a ValueError; no location (media not at hand) or no such file is FileNotFoundError."""
    def open_file(name: str) -> BinaryIO:
        if not name or name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
            raise ValueError(f"open_beside takes a file name, not a path: {name!r}")
        if location is None:
            raise FileNotFoundError(f"{name}: the media file is not at hand")
        where = str(location)
        beside = where.rsplit("/", 1)[0] + "/" + name if "://" in where else os.path.join(os.path.dirname(where), name)
        return open_location(beside) if open_location else open(beside, "rb")
    return open_file
