"""The library view's API: GET /api/media over 100,000 recordings, sorted and filtered.

A real State database (100,000 media, 200 folders, 2 languages, 1 in 7 a video, half with a
title tag) behind the real app, called over HTTP (Starlette's TestClient: no network, the
whole request path). Prints p50 and p95 per query shape, and the CPU time per request (the
machine may be shared: wall time includes waiting for a CPU). The goal (issue 15): p95 < 50 ms.

    .venv/bin/python bench/bench_library.py [--media 100000] [--runs 50]
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path


def build(data_dir: Path, n: int) -> None:
    from mediaindex.state import State

    st = State(data_dir / "state.sqlite3")
    c, now, rnd = st.conn, time.time(), random.Random(1)
    c.execute("BEGIN")
    for i in range(n):
        mid, dur = f"{i:020x}", rnd.uniform(10, 7200)
        probe = {"duration": dur, "container": "mp3", "size": 1000, "audio_streams": 1,
                 "video_streams": int(i % 7 == 0), "channels": 2, "sample_rate": 44100, "audio_codec": "mp3",
                 "video_codec": None, "tags": {"title": f"Episode {rnd.random():.6f}"} if i % 2 else {}}
        c.execute("INSERT INTO media (id, size, mtime, duration, probe, status, engine, language, updated) "
                  "VALUES (?, ?, ?, ?, ?, 'indexed', 'local-whisper', ?, ?)",
                  (mid, 1000, now - i, dur, json.dumps(probe), "en" if i % 3 else "zh", now))
        c.execute("INSERT INTO files (path, size, mtime, media_id, status, added, updated) "
                  "VALUES (?, 1000, ?, ?, 'indexed', ?, ?)", (f"/lib/f{i % 200}/{i}.mp3", now - i, mid, now - i, now))
    c.execute("COMMIT")
    st.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--media", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    from starlette.testclient import TestClient

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.app import create_app

    data = Path(tempfile.mkdtemp()) / "data"
    data.mkdir()
    t0 = time.perf_counter()
    build(data, args.media)
    print(f"{args.media} recordings written in {time.perf_counter() - t0:.1f} s")
    p = Pipeline(Config.load(data))
    shapes = {"recent first": {}, "title": {"sort": "title"}, "shortest": {"sort": "-duration"},
              "modified": {"sort": "modified"}, "one folder": {"path": "/lib/f7"},
              "zh videos": {"lang": "zh", "kind": "video"}, "page 100": {"offset": 4950},
              "folder + longest": {"path": "/lib/f7", "sort": "duration"},
              "zh": {"lang": "zh"}, "videos by title": {"kind": "video", "sort": "title"},
              "indexed only": {"state": "indexed"}, "page 1000": {"offset": 49950},
              "zh videos, modified": {"lang": "zh", "kind": "video", "sort": "-modified"},
              "whole root": {"path": "/lib"}, "root, zh, title": {"path": "/lib", "lang": "zh", "sort": "title"}}
    with TestClient(create_app(p), base_url="http://127.0.0.1") as client:
        for name, params in shapes.items():
            times, cpu = [], []
            for _ in range(args.runs):
                t, c = time.perf_counter(), time.process_time()
                r = client.get("/api/media", params=params)
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)  # the whole process: server and client
                assert r.status_code == 200 and r.json()["items"], r.text
            times.sort()
            cpu.sort()
            print(f"{name:<20} p50 {times[len(times) // 2]:6.1f} ms   p95 {times[int(len(times) * 0.95)]:6.1f} ms"
                  f"   cpu p50 {cpu[len(cpu) // 2]:5.1f} ms   ({r.json()['total']} match)")
    p.close()


if __name__ == "__main__":
    main()
