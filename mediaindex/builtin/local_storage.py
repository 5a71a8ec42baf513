"""The ``file`` storage backend: media on local disk (or a mounted share)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..backends import ObjectInfo, StorageBackend
from ..hookspecs import hookimpl
from ..scan import offline_reason, walk


def _path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


class LocalStorage(StorageBackend):
    """Reads files in place; never writes or deletes the user's media."""

    scheme = "file"

    def open(self, uri: str) -> BinaryIO:
        return open(_path(uri), "rb")

    def list(self, prefix: str, problems: list[tuple[str, str]] | None = None,
             exclude=()) -> Iterator[ObjectInfo]:
        return walk(str(_path(prefix)), problems, exclude)

    def stat(self, uri: str) -> ObjectInfo | None:
        try:
            st = os.stat(_path(uri))
        except FileNotFoundError:
            return None
        return ObjectInfo(uri, st.st_size, st.st_mtime)

    def offline_reason(self, root: str, has_known_files: Callable[[], bool]) -> str | None:
        return offline_reason(str(_path(root)), has_known_files)

    def local_path(self, uri: str) -> Path | None:
        return _path(uri)


@hookimpl
def register_storage_backends(register):
    register(LocalStorage())
