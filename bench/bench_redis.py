#!/usr/bin/env python3
"""Distributed indexing benchmark (not a test): throughput against worker processes, queue overhead.

    .venv/bin/python bench/bench_redis.py                      # 1, 2, 4, 8 workers, 24 files, 2 s a file
    .venv/bin/python bench/bench_redis.py --workers 1 4 --files 12 --wait 1

A real ``redis-server`` on a free loopback port, N ``mediaindex worker`` processes (one job at
a time each) and an in-process coordinator (``Pipeline.use_queue`` + ``run_jobs``, 32 jobs handed
out at once). The engine waits like a cloud one: ``--wait`` seconds a file, no CPU. Files are
distinct 1-second tones (no two share a content id, so each is transcribed).

1. **Throughput**: files per second from the first job handed out to the last one stored;
   speed-up against one worker. Goal: ≥ 0.8 × N at 8 workers.
2. **Queue overhead per job**: the same files with a 0 s engine, one worker through Redis,
   against the same pipeline in one process without ``--queue``: the difference per file is
   what the queue adds (two round trips through Redis and Dramatiq, serialisation, the
   coordinator's waits).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "mediaindex-redis"))
os.environ.setdefault("MEDIAINDEX_LOAD_PLUGINS", "mediaindex-redis")

ENGINE = textwrap.dedent('''
    """A cloud-like engine for the benchmark: waits, then answers one segment."""
    import os, time
    from mediaindex import Segment, Transcriber, TranscriberLimits, Transcript, hookimpl

    class Waiting(Transcriber):
        name = "bench-wait"
        limits = TranscriberLimits(word_timestamps=False)

        def transcribe(self, request):
            time.sleep(float(os.environ.get("BENCH_WAIT", "2")))
            return Transcript(engine=self.name, model="wait", language="en",
                              segments=[Segment(index=0, start=0.0, end=1.0, text="a tone")])

    @hookimpl
    def register_transcribers(register):
        register(Waiting())
''')

WORKER = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    import bench_engine
    from mediaindex.plugins import load_plugins
    from mediaindex.cli import cli
    load_plugins().register(bench_engine, name="bench-engine")
    cli(sys.argv[1:])
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={200 + 7 * i}:duration=1",
                        "-ac", "1", "-ar", "16000", str(folder / f"tone{i:03d}.wav")], check=True)


def cpu_s(pids=()) -> float:
    """CPU seconds of this process and of the given live processes (the workers)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick  # +ffmpeg children
        except (OSError, IndexError, ValueError):
            pass
    return total


class Bench:
    def __init__(self, tmp: Path, files: int):
        self.tmp = tmp
        self.media = tmp / "media"
        make_files(self.media, files)
        (tmp / "bench_engine.py").write_text(ENGINE)
        (tmp / "worker.py").write_text(WORKER.format(here=str(tmp)))
        sys.path.insert(0, str(tmp))
        import bench_engine  # noqa: E402

        from mediaindex.plugins import load_plugins

        load_plugins().register(bench_engine, name="bench-engine")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.client = client

    def data_dir(self, name: str) -> Path:
        d = self.tmp / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        (d / "config.toml").write_text('transcriber = "bench-wait"\n[redis]\nvisibility_timeout = 30\n')
        return d

    def start_workers(self, n: int, wait: float) -> list[subprocess.Popen]:
        env = {**os.environ, "BENCH_WAIT": str(wait), "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "plugins" / "mediaindex-redis")])}
        procs = [subprocess.Popen([sys.executable, str(self.tmp / "worker.py"), "worker", "--queue", self.url,
                                   "--data-dir", str(self.data_dir(f"w{i}"))], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
        deadline = time.monotonic() + 120
        while self.client.hlen("mediaindex:workers") < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return procs

    def stop_workers(self, procs) -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        self.client.flushdb()

    def index(self, queue: str | None, workers: int = 32, pids=()) -> tuple[float, float, int]:
        """(wall s, CPU s of this process and the workers, files indexed) for one full run;
        ``self.stats``: the coordinator's dispatch statistics."""
        from mediaindex.config import Config
        from mediaindex.pipeline import Pipeline

        p = Pipeline(Config.load(self.data_dir("coordinator")), transcriber="bench-wait")
        try:
            p.use_queue(queue)
            p.enqueue_plan(p.plan([str(self.media)]))
            c0, t0 = cpu_s(pids), time.perf_counter()
            outcomes = p.run_jobs(workers=workers if queue else 1)
            wall, cpu = time.perf_counter() - t0, cpu_s(pids) - c0
            self.stats = dict(p.remote.stats) if p.remote is not None else {}
            return wall, cpu, sum(1 for o in outcomes if o.status == "indexed")
        finally:
            p.close()

    def close(self) -> None:
        self.redis.kill()
        self.redis.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--wait", type=float, default=2.0)
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        bench = Bench(Path(tmp), args.files)
        try:
            base = None
            print("| worker processes | files | wall s | files/s | speed-up | goal | CPU s (coordinator + workers) |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for n in args.workers:
                procs = bench.start_workers(n, args.wait)
                try:
                    wall, cpu, done = bench.index(bench.url, pids=[p.pid for p in procs])
                finally:
                    bench.stop_workers(procs)
                base = base or wall * n
                print(f"| {n} | {done} | {wall:.2f} | {done / wall:.2f} | {base / wall:.2f} | {0.8 * n:.1f} | {cpu:.1f} |",
                      flush=True)
            # the queue's own overhead: a 0 s engine, one worker, against no queue at all
            os.environ["BENCH_WAIT"] = "0"  # the in-process engine
            bench.index(None)  # warm: the enrichers' models load once per process
            local_wall, _, n_local = bench.index(None)
            procs = bench.start_workers(1, 0.0)
            try:
                bench.index(bench.url, workers=1)  # warm, likewise
                remote_wall, _, n_remote = bench.index(bench.url, workers=1)
            finally:
                bench.stop_workers(procs)
            st = bench.stats
            per_job = 1000 * (st["wall"] - st["work"]) / n_remote
            print(f"\nqueue overhead (0 s engine, 1 worker, one job at a time): {st['dispatches']} dispatches for "
                  f"{n_remote} files; coordinator waited {1000 * st['wall'] / n_remote:.0f} ms a file, workers worked "
                  f"{1000 * st['work'] / n_remote:.0f} ms a file: the queue's own share is {per_job:.0f} ms a file "
                  f"({per_job / max(1, st['dispatches'] / n_remote):.0f} ms a dispatch: send, pick-up, answer, read)")
            print(f"whole file, 0 s engine: {1000 * local_wall / n_local:.0f} ms in one process without --queue, "
                  f"{1000 * remote_wall / n_remote:.0f} ms through Redis")
        finally:
            bench.close()
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
