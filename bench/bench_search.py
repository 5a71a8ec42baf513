"""Benchmark: the embedded SQLite index (mediaindex.builtin.sqlite_index).

Builds a synthetic index of ``--hours`` of transcript (default 1,000 h = 720k segments of 5 s,
~2.6 words/s, a Zipf-distributed vocabulary of 50k words, every word with its time) in a temp
dir, then measures

- indexing throughput: segments/s spent in ``SqliteIndex.upsert`` (one call per 1-hour media,
  word timestamps included; the synthetic data generation is not counted);
- search latency (``search()``, limit 20, the hits fully built: snippet, jump time) for a query
  mix: rare / mid-frequency / frequent words, 2-3 word phrases, prefixes (search as you type),
  2-3 word AND queries, partial queries (3 words of a real segment + 1 word that is in no
  segment, which needs the partial-match fallback), long queries (440 characters of the 100
  most frequent words, as if a paragraph were pasted: no segment has them all), and misspelled
  words (1 edit of a real word of 5-8 letters, 2 edits from 9 letters, and "sounds like"
  variants: 3 vowels changed, the Double Metaphone key kept), which need the forgiving
  expansion (mediaindex.forgive);
- the same mix while ``--long-clients`` clients send long queries nonstop, all through 4 search
  threads as in a web server process (how much heavy clients slow the others);
- facets latency (no cache): the empty query, with and without filters; frequent, mid and rare
  words (``--facets-only``: only this);
- the Meilisearch path's own cost in the core (mediaindex.forgive.layer, ``--no-core``: skip):
  filling the core's word list (``WordBook.set_media``, per media, timed apart from ``upsert``)
  and, per query of the mix and of the misspelled category, the expansion (``plan`` + ``render``:
  numbers, spellings, sound-alikes, as for a backend that forgives only typos and compounds)
  and the "did you mean" explanation of 20 hits; how many queries it expands (each expanded
  query costs the backend a second request).

Usage::

    .venv/bin/python bench/bench_search.py               # 1,000 hours (~5 min, ~1 GB temp)
    .venv/bin/python bench/bench_search.py --hours 50    # quick run
    .venv/bin/python bench/bench_search.py --keep /tmp/ix --hours 100   # keep the DB

Not a test: it prints numbers; bench/README.md records them.
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mediaindex.builtin.sqlite_index import SqliteIndex  # noqa: E402
from mediaindex.models import Media, SearchQuery, Segment, Word  # noqa: E402

SEG_SECONDS = 5.0
clock = time.perf_counter  # or time.process_time (--cpu-time)
WORDS_PER_SECOND = 2.6


def make_vocab(n: int, rng: random.Random) -> list[str]:
    """n distinct pseudo-words; lower ranks (more frequent) are shorter, like real languages."""
    cons = "bcdfghjklmnprstvwz"
    vows = "aeiou"
    syl = [c + v for c in cons for v in vows] + [c + v + e for c in cons for v in vows for e in "nrs"]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = 1 + min(4, int(len(out) ** 0.25 / 2.2) + rng.randint(0, 1))
        w = "".join(rng.choice(syl) for _ in range(k))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def zipf_cum(n: int, s: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (r ** s) for r in range(1, n + 1)))


def gen_media(i: int, seconds: float, vocab, cum, rng: random.Random) -> tuple[Media, list[Segment]]:
    nseg = int(seconds / SEG_SECONDS)
    per = int(SEG_SECONDS * WORDS_PER_SECOND)
    counts = [max(3, per + rng.randint(-4, 4)) for _ in range(nseg)]
    words = rng.choices(vocab, cum_weights=cum, k=sum(counts))
    segs = []
    pos = 0
    folder = f"/data/show{i % 40:02d}/season{i % 7}"
    for si, cnt in enumerate(counts):
        t0 = si * SEG_SECONDS
        step = SEG_SECONDS / cnt
        ws = words[pos:pos + cnt]
        pos += cnt
        wl = [Word(w, round(t0 + k * step, 3), round(t0 + (k + 1) * step - 0.05, 3)) for k, w in enumerate(ws)]
        text = " ".join(ws).capitalize() + "."
        wl[0].text = ws[0].capitalize()
        segs.append(Segment(index=si, start=t0, end=t0 + SEG_SECONDS, text=text, words=wl,
                            language=("en", "fr", "de")[i % 3], emotion=("neutral", "happy", "sad")[si % 3],
                            kind="singing" if si % 50 == 0 else "speech"))
    path = f"{folder}/episode_{i:05d}.mp3"
    m = Media(id=f"m{i:06d}", path=path, paths=[path], size=1, mtime=1.7e9 + i, duration=seconds,
              language=("en", "fr", "de")[i % 3])
    return m, segs


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no samples."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1000.0)
    ap.add_argument("--vocab", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=150, help="queries per category")
    ap.add_argument("--media-hours", type=float, default=1.0, help="length of each synthetic media")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="build the index here and keep it")
    ap.add_argument("--optimize", action="store_true", help="merge the FTS index before searching")
    ap.add_argument("--search-only", action="store_true", help="reuse the index kept in --keep")
    ap.add_argument("--facets-only", action="store_true", help="measure only the facets")
    ap.add_argument("--long-clients", type=int, default=8, help="threads sending long queries during the"
                    " contention run (0: skip it)")
    ap.add_argument("--no-core", action="store_true", help="skip the core's forgiving (the Meilisearch path)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time, not the wall clock (on a busy machine: what it "
                         "would take on a quiet one, roughly)")
    args = ap.parse_args()
    global clock
    clock = time.process_time if args.cpu_time else time.perf_counter

    rng = random.Random(args.seed)
    vocab = make_vocab(args.vocab, rng)
    cum = zipf_cum(len(vocab))
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench_search_"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "index.sqlite3"
    if not args.search_only:
        for p in tmp.glob("index.sqlite3*"):
            p.unlink()
    ix = SqliteIndex(db)
    book = None
    if not args.no_core and not args.facets_only:
        from mediaindex.forgive.wordbook import WordBook

        if not args.search_only:
            for p in tmp.glob("words.sqlite3*"):
                p.unlink()
        book = WordBook(tmp / "words.sqlite3")
    if not args.search_only:
        build(args, ix, vocab, cum, rng, tmp, book)
    if not args.facets_only:
        search_bench(args, ix, vocab, book)
    facets_bench(ix, vocab)
    ix.close()
    if book is not None:
        book.close()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def build(args, ix, vocab, cum, rng, tmp, book=None) -> None:
    total_seconds = args.hours * 3600
    n_media = max(1, math.ceil(total_seconds / (args.media_hours * 3600)))
    nseg = nwords = 0
    t_index = t_book = 0.0
    t_wall = time.perf_counter()
    print(f"building {args.hours:g} h in {n_media} media at {ix.path} ...", flush=True)
    for i in range(n_media):
        secs = min(args.media_hours * 3600, total_seconds - i * args.media_hours * 3600)
        m, segs = gen_media(i, secs, vocab, cum, rng)
        t0 = clock()
        ix.upsert(m, segs)
        t_index += clock() - t0
        if book is not None:
            t0 = clock()
            book.set_media(m.id, [sg.text for sg in segs] + [m.title or ""])
            t_book += clock() - t0
        nseg += len(segs)
        nwords += sum(len(s.words) for s in segs)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n_media} media, {nseg} segments, {nseg / t_index:,.0f} seg/s", flush=True)
    t_wall = time.perf_counter() - t_wall
    size = sum(p.stat().st_size for p in tmp.glob("index.sqlite3*"))
    print(f"indexed {nseg:,} segments ({nwords:,} words) in {t_index:.1f} s inside upsert "
          f"({t_wall:.1f} s wall incl. data generation): {nseg / t_index:,.0f} segments/s, "
          f"{nwords / t_index:,.0f} words/s; DB {size / 1e6:,.0f} MB")
    if book is not None:
        bsize = sum(p.stat().st_size for p in tmp.glob("words.sqlite3*"))
        print(f"the core's word list (the Meilisearch path, outside upsert): {t_book:.1f} s, "
              f"{nseg / t_book:,.0f} segments/s; {bsize / 1e6:,.1f} MB, {len(book.vocabulary()):,} words")
    if args.optimize:
        t0 = time.perf_counter()
        ix.optimize()
        print(f"optimize: {time.perf_counter() - t0:.1f} s")



def long_query(vocab, rng: random.Random, chars: int = 440) -> str:
    """The most frequent words in random order, up to ``chars`` characters (a pasted paragraph)."""
    words: list[str] = []
    while len(" ".join(words)) < chars:
        words.append(vocab[rng.randrange(100)])
    return " ".join(words[:-1]) + " "


def contention(ix, mix: dict[str, list[str]], longs: list[str], clients: int, threads: int = 4) -> None:
    """The normal mix (5 queries of each category, in turn, one client) while ``clients`` clients
    send long queries nonstop, all through one FIFO of ``threads`` search threads, as a web
    server process runs them (``MEDIAINDEX_WEB_THREADS``, 4): a latency includes the wait."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    long_ms: list[float] = []
    pool = ThreadPoolExecutor(max_workers=threads)

    def timed(s: str) -> float:
        t0 = time.perf_counter()
        pool.submit(ix.search, SearchQuery(s, limit=20)).result()
        return (time.perf_counter() - t0) * 1000

    def heavy(k: int) -> None:
        i = k
        while not stop.is_set():
            long_ms.append(timed(longs[i % len(longs)]))
            i += clients

    heavies = [threading.Thread(target=heavy, args=(k,), daemon=True) for k in range(clients)]
    for t in heavies:
        t.start()
    normal = [qs[i] for i in range(min(5, *(len(qs) for qs in mix.values()))) for qs in mix.values()]
    try:
        ts = [timed(s) for s in normal]
    finally:
        stop.set()
        for t in heavies:
            t.join()
        pool.shutdown()
    print(f"\nwith {clients} clients sending long queries nonstop ({threads} search threads): the normal mix "
          f"({len(ts)} queries) p50 {pct(ts, 50):.1f} / p95 {pct(ts, 95):.1f} / max {max(ts):.1f} ms; the long "
          f"queries ({len(long_ms)}) p50 {pct(long_ms, 50):.1f} / max {max(long_ms):.1f} ms")


def search_bench(args, ix, vocab, book=None) -> None:
    q = args.queries
    conn = ix._conn()
    maxid = conn.execute("SELECT max(id) FROM docs").fetchone()[0]
    sample_rng = random.Random(args.seed + 2)
    sample_segments = []
    while len(sample_segments) < 500:
        row = conn.execute("SELECT text FROM docs WHERE id = ?", (sample_rng.randint(1, maxid),)).fetchone()
        if row:
            sample_segments.append(row[0].lower().rstrip(".").split())
    qr = random.Random(args.seed + 1)
    nv = len(vocab)
    mix: dict[str, list[str]] = {
        "rare word": [vocab[qr.randrange(nv // 2, nv)] + " " for _ in range(q)],
        "mid word": [vocab[qr.randrange(300, 3000)] + " " for _ in range(q)],
        "frequent word": [vocab[qr.randrange(0, 30)] + " " for _ in range(q)],
    }
    phr, prefix, andq, part = [], [], [], []
    for _ in range(q):
        s = qr.choice(sample_segments)
        k = qr.choice((2, 3))
        a = qr.randrange(0, max(1, len(s) - k))
        phr.append('"' + " ".join(s[a:a + k]) + '"')
        w = vocab[qr.randrange(100, nv)]
        prefix.append(w[:max(3, min(len(w) - 1, qr.randint(3, 5)))])
        andq.append(" ".join(qr.sample(s, min(k, len(s)))) + " ")
        words = qr.sample(sorted(set(s)), min(3, len(set(s))))
        words.insert(qr.randrange(len(words) + 1), "qzxv" + str(qr.randrange(10 ** 6)))  # not in any segment
        part.append(" ".join(words) + " ")
    mix.update({"phrase 2-3 words": phr, "prefix (as you type)": prefix, "AND 2-3 words": andq,
                "partial (1 word absent)": part})
    longs = [long_query(vocab, qr) for _ in range(min(q, 30))]
    try:
        misspelled, meant = misspellings(sorted({w for s in sample_segments for w in s}), vocab, q, qr)
    except ImportError:  # a version without mediaindex.forgive
        misspelled, meant = [], []

    # warm up the page cache and jieba-free paths
    for qs in mix.values():
        for s in qs[:5]:
            ix.search(SearchQuery(s))
    print(f"\nsearch latency, limit 20 ({q} queries per category), ms:")
    print(f"| {'category':<26} | {'p50':>6} | {'p95':>6} | {'p99':>6} | {'mean hits total':>15} |")
    print(f"|{'-' * 28}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 17}|")
    allt: list[float] = []
    partial_ok = 0
    misspelled_found = 0
    for name, qs in [*mix.items(), ("misspelled (not in overall)", misspelled)]:
        if not qs:
            continue
        ts, totals = [], []
        found = 0
        for i, s in enumerate(qs):
            t0 = clock()
            r = ix.search(SearchQuery(s, limit=20))
            ts.append((clock() - t0) * 1000)
            totals.append(r.total)
            if name.startswith("partial") and r.partial and r.hits and r.hits[0].matched_words >= 3:
                partial_ok += 1
            if name.startswith("misspelled") and any(meant[i] in h.text.lower().rstrip(".").split()
                                                     for h in r.hits[:3]):
                found += 1
        if name.startswith("misspelled"):
            misspelled_found = found
        else:
            allt += ts
        print(f"| {name:<26} | {pct(ts, 50):6.2f} | {pct(ts, 95):6.2f} | {pct(ts, 99):6.2f} | "
              f"{statistics.mean(totals):15,.0f} |")
        if name.startswith("partial"):
            print(f"| {'overall':<26} | {pct(allt, 50):6.2f} | {pct(allt, 95):6.2f} | {pct(allt, 99):6.2f} | "
                  f"{'':>15} |")
    print(f"partial queries whose best hit has the 3 present words: {partial_ok}/{q}")
    if misspelled:
        print(f"misspelled queries with the meant word in a top-3 hit: {misspelled_found}/{len(misspelled)}")
    ts, stopped = [], 0
    for s in longs:
        t0 = time.perf_counter()
        r = ix.search(SearchQuery(s, limit=20))
        ts.append((time.perf_counter() - t0) * 1000)
        stopped += bool(getattr(r, "stopped_early", False))
    print(f"long queries (440 characters of frequent words, {len(longs)}): p50 {pct(ts, 50):.1f} / "
          f"p95 {pct(ts, 95):.1f} / max {max(ts):.1f} ms, {stopped} stopped early")
    if book is not None:
        core_bench(ix, book, mix, misspelled, meant)
    if args.long_clients:
        contention(ix, mix, longs, args.long_clients)


def core_bench(ix, book, mix: dict[str, list[str]], misspelled: list[str], meant: list[str]) -> None:
    """The core's expansion and explanation for a backend that forgives typos and compounds
    only (Meilisearch): CPU work in this process, before and after the backend's requests."""
    from mediaindex.forgive.layer import ForgivingIndex, render
    from mediaindex.forgive.query import parse_search

    class Remote:  # what the meilisearch plugin declares
        forgives = frozenset({"typo", "compound"})
        library = None

    core = ForgivingIndex(Remote(), book)  # type: ignore[arg-type]
    print("\nthe core's expansion for the Meilisearch path (plan + render; explain = did-you-mean of 20 hits), ms:")
    print(f"| {'category':<26} | {'plan p50':>8} | {'plan p95':>8} | {'explain p95':>11} | {'expanded':>8} |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 10}|")
    allt: list[float] = []
    for name, qs in [*mix.items(), ("misspelled", misspelled)]:
        if not qs:
            continue
        ts, ex, expanded, meant_found = [], [], 0, 0
        for i, s in enumerate(qs):
            hits = ix.search(SearchQuery(s, limit=20)).hits
            t0 = clock()
            terms, excluded = parse_search(s)
            plan = core.plan(terms)
            if plan is not None:
                render(plan, excluded, terms[-1].prefix)
            ts.append((clock() - t0) * 1000)
            t0 = clock()
            core._picks(hits, plan or terms)
            ex.append((clock() - t0) * 1000)
            expanded += plan is not None
            if name == "misspelled" and plan is not None and any(
                    meant[i] in (a.term.raw for a in getattr(t, "alts", ())) for t in plan):
                meant_found += 1
        if name != "misspelled":
            allt += ts
        print(f"| {name:<26} | {pct(ts, 50):8.3f} | {pct(ts, 95):8.3f} | {pct(ex, 95):11.3f} | "
              f"{expanded:>3}/{len(qs):<4} |")
        if name == "misspelled":
            print(f"misspelled queries whose meant word the core offers (sound-alikes; typos are the "
                  f"server's): {meant_found}/{len(qs)}")
    print(f"existing mix overall: plan p50 {pct(allt, 50):.3f} / p95 {pct(allt, 95):.3f} ms")


def facets_bench(ix, vocab, repeat: int = 7) -> None:
    """Facet latency, no cache in front (the median of ``repeat`` calls): the empty query with
    and without a filter (kept counts), frequent words (a sampled estimate), a mid and a rare word."""
    cases = [("empty query", SearchQuery("")), ("empty, lang=fr", SearchQuery("", language="fr")),
             ("empty, folder", SearchQuery("", path_prefix="/data/show07/")),
             ("frequent word #1", SearchQuery(vocab[0])), ("frequent word #6", SearchQuery(vocab[5])),
             ("2 frequent words", SearchQuery(f"{vocab[1]} {vocab[3]}")),
             ("frequent, lang=fr", SearchQuery(vocab[5], language="fr")),
             ("mid word #2000", SearchQuery(vocab[2000])), ("rare word #40000", SearchQuery(vocab[40000]))]
    print("facets (ms, median of %d; est = counts estimated from a sample):" % repeat)
    for label, q in cases:
        ts = []
        for _ in range(repeat):
            t0 = clock()
            counts = ix.facets(q)
            ts.append((clock() - t0) * 1000)
        docs = sum(counts["kind"].values())
        print(f"  {label:<20} {statistics.median(ts):8.1f}  max {max(ts):8.1f}  {docs:>9,} docs"
              f"{'  est' if counts.estimated else ''}")


def misspellings(words: list[str], vocab: list[str], n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """n misspelled queries (two thirds typos, one third sound-alikes) of words of 5+ letters in
    ``words`` (words of indexed segments) that are not words of ``vocab``, and the words meant."""
    from mediaindex.forgive.vocab import max_typos, sound_key

    known = set(vocab)
    letters = "abcdefghijklmnopqrstuvwxyz"
    queries: list[str] = []
    meant: list[str] = []
    while len(queries) < n:
        w = words[rng.randrange(len(words))]
        if len(w) < 5:
            continue
        if len(queries) % 3 == 2:  # sounds like: three vowels changed, same Double Metaphone key
            spots = [i for i in range(1, len(w)) if w[i] in "aeiou"]
            if len(w) < 7 or len(spots) < 3:
                continue
            chars = list(w)
            for i in rng.sample(spots, 3):
                chars[i] = rng.choice([v for v in "aeiou" if v != w[i]])
            bad = "".join(chars)
            if sound_key(bad) != sound_key(w):
                continue
        else:  # typos: 1 edit from 5 letters, 2 from 9
            bad = w
            for _ in range(max_typos(w)):
                i = rng.randrange(len(bad))
                op = rng.randrange(4)
                if op == 0:
                    bad = bad[:i] + rng.choice(letters) + bad[i + 1:]
                elif op == 1:
                    bad = bad[:i] + bad[i + 1:]
                elif op == 2:
                    bad = bad[:i] + rng.choice(letters) + bad[i:]
                elif i + 1 < len(bad):
                    bad = bad[:i] + bad[i + 1] + bad[i] + bad[i + 2:]
        if bad == w or bad in known:
            continue
        queries.append(bad + " ")
        meant.append(w)
    return queries, meant


if __name__ == "__main__":
    main()
