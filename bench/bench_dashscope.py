"""What the dashscope plugin spends outside the service, for long files (issue 10).

Builds N-minute files from the test corpus's speech (the long meeting looped, stream copy; in a
temporary folder, never committed), then runs the real plugin (``FlashTranscriber`` and
``FiletransTranscriber``, the real httpx client and rate limiter) in a fresh child process per
route against a fast stand-in for DashScope in another process (tests/dashscope_double.py
without its speech recognition: it answers every chunk at once), so the child's figures are the
plugin's own work: probing, silencedetect, cutting, Opus encoding, base64, HTTP, staging (a
copy into the stand-in's folder), polling. Reports, per file and route: the child's CPU seconds
(itself and its ffmpeg children) and wall time as a fraction of the audio, its peak RSS and the
largest ffmpeg child's, and the most requests the server saw in any 60 s window against ``rpm``.

    python bench/bench_dashscope.py [--minutes 60 120] [--rpm 120] [--corpus DIR]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench"


def build(minutes: float, corpus: Path, out: Path) -> Path:
    """``minutes`` of corpus speech: the long meeting (12.2 min) looped, stream copy."""
    src = corpus / "meetings" / "long_meeting.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src),
                    "-t", str(minutes * 60), "-c", "copy", str(out)], check=True)
    return out


# ---- the stand-in service (its own process: its CPU is not the plugin's) ---------------------


def serve(corpus: Path, conn) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from dashscope_double import Double

    class Fast(Double):
        """The double's wire format, without recognising the audio (answers at once)."""

        def _flash(self, handler, body):
            with self.lock:
                self.flash_calls += 1
                self.billed += 30
            handler.send(200, {"request_id": "b", "output": {"choices": [{"finish_reason": "stop", "message": {
                "role": "assistant", "content": [{"text": "Item one. Item two."}],
                "annotations": [{"type": "audio_info", "language": "en", "emotion": "neutral"}]}}]},
                "usage": {"seconds": 30}})

        def _fetch(self, task):
            import urllib.request
            with urllib.request.urlopen(task["body"]["input"]["file_url"], timeout=60) as r:
                size = len(r.read())
            task["found"] = {0: (None, 0.0, size / 4000.0)}  # 32 kb/s

    manifest = {"files": []}
    with Fast(corpus, manifest, key=KEY) as d:
        conn.send((d.base_url, str(d.files_dir), d.url))
        conn.recv()  # until told to stop
        conn.send([t for t, _, p in d.hits if p.startswith("/api/")])


def max_in_window(times: list[float], window: float = 60.0) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# ---- the plugin, in a fresh child process ----------------------------------------------------


def run_route(route: str, path: str, base_url: str, files_dir: str, files_url: str, rpm: float) -> dict:
    from mediaindex.backends import Checkpoint, TranscribeRequest
    from mediaindex.probe import probe
    from mediaindex_dashscope.client import Client
    from mediaindex_dashscope.engines import FiletransTranscriber, FlashTranscriber, Settings

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def publish(local):  # staging: a copy where the stand-in serves it (an upload, locally)
        name = f"staged-{os.getpid()}.opus"
        shutil.copyfile(local, Path(files_dir) / name)
        return f"{files_url}/files/{name}"

    s = Settings(api_key=KEY, base_url=base_url, rpm=rpm, filetrans=route == "filetrans", wait_inline=3600)
    client = Client(KEY, base_url, rpm=rpm, concurrency=s.concurrency, timeout=120)
    engine = (FiletransTranscriber if route == "filetrans" else FlashTranscriber)(s, client)
    saved: dict = {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), cpu()
    info = probe(path)
    request = TranscribeRequest(path=Path(path), probe=info, uri=path, publish=publish,
                                charge=lambda *a: None, checkpoint=Checkpoint(load=lambda: saved or None,
                                                                              save=saved.update))
    t = engine.transcribe(request)
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"route": t.options["route"], "audio": info.duration, "wall": wall, "cpu": used,
            "requests": client.requests, "segments": len(t.segments), "rss_before": rss0,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ffmpeg_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins" / "mediaindex-dashscope"),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[60, 120])
    ap.add_argument("--rpm", type=float, default=120)
    ap.add_argument("--routes", nargs="+", default=["flash", "filetrans"])
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        route, path, base_url, files_dir, files_url, rpm = a.child
        print(json.dumps(run_route(route, path, base_url, files_dir, files_url, float(rpm))))
        return
    corpus = a.corpus or next((ROOT / ".cache").glob("corpus-*"), None) or next(
        Path(os.environ.get("MEDIAINDEX_TEST_CACHE", "/nonexistent")).glob("corpus-*"))
    print(f"uptime before: {os.popen('uptime').read().strip()}")
    with tempfile.TemporaryDirectory(prefix="bench-dashscope-") as tmp:
        parent, conn = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(corpus, conn), daemon=True)
        server.start()
        base_url, files_dir, files_url = parent.recv()
        started = []
        for minutes in a.minutes:
            f = build(minutes, corpus, Path(tmp) / f"speech-{minutes:g}min.mp3")
            for route in a.routes:
                started.append(time.time())
                r = child([route, str(f), base_url, files_dir, files_url, str(a.rpm)])
                print(f"{minutes:g} min, {r['route']}: {r['requests']} requests, CPU {r['cpu']:.1f} s = "
                      f"{100 * r['cpu'] / r['audio']:.2f} % of the audio, wall {r['wall']:.1f} s = "
                      f"{100 * r['wall'] / r['audio']:.2f} %, peak RSS {r['rss']:.0f} MB (after import "
                      f"{r['rss_before']:.0f} MB), largest ffmpeg {r['ffmpeg_rss']:.0f} MB", flush=True)
        parent.send("stop")
        times = parent.recv()
        server.join(10)
    print(f"requests to the API: {len(times)}; most in any 60 s window: {max_in_window(times)} (rpm = {a.rpm:g})")
    print(f"uptime after: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
