"""Every hook a mediaindex plugin can implement, grouped by pipeline stage.

Implementations may accept any subset of a spec's arguments (pluggy passes them by name).
Register hooks receive a ``register`` callback: call it once per thing you provide; two plugins
registering the same storage scheme, transcriber or index name is an error naming both.

Where each stage runs (stages without a hook are core code; a plugin cannot replace them):

======================  =====================  ==============================================
stage                   hook                   code that runs it
======================  =====================  ==============================================
discover                (none)                 ``scan.plan_scan`` over ``StorageBackend.list``
                                               (``Pipeline.plan``), ``watch.Watcher`` (watch)
probe                   (none)                 ``probe.probe`` (ffprobe) on the local copy,
                                               from ``Pipeline._process_local``
fingerprint             (none)                 ``pipeline.content_id`` (the media id)
storage                 register_storage_      ``Pipeline.__init__`` fills ``storages``;
                        backends               ``Pipeline.storage_for(uri)`` reads locations,
                                               ``Pipeline._publish`` uploads for URL engines
transcribe              register_transcribers  ``Pipeline.transcriber_for`` routes,
                                               ``Pipeline._transcribe`` calls the engine
enrich                  enrich_segments        ``Pipeline._enrich`` (index and reindex)
index                   register_index_        ``Pipeline.__init__`` picks ``index``;
                        backends               ``Pipeline._process`` / ``reindex`` upsert
events                  media_indexed,         ``Pipeline._process``,
                        media_removed          ``Pipeline.remove_path``
commands                register_commands      the end of ``cli.py`` (import time)
web                     register_routes        ``web.app.create_app``
======================  =====================  ==============================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, Callable

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
                    config: "Config", open_beside: Callable[[str], BinaryIO]) -> None:
    """Fill fields the engine left empty (language, emotion, kind) on segments, in place.

    An enricher may also add segments (lyrics, subtitles): append them to
    ``transcript.segments`` with ``source`` set ("lyrics", "subtitle") and an ``index`` after
    the last one; it never removes or rewrites the engine's text. ``path`` is a local file to
    read audio or tags from, or None when re-indexing media whose file is not at hand (then
    only the transcript is available). ``open_beside(name)`` opens a file next to the media
    (``talk.srt`` beside ``talk.mp4``, read through the media's storage) for reading in binary;
    it raises ``FileNotFoundError``
    when there is none or the media is not at hand, and ``ValueError`` for a name that is not
    a plain file name.
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
def register_queues(register: Callable[[Any], None], config: "Config") -> None:
    """Register shared job queues (``--queue URL``): objects with ``schemes`` (URL schemes, e.g.
    ``("redis", "rediss")``), ``check(url)`` (a ``UsageError`` for an unsafe or malformed URL,
    before anything starts) and ``coordinator(pipeline, url)``, which returns an object whose
    ``process_path(path, reporter)`` does the work of one file on a worker and its bookkeeping
    here, and whose ``status()`` describes workers and queue; and ``status(url, config)`` for
    ``mediaindex status --queue`` (see docs/plugins.md, "Job queue")."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add subcommands to the ``mediaindex`` CLI."""


@hookspec
def register_routes(register: Callable[[Any], None], config: "Config") -> None:
    """Register extra Starlette routes (``starlette.routing.Route``) for the web app."""
