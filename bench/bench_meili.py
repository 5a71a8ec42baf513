"""Benchmark: the ``meilisearch`` index plugin's own cost (batching, serialisation, HTTP).

Writes ``--segments`` synthetic segments (12 words each, with word times, in media of
``--per-media`` segments) through ``MeiliIndex.upsert`` to the loopback double
(tests/meili_double.py, spec validation off) and reports documents/s, the time spent in the
plugin and client (wall time minus the time the double spent answering), and the payload
sizes. Then ``--queries`` searches: the plugin's time per query beside the server's
``processingTimeMs``. With ``MEILI_URL`` (and ``MEILI_MASTER_KEY``) set, the same runs against a
real Meilisearch (a throw-away index, deleted at the end).

    .venv/bin/python bench/bench_meili.py                     # 20,000 segments, 200 queries
    MEILI_URL=http://127.0.0.1:7700 MEILI_MASTER_KEY=... .venv/bin/python bench/bench_meili.py
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mediaindex.models import Media, SearchQuery, Segment, Word  # noqa: E402


def make_media(k: int, per: int, rng: random.Random, vocab: list[str]) -> tuple[Media, list[Segment]]:
    path = f"/bench/folder{k % 40}/media{k}.mp3"
    m = Media(id=f"m{k:06d}", path=path, paths=[path], size=1, mtime=0.0, duration=per * 5.0, language="en")
    segs = []
    for i in range(per):
        words = [rng.choice(vocab) for _ in range(12)]
        ws = [Word(w, i * 5.0 + j * 0.4, i * 5.0 + j * 0.4 + 0.35) for j, w in enumerate(words)]
        segs.append(Segment(i, i * 5.0, i * 5.0 + 5.0, " ".join(words), ws, language="en", emotion="neutral"))
    return m, segs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=20000)
    ap.add_argument("--per-media", type=int, default=500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--search-segments", type=int, default=2000, help="size of the index searched")
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()

    from mediaindex_meilisearch import MeiliIndex

    rng = random.Random(1)
    vocab = [f"w{i}" + "abcdefgh"[i % 8] * (i % 5) for i in range(5000)]
    uid = f"bench_{uuid.uuid4().hex[:8]}"
    double = None
    if os.environ.get("MEILI_URL"):
        ix = MeiliIndex(os.environ["MEILI_URL"], os.environ.get("MEILI_MASTER_KEY"), uid, batch_docs=args.batch)
        where = f"real Meilisearch at {os.environ['MEILI_URL']}"
    else:
        from meili_double import MeiliDouble

        double = MeiliDouble(validate=False)
        ix = MeiliIndex(double.url, double.master_key, uid, batch_docs=args.batch)
        where = "the loopback double (no spec validation)"
    ix.media_ids()  # create the index and apply the settings: not timed
    media = [make_media(k, args.per_media, rng, vocab) for k in range(max(1, args.segments // args.per_media))]
    n_docs = sum(len(s) + 1 for _, s in media)
    busy0 = double.busy_s if double else 0.0
    req0 = len(double.requests) if double else 0
    t0, c0 = time.perf_counter(), time.thread_time()
    for m, segs in media:
        ix.upsert(m, segs)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    print(f"writes to {where}: {n_docs} documents in {wall:.2f} s = {n_docs / wall:,.0f} docs/s")
    print(f"  the plugin's own CPU (building documents, JSON, HTTP client; this thread): {cpu:.2f} s = "
          f"{n_docs / max(cpu, 1e-9):,.0f} docs/s of one core")
    if double:
        server = double.busy_s - busy0
        posts = [r for r in double.requests[req0:] if r[0] == "POST" and r[1].endswith("/documents")]
        sizes = [r[2] for r in posts]
        print(f"  the double spent {server:.2f} s answering (same process: it competes for the GIL)")
        print(f"  payloads: {len(posts)} document requests, {sum(sizes) / n_docs:,.0f} bytes/document, "
              f"{statistics.mean(sizes) / 1e6:.2f} MB mean, {max(sizes) / 1e6:.2f} MB max per request")
    if double:  # the double searches in Python: a smaller index for the search part
        ix = MeiliIndex(double.url, double.master_key, uid + "_s", batch_docs=args.batch)
        for m, segs in media[:max(1, args.search_segments // args.per_media)]:
            ix.upsert(m, segs)
    words = [rng.choice(vocab[:500]) for _ in range(args.queries)]
    plugin_ms, server_ms, wall_ms = [], [], []
    for w in words:
        t, c = time.perf_counter(), time.thread_time()
        res = ix._search({"q": w + " ", "filter": ix._filter(SearchQuery(w)), "limit": 20,
                          "showMatchesPosition": True, "attributesToRetrieve": ["*"], "matchingStrategy": "all"})
        [ix._hit(h, [], False) for h in res["hits"]]
        server_ms.append(res["processingTimeMs"])
        plugin_ms.append((time.thread_time() - c) * 1000)
        wall_ms.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles
    print(f"search ({args.queries} one-word queries, limit 20, hits built): the plugin's own CPU p50 "
          f"{q(plugin_ms, n=20)[9]:.2f} ms, p95 {q(plugin_ms, n=20)[18]:.2f} ms; wall p50 {q(wall_ms, n=20)[9]:.1f} ms;"
          f" server processingTimeMs p50 {q(server_ms, n=20)[9]:.0f} ms"
          + (" (the double: not Meilisearch's speed)" if double else ""))
    if double:
        double.stop()
    else:
        ix.client.wait_for_task(ix.client.delete_index(uid).task_uid)


if __name__ == "__main__":
    main()
