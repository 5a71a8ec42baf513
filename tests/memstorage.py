"""A second storage scheme for tests: ``mem://bucket/key`` objects kept in a local folder.

It has no local paths (the core must download a copy for ffmpeg), signs URLs like a bucket, and
takes staging uploads, so the core's URI handling is tested without S3. Registered through the
real ``register_storage_backends`` hook by ``mem_storage`` (conftest.py).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from mediaindex import hookimpl
from mediaindex.backends import ObjectInfo, StorageBackend
from mediaindex.scan import is_candidate_name

SCHEME = "mem"


class MemStorage(StorageBackend):
    scheme = SCHEME

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.opened: list[str] = []

    def _file(self, uri: str) -> Path:
        assert uri.startswith("mem://"), uri
        return self.folder / uri[len("mem://"):]

    def _uri(self, file: Path) -> str:
        return "mem://" + file.relative_to(self.folder).as_posix()

    def _info(self, file: Path) -> ObjectInfo:
        st = file.stat()
        return ObjectInfo(self._uri(file), st.st_size, st.st_mtime, etag=f"{st.st_size}-{st.st_mtime_ns}")

    def open(self, uri: str) -> BinaryIO:
        self.opened.append(uri)
        return open(self._file(uri), "rb")

    def list(self, prefix: str, problems=None) -> Iterator[ObjectInfo]:
        top = self._file(prefix)
        if top.is_file():
            yield self._info(top)
            return
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if is_candidate_name(name):
                    yield self._info(Path(folder) / name)

    def stat(self, uri: str) -> ObjectInfo | None:
        f = self._file(uri)
        return self._info(f) if f.is_file() else None

    def offline_reason(self, root: str, has_known_files: Callable[[], bool]) -> str | None:
        bucket = root[len("mem://"):].split("/", 1)[0]
        return None if (self.folder / bucket).is_dir() else f"bucket {bucket!r} cannot be reached"

    def public_url(self, uri: str, expires: int = 3600) -> str | None:
        sig = hashlib.sha256(uri.encode()).hexdigest()[:8]
        return f"https://mem.invalid/{uri[len('mem://'):]}?expires={expires}&sig={sig}"

    def stage(self, local_path: Path, key: str) -> str:
        target = self.folder / "staging" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, target)
        return self._uri(target)

    def unstage(self, key: str) -> None:
        (self.folder / "staging" / key).unlink(missing_ok=True)

    def staged(self) -> list[str]:
        """What is in the staging area now (relative keys)."""
        top = self.folder / "staging"
        return sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()) if top.exists() else []


class Plugin:
    def __init__(self, folder: Path):
        self.storage = MemStorage(folder)

    @hookimpl
    def register_storage_backends(self, register):
        register(self.storage)
