"""Benchmark: the web API's search endpoint under load.

Builds (or reuses, ``--keep``) a synthetic 1,000-hour index with ``bench/bench_search.py``'s
builder (720k segments with word times, Zipf vocabulary of 50k words), starts ``mediaindex
serve`` on it **in a separate process** (uvicorn, as a user runs it: by default one worker process
per CPU core, at most 4; ``--workers N`` to choose), and runs
``--clients`` concurrent clients for ``--seconds``. Each client holds one keep-alive HTTP/1.1
connection and sends ``GET /api/search?q=...&limit=20`` back to back (``--think-ms`` 0: a closed
loop with no pause, the hardest case), with the query mix of a search box: rare, mid-frequency
and frequent words, prefixes (typing), 2-3 word AND queries and partial queries (a word that
is in no segment). The client is a minimal asyncio HTTP client so that, on a small machine, it
takes as little CPU from the server as possible.

It reports latency p50/p95/p99/max (ms, from sending the request to the last byte of the
response), throughput, and errors (non-200 answers, malformed answers, connection errors).

Usage::

    .venv/bin/python bench/bench_api.py                          # 1,000 h, 20 clients, 30 s
    .venv/bin/python bench/bench_api.py --keep /tmp/bench_api    # keep (and reuse) the index
    .venv/bin/python bench/bench_api.py --hours 50 --seconds 10  # quick run
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_search  # noqa: E402  (the search benchmark's builder and percentiles: same data, same numbers)
from bench_search import pct  # noqa: E402


def build_index(data_dir: Path, hours: float, seed: int) -> list[str]:
    """Build the synthetic index at data_dir/index.sqlite3 (the sqlite backend's file); returns the vocabulary."""
    from mediaindex.builtin.sqlite_index import SqliteIndex

    rng = random.Random(seed)
    vocab = bench_search.make_vocab(50000, rng)
    cum = bench_search.zipf_cum(len(vocab))
    db = data_dir / "index.sqlite3"
    if (data_dir / "bench_api.json").exists():
        meta = json.loads((data_dir / "bench_api.json").read_text())
        if meta.get("hours") == hours and meta.get("seed") == seed and db.exists():
            print(f"reusing the {hours:g} h index in {data_dir}", flush=True)
            return vocab
    for p in data_dir.glob("index.sqlite3*"):
        p.unlink()
    ix = SqliteIndex(db)
    args = argparse.Namespace(hours=hours, media_hours=1.0, optimize=False)
    bench_search.build(args, ix, vocab, cum, rng, data_dir)
    ix.close()
    (data_dir / "bench_api.json").write_text(json.dumps({"hours": hours, "seed": seed}))
    return vocab


def query_mix(vocab: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    nv = len(vocab)
    qs: list[str] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.2:
            qs.append(vocab[rng.randrange(nv // 2, nv)])  # rare word
        elif kind < 0.4:
            qs.append(vocab[rng.randrange(300, 3000)])  # mid-frequency word
        elif kind < 0.5:
            qs.append(vocab[rng.randrange(0, 30)])  # frequent word
        elif kind < 0.7:
            w = vocab[rng.randrange(100, nv)]
            qs.append(w[:max(3, min(len(w) - 1, rng.randint(3, 5)))])  # prefix while typing
        elif kind < 0.9:
            qs.append(" ".join(vocab[rng.randrange(30, 5000)] for _ in range(rng.choice((2, 3)))))  # AND
        else:
            qs.append(" ".join([vocab[rng.randrange(30, 3000)], vocab[rng.randrange(30, 3000)],
                                f"qzxv{rng.randrange(10 ** 6)}"]))  # partial: one word nowhere
    return qs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, workers: int | None) -> subprocess.Popen:
    env = dict(os.environ, MEDIAINDEX_LOAD_PLUGINS="")
    proc = subprocess.Popen([sys.executable, "-m", "mediaindex", "serve", "--data-dir", str(data_dir),
                             "--port", str(port), *(["--workers", str(workers)] if workers else [])],
                            cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start within 60 s")


class Conn:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for this API."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        chunked = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v.strip())
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(length or 0)
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def client(port: int, queries: list[str], stop_at: float, think: float, lat: list[float],
                 errors: list[str], offset: int) -> int:
    conn = Conn(port)
    n = 0
    i = offset
    while time.perf_counter() < stop_at:
        q = queries[i % len(queries)]
        i += 1
        target = "/api/search?" + urlencode({"q": q, "limit": 20})
        t0 = time.perf_counter()
        try:
            status, body = await conn.get(target)
            dt = time.perf_counter() - t0
            if status != 200:
                errors.append(f"{status}: {body[:200]!r}")
            else:
                data = json.loads(body)
                if "hits" not in data:
                    errors.append(f"malformed answer: {body[:200]!r}")
            lat.append(dt * 1000)
            n += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = Conn(port)
        if think:
            await asyncio.sleep(think)
    conn.close()
    return n


async def load(port: int, queries: list[str], clients: int, seconds: float, think: float) -> dict:
    # warm-up: every query once is too many; a few hundred fill the page cache like real use would
    warm = Conn(port)
    for q in queries[:200]:
        await warm.get("/api/search?" + urlencode({"q": q, "limit": 20}))
    warm.close()
    lat: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    counts = await asyncio.gather(*(client(port, queries, stop_at, think, lat, errors, k * 997)
                                    for k in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": sum(counts), "wall_s": wall, "rps": sum(counts) / wall, "errors": len(errors),
            "error_samples": errors[:5], "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "max": max(lat) if lat else float("nan"), "mean": sum(lat) / len(lat) if lat else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1000.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause between a client's requests")
    ap.add_argument("--workers", type=int, default=None,
                    help="server processes (mediaindex serve --workers; default: serve's own default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="data dir for the index; kept and reused on the next run")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object too")
    args = ap.parse_args()
    if args.workers is None:
        from mediaindex.web.server import default_workers

        shown_workers = f"{default_workers()} (serve's default)"
    else:
        shown_workers = str(args.workers)

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench_api_"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        vocab = build_index(data_dir, args.hours, args.seed)
        queries = query_mix(vocab, 5000, args.seed + 7)
        port = free_port()
        server = start_server(data_dir, port, args.workers)
        try:
            r = asyncio.run(load(port, queries, args.clients, args.seconds, args.think_ms / 1000))
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\nGET /api/search, {args.hours:g} h index, {args.clients} clients, {args.seconds:g} s, "
          f"think {args.think_ms:g} ms, {shown_workers} server worker(s), load average {os.getloadavg()[0]:.1f}:")
    print("| workers | clients | think ms | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |")
    print("|--------:|--------:|---------:|---------:|------:|-------:|-------:|-------:|-------:|-------:|")
    print(f"| {shown_workers} | {args.clients} | {args.think_ms:g} | {r['requests']:,} | {r['rps']:,.0f} | "
          f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} |")
    for e in r["error_samples"]:
        print(f"  error: {e}")
    if args.json:
        print(json.dumps(r))
    return 0 if r["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
