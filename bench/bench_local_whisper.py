#!/usr/bin/env python3
"""Benchmark the offline ``local`` transcriber: real-time factor, peak RSS and WER per model.

    .venv/bin/python bench/bench_local_whisper.py [--corpus DIR] [--models base tiny.en]
                                                  [--file meetings/long_meeting.mp3] [--threads N]

Each model runs in a fresh subprocess so its peak RSS is its own. The corpus is the test corpus
(tests/corpus/make_corpus.py, made with --long-minutes 7); without --corpus the one the tests
cached under .cache/ is used, else one is generated into a temporary folder.
Goals (issue 3): base <= 0.15 RTF and <= 1 GB RSS; tiny.en <= 0.06 RTF.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def find_corpus(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    cached = sorted((ROOT / ".cache").glob("corpus-*/manifest.json"), key=lambda p: p.stat().st_mtime)
    for m in reversed(cached):
        if any(f["path"] == "meetings/long_meeting.mp3" for f in json.loads(m.read_text())["files"]):
            return m.parent
    out = Path(tempfile.mkdtemp(prefix="mediaindex-bench-")) / "corpus"
    subprocess.run([sys.executable, str(ROOT / "tests/corpus/make_corpus.py"), str(out), "--long-minutes", "7"],
                   check=True)
    return out


def worker(model: str, corpus: Path, rel: str, threads: int | None, window: float | None) -> dict:
    """Runs inside the child process: load, transcribe, score; print one JSON line."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_local_whisper import ffprobe, score  # the tests' WER / timing scorer

    from mediaindex.backends import TranscribeRequest
    from mediaindex.builtin.local_whisper import LocalWhisperTranscriber

    entry = next(f for f in json.loads((corpus / "manifest.json").read_text())["files"] if f["path"] == rel)
    path = corpus / rel
    settings = {"model": model}
    if threads:
        settings["threads"] = threads
    if window:
        settings["window_seconds"] = window
    t = LocalWhisperTranscriber.from_settings(settings)
    t0 = time.perf_counter()
    t.load()
    load_s = time.perf_counter() - t0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tr = t.transcribe(TranscribeRequest(path=path, probe=ffprobe(path)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    s = score(entry, tr)
    return {
        "model": model, "threads": t.threads, "cache_key": t.cache_key, "file": rel,
        "audio_s": round(entry["duration"], 1), "load_s": round(load_s, 2), "transcribe_s": round(wall, 1),
        "rtf": round(wall / entry["duration"], 3), "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wer": round(s["wer"], 4), "words_in_sentence": round(s["inside"] / max(1, s["matched"]), 3),
        "segments": len(tr.segments), "windows": len(tr.raw["windows"]), "window_s": t.window_seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus")
    ap.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    ap.add_argument("--file", default="meetings/long_meeting.mp3")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--window", type=float, help="[local] window_seconds (default: the engine's)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.corpus), args.file, args.threads, args.window)))
        return 0

    corpus = find_corpus(args.corpus)
    print(f"corpus {corpus}; {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.2f} at start", file=sys.stderr)
    rows = []
    for model in args.models:
        cmd = [sys.executable, __file__, "--worker", model, "--corpus", str(corpus), "--file", args.file]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.window:
            cmd += ["--window", str(args.window)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row["load_avg_after"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| model | audio | window | threads | load | transcribe | RTF | peak RSS | WER | words in sentence ±1 s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['audio_s']:.0f} s | {r['window_s']:.0f} s | {r['threads']} | {r['load_s']:.2f} s | {r['transcribe_s']:.1f} s "
              f"| {r['rtf']:.3f} | {r['peak_rss_mb']} MB | {r['wer'] * 100:.1f} % | {r['words_in_sentence'] * 100:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
