"""The connection to Redis shared by the coordinator and the workers: URL checks, Dramatiq, keys.

Why Dramatiq (and not RQ or Celery)
-----------------------------------
The promise is: a worker killed with ``kill -9`` (or a machine that vanishes) has its job
delivered again to another worker after a visibility timeout; nothing is lost. Of the three
task queues on Redis:

- **Dramatiq**'s Redis broker moves a fetched message into the fetching worker's ack set (one
  Lua script, atomic) and deletes it only on ``ack``, after the actor returned. Every broker
  command refreshes the worker's heartbeat; queue maintenance, run by any live process, puts the
  unacked messages of workers whose heartbeat is older than ``heartbeat_timeout`` back on the
  queue (``brokers/redis/dispatch.lua``). That *is* a visibility timeout, bound to the worker's
  liveness rather than to the job's length, so a 2-hour transcription is never handed out twice
  while its worker is alive. Messages live in Redis (with AOF they survive a Redis restart).
- **RQ** moves the job of a dead worker to the ``FailedJobRegistry`` (an ``AbandonedJobError``)
  once its ``StartedJobRegistry`` entry expires: the job stops instead of being delivered again,
  unless a retry policy re-enqueues it, and the registry TTL has to be longer than the longest job.
- **Celery** on Redis redelivers unacknowledged ``acks_late`` tasks after ``visibility_timeout``
  counted from delivery, whether the worker is alive or not: a job longer than the timeout runs
  twice at once (the documented caveat), and the timeout has to be longer than any transcription.

So: Dramatiq, with ``heartbeat_timeout`` = our visibility timeout. At-least-once still means a
message can arrive twice (a worker that lost Redis for longer than the timeout but kept
working); the worker therefore holds a lock per job token while it works and stores one result
per token, and the coordinator writes a result once (``coordinator.py``). Paid engines never pay
twice because their checkpoint (a Qwen3-ASR task id) is saved in Redis before the first poll
and the next delivery polls the same task.

Keys (``mediaindex:`` prefix; Dramatiq's own live under the same namespace, queue ``jobs``):
``want:<token>`` (the coordinator waits for this dispatch), ``result:<token>`` (a list holding the
worker's answer), ``lock:<token>`` (a worker is on it), ``deliveries:<token>`` (attempts, for
poison jobs), ``active:<library>:<path hash>:<stage>`` (the token of a path's dispatch, so a
restarted coordinator waits for it instead of sending it again), ``ckpt`` (engine checkpoints
by ``media|engine``), ``charges:<library>`` (money spent, for the coordinator's ledger),
``workers`` (heartbeats: who is alive and what each is doing), ``done`` (recent completions).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import urlsplit

from mediaindex.errors import UsageError
from mediaindex.safety import add_secret, redact

NAMESPACE = "mediaindex"
QUEUE = "jobs"
ACTOR = "mediaindex_job"
RESULT_TTL = 7 * 24 * 3600  # seconds a result waits for its coordinator
DEFAULT_VISIBILITY = 60.0  # seconds without a heartbeat before a worker's jobs go to another
HEARTBEAT_EVERY = 2.0  # seconds between a worker's announcements


def is_loopback_host(host: str) -> bool:
    from mediaindex.web.security import is_loopback

    return is_loopback(host)


def check_url(url: str) -> None:
    """A ``UsageError`` for a URL that is malformed, or reaches beyond this machine without a
    password or TLS (like ``serve`` refuses a non-loopback bind without a token). The password
    is registered as a secret: it never appears in a message."""
    parts = urlsplit(url)
    if parts.password:
        add_secret(parts.password)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"--queue must be a redis://, rediss:// or unix:// URL, not {redact(url)!r}")
    if parts.scheme == "unix":
        return
    if not parts.hostname:
        raise UsageError(f"--queue {redact(url)!r} names no host (redis://HOST:6379/0)")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"--queue {redact(url)!r}: the port is not a number") from None
    if parts.scheme == "redis" and not parts.password and not is_loopback_host(parts.hostname):
        raise UsageError(f"refusing Redis at {parts.hostname} without a password or TLS: anyone on the network "
                         "could read and inject jobs. Use redis://:PASSWORD@host:6379/0 (Redis requirepass) or "
                         "rediss:// (TLS), or a loopback address")


def safe_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and status."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def settings(config) -> dict:
    """``[redis]`` in config.toml: ``visibility_timeout`` (s), ``maintenance_chance`` (of a million
    broker commands, how many also requeue dead workers' jobs), ``max_attempts``."""
    sec = config.section("redis") if config is not None else {}
    vt = float(os.environ.get("MEDIAINDEX_VISIBILITY_TIMEOUT") or sec.get("visibility_timeout") or DEFAULT_VISIBILITY)
    return {"visibility_timeout": max(1.0, vt),
            "maintenance_chance": int(sec.get("maintenance_chance") or (1_000_000 if vt < 10 else 20_000)),
            "max_attempts": int(sec.get("max_attempts") or 6)}


def path_hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class Link:
    """A Redis client, the Dramatiq broker and the job actor; ``fn`` runs the actor (workers only)."""

    def __init__(self, url: str, config=None, fn=None):
        import dramatiq
        import redis
        from dramatiq.brokers.redis import RedisBroker

        check_url(url)
        self.url = url
        self.settings = settings(config)
        vt = self.settings["visibility_timeout"]
        self.redis = redis.Redis.from_url(url, socket_timeout=max(10.0, vt), socket_connect_timeout=5,
                                          health_check_interval=30)
        self.broker = RedisBroker(url=url, namespace=NAMESPACE, heartbeat_timeout=int(vt * 1000),
                                  maintenance_chance=self.settings["maintenance_chance"])

        from .worker import Busy

        def retry_when(retries: int, exc: BaseException) -> bool:
            """Always: the actor turns every failure of the work into an answer; what is left is
            ``Busy`` (another delivery holds the job) or Redis away while answering. A message
            Dramatiq gave up on would leave its coordinator waiting forever."""
            return True

        self.actor = dramatiq.actor(fn or _not_here, actor_name=ACTOR, queue_name=QUEUE, broker=self.broker,
                                    retry_when=retry_when, min_backoff=int(vt * 1000), max_backoff=int(vt * 4000),
                                    time_limit=7 * 24 * 3600 * 1000, max_age=None, throws=(Busy,))

    # ---- keys ---------------------------------------------------------------------------------

    @staticmethod
    def key(*parts: str) -> str:
        return ":".join((NAMESPACE, *parts))

    def send(self, token: str, payload: dict) -> None:
        """Hand a job to the workers: ``want`` first, so a worker never drops a fresh message."""
        self.redis.set(self.key("want", token), "1", ex=RESULT_TTL)
        self.actor.send(token, payload)

    def queue_depth(self) -> dict:
        return {"queued": int(self.redis.llen(f"{NAMESPACE}:{QUEUE}")),
                "delayed": int(self.redis.hlen(f"{NAMESPACE}:{QUEUE}.DQ.msgs")),
                "unacked": max(0, int(self.redis.hlen(f"{NAMESPACE}:{QUEUE}.msgs")) - int(self.redis.llen(f"{NAMESPACE}:{QUEUE}")))}

    def workers(self, now: float | None = None) -> list[dict]:
        """Workers that announced themselves within three heartbeats (the others are gone)."""
        now = now or time.time()
        alive = []
        for wid, raw in self.redis.hgetall(self.key("workers")).items():
            try:
                w = json.loads(raw)
            except ValueError:
                continue
            if now - float(w.get("seen", 0)) <= max(3 * HEARTBEAT_EVERY, self.settings["visibility_timeout"]):
                alive.append({"id": wid.decode() if isinstance(wid, bytes) else wid, **w})
            elif now - float(w.get("seen", 0)) > 3600:
                self.redis.hdel(self.key("workers"), wid)  # long gone: forget
        return sorted(alive, key=lambda w: w["id"])

    def throughput(self, window: float = 300.0) -> float:
        """Jobs finished per minute over the last ``window`` seconds, by all workers."""
        now = time.time()
        self.redis.zremrangebyscore(self.key("done"), 0, now - 3600)
        n = self.redis.zcount(self.key("done"), now - window, now)
        return round(n * 60.0 / window, 2)

    def status(self) -> dict:
        """Workers, what each is doing, queue depth and throughput (for ``status`` and /api/status)."""
        try:
            return {"url": safe_url(self.url), "workers": self.workers(), "queue": self.queue_depth(),
                    "per_minute": self.throughput()}
        except Exception as e:  # Redis down: say so, never fail the status
            return {"url": safe_url(self.url), "error": redact(f"{type(e).__name__}: {e}")}


def _not_here(token, payload):  # the coordinator only sends
    raise RuntimeError("the job actor runs in `mediaindex worker`")
