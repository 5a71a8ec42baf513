#!/usr/bin/env python3
"""Bucket storage benchmarks (not a test): staging a large file, planning a 100k-object prefix.

    .venv/bin/python bench/bench_buckets.py                          # s3, 1 GB, 100k objects
    .venv/bin/python bench/bench_buckets.py --scheme oss --only stage --gb 0.25
    .venv/bin/python bench/bench_buckets.py --only list --objects 20000

The store is moto's S3 server (for oss: behind the OSS adapter of tests/bucket_servers.py) in
this process; every measurement runs in a fresh child process, so its RSS is the plugin's alone.

1. **Staging**: ``stage()`` of an N GB file of random bytes (multipart, ``part_mb`` 16,
   ``concurrency`` 4), then ``unstage()``. Measured: peak RSS of the child (goal < 200 MB)
   and throughput, next to the local disk's copy speed of the same file.
2. **Listing and planning N objects**: ``Pipeline.plan`` over a prefix of N objects in
   folders of 1,000 (``library/show0001/…``) that the state does not know (a first index):
   seconds, CPU seconds of the client (listing, plan) and of the server (moto, this process),
   peak RSS of the client and the load average (goal < 30 s, bounded memory). ``--set
   list_concurrency=1`` (or ``list_partitions=0``: flat) measures the listing without its
   parallel folders.
3. **Restart over the unchanged prefix**: the same N objects known as indexed (rows written
   from the first plan), a fresh process plans again: seconds, and how many would be
   transcribed (goal: 0).
"""
from __future__ import annotations

import argparse
import secrets
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), *map(str, sorted(ROOT.glob("plugins/mediaindex-*")))]  # this checkout
os.environ["MEDIAINDEX_LOAD_PLUGINS"] = ""
# moto checks no signature: credentials made per run, so none is written in the source
KEY_ID, SECRET = "AKID" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)


def cpu_s() -> float:
    """CPU seconds this process used (the plugin's and the planner's work, not the server's)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_mb": out.get("VmHWM", 0.0)}


def storage(scheme: str, endpoint: str, **settings):
    os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                      OSS_ACCESS_KEY_ID=KEY_ID, OSS_ACCESS_KEY_SECRET=SECRET)
    if scheme == "s3":
        from mediaindex_s3.plugin import S3Storage

        return S3Storage({"endpoint_url": endpoint, "addressing_style": "path", **settings})
    from mediaindex_oss.plugin import OssStorage

    return OssStorage({"endpoint": endpoint, "addressing_style": "path", **settings}, (KEY_ID, SECRET, None))


# ---- children --------------------------------------------------------------------------------


def child_stage(scheme: str, endpoint: str, bucket: str, file: str) -> dict:
    store = storage(scheme, endpoint, bucket=bucket, prefix="staging")
    base = peak_mb()
    t0 = time.perf_counter()
    store.stage(Path(file), "mediaindex-staging/big.bin")
    seconds = time.perf_counter() - t0
    after = peak_mb()
    store.unstage("mediaindex-staging/big.bin")
    size = os.path.getsize(file)
    return {"seconds": round(seconds, 2), "mb_per_s": round(size / seconds / 2**20, 1),
            "rss_before_mb": base["rss_mb"], "peak_mb": after["peak_mb"]}


def child_plan(scheme: str, endpoint: str, bucket: str, data: str, write_rows: bool, settings: str = "") -> dict:
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.plugins import load_plugins
    import importlib

    storage(scheme, endpoint)  # environment
    Path(data, "config.toml").write_text(
        f'[{scheme}]\n{"endpoint_url" if scheme == "s3" else "endpoint"} = "{endpoint}"\naddressing_style = "path"\n'
        + "".join(f"{line}\n" for line in settings.split(",") if line))
    load_plugins().register(importlib.import_module(f"mediaindex_{scheme}.plugin"), name=scheme)
    base = peak_mb()
    p = Pipeline(Config.load(data))
    t0, c0 = time.perf_counter(), cpu_s()
    plan = p.plan([f"{scheme}://{bucket}/library"])
    seconds = time.perf_counter() - t0
    out = {"seconds": round(seconds, 2), "cpu_s": round(cpu_s() - c0, 2), "changed": len(plan.changed),
           "unchanged": plan.unchanged, "offline": plan.offline, "rss_before_mb": base["rss_mb"], "peak_mb": peak_mb()["peak_mb"]}
    if write_rows:  # as if the first index had finished: every object known, indexed
        now = time.time()
        with p.state.tx() as c:
            c.executemany("INSERT INTO files (path, size, mtime, media_id, status, error, added, updated) "
                          "VALUES (?, ?, ?, ?, 'indexed', NULL, ?, ?)",
                          [(f.path, f.size, f.mtime, f"{i:020x}", now, now) for i, f in enumerate(plan.changed)])
    p.close()
    return out


def in_child(*args: str) -> dict:
    """Run a measurement in a fresh child; adds the CPU seconds this process (the store's
    server) spent meanwhile and the load average at the end."""
    c0 = cpu_s()
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["server_cpu_s"], out["load"] = round(cpu_s() - c0, 2), " ".join(f"{x:.2f}" for x in os.getloadavg())
    return out


# ---- the parent: servers and data ------------------------------------------------------------


def serve(scheme: str):
    import bucket_servers

    if scheme == "s3":
        server, endpoint = bucket_servers.start_s3()
        return endpoint
    return bucket_servers.start_oss().endpoint


def bucket_backend():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def bench_stage(scheme: str, endpoint: str, gb: float) -> None:
    bucket_backend().create_bucket("bench-staging", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        chunk = os.urandom(16 << 20)
        with open(big, "wb") as f:
            for _ in range(int(gb * 1024 / 16)):
                f.write(chunk)
        t0 = time.perf_counter()
        shutil.copyfile(big, Path(tmp) / "copy.bin")
        disk = big.stat().st_size / (time.perf_counter() - t0) / 2**20
        os.unlink(Path(tmp) / "copy.bin")
        result = in_child("stage", scheme, endpoint, "bench-staging", str(big))
    print(f"staging {gb:g} GB ({scheme}): {result['seconds']} s, {result['mb_per_s']} MB/s "
          f"(local disk copy: {disk:.0f} MB/s); RSS before {result['rss_before_mb']} MB, "
          f"peak {result['peak_mb']} MB (goal < 200)")


def bench_list(scheme: str, endpoint: str, n: int, settings: str = "") -> None:
    backend = bucket_backend()
    backend.create_bucket("bench-list", "us-east-1")
    t0 = time.perf_counter()
    payload = b"ID3" + b"\0" * 13
    for i in range(n):
        backend.put_object("bench-list", f"library/show{i // 1000:04d}/episode{i:06d}.mp3", payload)
    print(f"made {n} objects in moto in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as data:
        first = in_child("plan", scheme, endpoint, "bench-list", data, "1", settings)
        print(f"list + plan {n} objects ({scheme}, first index): {first['seconds']} s (goal < 30); CPU: "
              f"{first['cpu_s']} s in the client, {first['server_cpu_s']} s in the server; "
              f"{first['changed']} new; RSS before {first['rss_before_mb']} MB, peak {first['peak_mb']} MB; "
              f"load {first['load']}")
        again = in_child("plan", scheme, endpoint, "bench-list", data, "0", settings)
        print(f"restart over the unchanged prefix: {again['seconds']} s; CPU: {again['cpu_s']} s in the client, "
              f"{again['server_cpu_s']} s in the server; {again['changed']} to transcribe "
              f"(goal 0), {again['unchanged']} unchanged; peak {again['peak_mb']} MB; load {again['load']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *args = sys.argv[2:]
        out = child_stage(*args) if kind == "stage" else child_plan(*args[:4], args[4] == "1", *args[5:])
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", choices=["s3", "oss"], default="s3")
    ap.add_argument("--only", choices=["stage", "list"])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--set", default="", metavar="K=V,…",
                    help="plugin settings for the listing, e.g. list_concurrency=1 (TOML values)")
    args = ap.parse_args()
    endpoint = serve(args.scheme)
    if args.only in (None, "stage"):
        bench_stage(args.scheme, endpoint, args.gb)
    if args.only in (None, "list"):
        bench_list(args.scheme, endpoint, args.objects, args.set)


if __name__ == "__main__":
    main()
