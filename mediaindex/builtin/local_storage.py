"""The ``file`` storage backend: media on local disk (or a mounted share)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Iterator

from ..backends import ObjectInfo, StorageBackend
from ..hookspecs import hookimpl
from ..scan import walk


def _path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


class LocalStorage(StorageBackend):
    """Reads files in place; never writes or deletes the user's media."""

    scheme = "file"

    def open(self, uri: str) -> BinaryIO:
        return open(_path(uri), "rb")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for f in walk(str(_path(prefix))):
            yield ObjectInfo(uri=f.path, size=f.size, mtime=f.mtime)

    def local_path(self, uri: str) -> Path | None:
        p = _path(uri)
        return p if os.path.exists(p) else None


@hookimpl
def register_storage_backends(register):
    register(LocalStorage())
