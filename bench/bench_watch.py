#!/usr/bin/env python3
"""Watch mode benchmarks (not a test): latency, restart time and memory at 100k files.

    .venv/bin/python bench/bench_watch.py                 # everything (about 2-3 minutes)
    .venv/bin/python bench/bench_watch.py --only latency
    .venv/bin/python bench/bench_watch.py --only restart --files 100000

1. **Latency**: from a file's last write (close) to its words being searchable, with the fast
   test transcriber (tests/plugins/mediaindex-manifest-transcriber) so that what is measured is
   the watcher (events, stability delay, queue, probe, hash, index), not a speech engine.
   Goal: at most the stability delay + 1 s.
2. **Restart over N unchanged files**: N tiny files on disk and the same N rows pre-populated
   in the files table (as if the library had been indexed), then a fresh process starts a
   ``Watcher`` on it; measured: start → initial scan planned (recover + observer + walk + compare).
   Goal: ≤ 10 s at 100,000 files.
3. **Memory**: RSS of that watcher process after the scan, after a full rescan, and its peak.
   Goal: ≤ 300 MB at 100,000 files.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MEDIAINDEX_LOAD_PLUGINS", "")  # built-ins only (+ the test engine, in-process)


def rss_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": round(out.get("VmRSS", 0), 1), "peak_mb": round(out.get("VmHWM", 0), 1)}


def corpus_dir() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: E402  (the test corpus maker, cached)

    return conftest._make(conftest.CACHE, "--long-minutes", "7")


def register_manifest_engine(corpus: Path) -> None:
    from mediaindex.plugins import load_plugins

    os.environ["MEDIAINDEX_MANIFEST"] = str(corpus / "manifest.json")
    src = ROOT / "tests" / "plugins" / "mediaindex-manifest-transcriber" / "mediaindex_manifest_transcriber.py"
    spec = importlib.util.spec_from_file_location("mediaindex_manifest_transcriber_bench", src)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    load_plugins().register(module, name="manifest-bench")


# ---- 1. latency --------------------------------------------------------------------------------

LATENCY_FILES = [("talks/space_station.mp3", "lettuce chamber"), ("talks/bread_baking.m4a", "sourdough starter"),
                 ("video/chess_openings.mkv", "queen gambit"), ("podcasts/ferry.webm", "dolphins jumping")]


def bench_latency(stables: list[float], poll: float | None) -> list[dict]:
    from mediaindex.config import Config
    from mediaindex.models import SearchQuery
    from mediaindex.pipeline import Pipeline
    from mediaindex.watch import Watcher

    corpus = corpus_dir()
    register_manifest_engine(corpus)
    rows = []
    for stable in stables:
        tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
        lib = tmp / "lib"
        lib.mkdir()
        pipeline = Pipeline(Config.load(tmp / "data"), transcriber="manifest")
        w = Watcher(pipeline, [str(lib)], stable=stable, poll=poll, rescan=None, workers=1).start()
        w.wait_idle(30)
        lat = []
        try:
            for rel, query in LATENCY_FILES:
                data = (corpus / rel).read_bytes()
                target = lib / Path(rel).name
                with open(target, "wb") as f:
                    f.write(data)
                t0 = time.monotonic()  # the last write (and close)
                deadline = t0 + stable + 30
                while time.monotonic() < deadline:
                    hits = pipeline.index.search(SearchQuery(q=query, limit=5)).hits
                    if any(h.path == str(target) for h in hits):
                        break
                    time.sleep(0.01)
                lat.append(time.monotonic() - t0)
                w.wait_idle(10)
        finally:
            w.stop(grace=5)
            pipeline.close()
            shutil.rmtree(tmp, ignore_errors=True)
        row = {"stable_s": stable, "poll_s": poll, "n": len(lat), "median_s": round(statistics.median(lat), 2),
               "max_s": round(max(lat), 2), "over_stable_median_s": round(statistics.median(lat) - stable, 2),
               "goal_met": max(lat) <= stable + 1.0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---- 2 + 3. restart time and memory at N files ---------------------------------------------------


def make_library(lib: Path, data: Path, n: int, per_dir: int = 1000) -> float:
    """N tiny files in N/per_dir folders, and the same N rows in the files table (status indexed)."""
    from mediaindex.state import State

    t0 = time.perf_counter()
    rows = []
    payload = b"ID3" + b"\0" * 13
    for i in range(n):
        d = lib / f"show{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"episode{i:06d}.mp3"
        with open(p, "wb") as f:
            f.write(payload)
        st = p.stat()
        rows.append((str(p), st.st_size, st.st_mtime, f"{i:020x}", "indexed", None, t0, t0))
    state = State(data / "state.sqlite3")
    with state.tx() as c:
        c.executemany("INSERT INTO files (path, size, mtime, media_id, status, error, added, updated) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    state.close()
    return time.perf_counter() - t0


def restart_child(lib: str, data: str, poll: float | None) -> None:
    """Runs in a fresh process: start a watcher on the prepared library, report JSON."""
    base = rss_mb()
    t_import = time.perf_counter()
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.watch import Watcher

    t0 = time.perf_counter()
    pipeline = Pipeline(Config.load(data))
    w = Watcher(pipeline, [lib], stable=3.0, poll=poll, rescan=None, workers=1)
    w.start()
    w.scan_done.wait(600)
    t_scan = time.perf_counter() - t0
    first = dict(w.last_scan)
    after_scan = rss_mb()
    assert first["changed"] == 0 and first["deleted"] == 0, first  # nothing to redo
    w.request_rescan()
    time.sleep(0.2)
    while w._rescan_requested or w._busy:
        time.sleep(0.05)
    rescan = dict(w.last_scan)
    time.sleep(1.0)
    steady = rss_mb()
    w.stop(grace=1)
    pipeline.close()
    print(json.dumps({"restart_s": round(t_scan, 2), "plan_s": round(first["plan_seconds"], 2),
                      "unchanged": first["unchanged"], "rescan_s": round(rescan["seconds"], 2),
                      "import_s": round(t0 - t_import, 2), "rss_before_import_mb": base["rss_mb"],
                      "rss_after_scan_mb": after_scan["rss_mb"], "rss_steady_mb": steady["rss_mb"],
                      "peak_rss_mb": steady["peak_mb"]}))


def bench_restart(n: int, poll: float | None, keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-100k-"))
    lib, data = tmp / "lib", tmp / "data"
    try:
        made = make_library(lib, data, n)
        print(f"made {n} files + rows in {made:.1f} s", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(lib), str(data)]
                             + (["--poll", str(poll)] if poll else []),
                             check=True, capture_output=True, text=True)
        row = {"files": n, "poll_s": poll, **json.loads(out.stdout.strip().splitlines()[-1])}
        row["goal_met"] = row["restart_s"] <= 10 and row["peak_rss_mb"] <= 300
        print(json.dumps(row), flush=True)
        return row
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["latency", "restart"])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--stable", type=float, nargs="+", default=[0.5, 1.0, 3.0])
    ap.add_argument("--poll", type=float, default=None, help="use the polling observer (network shares)")
    ap.add_argument("--keep", action="store_true", help="keep the generated library")
    ap.add_argument("--child", nargs=2, metavar=("LIB", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        restart_child(*args.child, args.poll)
        return 0
    if args.only in (None, "latency"):
        bench_latency(args.stable, args.poll)
    if args.only in (None, "restart"):
        bench_restart(args.files, args.poll, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
