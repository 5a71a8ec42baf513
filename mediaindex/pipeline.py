"""probe → fingerprint → stage → transcribe → enrich → index: the one caller of the indexing hooks.

``Pipeline`` owns the registries that plugins fill (storage, transcribers, indexes), the state
database and the job queue. ``process_path`` does one file; ``run_jobs`` drains the queue with a
pool of workers; one bad file never stops the others.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import traceback
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .artwork import CACHE_MB_DEFAULT, ArtworkCache
from .backends import (Checkpoint, FatalError, IndexBackend, MediaError, ObjectInfo, PermanentError, StorageBackend,
                       Transcriber, TranscribeRequest, is_local, normalize_location, uri_scheme)
from .config import Config
from .dberrors import DiskFull, StateDamaged, database_error
from .errors import BudgetExceeded, NotReady, UsageError
from .forgive.layer import forgiving
from .jobqueue import WorkerPool
from .models import Media, ProbeResult, Segment, Transcript
from .paths import open_beside
from .plugins import load_plugins, register_each
from .probe import probe
from .safety import terminal_safe
from .scan import ScanPlan, is_ignored, is_likely_media, plan_scan
from .state import Job, State

TRANSCRIBE = "transcribe:"  # a job action: transcribe the file again with the engine named after it

DEFAULT_TRANSCRIBER = "local"
DEFAULT_INDEX = "sqlite"


@contextmanager
def _engine_failure(engine: str):
    """A PermanentError raised in here is the engine's (it refused the file), not the file's own:
    it is tried again when the engine or its settings change."""
    try:
        yield
    except PermanentError as e:
        if getattr(e, "engine", None) is None:
            e.engine = engine
        raise


def content_id(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The media id: a hash of the bytes, so a moved or renamed file keeps its id."""
    h = hashlib.blake2b(digest_size=10)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def queue_for(pm, config: Config, url: str):
    """The registered shared queue for ``url``'s scheme, its URL checked (``UsageError`` if unsafe)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    found = []
    pm.hook.register_queues(register=found.append, config=config)
    for q in found:
        if scheme in q.schemes:
            q.check(url)
            return q
    known = sorted(s for q in found for s in q.schemes)
    raise UsageError(f"no job queue plugin for {scheme or url!r} URLs; available: {', '.join(known) or 'none'} "
                     "(install plugins/mediaindex-redis for redis://)")


class Reporter(Protocol):
    """Receives progress from the pipeline (CLI progress bars, the web status panel)."""

    def started(self, path: str, duration: float | None) -> None: ...
    def progress(self, path: str, done: float, total: float) -> None: ...
    def finished(self, path: str, status: str, error: str | None) -> None: ...


class NullReporter:
    def started(self, path, duration):
        pass

    def progress(self, path, done, total):
        pass

    def finished(self, path, status, error):
        pass


@dataclass
class Outcome:
    path: str
    status: str  # indexed | failed | retry (also NotReady) | removed | ignored
    error: str | None = None
    media_id: str | None = None
    transcribed: bool = False


class Pipeline:
    def __init__(self, config: Config, *, transcriber: str | None = None, index: str | None = None,
                 state: State | None = None):
        self.config = config
        config.ensure_data_dir()
        self.pm = load_plugins()
        self.storages: dict[str, StorageBackend] = {}
        self.transcribers: dict[str, Transcriber] = {}
        self.indexes: dict[str, IndexBackend] = {}
        register_each(self.pm, "register_storage_backends", self.storages, "scheme", "storage", config)
        register_each(self.pm, "register_transcribers", self.transcribers, "name", "transcriber", config)
        register_each(self.pm, "register_index_backends", self.indexes, "name", "index", config)
        self.transcriber_name = transcriber or config.get("transcriber") or DEFAULT_TRANSCRIBER
        index_name = index or config.get("index") or DEFAULT_INDEX
        if index_name not in self.indexes:
            raise UsageError(f"unknown index {index_name!r}; available: {', '.join(sorted(self.indexes)) or 'none'}")
        # what the backend cannot forgive itself, the core does (mediaindex.forgive.layer)
        self.index = self.indexes[index_name] = forgiving(self.indexes[index_name], config.data_dir / "words.sqlite3")
        if state is None:
            try:
                state = State(config.state_path)
            except (OSError, sqlite3.Error) as e:
                fatal = database_error(e, config.state_path)
                if isinstance(fatal, (DiskFull, StateDamaged)):
                    raise fatal from None
                raise UsageError(f"cannot open the state database {config.state_path}: {e} "
                                 "(is the data dir writable? choose another with --data-dir)") from None
        self.state = state
        self.index.library = state.library_id()  # documents carry it: an index may be shared
        self._media_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._reserved = 0.0  # estimated cost of paid transcriptions in progress
        self._owner = uuid.uuid4().hex  # marks this process's staging uploads (others' are leftovers)
        self._job_engine = threading.local()  # a "transcribe:NAME" job's engine, in its worker thread
        self.remote = None  # a shared queue's coordinator (use_queue): files are worked on elsewhere
        self.artwork = ArtworkCache(Path(config.data_dir) / "artwork",
                                    int(config.get("artwork_cache_mb") or CACHE_MB_DEFAULT) << 20)

    def use_queue(self, url: str | None) -> None:
        """Hand files to the workers of a shared queue (``--queue redis://...``); None: work here."""
        if not url:
            return
        self.remote = queue_for(self.pm, self.config, url).coordinator(self, url)

    def storage_for(self, uri: str) -> StorageBackend:
        """The storage backend that reads this location (``file`` for plain paths)."""
        scheme = uri_scheme(uri)
        if scheme not in self.storages:
            raise UsageError(f"no storage plugin for {scheme}:// locations ({uri}); available: "
                             f"{', '.join(sorted(self.storages)) or 'none'} (see `mediaindex plugins`)")
        return self.storages[scheme]

    # ---- routing ---------------------------------------------------------------------------

    def check_transcriber(self) -> list[Transcriber]:
        """The engines the chosen name stands for (itself, or its family, shortest limit first);
        UsageError when there is none, so a command can say so before any work starts."""
        name = getattr(self._job_engine, "name", None) or self.transcriber_name
        if name in self.transcribers:
            return [self.transcribers[name]]
        family = sorted((t for t in self.transcribers.values() if t.family == name),
                        key=lambda t: t.limits.max_duration or float("inf"))
        if not family:
            raise UsageError(f"unknown transcriber {name!r}; available: {', '.join(sorted(self.transcribers)) or 'none'}"
                             " (see `mediaindex plugins`)")
        return family

    def transcriber_for(self, probe_result: ProbeResult, language: str | None = None) -> Transcriber:
        """Pick the engine: the one named, or the first member of the named family that accepts
        the file, shortest ``max_duration`` first (a fast engine for short files, a file engine
        for long ones). Paid engines are only used when the user names them; nothing is chosen
        because a key happens to be set.
        """
        name = getattr(self._job_engine, "name", None) or self.transcriber_name
        candidates = self.check_transcriber()
        reasons = []
        for t in candidates:
            why = t.accepts(probe_result, language=language)
            if why is None:
                return t
            reasons.append(why)
        raise PermanentError(f"no {name!r} engine takes this file: {'; '.join(reasons)}")

    def _reserve_budget(self, transcriber: Transcriber, probe_result: ProbeResult, hint: dict | None = None) -> float:
        """Reserve this file's estimated cost under the cap (released by the caller afterwards).

        Workers reserve under one lock, so N workers cannot each pass the check and overspend
        together (one writer process per data dir: see datalock.py).
        """
        cap = self.config.get("max_cost")
        if not cap or not transcriber.limits.paid:
            return 0.0
        estimate = transcriber.estimate(probe_result, hint)[1]
        with self._locks_guard:
            spent = self.state.total_cost()
            if spent + self._reserved + estimate > float(cap):
                raise BudgetExceeded(f"spending cap reached: spent {spent:.2f}"
                                     f"{f' (+{self._reserved:.2f} in progress)' if self._reserved else ''}, "
                                     f"the next file would cost {estimate:.2f}, cap is {float(cap):.2f} "
                                     "(raise max_cost in config.toml; queued files wait)")
            self._reserved += estimate
        return estimate

    def _release_budget(self, amount: float) -> None:
        with self._locks_guard:
            self._reserved = max(0.0, self._reserved - amount)

    # ---- one file --------------------------------------------------------------------------

    def _media_lock(self, media_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._media_locks.setdefault(media_id, threading.Lock())

    def process_path(self, path: str, reporter: Reporter | None = None) -> Outcome:
        """Index one file. Raises MediaError (transient or permanent) on failure."""
        reporter = reporter or NullReporter()
        if self.remote is not None:  # --queue: a worker does the heavy part, the bookkeeping stays here
            return self.remote.process_path(path, reporter)
        storage = self.storage_for(path)
        st = storage.stat(path)
        if st is None:
            return self.remove_path(path)
        try:
            with storage.local_copy(path) as local:
                return self._process_local(path, str(local), st, reporter)
        except FileNotFoundError:  # deleted (or moved away) while being read: not a failure
            if storage.stat(path) is None:
                return self.remove_path(path)
            raise

    def _process_local(self, path: str, local: str, st: ObjectInfo, reporter: Reporter) -> Outcome:
        """process_path with ``local``, a file ffmpeg can read, holding the bytes of ``path``."""
        try:
            info = probe(local)
        except PermanentError as e:
            self._forget_replaced(path, local)  # new, unusable content: the old one leaves this path
            if not is_likely_media(path):  # an unknown type that is not media: skip quietly
                self.state.set_file(path, size=st.size, mtime=st.mtime, status="ignored")
                return Outcome(path, "ignored")
            if local != path:  # name the media, not the temporary copy
                raise PermanentError(str(e).replace(local, path)) from None
            raise
        try:
            media_id = content_id(local)
        except FileNotFoundError:  # deleted (or moved away) since the probe: that is not a failure
            return self.remove_path(path)
        previous = self.state.get_file(path)
        try:
            return self._process(path, st, info, media_id, previous, reporter, local)
        except BaseException:
            # the path already points at its new content: the old content must not stay
            # searchable under it while the new one fails (or waits for a retry)
            if previous and previous.media_id and previous.media_id != media_id:
                try:
                    rec = self.state.get_file(path)
                    if rec is None or rec.media_id != previous.media_id:
                        self._detach(previous.media_id, path)
                except Exception:
                    pass  # the original error matters more; a rescan repairs the rest
            raise

    def _forget_replaced(self, path: str, local: str | None = None) -> None:
        """The file at path failed to probe: if it held other content before, unlink that."""
        rec = self.state.get_file(path)
        if rec is None or not rec.media_id:
            return
        try:
            if content_id(local or path) == rec.media_id:
                return
        except OSError:
            return
        self.state.set_file(path, size=rec.size, mtime=rec.mtime, status=rec.status, error=rec.error)
        self._detach(rec.media_id, path)

    def _process(self, path: str, st: ObjectInfo, info: ProbeResult, media_id: str,
                 previous, reporter: Reporter, local: str | None = None) -> Outcome:
        local = local or path
        with self._media_lock(media_id):
            media = self.state.claimed(path, media_id, size=st.size, mtime=st.mtime, probe=info)
            self._cover(media_id, local, info)
            with _engine_failure(self.engine_setup()):
                transcriber = self.transcriber_for(info, self._language_hint(path, None))
            key = transcriber.cache_key
            transcribed = False
            segments = None
            if media.status == "indexed" and media.engine == key:
                self.index.update_media(media)  # a move, rename or copy: only the facets change
            else:
                transcript, segments, transcribed = (self.remote or self)._work(path, media, info, transcriber,
                                                                                reporter, local)
                self.index.upsert(media, segments)
                media.status, media.engine, media.language = "indexed", key, transcript.language
            self.state.indexed(path, media_id, size=st.size, mtime=st.mtime,
                               engine=key if segments is not None else None, language=media.language,
                               error=media.error)  # an enricher's problem (a bad sidecar): reported, not fatal
        if segments is not None:  # outside the lock: a slow listener must not hold up other workers
            self.pm.hook.media_indexed(media=media, segments=segments)
        if previous and previous.media_id and previous.media_id != media_id:
            self._detach(previous.media_id, path)  # the file at this path changed content
        return Outcome(path, "indexed", media_id=media_id, transcribed=transcribed)

    def _work(self, path: str, media: Media, info: ProbeResult, transcriber: Transcriber, reporter: Reporter,
              local: str) -> tuple[Transcript, list[Segment], bool]:
        """The heavy half of a file: its transcript (cached, or made now) and its enriched
        segments, stored; (transcript, segments, transcribed now). With a shared queue
        (``use_queue``) the coordinator's ``_work`` has a worker do it."""
        key = transcriber.cache_key
        transcript = self.state.get_transcript(media.id, key)
        transcribed = False
        if transcript is None:
            reporter.started(path, info.duration)
            transcript = self._transcribe(transcriber, path, info, media, reporter, local)
            self.state.transcribed(media.id, key, transcript, info.duration)
            transcribed = True
        return transcript, self._enrich(media, transcript, info, Path(local), key, location=path), transcribed

    def _cover(self, media_id: str, local: str, info: ProbeResult) -> None:
        """Extract the media's cover art while its file is at hand (once: see artwork.py); a
        problem with it never fails indexing (the web UI shows a placeholder)."""
        try:
            self.artwork.ensure(media_id, lambda: nullcontext(local), info)
        except Exception as e:
            print(terminal_safe(self.config.redact(f"mediaindex: no cover art for {local}: {e}")), file=sys.stderr)

    def _language_hint(self, path: str, transcriber: Transcriber | None) -> str | None:
        """The language the user says this file is in (a path hint, else the engine's section)."""
        hint = self.config.hint_for(path).get("language")
        if hint or transcriber is None:
            return hint
        return self.config.section(transcriber.family or transcriber.name).get("language")

    def _transcribe(self, transcriber: Transcriber, path: str, info: ProbeResult, media: Media,
                    reporter: Reporter, local: str | None = None) -> Transcript:
        key = transcriber.cache_key
        local = local or path

        def charge(seconds: float, cost: float, details: dict | None = None) -> None:
            self.state.charge(media.id, key, seconds, cost, details)

        reserved = self._reserve_budget(transcriber, info, self.config.hint_for(path))
        published: list[tuple[StorageBackend, str]] = []
        not_ready = False
        try:
            hint = self.config.hint_for(path)
            request = TranscribeRequest(
                path=Path(local), probe=info, uri=path,
                publish=lambda file: self._publish(Path(file), path, Path(local), media.id, published),
                language=self._language_hint(path, transcriber),
                prompt=hint.get("prompt"),
                progress=lambda done, total: reporter.progress(path, done, total),
                charge=charge,
                checkpoint=Checkpoint(load=lambda: self.state.get_checkpoint(media.id, key),
                                      save=lambda data: self.state.set_checkpoint(media.id, key, data)),
                hint=hint,
            )
            with _engine_failure(self.engine_setup()):
                return transcriber.transcribe(request)
        except NotReady:
            not_ready = True
            published.clear()  # the engine's task still reads them: kept until the job ends
            raise
        finally:
            self._release_budget(reserved)
            for storage, staged_key in published:
                self._unstage(storage, staged_key)
            if not not_ready:  # done or failed: what earlier NotReady calls kept goes too
                self._unstage_kept(media.id)

    def _unstage_kept(self, media_id: str) -> None:
        """The job on ``media_id`` ended (done or failed): delete what its ``NotReady`` calls kept."""
        prefix = f"mediaindex-staging/{media_id}-"
        for scheme, staged_key in self.state.staged():
            if staged_key.startswith(prefix) and scheme in self.storages:
                self._unstage(self.storages[scheme], staged_key)

    def _publish(self, file: Path, uri: str, local: Path, media_id: str,
                 published: list[tuple[StorageBackend, str]], record: bool = True) -> str:
        """A URL a cloud engine can fetch ``file`` from: the source presigned when ``file`` is
        the source and its storage can sign, else an upload to ``stage_storage`` (with ``record``,
        written to the state first, so a crash leaves a row for ``clean_staging``; deleted after
        the call). A shared queue's worker, which writes no state, passes ``record=False``."""
        if file == local:
            url = self.storage_for(uri).public_url(uri, expires=6 * 3600)
            if url:
                return url
        scheme = self.config.get("stage_storage")
        if not scheme or scheme not in self.storages:
            raise PermanentError("this transcriber needs a public URL: set stage_storage (e.g. \"s3\") in "
                                 "config.toml and configure that storage plugin")
        storage = self.storages[scheme]
        staged_key = f"mediaindex-staging/{media_id}-{uuid.uuid4().hex[:12]}{file.suffix.lower()}"
        if record:
            self.state.add_staged(scheme, staged_key, self._owner)
        published.append((storage, staged_key))
        staged = storage.stage(file, staged_key)
        url = storage.public_url(staged, expires=6 * 3600)
        if not url:
            raise PermanentError(f"stage_storage {scheme!r} cannot give a public URL")
        return url

    def _unstage(self, storage: StorageBackend, staged_key: str) -> bool:
        """Delete one staging upload and its record; False (the record stays) when that failed."""
        try:
            storage.unstage(staged_key)
        except Exception as e:  # a later run retries: the record stays
            print(terminal_safe(self.config.redact(f"mediaindex: could not delete staging upload {staged_key}: {e}")),
                  file=sys.stderr)
            return False
        self.state.remove_staged(storage.scheme, staged_key)
        return True

    def clean_staging(self) -> int:
        """Delete staging uploads left behind by an earlier run (a crash during a call)."""
        removed = 0
        for scheme, staged_key in self.state.staged(exclude_owner=self._owner):
            if scheme in self.storages and self._unstage(self.storages[scheme], staged_key):
                removed += 1
        return removed

    def _enrich(self, media: Media, transcript: Transcript, info: ProbeResult, path: Path | None,
                key: str | None = None, location: str | None = None) -> list[Segment]:
        """Run the enrichers on an engine's transcript and store the result (under ``key``); a
        stored result made by the same enrichers is used instead (no audio decoded again)."""
        enrichers = self._enrichers()
        stored = self.state.get_enriched(media.id, key, enrichers) if key else None
        if stored is not None:
            transcript.language = transcript.language or stored.language
            media.language = media.language or stored.language
            return stored.segments
        location = location or (str(path) if path else None)  # where the media lives: files beside it are read there
        beside = open_beside(location, self.storage_for(location).open if location else None)
        self.pm.hook.enrich_segments(media=media, transcript=transcript, probe=info, path=path, config=self.config,
                                     open_beside=beside)
        for seg in transcript.segments:
            seg.language = seg.language or transcript.language
        if key:
            self.state.save_enriched(media.id, key, enrichers, transcript)
        return transcript.segments

    def _enrichers(self) -> str:
        """"name@version,..." of the enrich_segments plugins (version: ``ENRICH_VERSION`` or
        ``__version__`` of the plugin): stored with each enriched transcript."""
        names = []
        for impl in self.pm.hook.enrich_segments.get_hookimpls():
            version = getattr(impl.plugin, "ENRICH_VERSION", None) or getattr(impl.plugin, "__version__", "")
            names.append(f"{impl.plugin_name}@{version}")
        return ",".join(sorted(names))

    def remove_path(self, path: str) -> Outcome:
        """A path is gone: forget it; the media leaves the index when no other path has it."""
        media_id = self.state.delete_file(path)
        if media_id:
            self._detach(media_id, path)
        self.pm.hook.media_removed(media_id=media_id or "", path=path)
        return Outcome(path, "removed", media_id=media_id)

    def _detach(self, media_id: str, path: str) -> None:
        with self._media_lock(media_id):
            media = self.state.get_media(media_id)
            if media is None:  # no live path left
                self.index.delete(media_id)
                self.state.set_media_status(media_id, "removed")
                self.artwork.delete(media_id)
            elif media.status == "indexed":
                self.index.update_media(media)

    def reindex(self, media_id: str) -> None:
        """Rebuild a media's documents from its cached transcript (never re-transcribes)."""
        media = self.state.get_media(media_id)
        key = media.engine if media is not None else None
        transcript = self.state.get_transcript(media_id, key) if key else self.state.get_transcript(media_id)
        info = self.state.get_probe(media_id)
        if media is None or transcript is None or info is None:
            raise PermanentError(f"{media_id}: no cached transcript to re-index")
        local = next((p for p in media.paths if is_local(p) and os.path.isfile(p)), None)
        self.index.upsert(media, self._enrich(media, transcript, info, Path(local) if local else None, key))

    def repair_index(self) -> str | None:
        """Set a damaged index aside, to be rebuilt by ``reconcile``; says what was done (None: sound)."""
        return self.index.repair()

    def reconcile(self) -> tuple[int, int]:
        """Make the index agree with the state database (after a crash, a lost or a new index).

        Media the state calls indexed but the index lacks are rebuilt from cached transcripts
        (never re-transcribed); documents of media the state no longer has are dropped.
        Returns (rebuilt, dropped).
        """
        in_index = self.index.media_ids()
        indexed = set(self.state.all_media_ids("indexed"))
        rebuilt = dropped = 0
        missing_words = getattr(self.index, "missing_words", None)  # the core's word list was lost or is new
        for media_id in (indexed - in_index) | (missing_words(indexed & in_index) if missing_words else set()):
            try:
                self.reindex(media_id)
                rebuilt += 1
            except PermanentError:
                self.state.set_media_status(media_id, "pending")
        for media_id in in_index - indexed:
            self.index.delete(media_id)
            dropped += 1
        return rebuilt, dropped

    # ---- scanning and the job queue --------------------------------------------------------

    def plan(self, roots: list[str]) -> ScanPlan:
        """Find new, changed and deleted files under roots; offline roots are reported, not purged;
        the data dir is never scanned."""
        roots = [normalize_location(r) for r in roots]
        for root in roots:
            self.storage_for(root)  # an unknown scheme is a usage error, before any work
        plan = plan_scan(roots, self.state.file_signatures(), exclude=[str(self.config.data_dir)],
                         storage_for=self.storage_for)
        for root in plan.roots:
            self.state.set_root(root, "offline" if root in plan.offline else "online")
        return plan

    def enqueue_plan(self, plan: ScanPlan) -> int:
        for f in plan.changed:
            self.state.mark_queued(f.path, f.size, f.mtime)
            self.state.jobs.enqueue(f.path, "index")
        for path in plan.deleted:
            self.state.jobs.enqueue(path, "remove")
        return len(plan.changed) + len(plan.deleted)

    def run_job(self, job: Job, reporter: Reporter | None = None, max_attempts: int | None = None) -> Outcome:
        """Run one claimed job; record its outcome in the queue and the files table."""
        reporter = reporter or NullReporter()
        try:
            if job.action == "remove" and (self.storage_for(job.path).stat(job.path) is None
                                           or (is_local(job.path) and is_ignored(job.path))):
                outcome = self.remove_path(job.path)
            elif job.action.startswith(TRANSCRIBE):  # queued by the web UI: this engine, the old
                outcome = self._transcribe_again(job, reporter)  # transcript searchable until then
            else:
                outcome = self.process_path(job.path, reporter)
            self.state.jobs.complete(job)
        except FatalError:
            self.state.jobs.release(job)
            raise
        except NotReady as e:  # the work goes on elsewhere: back in the queue, no attempt spent
            self.state.jobs.not_ready(job, e.retry_after if e.retry_after is not None else 60.0,
                                      self.config.redact(str(e)))
            self.state.set_file_status(job.path, "queued")
            outcome = Outcome(job.path, "retry", error=self.config.redact(str(e)))
        except Exception as e:  # one bad file never stops the others
            fatal = database_error(e, self.config.state_path)
            if fatal is not None:  # a full disk, a damaged state: nothing else can succeed either:
                try:                # stop, the job stays queued
                    self.state.jobs.release(job)
                except Exception:
                    pass  # left "running": recover() requeues it on the next start
                raise fatal from e
            if isinstance(e, UsageError):
                self.state.jobs.release(job)
                raise
            transient = e.transient if isinstance(e, MediaError) else True  # an unexpected bug: a few tries
            message = self.config.redact(str(e) if isinstance(e, MediaError) else f"{type(e).__name__}: {e}")
            if not isinstance(e, MediaError):
                self.print_traceback()
            if getattr(e, "outage", False):  # the index server is down, not this file: keep waiting
                max_attempts = max(job.attempts + 1, max_attempts or self.state.jobs.MAX_ATTEMPTS)
            retried = self.state.jobs.fail(job, message, transient, max_attempts=max_attempts,
                                           delay=getattr(e, "retry_after", None))
            kind = "transient" if transient else f"engine:{e.engine}" if getattr(e, "engine", None) else "file"
            self.state.failed(job.path, message, retry=retried, kind=kind)
            outcome = Outcome(job.path, "retry" if retried else "failed", error=message)
        reporter.finished(job.path, outcome.status, outcome.error)
        return outcome

    def _transcribe_again(self, job: Job, reporter: Reporter) -> Outcome:
        """A ``transcribe:NAME`` job: index the file with engine NAME (an unknown one fails the file,
        not the worker: the job may come from another process with other plugins)."""
        self._job_engine.name = job.action[len(TRANSCRIBE):]
        try:
            try:
                self.check_transcriber()
            except UsageError as e:
                raise PermanentError(str(e)) from None
            return self.process_path(job.path, reporter)
        finally:
            self._job_engine.name = None

    def run_jobs(self, *, workers: int = 1, reporter: Reporter | None = None, stop: threading.Event | None = None,
                 max_attempts: int | None = None, wait_for_retries: float = 0.0) -> list[Outcome]:
        """Drain the queue with a pool of workers until nothing is due (or stop is set).

        Retries due within ``wait_for_retries`` seconds are waited for; later ones stay queued.
        """
        self.clean_staging()
        pool = WorkerPool(self.state.jobs, lambda job: self.run_job(job, reporter, max_attempts), workers=workers,
                          drain=True, wait_for_retries=wait_for_retries, stop=stop)
        return pool.run()

    def engine_setup(self) -> str:
        """The chosen engine and a hash of the settings it runs with (``name@hash``): a file an
        engine refused is tried again when this changes (``State.stale_failures``)."""
        settings = json.dumps([self.config.settings, self.config.overrides], sort_keys=True, default=str)
        return f"{self.transcriber_name}@{hashlib.blake2b(settings.encode(), digest_size=6).hexdigest()}"

    def requeue_stale_failures(self) -> list[str]:
        """Queue again the failed files whose cause may be gone (the next scan indexes them)."""
        return self.state.stale_failures(self.engine_setup())

    def print_traceback(self) -> None:
        """The current exception's traceback on stderr, credentials removed (for bug reports)."""
        print(terminal_safe(self.config.redact(traceback.format_exc()), keep_newlines=True), file=sys.stderr, end="")

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
        self.state.close()

