#!/usr/bin/env python3
"""Benchmark the offline sound classifier (YamNet int8, issue 12): time and peak memory.

    .venv/bin/python bench/bench_enrich.py [--corpus DIR] [--file meetings/long_meeting.mp3] [--loops 1 4]

Each run is a fresh subprocess (its peak RSS is its own): import, model load, then one
``sound.classify`` of the file (decode with ``audio.pcm_windows`` + log-mel + YamNet).
``--loops N`` plays the file N times over (ffmpeg ``-stream_loop``, stream copy) to show that
memory stays flat as the audio gets longer. RTF = classify wall time / audio duration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from mediaindex.builtin import sound
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sound.model()
t1 = time.perf_counter()
tl = sound.classify(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "classify": t2 - t1, "duration": tl.duration,
                  "rss_import_mb": base / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "spans": len(tl.spans), "events": len(tl.events)}))
"""


def find_corpus(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    cache = Path(os.environ.get("MEDIAINDEX_TEST_CACHE", ROOT / ".cache"))
    found = sorted(cache.glob("corpus-*/meetings/long_meeting.mp3"))
    if not found:
        sys.exit("no corpus: run the tests once, or pass --corpus")
    return found[0].parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus")
    ap.add_argument("--file", default="meetings/long_meeting.mp3")
    ap.add_argument("--loops", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    src = find_corpus(args.corpus) / args.file
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        for loops in args.loops:
            f = src
            if loops > 1:
                f = Path(tmp) / f"x{loops}{src.suffix}"
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops - 1),
                                "-i", str(src), "-c", "copy", str(f)], check=True)
            out = subprocess.run([sys.executable, "-c", CHILD, str(f)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {r['duration']:.0f} s | {r['load']:.2f} s | {r['classify']:.1f} s | "
                  f"{r['classify'] / r['duration']:.4f} | {r['rss_import_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
