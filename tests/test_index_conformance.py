"""One conformance suite for every index backend: the same documents, the same queries, the same
top hits and jump times (±0.5 s), filters, facets, paging, deletes, moves, CJK.

``meilisearch`` runs against a real server when MEILI_URL (and MEILI_MASTER_KEY) is set, else
against the loopback double (tests/meili_double.py), whose every request and answer is checked
against Meilisearch's published OpenAPI description.
"""
from __future__ import annotations

import os
import uuid

import pytest

from mediaindex.builtin.sqlite_index import SqliteIndex
from mediaindex.forgive.layer import forgiving
from mediaindex.models import SearchQuery

from test_sqlite_index import media, seg

BACKENDS = ["sqlite", "meilisearch"]
REAL_MEILI = bool(os.environ.get("MEILI_URL"))


def meili_backend():
    """(backend, double or None, cleanup) for the meilisearch backend."""
    from meili_spec import need

    need("meilisearch")
    MeiliIndex = need("mediaindex_meilisearch").MeiliIndex

    uid = f"mediaindex_test_{uuid.uuid4().hex[:8]}"
    if REAL_MEILI:
        ix = MeiliIndex(os.environ["MEILI_URL"], os.environ.get("MEILI_MASTER_KEY"), uid)

        def cleanup():
            ix.client.wait_for_task(ix.client.delete_index(uid).task_uid)
        return ix, None, cleanup
    need("openapi_core")
    from meili_double import MeiliDouble

    double = MeiliDouble()
    return MeiliIndex(double.url, double.master_key, uid), double, double.stop


@pytest.fixture(params=BACKENDS)
def ix(request, tmp_path):
    """The backend as the pipeline uses it: with the core's forgiving where it forgives less
    than the embedded index (mediaindex.forgive.layer)."""
    if request.param == "sqlite":
        index = forgiving(SqliteIndex(tmp_path / "index.sqlite3"), tmp_path / "words.sqlite3")
        yield index
        index.close()
        return
    index, double, cleanup = meili_backend()
    index = forgiving(index, tmp_path / "words.sqlite3")
    yield index
    try:
        if double is not None:
            assert double.violations == [], "\n".join(double.violations)
    finally:
        index.book.close()
        cleanup()


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


def top(r):
    return (r.hits[0].media_id, r.hits[0].segment_index) if r.hits else None


def test_word_hit_time_snippet(filled):
    r = q(filled, "coffee ")
    assert r.total == 1 and not r.partial
    h = r.hits[0]
    assert (h.media_id, h.segment_index, h.path) == ("a", 2, "/pod/show/ep1.mp3")
    assert h.time == pytest.approx(20.0 + 8 * 0.5, abs=0.5)
    assert h.title == "ep1" and h.language == "en" and h.emotion == "neutral"
    assert "<mark>coffee</mark>" in h.snippet


def test_jump_time_first_matched_word(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, "one two three four target six seven target", 100.0, step=1.25)])
    assert q(ix, "target ").hits[0].time == pytest.approx(100.0 + 4 * 1.25, abs=0.5)
    assert q(ix, "seven three ").hits[0].time == pytest.approx(100.0 + 2 * 1.25, abs=0.5)


def test_phrase_and_prefix(filled):
    r = q(filled, '"small chamber"')
    assert r.total == 1 and top(r) == ("a", 1)
    assert r.hits[0].time == pytest.approx(10.0 + 5 * 0.5, abs=0.5)
    assert q(filled, '"chamber small"').total == 0
    assert {(h.media_id, h.segment_index) for h in q(filled, "astronau").hits} == {("a", 1), ("b", 1)}
    assert q(filled, "grow lett").hits[0].time == pytest.approx(10.5, abs=0.5)


def test_diacritics_and_case(filled):
    assert q(filled, "cafe ").total == 1
    assert q(filled, "CAFÉ ").total == 1


def test_filters(filled):
    assert {h.media_id for h in q(filled, "astronau", language="fr").hits} == {"b"}
    assert q(filled, "astronau", language="de").total == 0
    assert [h.segment_index for h in q(filled, "grow ", emotion="happy").hits] == [1]
    assert [h.segment_index for h in q(filled, "rocket ", kind="singing").hits] == [3]
    assert q(filled, "rocket ", kind="speech").total == 0
    assert {h.media_id for h in q(filled, "astronau", media_id="b").hits} == {"b"}
    assert {h.media_id for h in q(filled, "astronau", path_prefix="/pod/show/").hits} == {"a"}
    assert {h.media_id for h in q(filled, "astronau", path_prefix="/pod/other_100%/").hits} == {"b"}
    assert q(filled, "astronau", path_prefix="/pod/other_1000/").total == 0
    assert {h.media_id for h in q(filled, "astronau", path_prefix="/pod/show/ep1.mp3").hits} == {"a"}
    assert q(filled, 'astronau', path_prefix='/pod/"x" OR type = "segment"/').total == 0  # a value, not syntax


def test_query_syntax_exclude_and_or(ix):
    """The same query syntax on every backend: ``-word``, ``-"phrase"``, ``OR``."""
    ix.upsert(media("s", "/x/s.mp3"), [seg(0, "tea and biscuits", 0.0), seg(1, "coffee and biscuits", 10.0),
                                       seg(2, "tea with coffee", 20.0), seg(3, "water and biscuits", 30.0)])
    assert {h.segment_index for h in q(ix, "tea -coffee ").hits} == {0}
    assert {h.segment_index for h in q(ix, 'biscuits -"coffee and" ').hits} == {0, 3}
    assert q(ix, "-coffee ").total == 0  # a -word alone finds nothing
    r = q(ix, "tea OR coffee biscuits ")
    assert {h.segment_index for h in r.hits} == {0, 1}
    h = next(h for h in r.hits if h.segment_index == 1)
    assert h.time == pytest.approx(10.0, abs=0.5)  # "coffee": the first word of the query matched


def test_paging(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(i, f"word{i} common thing", i * 5.0) for i in range(30)])
    r = q(ix, "common ", limit=10)
    assert r.total == 30 and len(r.hits) == 10
    assert len(q(ix, "common ", limit=10, offset=25).hits) == 5
    seen = {h.segment_index for off in (0, 10, 20) for h in q(ix, "common ", limit=10, offset=off).hits}
    assert seen == set(range(30))


def test_one_hit_per_media(ix):
    for m in ("a", "b", "c"):
        ix.upsert(media(m, f"/x/{m}.mp3"), [seg(i, f"common word {m}{i}", i * 5.0) for i in range(4)])
    ix.upsert(media("d", "/x/d.mp3"), [seg(0, "nothing in common here", 0.0), seg(1, "common common", 5.0)])
    r = ix.search(SearchQuery("common ", one_per_media=True))
    assert r.total == 4 and sorted(h.media_id for h in r.hits) == ["a", "b", "c", "d"]
    r = ix.search(SearchQuery("common ", one_per_media=True, limit=2, offset=2))
    assert r.total == 4 and len(r.hits) == 2
    assert ix.search(SearchQuery("common ")).total == 14


def test_moments_of_one_media(ix):
    """A grouped answer asks for one media's hits (media_id) after the best hit of each media."""
    for m in ("a", "b", "c"):
        ix.upsert(media(m, f"/x/{m}.mp3"), [seg(i, f"common word {m}{i}", i * 5.0) for i in range(12)])
    best = ix.search(SearchQuery("common ", one_per_media=True, limit=2, offset=1))
    assert best.total == 3 and len(best.hits) == 2
    for h in best.hits:
        r = ix.search(SearchQuery("common ", media_id=h.media_id, limit=5))
        assert r.total == 12 and len(r.hits) == 5 and {x.media_id for x in r.hits} == {h.media_id}
    assert ix.search(SearchQuery("common ", media_id="nosuchmedia")).total == 0


def test_recording_dates_filter_and_facets(ix):
    """The date facets: the month of the recording from its date/year tag, else its file's."""
    ix.upsert(media("a", "/x/a.mp3", tags={"date": "2019-03-04"}), [seg(0, "common a", 0.0), seg(1, "common b", 5.0)])
    ix.upsert(media("b", "/x/b.mp3", tags={"year": "2019"}), [seg(0, "common c", 0.0)])
    ix.upsert(media("c", "/x/c.mp3"), [seg(0, "common d", 0.0)])  # no tag: mtime 1.0, January 1970
    months = {"2019-03": 2, "2019": 1, "1970-01": 1}
    assert ix.facets(SearchQuery(""))["month"] == months
    assert ix.facets(SearchQuery("common "))["month"] == months
    assert {h.media_id for h in q(ix, "common ", date="2019").hits} == {"a", "b"}  # a year takes in its months
    assert {h.media_id for h in q(ix, "common ", date="2019-03").hits} == {"a"}
    assert q(ix, "common ", date="2020").total == 0
    assert ix.facets(SearchQuery("common ", date="2019"))["month"] == {"2019-03": 2, "2019": 1}
    assert ix.facets(SearchQuery("", date="1970-01"))["month"] == {"1970-01": 1}
    ix.update_media(media("c", "/x/c.mp3", tags={"date": "2021-12-24"}))  # a tag read later moves it
    assert {h.media_id for h in q(ix, "common ", date="2021-12").hits} == {"c"}
    assert ix.facets(SearchQuery(""))["month"] == {"2019-03": 2, "2019": 1, "2021-12": 1}


def test_facets(filled):
    f = filled.facets(SearchQuery(""))
    assert f.language == {"en": 4, "fr": 2}
    assert f.emotion == {"neutral": 3, "happy": 1, "sad": 1}
    assert f.kind == {"speech": 5, "singing": 1}
    assert f.folder == {"/pod/show": 4, "/pod/other_100%": 2}
    assert filled.facets(SearchQuery("astronau")).language == {"en": 1, "fr": 1}
    f = filled.facets(SearchQuery("astronau", language="fr"))
    assert f.language == {"fr": 1} and f.folder == {"/pod/other_100%": 1}


def test_facets_in_the_search_request(filled):
    for text, kw in (("astronau", {}), ("the ", {"language": "en"}), ("", {}), ("astronauts lettuce zzzz ", {})):
        r = filled.search(SearchQuery(text, facets=True, **kw))
        assert r.facets == filled.facets(SearchQuery(text, **kw)), text
    r = filled.search(SearchQuery("astronau", facets=True))
    assert r.facets.language == {"en": 1, "fr": 1} and r.to_dict()["facets"]["language"] == {"en": 1, "fr": 1}
    assert filled.search(SearchQuery("astronau")).facets is None


def test_delete_and_media_ids(filled):
    assert filled.media_ids() == {"a", "b"}
    filled.delete("a")
    assert q(filled, "coffee ").total == 0
    assert {h.media_id for h in q(filled, "astronau").hits} == {"b"}
    assert filled.media_ids() == {"b"}
    filled.delete("does-not-exist")


def twin(ix):
    """A second backend over the same store (another data dir sharing the index)."""
    if isinstance(ix, SqliteIndex):
        return SqliteIndex(ix.path)
    from mediaindex_meilisearch import MeiliIndex

    return MeiliIndex(ix.inner.url, ix.inner._api_key, ix.inner.uid)


def test_libraries_share_one_index(ix):
    """Each data dir writes, lists and deletes only its own library's documents."""
    other = twin(ix)
    ix.library, other.library = "liba", "libb"
    try:
        ix.upsert(media("m1", "/a/m1.mp3"), [seg(0, "shared kettle story", 0.0)])
        other.upsert(media("m2", "/b/m2.mp3"), [seg(0, "another kettle tale", 0.0)])
        other.upsert(media("m1", "/b/copy.mp3"), [seg(0, "shared kettle story", 0.0)])
        assert ix.media_ids() == {"m1"} and other.media_ids() == {"m1", "m2"}
        other.delete("m1")
        assert ix.media_ids() == {"m1"} and other.media_ids() == {"m2"}
        assert {h.path for h in q(ix, "kettle ").hits} == {"/a/m1.mp3", "/b/m2.mp3"}  # search covers both
        assert {h.path for h in q(ix, "kettle ", library="liba").hits} == {"/a/m1.mp3"}
        ix.upsert(media("m1", "/a/m1.mp3"), [seg(0, "rewritten words", 0.0)])  # replaces only its own
        assert {h.path for h in q(ix, "kettle ").hits} == {"/b/m2.mp3"}
    finally:
        other.close()


def test_upsert_replaces_and_silent_media(filled):
    for _ in range(2):
        filled.upsert(media("a", "/pod/show/ep1.mp3"), [seg(0, "brand new words only", 0.0),
                                                         seg(1, "and more new words", 5.0)])
    assert q(filled, "coffee ").total == 0
    r = q(filled, "words ")
    assert r.total == 2 and sorted(h.segment_index for h in r.hits) == [0, 1]
    filled.upsert(media("silent", "/pod/silence.mp3"), [])
    assert filled.media_ids() == {"a", "b", "silent"}


def test_move_updates_facets(filled):
    filled.update_media(media("a", "/archive/2024/ep1-final.mp3", language="en"))
    h = q(filled, "coffee ").hits[0]
    assert h.path == "/archive/2024/ep1-final.mp3" and h.title == "ep1-final"
    assert q(filled, "coffee ", path_prefix="/pod/").total == 0
    assert q(filled, "coffee ", path_prefix="/archive/").total == 1
    assert filled.facets(SearchQuery("coffee ")).folder == {"/archive/2024": 1}


def test_partial_more_words_first(ix):
    ix.upsert(media("m", "/x/m.mp3"), [seg(0, "red apple", 0.0), seg(1, "red green apple", 10.0),
                                       seg(2, "green", 20.0), seg(3, "red green blue", 30.0)])
    r = q(ix, "red green blue apple ")
    assert r.partial and r.hits
    assert top(r)[1] in (1, 3) and r.hits[0].matched_words == 3


def test_cjk(ix):
    text = "今天北京的天气很好"
    ix.upsert(media("z", "/cn/新闻.mp3", language="zh"), [
        seg(0, "我们开始吧", 0.0, words=list("我们开始吧"), language="zh"),
        seg(1, text, 10.0, step=0.3, words=list(text), language="zh")])
    r = q(ix, "北京")
    assert r.total == 1 and r.hits[0].segment_index == 1
    assert r.hits[0].time == pytest.approx(10.6, abs=0.5)  # the 3rd character, counted in bytes by Meilisearch
    assert "<mark>北京</mark>" in r.hits[0].snippet
    assert q(ix, "天气").hits[0].time == pytest.approx(11.5, abs=0.5)


def test_multibyte_text_before_the_match(ix):
    """Accents, CJK and emoji before the word: byte offsets must not shift the jump time."""
    text = "Café 🚀🚀 北京 naïve élève target"
    words = ["Café", "🚀🚀", "北京", "naïve", "élève", "target"]
    ix.upsert(media("u", "/x/u.mp3"), [seg(0, text, 0.0, step=2.0, words=words)])
    h = q(ix, "target ").hits[0]
    assert h.time == pytest.approx(10.0, abs=0.5)
    assert h.snippet.endswith("<mark>target</mark>")


def test_typo_query(ix):
    """Both forgive one typo from 5 letters, two from 9 (Meilisearch's rule; issue 14)."""
    ix.upsert(media("t", "/x/t.mp3"), [seg(0, "the lighthouse keeper lit the lamp", 0.0),
                                       seg(1, "nothing here at all", 10.0)])
    r = q(ix, "lighthose ")
    assert top(r) == ("t", 0) and r.hits[0].time == pytest.approx(0.5, abs=0.5)
    assert q(ix, "lihgthouse keper ").total == 1  # a swap, a missing letter
    if not isinstance(ix, SqliteIndex):  # (the embedded index counts a first-letter typo as one)
        assert q(ix, "xeeper ").total == 0  # a typo on the first letter counts as two (6 letters: 1 allowed)
    r = q(ix, "lamb ")  # 4 letters: no typo allowed, but it sounds like "lamp" (the core's, for Meilisearch)
    assert r.forgiven == [{"word": "lamb", "matched": ["lamp"], "why": "sound"}]
    assert q(ix, "qzvvx ").total == 0  # nonsense finds nothing
    ix.upsert(media("k", "/x/k.mp3"), [seg(0, "add cinnamon to the tomatoes", 0.0)])
    assert top(q(ix, "cinamon ")) == ("k", 0) and top(q(ix, "tomatos ")) == ("k", 0)  # issue 14's cases


def test_compound_words(ix):
    """Split and joined words: the embedded index (issue 14), Meilisearch by itself (its
    concatenated and split queries, which the double follows), and both say so."""
    ix.upsert(media("c", "/x/c.mp3"), [seg(0, "a loaf of sourdough bread", 0.0),
                                       seg(1, "my e mail inbox is full", 10.0)])
    r = q(ix, "sour dough ")
    assert top(r) == ("c", 0) and r.hits[0].forgiven
    assert [f["why"] for f in r.forgiven] == ["compound"] and "sourdough" in r.forgiven[0]["matched"]
    r = q(ix, "email ")
    assert top(r) == ("c", 1) and r.did_you_mean == "e mail"
    assert top(q(ix, "loaf sourdough ")) == ("c", 0) and not q(ix, "loaf sourdough ").hits[0].forgiven


# ---- search that forgives: the same cases on every backend (issue 14) ------------------------
# The embedded index forgives all of it itself; for Meilisearch the server forgives typos (and
# compounds) and the core the rest: it keeps the library's words and ORs each query word with
# its alternatives (mediaindex.forgive.layer).

FORGIVE = [  # (media, path, segments): the transcripts hold one form, the queries the other
    ("coast", "/radio/coast/ep01.mp3", [
        "Mister Thornbri built the harbor wall in 1953",
        "She was 17 when she sailed to France",
        "The prize was 50,000 pounds",
        "We met on the third day",
        "Katherine read the weather report",
    ]),
    ("kitchen", "/radio/kitchen/bake.mp3", [
        "Thornton and Thorne walked home",
        "Seventeen seagulls followed the ferry in nineteen fifty three",
        "Fifty thousand people watched the race",
        "The colour of the pancake batter",
        "The harbour master waved",
    ]),
    ("misc", "/radio/misc/other.mp3", [
        "seventeen candles on the cake",
        "the color of the sea",
    ]),
]


@pytest.fixture
def forgiving_corpus(ix):
    for mid, path, texts in FORGIVE:
        ix.upsert(media(mid, path, language="en"), [seg(i, t, 10.0 * i, language="en") for i, t in enumerate(texts)])
    return ix


def top3(r) -> list[tuple[str, int]]:
    return [(h.media_id, h.segment_index) for h in r.hits[:3]]


@pytest.mark.parametrize("query, where, why", [
    ("seventeen ", ("coast", 1), "number"),  # "17"
    ("17 ", ("kitchen", 1), "number"),  # "Seventeen"
    ("nineteen fifty three ", ("coast", 0), "number"),  # "1953"
    ("1953 ", ("kitchen", 1), "number"),  # "nineteen fifty three"
    ("fifty thousand ", ("coast", 2), "number"),  # "50,000"
    ("50,000 ", ("kitchen", 2), "number"),  # "Fifty thousand"
    ("3rd day ", ("coast", 3), "number"),  # "third"
    ("harbour wall ", ("coast", 0), "spelling"),  # "harbor"
    ("harbor master ", ("kitchen", 4), "spelling"),  # "harbour"
    ("kathryn ", ("coast", 4), "sound"),  # "Katherine": 3 edits, but it sounds the same
])
def test_forgiven_numbers_spellings_and_sound_alikes(forgiving_corpus, query, where, why):
    r = q(forgiving_corpus, query)
    assert where in top3(r), (query, top3(r))
    assert not r.partial
    h = next(h for h in r.hits if (h.media_id, h.segment_index) == where)
    assert h.forgiven
    assert any(f["why"] == why for f in r.forgiven), r.forgiven


def test_sound_alike_name_says_what_it_matched(forgiving_corpus):
    """A name typed by ear finds the engine's spelling, and says so; near names do not win."""
    r = q(forgiving_corpus, "thornbury ")  # the engine wrote "Thornbri" (2 edits, or the same sound)
    assert top(r) == ("coast", 0) and r.hits[0].forgiven
    assert r.did_you_mean == "thornbri"
    assert "<mark>Thornbri</mark>" in r.hits[0].snippet
    r = q(forgiving_corpus, "kathryn report ")
    assert top(r) == ("coast", 4) and r.did_you_mean == "katherine report"
    assert r.forgiven == [{"word": "kathryn", "matched": ["katherine"], "why": "sound"}]


def test_exact_matches_rank_above_forgiven_ones(forgiving_corpus):
    r = q(forgiving_corpus, "seventeen ")
    assert {top(r), (r.hits[1].media_id, r.hits[1].segment_index)} == {("kitchen", 1), ("misc", 0)}
    assert (r.hits[2].media_id, r.hits[2].segment_index) == ("coast", 1)  # "17"
    assert [h.forgiven for h in r.hits] == [False, False, True]
    assert r.total == 3 and r.did_you_mean is None
    assert r.forgiven == [{"word": "seventeen", "matched": ["17"], "why": "number"}]
    r = q(forgiving_corpus, "colour ")
    assert [(h.media_id, h.segment_index, h.forgiven) for h in r.hits] == [("kitchen", 3, False), ("misc", 1, True)]
    assert r.forgiven == [{"word": "colour", "matched": ["color"], "why": "spelling"}]
    pages = [q(forgiving_corpus, "seventeen ", limit=1, offset=i) for i in range(4)]
    assert [p.total for p in pages] == [3, 3, 3, 3]  # the forgiven hits are counted: pages reach them
    assert [(p.hits[0].segment_index, p.hits[0].forgiven) for p in pages[1:3]][-1] == (1, True)
    assert {p.hits[0].media_id for p in pages[:3]} == {"kitchen", "misc", "coast"} and pages[3].hits == []


def test_did_you_mean_for_a_typo(forgiving_corpus):
    """The server's own typos are said too (which word matched instead)."""
    r = q(forgiving_corpus, "catherine ")  # 1 edit (and the same sound) from "Katherine"
    assert top(r) == ("coast", 4)
    assert r.did_you_mean == "katherine" and r.hits[0].forgiven
    r = q(forgiving_corpus, "katherine ")
    assert r.did_you_mean is None and r.forgiven == [] and not r.hits[0].forgiven


@pytest.mark.parametrize("query", ["xqzvwk ", "blorptangle ", "zzyzx qwrtp ", "seventy seventeen zzyzx "])
def test_nonsense_still_finds_nothing(forgiving_corpus, query):
    r = q(forgiving_corpus, query)
    assert r.hits == [] or r.partial
    assert r.did_you_mean is None and not any(h.forgiven for h in r.hits)
    if query.count(" ") == 1:
        assert r.total == 0


def test_forgiven_words_leave_with_their_media(forgiving_corpus):
    """A word whose media was rewritten without it or left the library is no longer offered
    (the core's counts go down on upsert and delete)."""
    ix = forgiving_corpus
    assert top(q(ix, "kathryn ")) == ("coast", 4) and q(ix, "seventeen ").total == 3
    ix.upsert(media("coast", "/radio/coast/ep01.mp3", language="en"),
              [seg(0, "Mister Thornbri built the harbor wall in 1953", 0.0, language="en")])
    assert q(ix, "kathryn ").hits == []  # "Katherine" is gone
    assert q(ix, "seventeen ").total == 2  # and "17"
    assert top(q(ix, "thornbury ")) == ("coast", 0)
    ix.delete("coast")
    assert q(ix, "thornbury ").hits == []
    assert [top(q(ix, "1953 "))] == [("kitchen", 1)] and q(ix, "1953 ").total == 1


def test_facets_count_forgiven_matches(forgiving_corpus):
    assert forgiving_corpus.facets(SearchQuery("seventeen ")).folder == {
        "/radio/coast": 1, "/radio/kitchen": 1, "/radio/misc": 1}
    r = forgiving_corpus.search(SearchQuery("colour ", facets=True))
    assert r.facets.folder == {"/radio/kitchen": 1, "/radio/misc": 1}
