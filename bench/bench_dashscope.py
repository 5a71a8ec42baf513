"""What the dashscope plugin spends outside the service, for a long file (issue 10).

Builds an N-minute file from the test corpus's long meeting, then times the plugin's own work on
both routes, with no request sent: flash (silencedetect, split_points, one Opus chunk per
<= 30 s, base64) and filetrans (one mono 16 kHz Opus extract, what gets published). Reports each
as a fraction of the audio's duration and the peak memory (this process and ffmpeg children).

    python bench/bench_dashscope.py [minutes=60] [corpus dir]
"""
from __future__ import annotations

import base64
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mediaindex import audio


def cpu() -> float:
    """CPU seconds of this process and its finished children (ffmpeg): contention-proof."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build(minutes: float, corpus: Path, out: Path) -> Path:
    src = corpus / "meetings" / "long_meeting.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(minutes * 60),
                    "-c", "copy", str(out)], check=True)
    return out


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    corpus = Path(sys.argv[2]) if len(sys.argv) > 2 else next(Path(".cache").glob("corpus-*"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = build(minutes, corpus, tmp / "long.mp3")
        total = audio.duration(f)
        t0, c0 = time.perf_counter(), cpu()
        sil = audio.silences(f)
        chunks = audio.split_points(total, sil, max_chunk=30.0)
        size = 0
        for start, end in chunks:
            c = audio.extract(f, start, end, tmp / "chunk.opus")
            size = max(size, len(base64.b64encode(c.read_bytes())))
        flash, flash_cpu = time.perf_counter() - t0, cpu() - c0
        t0, c0 = time.perf_counter(), cpu()
        out = audio.extract(f, 0.0, total + 1, tmp / "audio.opus")
        filetrans, filetrans_cpu = time.perf_counter() - t0, cpu() - c0
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"audio {total / 60:.1f} min")
        print(f"flash route: {len(chunks)} chunks, wall {flash:.1f} s = {100 * flash / total:.2f} % of the audio, "
              f"CPU {flash_cpu:.1f} s = {100 * flash_cpu / total:.2f} % (largest chunk {size / 1e3:.0f} kB as base64)")
        print(f"filetrans route: extract wall {filetrans:.1f} s = {100 * filetrans / total:.2f} %, CPU {filetrans_cpu:.1f} s "
              f"= {100 * filetrans_cpu / total:.2f} % ({out.stat().st_size / 1e6:.1f} MB published)")
        print(f"peak RSS: python {own:.0f} MB, largest ffmpeg {kids:.0f} MB")


if __name__ == "__main__":
    main()
