"""Every hook a mediaindex plugin can implement, grouped by pipeline stage.

Implementations may accept any subset of a spec's arguments (pluggy passes them by name).
Register hooks receive a ``register`` callback: call it once per thing you provide.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from .backends import IndexBackend, StorageBackend, Transcriber
    from .config import Config
    from .models import Media, ProbeResult, Segment, Transcript

hookspec = HookspecMarker("mediaindex")
hookimpl = HookimplMarker("mediaindex")


# ---- storage -------------------------------------------------------------------------------


@hookspec
def register_storage_backends(register: Callable[["StorageBackend"], None], config: "Config") -> None:
    """Register storage backends (one per URI scheme: file, s3, oss). A media location is a URI;
    ``Pipeline.storage_for(uri)`` lists, stats, reads and copies it locally through its backend."""


# ---- transcription -------------------------------------------------------------------------


@hookspec
def register_transcribers(register: Callable[["Transcriber"], None], config: "Config") -> None:
    """Register speech-to-text engines; constructors must be cheap (load models lazily)."""


# ---- enrichment ----------------------------------------------------------------------------


@hookspec
def enrich_segments(media: "Media", transcript: "Transcript", probe: "ProbeResult", path: "Path | None",
                    config: "Config") -> None:
    """Fill fields the engine left empty (language, emotion, kind) on segments, in place.

    ``path`` is a local file to read audio or tags from, or None when re-indexing media whose
    file is not at hand (then only the transcript is available).
    """


# ---- index ---------------------------------------------------------------------------------


@hookspec
def register_index_backends(register: Callable[["IndexBackend"], None], config: "Config") -> None:
    """Register search index backends; constructors must be cheap (connect lazily)."""


# ---- events --------------------------------------------------------------------------------


@hookspec
def media_indexed(media: "Media", segments: list["Segment"]) -> None:
    """Called after a media's documents were written to the index."""


@hookspec
def media_removed(media_id: str, path: str) -> None:
    """Called after a path was removed; the media left the index if it has no other path."""


# ---- commands and web ----------------------------------------------------------------------


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add subcommands to the ``mediaindex`` CLI."""


@hookspec
def register_routes(register: Callable[[Any], None], config: "Config") -> None:
    """Register extra Starlette routes (``starlette.routing.Route``) for the web app."""
