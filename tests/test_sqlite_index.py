"""The embedded SQLite index: real SQLite FTS5, synthetic segments with word times."""
from __future__ import annotations

import threading
import time

import pytest

from mediaindex.builtin.sqlite_index import SqliteIndex, register_index_backends
from mediaindex.config import Config
from mediaindex.models import Media, SearchQuery, Segment, Word
from mediaindex.textsearch import find_matches, index_text, parse_query, snippet


def seg(index: int, text: str, start: float, *, step: float = 0.5, words: list[str] | None = None,
        **kw) -> Segment:
    """A segment whose words (whitespace-separated unless given) start every ``step`` seconds."""
    ws = words if words is not None else text.split()
    wl = [Word(w, round(start + k * step, 3), round(start + (k + 1) * step - 0.05, 3)) for k, w in enumerate(ws)]
    end = start + max(1, len(ws)) * step
    return Segment(index=index, start=start, end=end, text=text, words=wl, **kw)


def media(mid: str, path: str, **kw) -> Media:
    return Media(id=mid, path=path, paths=[path], size=100, mtime=1.0, duration=600.0, **kw)


@pytest.fixture
def ix(tmp_path):
    index = SqliteIndex(tmp_path / "sub" / "index.sqlite3")
    yield index
    index.close()


@pytest.fixture
def filled(ix):
    ix.upsert(media("a", "/pod/show/ep1.mp3", language="en"), [
        seg(0, "Welcome to the show about space travel", 0.0, language="en", emotion="neutral"),
        seg(1, "Astronauts grow lettuce in a small chamber on the station", 10.0, language="en",
            emotion="happy"),
        seg(2, "The café near the launch site serves strong coffee", 20.0, language="en", emotion="neutral"),
        seg(3, "la la la the rocket song", 30.0, language="en", kind="singing"),
    ])
    ix.upsert(media("b", "/pod/other_100%/ep2.mp3", language="fr"), [
        seg(0, "Bonjour et bienvenue dans le podcast sur l'espace", 0.0, language="fr", emotion="neutral"),
        seg(1, "Les astronautes mangent de la salade", 7.0, language="fr", emotion="sad"),
    ])
    return ix


def q(ix, text, **kw):
    return ix.search(SearchQuery(text, **kw))


def test_register_hook_uses_data_dir(tmp_path):
    got = []
    register_index_backends(got.append, Config(data_dir=tmp_path))
    assert len(got) == 1 and got[0].name == "sqlite"
    assert got[0].path == tmp_path / "index.sqlite3"
    assert not got[0].path.exists()  # opened lazily


def test_simple_word_and_time(filled):
    r = q(filled, "coffee ")
    assert r.total == 1 and not r.partial
    h = r.hits[0]
    assert h.media_id == "a" and h.path == "/pod/show/ep1.mp3" and h.segment_index == 2
    assert h.time == 20.0 + 8 * 0.5  # 9th word
    assert h.title == "ep1" and h.language == "en" and h.emotion == "neutral"
    assert "<mark>coffee</mark>" in h.snippet


def test_jump_time_is_first_matched_word_fifth_word(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, "one two three four target six seven target", 100.0, step=1.25)])
    h = q(ix, "target ").hits[0]
    assert h.time == 100.0 + 4 * 1.25
    assert h.start == 100.0
    # the first matched word of a multi-word query, in text order
    h = q(ix, "seven three ").hits[0]
    assert h.time == 100.0 + 2 * 1.25


def test_time_with_punctuation_and_whisper_style_words(ix):
    text = "Well, honestly: the answer is forty-two."
    words = [" Well,", " honestly:", " the", " answer", " is", " forty-two."]
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, text, 3.0, words=words)])
    assert q(ix, "answer ").hits[0].time == 3.0 + 3 * 0.5
    assert q(ix, "two ").hits[0].time == 3.0 + 5 * 0.5  # inside the word "forty-two."


def test_time_falls_back_to_segment_start_without_words(ix):
    ix.upsert(media("m", "/x/m.mp3"), [Segment(index=0, start=42.0, end=45.0, text="no word times here")])
    assert q(ix, "times ").hits[0].time == 42.0


def test_phrase(filled):
    r = q(filled, '"small chamber"')
    assert r.total == 1 and r.hits[0].segment_index == 1
    assert "<mark>small chamber</mark>" in r.hits[0].snippet
    assert r.hits[0].time == 10.0 + 5 * 0.5
    assert q(filled, '"chamber small"').total == 0
    # an unclosed quote is a phrase up to the end (and its last word a prefix)
    assert q(filled, '"small cham').total == 1


def test_prefix_search_as_you_type(filled):
    r = q(filled, "astronau")
    assert {(h.media_id, h.segment_index) for h in r.hits} == {("a", 1), ("b", 1)}
    assert q(filled, "lett").total == 1
    # a trailing space ends the word: no prefix expansion
    assert q(filled, "astronau ").total == 0
    assert q(filled, "grow lett").hits[0].time == 10.0 + 1 * 0.5


def test_diacritics_and_case_folded(filled):
    assert q(filled, "cafe ").total == 1
    assert q(filled, "CAFÉ ").total == 1
    assert q(filled, "Café ").hits[0].snippet.count("<mark>café</mark>") == 1


def test_filters(filled):
    assert q(filled, "the ").total == 4
    assert {h.media_id for h in q(filled, "astronau", language="fr").hits} == {"b"}
    assert q(filled, "astronau", language="de").total == 0
    assert [h.segment_index for h in q(filled, "the ", emotion="happy").hits] == [1]
    assert [h.segment_index for h in q(filled, "the ", kind="singing").hits] == [3]
    assert {h.media_id for h in q(filled, "astronau", media_id="b").hits} == {"b"}
    assert {h.media_id for h in q(filled, "astronau", path_prefix="/pod/show/").hits} == {"a"}
    # LIKE wildcards in the prefix are plain characters
    assert {h.media_id for h in q(filled, "astronau", path_prefix="/pod/other_100%").hits} == {"b"}
    assert q(filled, "astronau", path_prefix="/pod/other_1000").total == 0
    assert q(filled, "astronau", path_prefix="/pod/o%").total == 0
    assert q(filled, "astronau", path_prefix="/pod/s_ow").total == 0


def test_limit_offset_total(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(i, f"word{i} common thing", i * 5.0) for i in range(30)])
    r = q(ix, "common ", limit=10)
    assert r.total == 30 and len(r.hits) == 10
    r2 = q(ix, "common ", limit=10, offset=25)
    assert r2.total == 30 and len(r2.hits) == 5
    all_ids = {h.segment_index for off in (0, 10, 20) for h in q(ix, "common ", limit=10, offset=off).hits}
    assert all_ids == set(range(30))


def test_bm25_ranking(ix):
    ix.upsert(media("m", "/x/m.mp3"), [
        seg(0, "rocket launch was delayed because of weather and many other long reasons today", 0.0),
        seg(1, "rocket rocket rocket", 10.0),
    ])
    assert [h.segment_index for h in q(ix, "rocket ").hits] == [1, 0]


def test_snippet_escapes_markup(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, 'He typed <script>alert("x")</script> & left', 0.0)])
    h = q(ix, "alert ").hits[0]
    assert "<script>" not in h.snippet
    assert "&lt;script&gt;<mark>alert</mark>(&quot;x&quot;)&lt;/script&gt; &amp; left" in h.snippet
    h = q(ix, "script ").hits[0]
    assert h.snippet.count("<mark>script</mark>") == 2 and "<script>" not in h.snippet


def test_snippet_window_on_long_text(ix):
    text = " ".join(f"filler{i}" for i in range(80)) + " needle " + " ".join(f"tail{i}" for i in range(40))
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, text, 0.0)])
    h = q(ix, "needle ").hits[0]
    assert "<mark>needle</mark>" in h.snippet and h.snippet.startswith("\u2026") and len(h.snippet) < 260
    assert h.time == 80 * 0.5


def test_partial_fallback_misheard_word(filled):
    r = q(filled, "astronauts grow lettuce in a small chamber")
    assert not r.partial and r.hits[0].segment_index == 1
    # the engine heard "letters"; the user searches what was said
    filled.upsert(media("c", "/pod/show/ep3.mp3"), [
        seg(0, "astronauts grow letters in a small chamber up there", 50.0),
        seg(1, "a letter arrived", 60.0),
    ])
    filled.upsert(media("a", "/pod/show/ep1.mp3"), [seg(0, "nothing to see", 0.0)])
    r = q(filled, "astronauts grow lettuce in a small chamber")
    assert r.partial and r.total >= 1
    best = r.hits[0]
    assert (best.media_id, best.segment_index) == ("c", 0)
    assert best.matched_words == 6
    assert best.time == 50.0


def test_partial_ranking_more_words_first(ix):
    ix.upsert(media("m", "/x/m.mp3"), [
        seg(0, "red apple", 0.0),
        seg(1, "red green apple", 10.0),
        seg(2, "green", 20.0),
        seg(3, "red green blue", 30.0),
    ])
    r = q(ix, "red green blue apple ")
    assert r.partial
    got = [(h.segment_index, h.matched_words) for h in r.hits]
    assert got[0] == (1, 3) or got[0] == (3, 3)
    assert {g[0] for g in got[:2]} == {1, 3}
    assert [m for _, m in got] == sorted([m for _, m in got], reverse=True)
    assert got[-1][1] >= 1
    # a word in no document at all is dropped first
    r = q(ix, "red zzzunknown apple ")
    assert r.partial and r.hits[0].segment_index in (0, 1) and r.hits[0].matched_words == 2


def test_cjk_word_match_and_time(ix):
    # the engine's words are single characters; the index cuts words with jieba
    text = "今天北京的天气很好"
    m = media("z", "/cn/新闻.mp3", language="zh")
    ix.upsert(m, [seg(0, "我们开始吧", 0.0, words=list("我们开始吧"), language="zh"),
                  seg(1, text, 10.0, step=0.3, words=list(text), language="zh")])
    r = q(ix, "北京")
    assert r.total == 1
    h = r.hits[0]
    assert h.segment_index == 1 and h.time == round(10.0 + 2 * 0.3, 3)
    assert "<mark>北京</mark>" in h.snippet
    h = q(ix, "天气").hits[0]
    assert h.time == round(10.0 + 5 * 0.3, 3)
    # a query cut into several words: all must match
    assert q(ix, "北京天气").total == 1
    assert q(ix, "北京 开始").partial
    # a word that is part of a longer word (jieba search-mode sub-words are indexed)
    ix.upsert(media("y", "/cn/b.mp3", language="zh"),
              [seg(0, "中华人民共和国成立了", 5.0, words=["中华人民共和国", "成立", "了"])])
    r = q(ix, "人民")
    assert r.total == 1 and r.hits[0].time == 5.0
    assert q(ix, "共和国").total == 1
    # mixed scripts
    ix.upsert(media("x", "/cn/c.mp3"), [seg(0, "我买了iPhone手机", 1.0, words=["我", "买了", "iPhone", "手机"])])
    assert q(ix, "iphone ").hits[0].time == 1.0 + 2 * 0.5
    assert q(ix, "手机").hits[0].time == 1.0 + 3 * 0.5


def test_update_media_after_move(filled):
    moved = media("a", "/archive/2024/ep1-final.mp3", language="en")
    filled.update_media(moved)
    r = q(filled, "coffee ")
    assert r.hits[0].path == "/archive/2024/ep1-final.mp3"
    assert r.hits[0].title == "ep1-final"
    assert q(filled, "coffee ", path_prefix="/pod/").total == 0
    assert q(filled, "coffee ", path_prefix="/archive/").total == 1
    assert filled.facets(SearchQuery("coffee ")).folder == {"/archive/2024": 1}


def test_delete(filled):
    filled.delete("a")
    assert q(filled, "coffee ").total == 0
    assert {h.media_id for h in q(filled, "astronau").hits} == {"b"}
    assert filled.media_ids() == {"b"}
    filled.delete("does-not-exist")


def test_upsert_replaces(filled):
    segs = [seg(0, "brand new words only", 0.0), seg(1, "and more new words", 5.0)]
    for _ in range(3):
        filled.upsert(media("a", "/pod/show/ep1.mp3"), segs)
    assert q(filled, "coffee ").total == 0
    r = q(filled, "words ")
    assert r.total == 2 and sorted(h.segment_index for h in r.hits) == [0, 1]
    assert filled.media_ids() == {"a", "b"}
    # a media without speech is still in the index
    filled.upsert(media("silent", "/pod/silence.mp3"), [])
    assert "silent" in filled.media_ids()


def test_facets(filled):
    f = filled.facets(SearchQuery(""))
    assert f.language == {"en": 4, "fr": 2}
    assert f.emotion == {"neutral": 3, "happy": 1, "sad": 1}
    assert f.kind == {"speech": 5, "singing": 1}
    assert f.folder == {"/pod/show": 4, "/pod/other_100%": 2}
    f = filled.facets(SearchQuery("astronau"))
    assert f.language == {"en": 1, "fr": 1}
    f = filled.facets(SearchQuery("astronau", language="fr"))
    assert f.language == {"fr": 1} and f.folder == {"/pod/other_100%": 1}
    f = filled.facets(SearchQuery("", kind="singing"))
    assert f.kind == {"singing": 1} and f.language == {"en": 1}
    # partial queries: facets of the partial hits
    f = filled.facets(SearchQuery("astronauts lettuce zzzz "))
    assert f.language == {"en": 1}


NASTY = ['"', '""', '"""', "'", "(", ")", "()", "*", "**", "-", "--x", "NEAR", "NEAR(a b)", "a NEAR b",
         "AND", "OR", "NOT", "a OR b", "a AND NOT b", "^a", "col:val", "body:the", "{body}: x", "a + b",
         '"unclosed phrase', 'say "hi" to (them*', "\x00", "\\", "%", "_", "'; DROP TABLE docs; --",
         "   ", "", "☃", "🚀 rocket", "the*", "*the", "\u200b", "a" * 5000, "北京\"", "ｆｕｌｌ"]


@pytest.mark.parametrize("text", NASTY)
def test_nasty_queries_never_raise(filled, text):
    r = q(filled, text)
    assert len(r.hits) <= r.total  # a consistent answer, not only "no exception"
    assert all(h.snippet.count("<mark>") == h.snippet.count("</mark>") for h in r.hits)
    assert "<script" not in "".join(h.snippet for h in r.hits)
    counts = filled.facets(SearchQuery(text))
    assert all(isinstance(n, int) and n > 0 for n in counts.kind.values())


def test_nasty_query_texts_are_words(filled):
    assert q(filled, "the* ").total == 4  # '*' is punctuation, not syntax
    assert q(filled, "NEAR(the show) ").total >= 1
    assert q(filled, "").total == 0 and q(filled, "").hits == []


def test_concurrent_reader_while_writer_writes(tmp_path):
    ix = SqliteIndex(tmp_path / "index.sqlite3")
    ix.upsert(media("base", "/x/base.mp3"), [seg(0, "stable anchor text", 0.0)])
    errors: list[BaseException] = []
    stop = threading.Event()
    seen_counts = []

    def reader():
        try:
            while not stop.is_set():
                r = ix.search(SearchQuery("anchor "))
                assert r.total == 1
                r = ix.search(SearchQuery("batch "))
                # a media is written atomically: 0 or a multiple of its 20 segments
                assert r.total % 20 == 0, r.total
                seen_counts.append(r.total)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            ix.upsert(media(f"m{i % 5}", f"/x/m{i % 5}.mp3"),
                      [seg(k, f"batch {i} segment {k} words", k * 5.0) for k in range(20)])
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    ix.close()
    assert not errors, errors
    assert seen_counts
    ix2 = SqliteIndex(tmp_path / "index.sqlite3")
    assert ix2.search(SearchQuery("batch ", limit=0)).total == 100
    ix2.close()


# ---- textsearch helpers ------------------------------------------------------------------------


def test_parse_query():
    pq = parse_query('hello "big world" astro')
    assert [(t.tokens, t.phrase, t.prefix) for t in pq.terms] == [
        (["hello"], False, False), (["big", "world"], True, False), (["astro"], False, True)]
    assert parse_query("astro ").terms[0].prefix is False
    assert [t.tokens for t in parse_query("don't").terms] == [["don", "t"]]
    assert parse_query("a a A").terms[0].tokens == ["a"] and len(parse_query("a a A ").terms) == 1
    assert parse_query("*** --- ()").empty


def test_index_text_cjk():
    body, extra = index_text("plain text")
    assert body == "plain text" and extra is None
    body, extra = index_text("中华人民共和国成立")
    assert "中华人民共和国" in body.split() and "人民" in (extra or "").split()


def test_find_matches_and_snippet():
    terms = parse_query("cafe ").terms
    m = find_matches("Le Café, le CAFE.", terms)
    assert [(s, e) for s, e, _ in m] == [(3, 7), (12, 16)]
    assert snippet("Le Café, le CAFE.", m) == "Le <mark>Café</mark>, le <mark>CAFE</mark>."


def test_large_result_paths(ix, monkeypatch):
    """Frequent words skip FTS5's bm25 (it scans whole doclists): same hits, ranked here."""
    from mediaindex.builtin import sqlite_index as mod

    segs = [seg(i, f"common filler words number{i}", i * 5.0) for i in range(40)]
    segs.append(seg(40, "common common common", 200.0))
    ix.upsert(media("m", "/x/m.mp3"), segs)
    exact = q(ix, "common ")
    assert exact.total == 41 and exact.hits[0].segment_index == 40
    monkeypatch.setattr(mod, "BM25_DF_BUDGET", 0)
    monkeypatch.setattr(mod, "RANK_CAP", 25)
    monkeypatch.setattr(mod, "PY_RANK", 30)
    r = q(ix, "common ")
    assert r.total == 41  # exact: the word's document frequency
    assert r.hits[0].segment_index == 40 and r.hits[0].time == 200.0
    r = q(ix, "common fill", limit=5, offset=20)
    assert 35 <= r.total <= 45 and len(r.hits) == 5  # estimated beyond RANK_CAP
    r = q(ix, "common filler number7 ")
    assert r.total == 1 and r.hits[0].segment_index == 7


def test_total_exact_flag(tmp_path):
    """Totals beyond the ranking cap are estimates unless the count is known exactly."""
    from mediaindex.builtin.sqlite_index import RANK_CAP, SqliteIndex
    from mediaindex.models import Media, SearchQuery, Segment, Word

    ix = SqliteIndex(tmp_path / "ix.sqlite3")
    segs = [Segment(i, i, i + 1, f"common word number{i} here", [Word("common", i, i + 0.5)]) for i in range(RANK_CAP + 50)]
    ix.upsert(Media(id="a" * 20, path="/m/a.mp3", paths=["/m/a.mp3"], size=1, mtime=0), segs)
    one = ix.search(SearchQuery(q="common ", limit=5))
    assert one.total == RANK_CAP + 50 and one.total_exact
    two = ix.search(SearchQuery(q="common word ", limit=5))
    assert two.total > RANK_CAP and not two.total_exact
    few = ix.search(SearchQuery(q="number7 ", limit=5))
    assert few.total == 1 and few.total_exact
    ix.close()


# ---- the partial-match fallback's bounds -------------------------------------------------------


@pytest.fixture
def crowded(ix):
    """300 segments of 8 words each, drawn from 60 frequent words: no segment has them all."""
    import random

    rng = random.Random(7)
    vocab = [f"word{i:02d}" for i in range(60)]
    ix.upsert(media("m", "/x/m.mp3"), [seg(i, " ".join(rng.sample(vocab, 8)), i * 5.0) for i in range(300)])
    return ix, vocab


def fts_queries(ix, run) -> list[str]:
    """The FTS5 MATCH statements on the segments our code sends while ``run()`` runs (not
    SQLite's own, nor the one on the small per-media title table)."""
    sent: list[str] = []
    ix._conn().set_trace_callback(lambda s: sent.append(s) if " MATCH " in s and not s.startswith("--")
                                  and "media_fts" not in s else None)
    try:
        run()
    finally:
        ix._conn().set_trace_callback(None)
    return sent


def test_long_query_partial_work_is_bounded(crowded):
    """A pasted paragraph of frequent words: the fallback weighs only the PARTIAL_WORDS rarest
    words, runs at most PARTIAL_QUERIES sub-queries, and says it stopped early."""
    from mediaindex.builtin import sqlite_index as mod

    ix, vocab = crowded
    text = " ".join(vocab) + " "
    got: list = []
    sent = fts_queries(ix, lambda: got.append(q(ix, text, limit=20)))
    r = got[0]
    assert r.partial and r.stopped_early and r.hits
    assert len(sent) <= mod.PARTIAL_QUERIES + 1, len(sent)  # + the check that not even the rarest meet
    assert max(s.count('" AND "') + 1 for s in sent) <= mod.PARTIAL_WORDS  # words in one query
    for h in r.hits:  # every hit has the words it claims
        assert sum(w in h.text.split() for w in vocab) >= h.matched_words >= 1
    # a query of a few words is not cut short
    r = q(ix, "word01 word02 word03 word04 word05 ")
    assert r.partial and not r.stopped_early


def test_partial_time_and_query_budgets(crowded, monkeypatch):
    """Past its time budget (0 here) or its query budget, the fallback returns what it found."""
    from mediaindex.builtin import sqlite_index as mod

    ix, vocab = crowded
    text = " ".join(vocab[:8]) + " "  # 8 words: within the word limit
    full = q(ix, text)
    assert full.partial and not full.stopped_early
    monkeypatch.setattr(mod, "PARTIAL_SECONDS", 0.0)
    got: list = []
    sent = fts_queries(ix, lambda: got.append(q(ix, text)))
    assert got[0].stopped_early and len(sent) == 2  # the full AND, then one sub-query
    monkeypatch.setattr(mod, "PARTIAL_SECONDS", 60.0)
    monkeypatch.setattr(mod, "PARTIAL_QUERIES", 3)
    sent = fts_queries(ix, lambda: got.append(q(ix, text)))
    assert got[1].stopped_early and len(sent) == 1 + 3


def test_an_index_made_before_dates_dates_by_file_month(tmp_path):
    import sqlite3

    path = tmp_path / "index.sqlite3"
    ix = SqliteIndex(path)
    ix.upsert(media("a", "/x/a.mp3", tags={"date": "2019-03-04"}), [seg(0, "common a", 0.0)])
    ix.close()
    c = sqlite3.connect(path)  # as an older version left it: no month column, no month counts
    c.execute("ALTER TABLE docs DROP COLUMN month")
    c.execute("DELETE FROM facet_totals WHERE facet = 'month'")
    c.commit()
    c.close()
    ix = SqliteIndex(path)
    try:
        assert ix.facets(SearchQuery(""))["month"] == {"1970-01": 1}  # mtime 1.0: until a reindex reads the tag
        assert ix.search(SearchQuery("common ", date="1970")).total == 1
        ix.upsert(media("a", "/x/a.mp3", tags={"date": "2019-03-04"}), [seg(0, "common a", 0.0)])
        assert ix.facets(SearchQuery(""))["month"] == {"2019-03": 1}
    finally:
        ix.close()
