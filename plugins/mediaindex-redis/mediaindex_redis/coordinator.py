"""The coordinator's half of a job: decisions and bookkeeping; the work goes to a worker.

``Pipeline.use_queue(url)`` installs a :class:`Coordinator`; ``Pipeline.process_path`` then calls
``Coordinator.process_path``. The state database, the job queue (SQLite: attempts, backoff, one
job per path), the transcript cache, the ledger, checkpoints and the index stay here, with one
writer; a worker only fetches, probes, transcribes and enriches. Per file:

1. ``probe`` on a worker → the content id and probe; a moved or copied file is recognised here
   and never transcribed again;
2. the engine is routed and the spending cap checked here (``Pipeline._reserve_budget``: the cap
   holds across all workers); ``work`` on a worker → the transcript (unless cached) and its
   enrichment, stored and indexed here once, whatever number of times it arrives.

Each dispatch has a token; its answer is a list in Redis read without removing it and deleted
only once stored in SQLite, so a coordinator killed in between finds it again after a restart
(``active:<library>:<path>:<stage>`` → token). Money spent on the way (``charges:<library>``)
is booked in the ledger as it arrives, each charge once (its id).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict

from mediaindex.backends import MediaError, TransientError
from mediaindex.errors import NotReady
from mediaindex.models import ProbeResult, Transcript
from mediaindex.pipeline import Outcome
from mediaindex.scan import is_likely_media

from .link import RESULT_TTL, Link, path_hash, safe_url

def _redis_errors():
    import redis

    return (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class Coordinator:
    def __init__(self, pipeline, url: str):
        self.p = pipeline
        self.link = Link(url, pipeline.config)
        self.library = pipeline.state.library_id()
        self._charges = threading.Lock()
        self._attached: set[str] = set()  # tokens this process sent or re-sent
        # dispatches answered, their wall time here, the time workers spent on them (bench/bench_redis.py)
        self.stats = {"dispatches": 0, "wall": 0.0, "work": 0.0}
        try:
            self.link.redis.ping()  # fail at the start, not on the first file
        except Exception as e:
            from mediaindex.errors import UsageError
            from mediaindex.safety import redact

            raise UsageError(redact(f"cannot reach the queue at {safe_url(url)}: {e}")) from None

    def status(self) -> dict:
        return self.link.status()

    # ---- one dispatch ---------------------------------------------------------------------

    def call(self, path: str, stage: str, payload: dict) -> tuple[str, dict]:
        """Send one stage of a file to the workers (or wait for the one an earlier coordinator
        sent) and wait for the answer; Redis going away and coming back is waited out."""
        errors = _redis_errors()
        r, key = self.link.redis, self.link.key
        active = key("active", self.library, path_hash(path), stage)
        payload = {**payload, "stage": stage, "uri": path}
        token = None
        last_drain = 0.0
        began = time.perf_counter()
        while True:
            try:
                if token is None:  # (again after a Redis error: never wait for a message not sent)
                    old = r.get(active)
                    if old is not None and r.exists(key("want", old.decode())):
                        sent = old.decode()
                        if sent not in self._attached:  # sent by a coordinator that stopped (or half-sent):
                            self.link.actor.send(sent, payload)  # may be gone; one lock, one answer
                    else:
                        sent = uuid.uuid4().hex
                        r.set(active, sent, ex=RESULT_TTL)
                        self.link.send(sent, payload)
                    self._attached.add(sent)
                    token = sent
                raw = r.brpoplpush(key("result", token), key("result", token), timeout=1)
                if raw is not None:
                    res = json.loads(raw)
                    with self._charges:
                        self.stats["dispatches"] += 1
                        self.stats["wall"] += time.perf_counter() - began
                        self.stats["work"] += float(res.get("took") or 0.0)
                    return token, res
                if time.monotonic() - last_drain > 2.0:
                    self.drain_charges()
                    last_drain = time.monotonic()
                if not r.exists(key("want", token)):  # Redis lost its data (no persistence): again
                    r.set(active, token, ex=RESULT_TTL)
                    self.link.send(token, payload)
            except errors:
                time.sleep(0.5)

    def finish(self, token: str, path: str, stage: str) -> None:
        """The answer is stored: forget the dispatch (a late duplicate finds nothing to do)."""
        key = self.link.key
        self.link.redis.delete(key("want", token), key("result", token), key("deliveries", token),
                               key("active", self.library, path_hash(path), stage))
        self._attached.discard(token)

    def drain_charges(self) -> None:
        """Book what workers spent (each charge once, by its id): the cap sees it at once."""
        k = self.link.key("charges", self.library)
        state = self.p.state
        with self._charges:
            items = self.link.redis.lrange(k, 0, -1)
            for raw in items:
                c = json.loads(raw)
                if state.conn.execute("SELECT 1 FROM ledger WHERE kind = 'charge' AND "
                                      "json_extract(details, '$.charge_id') = ?", (c["id"],)).fetchone():
                    continue
                state.charge(c["media_id"], c["engine"], float(c["seconds"]), float(c["cost"]),
                             {**(c.get("details") or {}), "charge_id": c["id"]})
            if items:
                self.link.redis.ltrim(k, len(items), -1)

    @staticmethod
    def error(res: dict) -> Exception:
        """A worker's failure as the exception the pipeline records (a worker's missing plugin or
        rejected key is that worker's problem: retried, maybe elsewhere, never a stop here)."""
        if res.get("status") == "not_ready":
            return NotReady(res.get("error") or "not ready", retry_after=res.get("retry_after"))
        e = MediaError(res.get("error") or "failed on a worker", transient=bool(res.get("transient")))
        if res.get("retry_after") is not None:
            e.retry_after = res["retry_after"]
        if res.get("outage"):
            e.outage = True
        return e

    # ---- one file -------------------------------------------------------------------------

    def process_path(self, path: str, reporter) -> Outcome:
        p = self.p
        st = p.storage_for(path).stat(path)
        if st is None:
            return p.remove_path(path)
        token, res = self.call(path, "probe", {})
        self.finish(token, path, "probe")
        if res["status"] == "gone":
            if p.storage_for(path).stat(path) is None:
                return p.remove_path(path)
            raise TransientError(f"{path}: could not be read on the worker (is it on the shared storage?)")
        if res["status"] != "ok":
            if res.get("probe_failed") and not is_likely_media(path):
                p.state.set_file(path, size=st.size, mtime=st.mtime, status="ignored")
                return Outcome(path, "ignored")
            raise self.error(res)
        info, media_id = ProbeResult(**res["probe"]), res["media_id"]
        previous = p.state.get_file(path)
        try:  # the core's steps, with _work (below) done by a worker
            return p._process(path, st, info, media_id, previous, reporter)
        except BaseException:
            # the path already points at its new content: the old one must not stay searchable under it
            if previous and previous.media_id and previous.media_id != media_id:
                rec = p.state.get_file(path)
                if rec is None or rec.media_id != previous.media_id:
                    p._detach(previous.media_id, path)
            raise

    def _work(self, path, media, info, transcriber, reporter, local=None):
        """``Pipeline._work`` on a worker: (transcript, enriched segments, transcribed now?),
        stored here once; nothing is sent when both are cached."""
        p, state = self.p, self.p.state
        key = transcriber.cache_key
        transcript = state.get_transcript(media.id, key)
        stored = state.get_enriched(media.id, key, p._enrichers()) if transcript is not None else None
        if stored is not None:
            transcript.language = transcript.language or stored.language
            media.language = media.language or stored.language
            return transcript, stored.segments, False
        payload = {"media": asdict(media), "probe": asdict(info), "engine": transcriber.name, "engine_key": key,
                   "library": self.library, "language": p._language_hint(path, transcriber),
                   "prompt": p.config.hint_for(path).get("prompt"),
                   "checkpoint": state.get_checkpoint(media.id, key),
                   "transcript": transcript.to_dict() if transcript is not None else None}
        reserved = p._reserve_budget(transcriber, info) if transcript is None else 0.0
        try:
            if transcript is None:
                reporter.started(path, info.duration)
            token, res = self.call(path, "work", payload)
        finally:
            p._release_budget(reserved)
        self.drain_charges()  # before the transcript: its cost is not booked twice
        ckpt_field = f"{media.id}|{key}"
        if res["status"] != "ok":
            if res["status"] == "not_ready":  # keep the engine's checkpoint here too
                raw = self.link.redis.hget(self.link.key("ckpt"), ckpt_field)
                if raw:
                    state.set_checkpoint(media.id, key, json.loads(raw))
            self.finish(token, path, "work")
            if res["status"] == "gone":
                raise TransientError(f"{path}: gone from the worker's view while being indexed")
            raise self.error(res)
        transcribed = False
        if res.get("transcript") and state.get_transcript(media.id, key) is None:  # a second arrival: written once
            transcript = Transcript.from_dict(res["transcript"])
            state.transcribed(media.id, key, transcript, info.duration)
            transcribed = True
        elif transcript is None:
            transcript = state.get_transcript(media.id, key)
        enriched = Transcript.from_dict(res["enriched"])
        state.save_enriched(media.id, key, res["enrichers"], enriched)
        self.link.redis.hdel(self.link.key("ckpt"), ckpt_field)
        self.finish(token, path, "work")
        return transcript, enriched.segments, transcribed
