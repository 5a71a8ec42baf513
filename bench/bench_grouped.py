"""Benchmark: search results grouped by recording (``/api/search?group=media``, hits.grouped_search)
on the embedded SQLite index, against the flat list.

Builds a synthetic index (bench_search.py's generator: ``--hours`` of transcript in media of
``--media-hours``) and times, per query class (rare, mid-frequency and frequent words, 2-word
AND queries), a flat page (20 hits) and a grouped page (20 recordings, each with up to 10
moments: one ``one_per_media`` search, then one ``media_id`` search per recording), plus one
recording's moments alone (a ``media_id`` search: the index reads only that media's rowid
range). Reports p50/p95 in ms, wall and CPU (``time.process_time``) time; the machine's load
is printed too.

Usage::

    .venv/bin/python bench/bench_grouped.py --hours 100 --media-hours 0.5
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import gen_media, make_vocab, pct, zipf_cum  # noqa: E402

from mediaindex.builtin.sqlite_index import SqliteIndex  # noqa: E402
from mediaindex.hits import grouped_search, search_json  # noqa: E402
from mediaindex.models import SearchQuery  # noqa: E402


def timed(fn, queries):
    wall, cpu = [], []
    for q in queries:
        w, c = time.perf_counter(), time.process_time()
        fn(q)
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=100.0)
    ap.add_argument("--media-hours", type=float, default=0.5)
    ap.add_argument("--vocab", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    vocab = make_vocab(args.vocab, rng)
    cum = zipf_cum(len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        ix = SqliteIndex(Path(tmp) / "index.sqlite3")
        n = max(1, round(args.hours / args.media_hours))
        for i in range(n):
            ix.upsert(*gen_media(i, args.media_hours * 3600, vocab, cum, rng))
        segs = ix._conn().execute("SELECT count(*) FROM docs").fetchone()[0]
        print(f"{n} media, {segs:,} segments; load {os.getloadavg()[0]:.1f}")
        qr = random.Random(args.seed + 1)
        nv = len(vocab)
        mix = {"rare word": [vocab[qr.randrange(nv // 2, nv)] + " " for _ in range(args.queries)],
               "mid word": [vocab[qr.randrange(300, 3000)] + " " for _ in range(args.queries)],
               "frequent word": [vocab[qr.randrange(0, 30)] + " " for _ in range(args.queries)],
               "2 words": [f"{vocab[qr.randrange(30, 300)]} {vocab[qr.randrange(30, 300)]} "
                           for _ in range(args.queries)]}
        print(f"{'query':<14} {'flat p50/p95':>14} {'grouped p50/p95':>16} {'grouped cpu p95':>16} "
              f"{'moments p95':>12}")
        for name, queries in mix.items():
            flat, _ = timed(lambda q: search_json(ix.search(SearchQuery(q, limit=20)), SearchQuery(q)), queries)
            grouped, gcpu = timed(lambda q: grouped_search(ix, SearchQuery(q, limit=20)), queries)
            ids = [f"m{qr.randrange(n):06d}" for _ in queries]
            one, _ = timed(lambda q: ix.search(SearchQuery(q[0], media_id=q[1], limit=10)), list(zip(queries, ids)))
            print(f"{name:<14} {pct(flat, 50):6.1f}/{pct(flat, 95):6.1f} {pct(grouped, 50):7.1f}/{pct(grouped, 95):7.1f}"
                  f" {pct(gcpu, 95):16.1f} {pct(one, 95):12.1f}")
        ix.close()


if __name__ == "__main__":
    main()
