"""The interfaces a plugin implements: storage, transcriber, index.

A plugin registers instances of these through the ``register_*`` hooks (see hookspecs.py).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .models import Media, ProbeResult, SearchQuery, SearchResult, Segment, Transcript

ProgressCallback = Callable[[float, float], None]  # (seconds done, seconds total)


class MediaError(Exception):
    """A per-file failure. ``transient`` errors are retried with backoff, permanent ones are not."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None):
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class PermanentError(MediaError):
    """Retrying will not help: corrupt file, no audio stream, rejected by the engine (400)."""

    transient = False


class FatalError(Exception):
    """Stops all work, not one file: a full disk, a missing or damaged model. The user must act."""


class TransientError(MediaError):
    """Worth retrying later: network failure, 429, 5xx, engine busy.

    ``retry_after`` (seconds) is honoured by the job queue when the service said when to retry
    (HTTP ``Retry-After``); otherwise the queue backs off exponentially. A rejected API key is
    not transient: raise FatalError, every file would fail the same way.
    """

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# ---- storage -------------------------------------------------------------------------------


@dataclass
class ObjectInfo:
    uri: str
    size: int
    mtime: float


class StorageBackend(abc.ABC):
    """Where media bytes live: local disk (``file``), S3 (``s3``), Alibaba OSS (``oss``)."""

    scheme: str = ""

    @abc.abstractmethod
    def open(self, uri: str) -> BinaryIO:
        """Open an object for reading (binary)."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """List objects under a prefix (a folder or bucket prefix), recursively."""

    def local_path(self, uri: str) -> Path | None:
        """A local file path for the object when it has one (ffmpeg reads it directly)."""
        return None

    def public_url(self, uri: str, expires: int = 3600) -> str:
        """A URL a cloud service can fetch (presigned, expiring)."""
        raise NotImplementedError(f"storage {self.scheme!r} cannot give a public URL")

    def stage(self, local_path: Path, key: str) -> str:
        """Upload a local file so a cloud engine can read it; returns its URI."""
        raise NotImplementedError(f"storage {self.scheme!r} cannot stage uploads")


# ---- transcription -------------------------------------------------------------------------


@dataclass
class TranscriberLimits:
    """What a transcriber can take. The router uses this to pick an engine for a file."""

    max_duration: float | None = None  # seconds; None = no limit
    max_bytes: int | None = None
    needs_url: bool = False  # needs a public URL (the audio is staged to a bucket)
    word_timestamps: bool = True
    languages: list[str] | None = None  # None = many / auto-detect
    paid: bool = False  # never selected silently: the user must ask for it


@dataclass
class Checkpoint:
    """An engine's resumable progress for one file, kept in the state database until the
    transcript is saved: a submitted task's id (never submit and pay twice after a crash or a
    retry), the chunks already transcribed."""

    load: Callable[[], "dict | None"]
    save: Callable[[dict], None]


@dataclass
class TranscribeRequest:
    """One file to transcribe."""

    path: Path  # a local file ffmpeg can read
    probe: ProbeResult
    url: str | None = None  # a public URL when the engine needs one
    language: str | None = None  # a hint; None = detect
    prompt: str | None = None  # names and terms to bias recognition
    progress: ProgressCallback | None = None
    # Book money as it is spent (billed seconds, cost, details): a failure after a paid chunk
    # must not hide the spend. Transcript.cost is the total; what was charged is not booked twice.
    charge: Callable[[float, float, dict], None] | None = None
    checkpoint: Checkpoint | None = None


class Transcriber(abc.ABC):
    """Speech to text with word times.

    One instance serves every worker thread: ``transcribe`` must be thread-safe. Engines that
    share a ``family`` (e.g. ``dashscope``: a fast engine for short files, a file engine for long
    ones) are routed by ``accepts``; the user names the family, the router picks the member.
    """

    name: str = ""
    family: str | None = None
    limits: TranscriberLimits = TranscriberLimits()

    def accepts(self, probe: ProbeResult) -> str | None:
        """None when this engine can take the file, else why not (shown if no engine fits)."""
        lim = self.limits
        if lim.max_duration is not None and probe.duration > lim.max_duration:
            return f"{probe.duration:.0f} s is longer than {self.name}'s {lim.max_duration:.0f} s"
        return None

    @property
    def cache_key(self) -> str:
        """Engine + model + options that change the output: transcripts are cached under it."""
        return self.name

    def estimate_cost(self, probe: ProbeResult) -> float:
        """Money this file would cost to transcribe (0 for local engines)."""
        return 0.0

    @abc.abstractmethod
    def transcribe(self, request: TranscribeRequest) -> Transcript:
        """Transcribe one file. Raise PermanentError or TransientError on failure."""


# ---- index ---------------------------------------------------------------------------------


@dataclass
class FacetCounts:
    language: dict[str, int] = field(default_factory=dict)
    emotion: dict[str, int] = field(default_factory=dict)
    kind: dict[str, int] = field(default_factory=dict)
    folder: dict[str, int] = field(default_factory=dict)


class IndexBackend(abc.ABC):
    """A search index of segment documents (one document per segment, media facets copied in)."""

    name: str = ""

    @abc.abstractmethod
    def upsert(self, media: Media, segments: list[Segment]) -> None:
        """Replace every document of this media with these segments."""

    @abc.abstractmethod
    def update_media(self, media: Media) -> None:
        """Refresh the media facets (path, title, folder...) on its documents, e.g. after a move."""

    @abc.abstractmethod
    def delete(self, media_id: str) -> None:
        """Remove every document of this media."""

    @abc.abstractmethod
    def search(self, query: SearchQuery) -> SearchResult:
        """Ranked hits; each hit's ``time`` is the start of the query's words where they stand
        closest together. Query syntax: :func:`mediaindex.forgive.query.parse_search`."""

    @abc.abstractmethod
    def facets(self, query: SearchQuery) -> FacetCounts:
        """Counts of documents per language/emotion/kind/folder for the query ("" = all)."""

    @abc.abstractmethod
    def media_ids(self) -> set[str]:
        """Ids of every media in the index (to reconcile with the state database)."""

    def repair(self) -> str | None:
        """Check the index; when it is damaged, set it aside and start empty (``reconcile`` then
        rebuilds it from the cached transcripts). Returns what was done for the user, None when sound."""
        return None

    def close(self) -> None:
        """Release connections."""
