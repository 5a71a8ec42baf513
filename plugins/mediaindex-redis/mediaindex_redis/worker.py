"""``mediaindex worker``: the heavy half of a job (fetch by URI, probe, transcribe, enrich).

A worker keeps no state of its own: it reads the media through the storage plugin of its URI
(a bucket, or a shared mount at the same path), uses its own config and credentials (its
``--data-dir`` config.toml and environment: nothing secret travels in a job), and answers
through Redis. Two stages per file:

- ``probe``: content id (the hash), probe result; the coordinator then decides (a moved file
  is never transcribed again, the spending cap is checked there);
- ``work``: transcribe with the engine the coordinator chose (unless it sent a cached
  transcript), then enrich; the engine's checkpoint is kept in Redis (``ckpt``) before the
  engine goes on, its spending is pushed to ``charges:<library>`` as it happens.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict
from pathlib import Path

from mediaindex.backends import Checkpoint, TranscribeRequest
from mediaindex.errors import FatalError, MediaError, NotReady, PermanentError, TransientError, UsageError
from mediaindex.models import Media, ProbeResult, Transcript
from mediaindex.pipeline import content_id
from mediaindex.probe import probe
from mediaindex.safety import redact

from .link import HEARTBEAT_EVERY, RESULT_TTL, Link


class Busy(Exception):
    """Another delivery of this job is being worked on (it holds the lock): try again later."""


class Worker:
    """One worker process: ``threads`` jobs at once, a heartbeat, the Dramatiq worker around it."""

    def __init__(self, url: str, pipeline, threads: int = 1, log=None):
        self.pipeline = pipeline
        self.link = Link(url, pipeline.config, fn=self.handle)
        self.threads = max(1, int(threads))
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.doing: dict[str, dict] = {}  # token -> {"path", "stage", "since"}
        self.done = 0
        self.failed = 0
        self.started = time.time()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.log = log or (lambda msg: print(redact(msg), file=sys.stderr, flush=True))
        self._dramatiq = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "Worker":
        from dramatiq import Worker as DramatiqWorker

        threading.Thread(target=self._heartbeat, name="mediaindex-heartbeat", daemon=True).start()
        # an idle worker asks for work at least every 250 ms (Dramatiq backs off up to this)
        self._dramatiq = DramatiqWorker(self.link.broker, worker_threads=self.threads,
                                        worker_timeout=250)
        self._dramatiq.queue_prefetch = self.threads  # no hoarding: a free worker takes the next job
        self._dramatiq.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running ones finish within ``timeout`` (else they are delivered again)."""
        self.stopping.set()
        if self._dramatiq is not None:
            self._dramatiq.stop(timeout=int(timeout * 1000))
        try:
            self.link.redis.hdel(self.link.key("workers"), self.id)
        except Exception:
            pass

    def _heartbeat(self) -> None:
        """Announce this worker (``mediaindex status``) and keep the locks of its jobs alive."""
        vt_ms = int(self.link.settings["visibility_timeout"] * 1000)
        while not self.stopping.is_set():
            try:
                with self.lock:
                    tokens = list(self.doing)
                pipe = self.link.redis.pipeline()
                pipe.hset(self.link.key("workers"), self.id, self._announcement())
                for token in tokens:
                    pipe.pexpire(self.link.key("lock", token), vt_ms)
                pipe.execute()
            except Exception as e:  # Redis away for a moment: Dramatiq reconnects, so do we
                self.log(f"heartbeat: {type(e).__name__}: {e}")
            self.stopping.wait(HEARTBEAT_EVERY)

    def _announcement(self, finished: str | None = None) -> str:
        """This worker as ``status`` shows it: counters and the jobs in hand (less ``finished``)."""
        with self.lock:
            doing = [{"path": d["path"], "stage": d["stage"], "for": round(time.time() - d["since"], 1)}
                     for t, d in self.doing.items() if t != finished]
            return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "threads": self.threads,
                               "started": self.started, "seen": time.time(), "done": self.done,
                               "failed": self.failed, "doing": doing})

    # ---- one job ------------------------------------------------------------------------------

    def handle(self, token: str, payload: dict) -> None:
        """The actor: skip what nobody waits for any more, hold the job's lock, work, answer."""
        r = self.link.redis
        key = self.link.key
        if not r.exists(key("want", token)) or r.exists(key("result", token)):
            return  # cancelled, or answered already (a duplicate delivery)
        vt_ms = int(self.link.settings["visibility_timeout"] * 1000)
        if not r.set(key("lock", token), self.id, nx=True, px=vt_ms):
            raise Busy(f"job {token} is being worked on elsewhere")
        with self.lock:
            self.doing[token] = {"path": payload.get("uri", ""), "stage": payload.get("stage", ""), "since": time.time()}
        try:
            attempts = r.incr(key("deliveries", token))
            r.expire(key("deliveries", token), RESULT_TTL)
            if attempts > self.link.settings["max_attempts"]:
                result = {"status": "error", "transient": False,
                          "error": f"processing stopped {attempts - 1} times while this file was being worked on "
                                   "(did it crash a worker?); fix the cause, then touch the file to retry"}
            else:
                t0 = time.perf_counter()
                result = self.run(payload)
                result["took"] = time.perf_counter() - t0  # the coordinator tells the queue's share apart
            with self.lock:  # counted before the answer leaves, so `status` never lags the results
                if result["status"] == "error":
                    self.failed += 1
                elif payload.get("stage") == "work":
                    self.done += 1
            self._answer(token, result)
        finally:
            with self.lock:
                self.doing.pop(token, None)
            try:
                r.delete(key("lock", token))
            except Exception:
                pass  # it expires

    def _answer(self, token: str, result: dict) -> None:
        """Store the answer for the coordinator; Redis away: keep trying for a while, then let
        Dramatiq deliver the job again (the checkpoint keeps a paid engine from paying twice)."""
        data = json.dumps(result, ensure_ascii=False)
        deadline = time.monotonic() + max(60.0, 2 * self.link.settings["visibility_timeout"])
        while True:
            try:
                pipe = self.link.redis.pipeline()
                pipe.hset(self.link.key("workers"), self.id, self._announcement(finished=token))
                pipe.rpush(self.link.key("result", token), data)
                pipe.expire(self.link.key("result", token), RESULT_TTL)
                if result.get("stage") == "work":  # the pace `status` shows (the last hour is kept)
                    pipe.zadd(self.link.key("done"), {token: time.time()})
                    pipe.zremrangebyscore(self.link.key("done"), 0, time.time() - 3600)
                pipe.execute()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, payload: dict) -> dict:
        """One stage of one file; every failure becomes an answer (never an exception)."""
        stage = payload.get("stage")
        uri = payload["uri"]
        try:
            storage = self.pipeline.storage_for(uri)
            if storage.stat(uri) is None:
                return {"stage": stage, "status": "gone"}
            with storage.local_copy(uri) as local:
                if stage == "probe":
                    return self._probe(uri, str(local))
                return self._work(payload, uri, Path(local))
        except FileNotFoundError:
            return {"stage": stage, "status": "gone"}
        except NotReady as e:
            return {"stage": stage, "status": "not_ready", "error": redact(str(e)), "retry_after": e.retry_after}
        except (UsageError, FatalError) as e:
            kind = "usage" if isinstance(e, UsageError) else "fatal"
            return {"stage": stage, "status": "error", "kind": kind, "transient": True,
                    "error": redact(f"worker {self.id}: {e}")}
        except MediaError as e:
            return {"stage": stage, "status": "error", "transient": e.transient, "error": redact(str(e)),
                    "retry_after": getattr(e, "retry_after", None), "outage": bool(getattr(e, "outage", False))}
        except Exception as e:  # a bug: a few tries, with its traceback in the worker's log
            self.log(traceback.format_exc())
            return {"stage": stage, "status": "error", "transient": True,
                    "error": redact(f"worker {self.id}: {type(e).__name__}: {e}")}

    def _probe(self, uri: str, local: str) -> dict:
        try:
            info = probe(local)
        except PermanentError as e:
            return {"stage": "probe", "status": "error", "transient": False, "probe_failed": True,
                    "error": redact(str(e).replace(local, uri))}
        return {"stage": "probe", "status": "ok", "media_id": content_id(local), "probe": asdict(info)}

    def _work(self, payload: dict, uri: str, local: Path) -> dict:
        p = self.pipeline
        media = Media(**payload["media"])
        info = ProbeResult(**payload["probe"])
        if content_id(local) != media.id:  # changed since the probe: the coordinator starts over
            raise TransientError(f"{uri}: changed since it was probed; trying again")
        key = payload["engine_key"]
        transcript = Transcript.from_dict(payload["transcript"]) if payload.get("transcript") else None
        transcribed = None
        if transcript is None:
            transcript = self._transcribe(payload, uri, local, media, info)
            transcribed = transcript.to_dict()
        enriched = Transcript.from_dict(transcript.to_dict())
        segments = p._enrich(media, enriched, info, local, None, location=uri)
        enriched.segments = segments
        return {"stage": "work", "status": "ok", "transcript": transcribed,
                "enriched": {**enriched.to_dict(), "raw": None}, "enrichers": p._enrichers(), "engine_key": key}

    def _transcribe(self, payload: dict, uri: str, local: Path, media: Media, info: ProbeResult) -> Transcript:
        p = self.pipeline
        name, key, library = payload["engine"], payload["engine_key"], payload["library"]
        transcriber = p.transcribers.get(name)
        if transcriber is None:
            raise UsageError(f"this worker has no transcriber {name!r} (install its plugin here)")
        if transcriber.cache_key != key:
            raise UsageError(f"transcriber {name!r} is set up differently here ({transcriber.cache_key} "
                             f"instead of the coordinator's {key}): give workers the same config")
        r, field = self.link.redis, f"{media.id}|{key}"

        def load():
            raw = r.hget(self.link.key("ckpt"), field)
            return json.loads(raw) if raw else payload.get("checkpoint")

        def save(data):
            r.hset(self.link.key("ckpt"), field, json.dumps(data))

        def charge(seconds, cost, details=None):
            r.rpush(self.link.key("charges", library), json.dumps(
                {"id": uuid.uuid4().hex, "media_id": media.id, "engine": key, "seconds": seconds, "cost": cost,
                 "details": details or {}}))

        published: list = []
        def publish(file) -> str:  # the core's publish, minus the state row a worker cannot write
            return self.pipeline._publish(Path(file), uri, local, media.id, published, record=False)

        request = TranscribeRequest(
            path=local, probe=info, uri=uri, publish=publish,
            language=payload.get("language"), prompt=payload.get("prompt"), charge=charge,
            checkpoint=Checkpoint(load=load, save=save))
        try:
            return transcriber.transcribe(request)
        finally:
            for storage, staged in published:
                try:
                    storage.unstage(staged)
                except Exception as e:
                    self.log(f"could not delete staging upload {staged}: {e}")
