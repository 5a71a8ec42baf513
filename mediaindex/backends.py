"""The interfaces a plugin implements: storage, transcriber, index.

A plugin registers instances of these through the ``register_*`` hooks (see hookspecs.py).
"""
from __future__ import annotations

import abc
import contextlib
import math
import os
import queue
import re
import shutil
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

# the error classes live in errors.py; plugins and docs import them from here too
from .errors import FatalError, MediaError, NotReady, PermanentError, TransientError  # noqa: F401
from .models import Media, ProbeResult, SearchQuery, SearchResult, Segment, Transcript

ProgressCallback = Callable[[float, float], None]  # (seconds done, seconds total)


# ---- storage -------------------------------------------------------------------------------


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(location: str) -> str:
    """The storage scheme of a media location: ``s3`` for ``s3://b/k``; ``file`` for a plain
    path or a ``file://`` URI."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else "file"


def is_local(location: str) -> bool:
    """A plain path (or ``file://``): read with os and ffmpeg directly."""
    return uri_scheme(location) == "file"


def normalize_location(location: str) -> str:
    """A location as the state database keeps it: an absolute path for local files (``~``
    expanded, ``file://`` dropped), a URI unchanged but for a trailing slash."""
    if not is_local(location):
        return location.rstrip("/") if not location.endswith("://") else location
    if location.startswith("file://"):
        location = location[len("file://"):]
    return os.path.abspath(os.path.expanduser(location))


@dataclass
class ObjectInfo:
    """One stored object (a file on disk, an object in a bucket): what a scan compares."""

    uri: str
    size: int
    mtime: float
    etag: str | None = None  # a content version when the storage has one (S3 ETag, OSS version)

    @property
    def path(self) -> str:
        """The location (a plain path for local files): the scanner's name for it."""
        return self.uri


class StorageBackend(abc.ABC):
    """Where media bytes live: local disk (``file``), S3 (``s3``), Alibaba OSS (``oss``).

    Everything that reads a media location goes through the backend of its scheme: listing a
    root, stat, reading (hashing), and a local copy for ffmpeg. URIs are ``scheme://rest``;
    ``file`` locations are plain absolute paths.
    """

    scheme: str = ""

    @abc.abstractmethod
    def open(self, uri: str) -> BinaryIO:
        """Open an object for reading (binary)."""

    @abc.abstractmethod
    def list(self, prefix: str, problems: list[tuple[str, str]] | None = None) -> Iterator[ObjectInfo]:
        """Every candidate object at or under a prefix (a folder, a bucket prefix or one object),
        recursively, paging through the service's listing as needed. Objects that cannot be
        read are added to ``problems`` as (uri, reason) instead of failing the listing."""

    @abc.abstractmethod
    def stat(self, uri: str) -> ObjectInfo | None:
        """Size, mtime and version of one object; None when it does not exist."""

    def offline_reason(self, root: str, has_known_files: Callable[[], bool]) -> str | None:
        """Why a root cannot be listed now (its files are kept, not purged), or None."""
        return None

    def local_path(self, uri: str) -> Path | None:
        """A local file path for the object when it has one (ffmpeg reads it directly)."""
        return None

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local file ffmpeg can read while the block runs: the file itself when it has a
        local path, else a temporary download deleted afterwards."""
        local = self.local_path(uri)
        if local is not None:
            yield local
            return
        suffix = os.path.splitext(uri.rsplit("/", 1)[-1])[1]
        fd, tmp = tempfile.mkstemp(prefix="mediaindex-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out, self.open(uri) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            yield Path(tmp)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def open_range(self, uri: str, start: int, length: int) -> BinaryIO:
        """A stream of the bytes from ``start`` on (at least ``length`` of them): the web
        player's Range requests. This default reads past what comes before ``start``;
        bucket backends ask the service for the range."""
        f = self.open(uri)
        if f.seekable():
            f.seek(start)
            return f
        left = start
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            left -= len(block)
        return f

    def public_url(self, uri: str, expires: int = 3600) -> str | None:
        """A URL a cloud service can fetch (presigned, expiring), or None when this storage
        cannot give one (then the file is staged to ``stage_storage``)."""
        return None

    def stage(self, local_path: Path, key: str) -> str:
        """Upload a local file under ``key`` so a cloud engine can read it; returns its URI."""
        raise NotImplementedError(f"storage {self.scheme!r} cannot stage uploads")

    def unstage(self, key: str) -> None:
        """Delete what ``stage`` uploaded under ``key``; no error when it is not there (a crash
        may have come before the upload)."""
        raise NotImplementedError(f"storage {self.scheme!r} cannot stage uploads")


def split_bucket_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.mp3`` → (``bucket``, ``a/b.mp3``); the key is "" for a whole bucket."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    bucket, _, key = rest.partition("/")
    return bucket, key


def key_wanted(root_key: str, key: str) -> bool:
    """An object under a bucket root worth probing: at or below ``root_key`` (a folder-like
    prefix or the object itself), not a folder marker, not hidden below the root, a candidate
    name (``is_candidate_name``): the rules the local walk follows."""
    from .scan import is_candidate_name

    root_key = root_key.rstrip("/")
    if key.endswith("/") or not (not root_key or key == root_key or key.startswith(root_key + "/")):
        return False
    parts = key[len(root_key):].strip("/").split("/") if key != root_key else [key.rsplit("/", 1)[-1]]
    return not any(p.startswith(".") for p in parts[:-1]) and is_candidate_name(parts[-1])


def version_stamp(modified: float, etag: str | None) -> float:
    """A bucket object's mtime for the scan's (size, mtime) comparison: the whole second of its
    last modification (listings and HEAD agree to the second) with its ETag folded into the
    fraction, so an overwrite with the same size in the same second is still a change."""
    fold = zlib.crc32(etag.strip('"').encode()) % 1000 if etag else 0
    return math.floor(modified) + fold / 1000


def list_partitioned(pages: Callable[[str, str | None, str | None], Iterator], root_key: str,
                     failed: Callable[[str, Exception], None], concurrency: int = 8, max_partitions: int = 256,
                     spread: int = 8) -> Iterator[tuple[str, object]]:
    """Every wanted (key, object) at or under ``root_key`` (see ``key_wanted``), streamed.

    ``pages(prefix, delimiter, start_after)`` lists one prefix page by page, giving each page's
    objects as (key, object) pairs and its common prefixes. The first two pages are listed
    flat: a small prefix costs what it always did. When there is more, and those keys lie in at
    most ``spread`` folders (big folders), one delimiter listing finds the root's folders and
    the rest of each is listed on its own, up to ``concurrency`` at once. S3 and OSS give at
    most a thousand keys a request and every request waits a round trip, so big folders listed
    side by side finish many times sooner (and a store that scans by prefix answers narrow
    prefixes cheaply). Small folders, or more than ``max_partitions`` of them, are listed flat:
    one request each would cost more than it saves. Memory stays bounded: at most
    ``concurrency`` pages wait. A folder whose listing fails is passed to
    ``failed(folder_key, error)`` (which may raise) and the other folders go on. The root may
    be an object itself (when nothing lies under it as a folder)."""
    base = root_key.rstrip("/")
    top = base + "/" if base else ""
    flat = iter(pages(top, None, None))
    last, touched, count = "", set(), 0
    for contents, _ in flat:
        yield from ((k, o) for k, o in contents if key_wanted(root_key, k))
        last = contents[-1][0] if contents else last
        touched.update(k[:len(top) + k[len(top):].find("/") + 1] for k, _ in contents if "/" in k[len(top):])
        count += 1
        if count == 2:
            break
    else:  # all of it in one or two pages
        if base and not last:
            contents, _ = next(iter(pages(base, "/", None)), ([], []))
            yield from ((k, o) for k, o in contents[:1] if k == base and key_wanted(root_key, k))
        return
    if len(touched) > spread:
        yield from ((k, o) for contents, _ in flat for k, o in contents if key_wanted(root_key, k))
        return
    folders: list[tuple[str, str | None]] = []  # (folder, list after this key)
    for contents, prefixes in pages(top, "/", None):
        yield from ((k, o) for k, o in contents if k > last and key_wanted(root_key, k))
        for p in prefixes:
            if not p[len(top):].startswith(".") and (p > last or last.startswith(p)):  # not hidden, not listed
                folders.append((p, last if last.startswith(p) else None))
        if len(folders) > max_partitions:  # go on flat, but for the direct keys just given
            listed_to = max([last, *(k for k, _ in contents[-1:]), *prefixes[-1:]])
            yield from ((k, o) for contents, _ in flat for k, o in contents
                        if key_wanted(root_key, k) and not ("/" not in k[len(top):] and k <= listed_to))
            return
    yield from _list_folders(pages, folders, root_key, failed, concurrency)


def _list_folders(pages, folders: list[tuple[str, str | None]], root_key: str, failed,
                  concurrency: int) -> Iterator[tuple[str, object]]:
    """The folders listed by up to ``concurrency`` threads, their pages streamed in arrival order."""
    if not folders:
        return
    out: queue.Queue = queue.Queue(maxsize=concurrency)
    stop = threading.Event()
    todo = iter(folders)
    lock = threading.Lock()

    def put(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                out.put(item, timeout=0.2)
                return True
        return False

    def work() -> None:
        while not stop.is_set():
            with lock:
                folder, after = next(todo, (None, None))
            if folder is None:
                break
            try:
                for contents, _ in pages(folder, None, after):
                    if not put(("page", folder, [(k, o) for k, o in contents if key_wanted(root_key, k)])):
                        return
            except Exception as e:  # handed to the caller, in its thread
                if not put(("error", folder, e)):
                    return
        put(("done", None, None))

    workers = [threading.Thread(target=work, daemon=True, name="mediaindex-list")
               for _ in range(max(1, min(concurrency, len(folders))))]
    for w in workers:
        w.start()
    try:
        running = len(workers)
        while running:
            kind, folder, value = out.get()
            if kind == "done":
                running -= 1
            elif kind == "error":
                failed(folder, value)
            else:
                yield from value
    finally:
        stop.set()  # the consumer stopped early or failed: the workers end after their request


# ---- transcription -------------------------------------------------------------------------


@dataclass
class TranscriberLimits:
    """What a transcriber can take. The router uses this to pick an engine for a file."""

    max_duration: float | None = None  # seconds; None = no limit
    max_bytes: int | None = None  # the file's size (probe.size)
    needs_url: bool = False  # reads a URL (request.publish), not a local file: informational
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

    path: Path  # a local file ffmpeg can read, valid while ``transcribe`` runs
    probe: ProbeResult
    uri: str = ""  # where the media lives (a plain path for local files, else scheme://...)
    # Make a local file fetchable by a cloud engine; returns its URL. Publish the extracted audio
    # (mediaindex.audio.extract: mono 16 kHz, compressed), not a multi-GB video; publishing
    # ``path`` itself presigns a source already in a bucket instead of uploading it again.
    # What was published is deleted by the core after the call, whether it succeeded or not.
    publish: Callable[[Path], str] | None = None
    language: str | None = None  # a hint; None = detect
    prompt: str | None = None  # names and terms to bias recognition
    progress: ProgressCallback | None = None
    # Book money as it is spent (billed seconds, cost, details): a failure after a paid chunk
    # must not hide the spend. Transcript.cost is the total; what was charged is not booked twice.
    charge: Callable[[float, float, dict], None] | None = None
    checkpoint: Checkpoint | None = None
    hint: dict[str, Any] = field(default_factory=dict)  # the file's [[hints]] entry (engine options per folder)


def _language_in(language: str, languages: list[str]) -> bool:
    """``en-US`` matches ``en``; case does not matter."""
    base = language.lower().replace("_", "-")
    return any(base == lang.lower() or base.split("-")[0] == lang.lower().split("-")[0] for lang in languages)


class Transcriber(abc.ABC):
    """Speech to text with word times.

    One instance serves every worker thread: ``transcribe`` must be thread-safe. Engines that
    share a ``family`` (e.g. ``dashscope``: a fast engine for short files, a file engine for long
    ones) are routed by ``accepts``; the user names the family, the router picks the member.
    """

    name: str = ""
    family: str | None = None
    limits: TranscriberLimits = TranscriberLimits()

    def accepts(self, probe: ProbeResult, language: str | None = None) -> str | None:
        """None when this engine can take the file, else why not (shown if no engine fits).

        Checks every limit that decides routing: ``max_duration``, ``max_bytes`` and, when the
        language is known (a hint), ``languages``. ``needs_url``, ``word_timestamps`` and
        ``paid`` are informational here (``paid`` engines are only used when named).
        """
        lim = self.limits
        if lim.max_duration is not None and probe.duration > lim.max_duration:
            return f"{probe.duration:.0f} s is longer than {self.name}'s {lim.max_duration:.0f} s"
        if lim.max_bytes is not None and probe.size > lim.max_bytes:
            return f"{probe.size} bytes is more than {self.name}'s {lim.max_bytes} bytes"
        if language and lim.languages is not None and not _language_in(language, lim.languages):
            return f"{self.name} does not take {language!r} (only {', '.join(lim.languages)})"
        return None

    @property
    def cache_key(self) -> str:
        """Engine + model + options that change the output: transcripts are cached under it."""
        return self.name

    def estimate_cost(self, probe: ProbeResult) -> float:
        """Money this file would cost to transcribe (0 for local engines)."""
        return 0.0

    def estimate(self, probe: ProbeResult, hint: dict[str, Any] | None = None) -> tuple[float, float, str | None]:
        """Billed seconds, cost and a note (or None) for this file under its ``[[hints]]`` entry
        (an engine whose per-folder options change the bill overrides it): ``--estimate``, ``max_cost``."""
        return probe.duration, self.estimate_cost(probe), None

    @abc.abstractmethod
    def transcribe(self, request: TranscribeRequest) -> Transcript:
        """Transcribe one file. Raise PermanentError or TransientError on failure."""


# ---- index ---------------------------------------------------------------------------------


class FacetCounts(dict):
    """Facet name → {value: documents}: ``language``, ``emotion``, ``kind``, ``folder`` today; a
    backend or an enricher may add more (e.g. ``sound``) without changing the interface.

    ``estimated`` is True when the counts were scaled from a sample of the matches (a frequent
    word): good for ordering and for "about N", not exact.
    """

    FACETS = ("language", "emotion", "kind", "folder")

    def __init__(self, *args, estimated: bool = False, **facets: dict[str, int]):
        super().__init__(*args, **facets)
        for name in self.FACETS:
            self.setdefault(name, {})
        self.estimated = estimated

    def __getattr__(self, name: str) -> dict[str, int]:  # counts.language, as before
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class IndexBackend(abc.ABC):
    """A search index of segment documents (one document per segment, media facets copied in).

    The contract every backend keeps (tested on the built-in ``sqlite`` one, see docs/plugins.md):

    - **Outages**: a backend that cannot be reached (server down, database locked past its
      timeout) raises :class:`TransientError`; the job waits and is retried, with one line in
      the log, not a traceback. A damaged or full store raises :class:`FatalError`.
    - **Durability**: ``upsert``, ``update_media`` and ``delete`` return only once the change is
      durable (committed and synced; for a server: acknowledged as persisted, not only queued).
    - **Libraries**: ``library`` (set by the pipeline before the first call, from the state
      database: one id per data dir) is stored on every document. Several data dirs may share
      one index: writes, ``media_ids()`` and therefore ``reconcile`` touch only the own
      library's documents; the same media may be in two libraries. ``search`` and ``facets``
      cover every library unless ``SearchQuery.library`` names one.
    - **Query syntax** (``SearchQuery.q``), the same for every backend: words are ANDed,
      case- and diacritic-insensitive; ``"a phrase"`` matches the words in a row; ``word*``
      is a prefix; ``-word`` excludes; ``a OR b`` is either. Filters are fields of
      :class:`SearchQuery` (language, emotion, kind, path_prefix, media_id, library, date), never
      query text. An empty ``q`` matches nothing in ``search`` and everything in ``facets``.
    - **Facets**: a :class:`FacetCounts` mapping; counts of big matches may be estimated
      (``estimated=True``).
    """

    name: str = ""
    library: str | None = None  # the library this process writes (see above); None: no scoping
    # What the backend's own search forgives, of ``mediaindex.forgive.query.KINDS`` (typo, sound,
    # number, spelling, compound). For the rest the core keeps the library's words and hands
    # ``search``/``facets`` a query whose words are ORed with their alternatives
    # (``harbour OR harbor``), and says what was forgiven (``mediaindex.forgive.layer``).
    forgives: frozenset[str] = frozenset()

    @abc.abstractmethod
    def upsert(self, media: Media, segments: list[Segment]) -> None:
        """Replace every document of this media (in ``library``) with these segments; durable on return."""

    @abc.abstractmethod
    def update_media(self, media: Media) -> None:
        """Refresh the media facets (path, title, folder...) on its documents, e.g. after a move."""

    @abc.abstractmethod
    def delete(self, media_id: str) -> None:
        """Remove every document of this media (in ``library``)."""

    @abc.abstractmethod
    def search(self, query: SearchQuery) -> SearchResult:
        """Ranked hits; each hit's ``time`` is the start of its first matched word."""

    @abc.abstractmethod
    def facets(self, query: SearchQuery) -> FacetCounts:
        """Documents per facet value (language/emotion/kind/folder, and any a plugin adds) for the
        query ("" = all). Fast at any size: counts kept at write time, or estimated."""

    @abc.abstractmethod
    def media_ids(self) -> set[str]:
        """Ids of every media of ``library`` in the index (to reconcile with the state database)."""

    def repair(self) -> str | None:
        """Check the index; when it is damaged, set it aside and start empty (``reconcile`` then
        rebuilds it from the cached transcripts). Returns what was done for the user, None when sound."""
        return None

    def close(self) -> None:
        """Release connections."""
