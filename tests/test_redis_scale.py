"""One coordinator, several worker processes, a real redis-server (plugins/mediaindex-redis).

Every test starts its own ``redis-server`` on a free loopback port (the Debian package; CI
installs it: scripts/setup --test) and real ``mediaindex worker`` processes. The transcriber
is the corpus manifest one (fast; ``MEDIAINDEX_MANIFEST_LOG`` records each call in every
process) or Qwen3-ASR through the loopback double (tests/dashscope_double.py counts what was
submitted and billed). A short visibility timeout ([redis] visibility_timeout = 2) keeps the
redelivery tests fast; nothing here asserts a duration.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
VT = 2  # seconds: the visibility timeout of these tests
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PLUGINS = "mediaindex-manifest-transcriber,mediaindex-redis"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on 127.0.0.1; ``persist``: AOF in its folder (survives restarts)."""

    def __init__(self, folder: Path, persist: bool = False):
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server is not installed: `apt-get install redis-server` "
                        "(scripts/setup --test installs it); these tests need a real one")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--daemonize", "no", "--protected-mode", "yes"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.proc.returncode}")
                time.sleep(0.05)
        client.close()
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis(port=self.port)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def redis_persistent(tmp_path):
    server = RedisServer(tmp_path / "redis-aof", persist=True).start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def env(installed_manifest_plugin, tmp_path):
    """The environment of every process: this checkout first, the manifest transcriber (its
    calls logged to ``calls.log``) and the redis plugin loaded."""
    e = dict(installed_manifest_plugin)
    e["MEDIAINDEX_LOAD_PLUGINS"] = PLUGINS
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE / "plugins" / "mediaindex-manifest-transcriber"),
                                       str(ROOT / "plugins" / "mediaindex-redis"), e.get("PYTHONPATH", "")])
    e["MEDIAINDEX_MANIFEST_LOG"] = str(tmp_path / "calls.log")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def data_dir_for(tmp_path: Path, name: str, extra: str = "") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "config.toml").write_text(f'transcriber = "manifest"\n{extra}\n[redis]\nvisibility_timeout = {VT}\n')
    return d


class Workers:
    """``mediaindex worker`` processes (each its own data dir: workers keep no state)."""

    def __init__(self, tmp_path: Path, env: dict, url: str, cmd: list[str] | None = None):
        self.tmp_path, self.env, self.url = tmp_path, env, url
        self.cmd = cmd or [sys.executable, "-m", "mediaindex"]
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1, threads: int = 1, env: dict | None = None,
              config: str | None = None) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            d = data_dir_for(self.tmp_path, f"worker{i}")
            if config is not None:
                (d / "config.toml").write_text(config)
            log = open(self.tmp_path / f"worker{i}.log", "wb")
            p = subprocess.Popen([*self.cmd, "worker", "--queue", self.url, "--workers", str(threads),
                                  "--data-dir", str(d)], env={**self.env, **(env or {})}, stdout=log, stderr=log)
            self.procs.append(p)
            started.append(p)
        return started

    def logs(self) -> str:
        return "\n".join((self.tmp_path / f"worker{i}.log").read_text(errors="replace") for i in range(len(self.procs)))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(30)


@pytest.fixture
def workers(tmp_path, env, redis_server):
    w = Workers(tmp_path, env, redis_server.url)
    yield w
    w.stop()


def coordinator(args: list[str], env: dict, data: Path, url: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mediaindex", *args, "--data-dir", str(data), "--queue", url],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err).decode(errors="replace")


def wait_for(check, what: str, timeout: float = 120.0):
    """Poll until ``check()`` is truthy (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"gave up waiting: {what}")


def media_folder(corpus: Path) -> Path:
    """The corpus' real media that index cleanly (the broken ones have their own tests)."""
    shutil.rmtree(corpus / "broken")
    return corpus


def indexed_once(data: Path, folder: Path) -> dict:
    """Every media file under folder indexed, one transcript (ledger entry) per media, each
    media's documents in the index once; returns the state summary."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    p = Pipeline(Config.load(data), transcriber="manifest")
    try:
        files = {str(f) for f in folder.rglob("*") if f.is_file() and f.suffix != ".txt"}
        recs = {r.path: r for r in p.state.files_under(str(folder))}
        assert {f: recs[f].status for f in files if f in recs} == {f: "indexed" for f in files}, \
            {f: (recs[f].status, recs[f].error) if f in recs else None for f in files}
        media = set(p.state.all_media_ids("indexed"))
        assert len(media) == len({r.media_id for r in recs.values() if r.status == "indexed"})
        per_media = dict(p.state.conn.execute(
            "SELECT media_id, COUNT(*) FROM ledger WHERE kind = 'transcript' GROUP BY media_id").fetchall())
        assert per_media == {m: 1 for m in media}, per_media  # transcribed (and written) once each
        assert p.index.media_ids() == media
        assert not p.state.jobs.depth()
        return p.state.summary()
    finally:
        p.close()


def redis_dump(client) -> bytes:
    """Every value in the Redis database (jobs, answers, checkpoints, heartbeats)."""
    out = []
    for k in client.keys("*"):
        kind = client.type(k)
        if kind == b"string":
            out.append(client.get(k))
        elif kind == b"list":
            out += client.lrange(k, 0, -1)
        elif kind == b"hash":
            out += [v for kv in client.hgetall(k).items() for v in kv]
        elif kind in (b"set", b"zset"):
            out += list(client.zrange(k, 0, -1) if kind == b"zset" else client.smembers(k))
    return b"\n".join(out)


def calls(tmp_path: Path) -> list[tuple[int, str]]:
    log = tmp_path / "calls.log"
    if not log.exists():
        return []
    return [(int(pid), path) for pid, path in (ln.split(" ", 1) for ln in log.read_text().splitlines())]


# ---- the plain case --------------------------------------------------------------------------


@pytest.mark.hook("register_queues", subprocess=True)  # the coordinator finds the redis plugin
def test_a_folder_is_indexed_exactly_once_by_several_workers(corpus, tmp_path, env, redis_server, workers):
    folder = media_folder(corpus)
    data = data_dir_for(tmp_path, "coordinator")
    workers.start(3)
    code, out = finish(coordinator(["index", str(folder)], env, data, redis_server.url))
    assert code == 0, out + workers.logs()
    indexed_once(data, folder)
    done = calls(tmp_path)
    assert sorted(p for _, p in done) == sorted(set(p for _, p in done))  # no file transcribed twice
    assert len({pid for pid, _ in done}) >= 2  # the work was shared: several workers transcribed
    # the coordinator wrote no transcription of its own: every call was in a worker process
    assert {pid for pid, _ in done} <= {p.pid for p in workers.procs}
    # nothing left behind in Redis but the workers' own announcements and Dramatiq's bookkeeping
    leftovers = [k.decode() for k in redis_server.client().keys("mediaindex:*")
                 if k.decode().split(":")[1] in ("want", "result", "active", "lock", "deliveries")]
    assert leftovers == []

    # once more: nothing new, nothing sent
    code, out = finish(coordinator(["index", str(folder)], env, data, redis_server.url))
    assert code == 0 and len(calls(tmp_path)) == len(done), out


def test_status_shows_workers_queue_and_throughput(corpus, tmp_path, env, redis_server, workers):
    folder = media_folder(corpus)
    data = data_dir_for(tmp_path, "coordinator")
    workers.start(2, threads=2)
    code, out = finish(coordinator(["index", str(folder)], env, data, redis_server.url))
    assert code == 0, out
    res = subprocess.run([sys.executable, "-m", "mediaindex", "status", "--json", "--data-dir", str(data),
                          "--queue", redis_server.url], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    q = json.loads(res.stdout)["queue"]
    assert len(q["workers"]) == 2 and {w["threads"] for w in q["workers"]} == {2}
    assert sum(w["done"] for w in q["workers"]) >= len(calls(tmp_path))
    assert q["per_minute"] > 0 and q["queue"]["queued"] == 0
    text = subprocess.run([sys.executable, "-m", "mediaindex", "status", "--data-dir", str(data),
                           "--queue", redis_server.url], env=env, capture_output=True, text=True)
    assert "2 worker(s)" in text.stdout and "idle" in text.stdout, text.stdout + text.stderr


# ---- failures: a worker killed, Redis restarted, the coordinator restarted -------------------


def test_a_worker_killed_mid_job_has_its_job_delivered_to_another(corpus, tmp_path, env, redis_server, workers):
    folder = media_folder(corpus)
    data = data_dir_for(tmp_path, "coordinator")
    slow = {"MEDIAINDEX_MANIFEST_DELAY": "2"}
    victim = workers.start(1, env=slow)[0]
    proc = coordinator(["index", str(folder)], env, data, redis_server.url)
    try:
        first = wait_for(lambda: [p for pid, p in calls(tmp_path) if pid == victim.pid], "the first transcription")
        victim.kill()  # kill -9 in the middle of a transcription
        victim.wait()
        workers.start(2)  # the survivors
        code, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, out + workers.logs()
    indexed_once(data, folder)
    again = [pid for pid, p in calls(tmp_path) if p == first[0]]
    assert len(again) == 2 and again[1] != victim.pid  # delivered again, to another worker


def test_a_redis_restart_loses_nothing(corpus, tmp_path, env, redis_persistent):
    folder = media_folder(corpus)
    data = data_dir_for(tmp_path, "coordinator")
    pool = Workers(tmp_path, env, redis_persistent.url)
    pool.start(2, env={"MEDIAINDEX_MANIFEST_DELAY": "0.5"})
    proc = coordinator(["index", str(folder)], env, data, redis_persistent.url)
    try:
        wait_for(lambda: len(calls(tmp_path)) >= 2, "two transcriptions")
        redis_persistent.stop(kill=True)  # mid-run, jobs queued, running and answered
        time.sleep(0.5)
        redis_persistent.start()
        code, out = finish(proc)
        assert [w.poll() for w in pool.procs] == [None, None]  # the workers rode it out
    finally:
        if proc.poll() is None:
            proc.kill()
        pool.stop()
    assert code == 0, out + pool.logs()
    indexed_once(data, folder)


def test_a_coordinator_killed_and_restarted_waits_for_the_jobs_it_sent(corpus, tmp_path, env, redis_server,
                                                                         workers):
    folder = media_folder(corpus)
    data = data_dir_for(tmp_path, "coordinator")
    workers.start(2, env={"MEDIAINDEX_MANIFEST_DELAY": "1"})
    proc = coordinator(["index", str(folder)], env, data, redis_server.url)
    wait_for(lambda: calls(tmp_path), "a transcription")
    proc.kill()  # kill -9 of the coordinator: jobs in flight on the workers
    proc.wait()
    in_flight = len(calls(tmp_path))
    code, out = finish(coordinator(["index", str(folder)], env, data, redis_server.url))
    assert code == 0, out + workers.logs()
    indexed_once(data, folder)
    done = [p for _, p in calls(tmp_path)]
    assert sorted(done) == sorted(set(done)), done  # the restarted coordinator took the answers sent before
    assert in_flight >= 1


def test_a_file_that_keeps_killing_workers_fails_after_the_attempts_with_its_reason(corpus_src, tmp_path, env,
                                                                                   redis_server, workers):
    folder = tmp_path / "media"
    shutil.copytree(corpus_src / "talks", folder)
    data = data_dir_for(tmp_path, "coordinator")
    crash = {"MEDIAINDEX_MANIFEST_CRASH": "bread_baking.m4a"}
    poison = f'transcriber = "manifest"\n[redis]\nvisibility_timeout = {VT}\nmax_attempts = 2\n'  # 2 deliveries
    workers.start(1, env=crash, config=poison)
    proc = coordinator(["index", str(folder)], env, data, redis_server.url)
    try:
        while proc.poll() is None:  # a supervisor: a crashed worker is started again
            if all(p.poll() is not None for p in workers.procs):
                workers.start(1, env=crash, config=poison)
            assert len(workers.procs) < 10, "the poison job was delivered again and again"
            time.sleep(0.1)
        code, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, out
    assert "processing stopped 2 times" in out and "bread_baking.m4a" in out, out
    crashed = [p for _, p in calls(tmp_path) if p.endswith("bread_baking.m4a")]
    assert len(crashed) == 2  # two deliveries, two crashes, then no more
    from mediaindex.state import State

    state = State(data / "state.sqlite3")
    try:
        rec = state.get_file(str(folder / "bread_baking.m4a"))
        assert rec.status == "failed" and "processing stopped 2 times" in rec.error
        assert state.get_file(str(folder / "space_station.mp3")).status == "indexed"
    finally:
        state.close()


# ---- Qwen3-ASR through the queue: never paid twice --------------------------------------------

DS_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import mediaindex_dashscope.plugin as ds_plugin
    from dashscope_double import staging_plugin
    from mediaindex.plugins import load_plugins
    from mediaindex.cli import cli
    pm = load_plugins()
    pm.register(ds_plugin, name="dashscope")
    pm.register(staging_plugin({files!r}, {url!r}), name="dashscope-double-staging")
    cli(sys.argv[1:])
""")

DS_CONFIG = ('transcriber = "dashscope"\nstage_storage = "double"\n[dashscope]\nrpm = 100000\nwait_inline = 600\n'
             f'poll_after = 0.2\n[redis]\nvisibility_timeout = {VT}\n')


def test_a_worker_killed_while_its_qwen_task_runs_is_paid_once(corpus_src, manifest, tmp_path, env, redis_server):
    from dashscope_double import Double  # plugins/mediaindex-dashscope: installed by scripts/setup

    key = "sk-test-double-key"
    media = tmp_path / "media"
    shutil.copytree(corpus_src / "meetings", media / "meetings")  # 12 min: filetrans, one task
    with Double(corpus_src, manifest, key=key) as double:
        double.steps_pending, double.steps_running = 1, 10 ** 6  # the task runs until let go
        script = tmp_path / "ds_worker.py"
        script.write_text(DS_WORKER.format(tests=str(HERE), files=str(double.files_dir), url=double.url))
        e = {**env, "DASHSCOPE_API_KEY": key, "DASHSCOPE_BASE_URL": double.base_url,
             "MEDIAINDEX_LOAD_PLUGINS": "mediaindex-redis"}
        pool = Workers(tmp_path, e, redis_server.url, cmd=[sys.executable, str(script)])
        data = tmp_path / "coordinator"
        data.mkdir()
        (data / "config.toml").write_text(DS_CONFIG)
        try:
            victim = pool.start(1, config=DS_CONFIG)[0]
            ce = {**e, "DASHSCOPE_API_KEY": ""}  # the coordinator needs no key: it sends no request
            proc = subprocess.Popen([sys.executable, str(script), "index", str(media), "--data-dir", str(data),
                                     "--queue", redis_server.url], env=ce, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            wait_for(lambda: double.submissions and len([p for _, m, p in double.hits
                                                        if p.startswith("/api/v1/tasks/")]) >= 2, "a polled task")
            victim.kill()  # kill -9 while polling the task
            victim.wait()
            assert double.submissions == 1
            dump = redis_dump(redis_server.client())
            assert b'"engine_key"' in dump and key.encode() not in dump  # its job, unacked, holds no secret
            double.steps_pending, double.steps_running = 0, 1  # the task finishes
            pool.start(1, config=DS_CONFIG)
            code, out = finish(proc)
            assert code == 0, out + pool.logs()
        finally:
            pool.stop()
        assert double.submissions == 1 and double.billed == 734  # one task, billed once: ceil(733.2 s)
        from mediaindex.state import State

        state = State(data / "state.sqlite3")
        try:
            assert state.total_cost() == pytest.approx(734 * 0.000035)
            assert state.transcription_count() == 1
        finally:
            state.close()
        assert key not in out and key not in pool.logs()


# ---- safety ----------------------------------------------------------------------------------


def test_a_redis_beyond_loopback_needs_a_password_or_tls_and_the_password_is_never_shown(tmp_path, env, corpus):
    data = data_dir_for(tmp_path, "coordinator")
    for cmd in (["index", str(corpus)], ["watch", str(corpus), "--no-serve"]):
        res = subprocess.run([sys.executable, "-m", "mediaindex", *cmd, "--data-dir", str(data),
                              "--queue", "redis://queue.example:6379/0"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 2 and "without a password or TLS" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "mediaindex", "worker", "--queue", "redis://10.1.2.3:6379/0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "without a password or TLS" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "mediaindex", "index", str(corpus), "--data-dir", str(data),
                          "--queue", "amqp://127.0.0.1/"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no job queue plugin for 'amqp'" in res.stderr, res.stderr
    secret = "hunter2-very-secret"
    res = subprocess.run([sys.executable, "-m", "mediaindex", "index", str(corpus), "--data-dir", str(data),
                          "--queue", f"redis://:{secret}@127.0.0.1:{_free_port()}/0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "cannot reach the queue" in res.stderr, res.stderr
    assert secret not in res.stderr + res.stdout and "***" in res.stderr


# ---- watch as the coordinator; /api/status shows the workers ---------------------------------


def test_watch_coordinates_and_the_web_status_shows_the_workers(corpus, tmp_path, env, redis_server, workers):
    import httpx

    folder = media_folder(corpus)
    extra = folder / "later.mp3"
    shutil.move(folder / "talks" / "space_station.mp3", tmp_path / "held.mp3")
    data = data_dir_for(tmp_path, "coordinator")
    workers.start(2)
    port = _free_port()
    proc = coordinator(["watch", str(folder), "--stable", "0.2", "--port", str(port)], env, data, redis_server.url)
    try:
        def status():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()
            except httpx.HTTPError:
                return None

        def settled():
            s = status()
            return s if s and s["files"]["indexed"] >= 1 and not s["files"]["queued"] and \
                not s["files"]["running"] and s.get("queue", {}).get("workers") else None

        s = wait_for(settled, "the first scan indexed")
        assert len(s["queue"]["workers"]) == 2 and s["queue"]["url"] == redis_server.url
        shutil.copyfile(tmp_path / "held.mp3", extra)  # a new file while watching
        wait_for(lambda: (status() or {}).get("files", {}).get("indexed") == s["files"]["indexed"] + 1,
                 "the new file indexed")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, out = finish(proc, timeout=60)
    assert code == 0, out
    indexed_once(data, folder)


def test_the_spending_cap_holds_across_workers(corpus_src, manifest, tmp_path, env, redis_server):
    """max_cost is checked by the coordinator before a job is handed out and the workers'
    charges are booked there: with room for one short talk, one is transcribed, the others
    wait, whatever the number of workers."""
    from dashscope_double import Double

    key = "sk-test-double-key"
    media = tmp_path / "media"
    shutil.copytree(corpus_src / "talks", media / "talks")
    probe_durations = [f["duration"] for f in manifest["files"] if f["path"].startswith("talks/")]
    cap = 1.5 * max(math.ceil(d) for d in probe_durations) * 0.000035  # room for one, not two
    config = f"max_cost = {cap}\n" + DS_CONFIG
    with Double(corpus_src, manifest, key=key) as double:
        script = tmp_path / "ds_worker.py"
        script.write_text(DS_WORKER.format(tests=str(HERE), files=str(double.files_dir), url=double.url))
        e = {**env, "DASHSCOPE_API_KEY": key, "DASHSCOPE_BASE_URL": double.base_url,
             "MEDIAINDEX_LOAD_PLUGINS": "mediaindex-redis"}
        pool = Workers(tmp_path, e, redis_server.url, cmd=[sys.executable, str(script)])
        data = tmp_path / "coordinator"
        data.mkdir()
        (data / "config.toml").write_text(config)
        try:
            pool.start(3, config=DS_CONFIG)
            code, out = finish(subprocess.Popen(
                [sys.executable, str(script), "index", str(media), "--data-dir", str(data), "--queue", redis_server.url],
                env={**e, "DASHSCOPE_API_KEY": ""}, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        finally:
            pool.stop()
    from mediaindex.state import State

    state = State(data / "state.sqlite3")
    try:
        spent = state.total_cost()
        assert 0 < spent <= cap, (spent, cap)
        assert state.transcription_count() == 1
        statuses = sorted(r.status for r in state.files_under(str(media)))
        assert statuses.count("indexed") == 1 and len(statuses) == 2, statuses
        assert state.jobs.counts()["queued"] == 1  # the other one waits for a higher cap
    finally:
        state.close()
    assert code != 0 and "spending cap reached" in out, out


# ---- media in a bucket: workers fetch by URI --------------------------------------------------


def test_workers_fetch_bucket_media_by_uri_and_a_moved_object_is_not_transcribed_again(
        corpus, tmp_path, env, redis_server, workers):
    import boto3
    from bucket_servers import KEY_ID, SECRET, start_s3

    server, endpoint = start_s3()
    try:
        bucket = "archive"
        admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                             aws_secret_access_key=SECRET)
        admin.create_bucket(Bucket=bucket)
        for f in sorted((corpus / "talks").iterdir()) + sorted((corpus / "podcasts").glob("*.*")):
            admin.put_object(Bucket=bucket, Key=f"lib/{f.name}", Body=f.read_bytes())
        s3 = f'[s3]\nendpoint_url = "{endpoint}"\naddressing_style = "path"\n'
        cfg = f'transcriber = "manifest"\n{s3}[redis]\nvisibility_timeout = {VT}\n'
        e = {**env, "MEDIAINDEX_LOAD_PLUGINS": PLUGINS + ",mediaindex-s3", "AWS_ACCESS_KEY_ID": KEY_ID,
             "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        workers.env = e
        workers.start(2, config=cfg)
        data = data_dir_for(tmp_path, "coordinator")
        (data / "config.toml").write_text(cfg)
        code, out = finish(coordinator(["index", f"s3://{bucket}/lib"], e, data, redis_server.url))
        assert code == 0, out + workers.logs()
        done = calls(tmp_path)
        n = len(admin.list_objects_v2(Bucket=bucket)["Contents"])
        assert len(done) == n and {p.split("/")[2] for _, p in done} == {bucket}  # each object once, by URI
        assert {pid for pid, _ in done} <= {p.pid for p in workers.procs}

        # moved in the bucket: the coordinator recognises the content; nothing is transcribed again
        admin.copy_object(Bucket=bucket, Key="lib/moved/space.mp3", CopySource=f"{bucket}/lib/space_station.mp3")
        admin.delete_object(Bucket=bucket, Key="lib/space_station.mp3")
        code, out = finish(coordinator(["index", f"s3://{bucket}/lib"], e, data, redis_server.url))
        assert code == 0 and "0 transcribed" in out, out
        assert len(calls(tmp_path)) == n
        res = subprocess.run([sys.executable, "-m", "mediaindex", "search", "cupola window", "--json", "--data-dir",
                              str(data)], env=e, capture_output=True, text=True)
        assert [h["path"] for h in json.loads(res.stdout)["hits"]] == [f"s3://{bucket}/lib/moved/space.mp3"]
    finally:
        server.stop()


# ---- the core's hook: a shared queue chosen by its URL scheme ---------------------------------


@pytest.mark.hook("register_queues")
def test_a_queue_plugin_takes_the_work_by_its_url_scheme(make_pipeline, manifest_transcriber, corpus):
    """``Pipeline.use_queue`` finds the plugin by scheme, lets it refuse a URL, and from then on
    every file goes through its coordinator (nothing is transcribed here)."""
    from mediaindex.errors import UsageError
    from mediaindex.hookspecs import hookimpl
    from mediaindex.pipeline import Outcome
    from mediaindex.plugins import load_plugins

    checked, seen = [], []

    class Remote:
        def process_path(self, path, reporter):
            seen.append(path)
            return Outcome(path, "indexed")

    class Queue:
        schemes = ("fake",)

        def check(self, url):
            checked.append(url)
            if "unsafe" in url:
                raise UsageError("refused")

        def coordinator(self, pipeline, url):
            return Remote()

    class Plugin:
        @hookimpl
        def register_queues(self, register, config):
            register(Queue())

    pm = load_plugins()
    pm.register(Plugin(), name="fake-queue")
    try:
        p = make_pipeline()
        with pytest.raises(UsageError, match="no job queue plugin for 'nope'"):
            p.use_queue("nope://host")
        with pytest.raises(UsageError, match="refused"):
            p.use_queue("fake://unsafe")
        p.use_queue("fake://host")
        assert checked == ["fake://unsafe", "fake://host"]
        p.enqueue_plan(p.plan([str(corpus / "talks")]))
        outcomes = p.run_jobs()
        assert sorted(seen) == sorted(str(f) for f in (corpus / "talks").iterdir())
        assert [o.status for o in outcomes] == ["indexed"] * len(seen)
        assert manifest_transcriber and p.state.transcription_count() == 0  # the work went elsewhere
    finally:
        pm.unregister(name="fake-queue")
