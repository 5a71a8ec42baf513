"""Cover art: the time to extract one (per kind of file) and to serve one, and that it is
extracted once, never per request.

Makes short files with ffmpeg and mutagen (MP3 with ID3 APIC, M4A with covr, FLAC with a
picture, MP4 video without a cover: a frame), records them in a real state database (as the
pipeline would, without transcribing), and asks a real server (uvicorn, HTTP) for each cover
``--requests`` times: the first request extracts (as for a library indexed before artwork
existed; the pipeline itself extracts while indexing), the others read the cache.

    .venv/bin/python bench/bench_artwork.py [--files 10] [--requests 50]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_files(folder: Path, n: int) -> list[Path]:
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3
    from mutagen.mp4 import MP4, MP4Cover

    cover = folder / "cover.jpg"
    _ff("-f", "lavfi", "-i", "testsrc2=s=600x600", "-frames:v", "1", str(cover))
    data = cover.read_bytes()
    out = []
    for i in range(n):
        tone = ["-f", "lavfi", "-i", f"sine=frequency={200 + i}:duration=5"]
        mp3, m4a, flac, mp4 = (folder / f"{i}.{ext}" for ext in ("mp3", "m4a", "flac", "mp4"))
        _ff(*tone, str(mp3))
        tags = ID3()
        tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="", data=data))
        tags.save(mp3)
        _ff(*tone, "-c:a", "aac", str(m4a))
        f = MP4(m4a)
        f["covr"] = [MP4Cover(data, imageformat=MP4Cover.FORMAT_JPEG)]
        f.save()
        _ff(*tone, str(flac))
        f, pic = FLAC(flac), Picture()
        pic.type, pic.mime, pic.data = 3, "image/jpeg", data
        f.add_picture(pic)
        f.save()
        _ff("-f", "lavfi", "-i", f"testsrc2=s=1280x720:duration=20:rate=25", *tone, "-shortest",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(mp4))
        out += [mp3, m4a, flac, mp4]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10, help="files of each kind")
    ap.add_argument("--requests", type=int, default=50, help="requests per cover")
    args = ap.parse_args()
    import httpx

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline, content_id
    from mediaindex.probe import probe
    from mediaindex.web.server import start_server

    root = Path(tempfile.mkdtemp())
    media = root / "media"
    media.mkdir()
    files = make_files(media, args.files)
    os.environ.setdefault("MEDIAINDEX_LOAD_PLUGINS", "none")
    p = Pipeline(Config.load(root / "data"))
    p.state.set_root(str(media), "online")
    ids = {}
    for f in files:
        st, media_id = f.stat(), content_id(f)
        p.state.claimed(str(f), media_id, size=st.st_size, mtime=st.st_mtime, probe=probe(str(f)))
        ids[f] = media_id
    handle = start_server(p, port=0)
    base = f"http://127.0.0.1:{handle.port}/api/media"
    first: dict[str, list[tuple[float, float]]] = {}
    warm: list[float] = []
    try:
        with httpx.Client(timeout=60) as client:
            for f, media_id in ids.items():
                t, c = time.perf_counter(), time.process_time()
                r = client.get(f"{base}/{media_id}/artwork")
                assert r.status_code == 200, r.text
                first.setdefault(f.suffix, []).append(((time.perf_counter() - t) * 1000,
                                                       (time.process_time() - c) * 1000))
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.requests - 1):
                for media_id in ids.values():
                    t1 = time.perf_counter()
                    r = client.get(f"{base}/{media_id}/artwork")
                    warm.append((time.perf_counter() - t1) * 1000)
                    assert r.status_code == 200
            cpu_warm = (time.process_time() - c) * 1000 / max(1, len(warm))
    finally:
        handle.stop()
    print(f"{len(ids)} files, {args.requests} requests each: {p.artwork.extractions} extractions")
    assert p.artwork.extractions == len(ids), "a cover was extracted more than once"
    print("first request (extracts; ffmpeg runs in a child process, not in this CPU time):")
    for ext, times in first.items():
        times.sort()
        print(f"  {ext:<6} p50 {times[len(times) // 2][0]:6.1f} ms   max {times[-1][0]:6.1f} ms   "
              f"cpu p50 {times[len(times) // 2][1]:5.1f} ms")
    warm.sort()
    print(f"cached: p50 {warm[len(warm) // 2]:.2f} ms   p95 {warm[int(len(warm) * 0.95)]:.2f} ms   "
          f"cpu {cpu_warm:.2f} ms per request (server and client)")
    p.close()


if __name__ == "__main__":
    main()
