"""Search that forgives (mediaindex.forgive + the embedded SQLite index): a corpus made for it.

The transcripts hold known misspellings, names the engine misheard, numbers in digits and in
words, British/American spellings, split and joined compounds, near-word distractors; the
queries hold the other form. Real SQLite FTS5, real word lists and phonetic/number libraries.
"""
from __future__ import annotations

import sqlite3

import pytest

from mediaindex.builtin.sqlite_index import SqliteIndex
from mediaindex.forgive.numbers import digits_to_words, words_to_digits
from mediaindex.forgive.query import best_start, flatten, parse_search
from mediaindex.forgive.spelling import splits, variants
from mediaindex.forgive.vocab import Vocabulary, max_typos, sound_key
from mediaindex.models import Media, SearchQuery, Segment, Word
from mediaindex.textsearch import find_matches

COAST = [  # /radio/coast/ep01.mp3, title "Harbour Lights", artist June Calloway
    "The lighthouse keeper climbed the stairs every night",
    "Add a pinch of cinnamon to the tomatoes and a tomato on top",
    "Mister Thornbri built the harbor wall in 1953",
    "She was 17 when she sailed to France",
    "The prize was 50,000 pounds",
    "We bake sour dough bread on the third day",
    "Send me an e-mail later",
    "I'll put the kettle on and make tea and biscuits for everyone",
    "Katherine read the weather report",
    "I don't know the way",
]
KITCHEN = [  # /radio/kitchen/bake_off_special.mp3 (no tags): near words, the other forms
    "The light house by the garden hose was painted",
    "Thornton and Thorne walked home",
    "The color of the pancake batter",
    "Seventeen seagulls followed the ferry in nineteen fifty three",
    "Fifty thousand people watched the third race",
    "Email arrived this morning",
    "seventy seven boats and nineteen ships",
    "The harbour master waved",
    "Cinema tickets for two",
    "我们明天去北京",
]
SIMPLE = [  # /radio/misc/other.mp3: exact forms, for "exact first"
    "seventeen candles on the cake",
    "the colour of the sea",
]


def seg(index: int, text: str, start: float, step: float = 0.5) -> Segment:
    ws = text.split()
    wl = [Word(w, round(start + k * step, 3), round(start + (k + 1) * step - 0.05, 3)) for k, w in enumerate(ws)]
    return Segment(index=index, start=start, end=start + len(ws) * step, text=text, words=wl, language="en")


def media(mid: str, path: str, **tags) -> Media:
    return Media(id=mid, path=path, paths=[path], size=1, mtime=1.0, duration=600.0, language="en", tags=tags)


def fill(ix: SqliteIndex) -> SqliteIndex:
    ix.upsert(media("coast", "/radio/coast/ep01.mp3", title="Harbour Lights", artist="June Calloway"),
              [seg(i, t, 10.0 * i) for i, t in enumerate(COAST)])
    ix.upsert(media("kitchen", "/radio/kitchen/bake_off_special.mp3"),
              [seg(i, t, 10.0 * i) for i, t in enumerate(KITCHEN)])
    ix.upsert(media("misc", "/radio/misc/other.mp3"), [seg(i, t, 10.0 * i) for i, t in enumerate(SIMPLE)])
    return ix


@pytest.fixture(scope="module")
def ix(tmp_path_factory):
    index = fill(SqliteIndex(tmp_path_factory.mktemp("forgive") / "index.sqlite3"))
    yield index
    index.close()


def search(ix, q, **kw):
    return ix.search(SearchQuery(q, **kw))


def top3(r) -> list[tuple[str, int]]:
    return [(h.media_id, h.segment_index) for h in r.hits[:3]]


# ---- each class finds the right segment in the top 3 ---------------------------------------


@pytest.mark.parametrize("query, where, why", [
    ("lighthose ", ("coast", 0), "typo"),
    ("cinamon ", ("coast", 1), "typo"),
    ("tomatos ", ("coast", 1), "typo"),
    ("lighthose keeper ", ("coast", 0), "typo"),
    ("keeper lihgthouse ", ("coast", 0), "typo"),  # two letters swapped: one edit
    ("Thornbury ", ("coast", 2), "typo"),  # the engine wrote "Thornbri": 2 edits in 9 letters
    ("kathryn ", ("coast", 8), "sound"),  # 3 edits away, but sounds the same
])
def test_typos_and_sound_alikes(ix, query, where, why):
    r = search(ix, query)
    assert where in top3(r), (query, top3(r))
    assert r.hits[0].forgiven and not r.partial
    assert any(f["why"] == why for f in r.forgiven), r.forgiven


@pytest.mark.parametrize("query, where", [
    ("seventeen ", ("coast", 3)),  # "17"
    ("17 ", ("kitchen", 3)),  # "Seventeen"
    ("nineteen fifty three ", ("coast", 2)),  # "1953"
    ("1953 ", ("kitchen", 3)),  # "nineteen fifty three"
    ("fifty thousand ", ("coast", 4)),  # "50,000"
    ("50,000 ", ("kitchen", 4)),  # "Fifty thousand"
    ("50000 ", ("kitchen", 4)),
    ("3rd day ", ("coast", 5)),  # "third"
    ("harbour wall ", ("coast", 2)),  # "harbor"
    ("colour ", ("kitchen", 2)),  # "color"
    ("sourdough ", ("coast", 5)),  # "sour dough"
    ("pan cake ", ("kitchen", 2)),  # "pancake"
    ("email later ", ("coast", 6)),  # "e-mail"
    ("e-mail arrived ", ("kitchen", 5)),  # "Email"
    ("dont know ", ("coast", 9)),  # "don't"
])
def test_numbers_spellings_and_compounds(ix, query, where):
    r = search(ix, query)
    assert where in top3(r), (query, top3(r))
    assert not r.partial


def test_chinese_homophone_by_pinyin(ix):
    r = search(ix, "背景 ")  # bei jing, "background": the engine's 北京 sounds the same
    assert ("kitchen", 9) in top3(r)
    assert r.forgiven == [{"word": "背景", "matched": ["北京"], "why": "sound"}]


def test_exact_matches_rank_above_forgiven_ones(ix):
    r = search(ix, "seventeen ")
    assert {(h.media_id, h.segment_index) for h in r.hits[:2]} == {("kitchen", 3), ("misc", 0)}
    assert (r.hits[2].media_id, r.hits[2].segment_index) == ("coast", 3)  # "17"
    assert [h.forgiven for h in r.hits] == [False, False, True]
    assert r.total == 3 and r.did_you_mean is None
    r = search(ix, "colour ")
    assert [(h.media_id, h.segment_index, h.forgiven) for h in r.hits] == [("misc", 1, False), ("kitchen", 2, True)]
    assert r.forgiven == [{"word": "colour", "matched": ["color"], "why": "spelling"}]


def test_near_word_distractors_and_no_typos_for_present_words(ix):
    # "tomato" is in the index: it is not "forgiven" into "tomatoes" (nor anything else)
    r = search(ix, "tomato ")
    assert top3(r) == [("coast", 1)] and not r.hits[0].forgiven
    # "Thornton" and "Thorne" are near "Thornbury" but further than the engine's "Thornbri"
    r = search(ix, "thornbury ")
    assert r.hits[0].segment_index == 2 and r.hits[0].media_id == "coast"
    assert r.did_you_mean == "thornbri"


@pytest.mark.parametrize("query", ["xqzvwk ", "blorptangle ", "zzyzx qwrtp ", "lighth0use "])
def test_nonsense_finds_nothing(ix, query):
    r = search(ix, query)
    assert r.hits == [] and r.total == 0 and r.did_you_mean is None


def test_short_words_are_not_forgiven(ix):
    assert search(ix, "tae ").hits == []  # "tea" is 1 edit away, but 3 letters forgive nothing


def test_did_you_mean_says_which_words_matched_instead(ix):
    r = search(ix, "lighthose keeper ")
    assert r.did_you_mean == "lighthouse keeper"
    assert r.forgiven == [{"word": "lighthose", "matched": ["lighthouse"], "why": "typo"}]
    assert "<mark>lighthouse</mark>" in r.hits[0].snippet
    r = search(ix, "lighthouse keeper ")
    assert r.did_you_mean is None and r.forgiven == [] and not r.hits[0].forgiven


# ---- titles, file names, tags, folders -----------------------------------------------------


def test_title_hit_points_at_the_start_and_shows_the_title(ix):
    r = search(ix, "harbour lights ")
    h = r.hits[0]
    assert h.media_id == "coast" and h.match == "title" and h.time == 0.0
    assert h.title == "Harbour Lights" and "<mark>Harbour</mark>" in h.snippet


def test_artist_and_file_name_and_folder_words(ix):
    h = search(ix, "calloway ").hits[0]
    assert (h.media_id, h.match, h.time) == ("coast", "title", 0.0)
    h = search(ix, "special ").hits[0]  # file name bake_off_special.mp3
    assert (h.media_id, h.match) == ("kitchen", "title")
    r = search(ix, "kitchen ")  # a folder word, never said
    assert [(h.media_id, h.match) for h in r.hits] == [("kitchen", "title")]


def test_title_hit_is_its_best_segment_when_the_words_are_also_said(ix):
    r = search(ix, "bake ")  # file name "bake_off_special" (never said there), and said in coast#5
    assert [(h.media_id, h.segment_index, h.match) for h in r.hits] == [("kitchen", 0, "title"),
                                                                        ("coast", 5, "text")]
    assert r.hits[0].time == 0.0 and r.total == 2
    r = search(ix, "calloway lighthouse ")  # artist + said: no segment has both words
    assert r.hits == [] or r.hits[0].media_id == "coast"
    r = search(ix, "lights ")  # title "Harbour Lights"; not said anywhere
    assert [(h.media_id, h.match) for h in r.hits] == [("coast", "title")]
    r = search(ix, "harbour ")  # in coast's title and said in coast#2 ("harbor"), kitchen#7
    assert (r.hits[0].media_id, r.hits[0].match) in {("coast", "title")}
    assert r.hits[0].segment_index == 2 and r.hits[0].time > 0


# ---- the jump -------------------------------------------------------------------------------


def test_jump_goes_to_the_best_run_not_an_earlier_stop_word(ix):
    h = search(ix, "tea and biscuits ").hits[0]
    words = COAST[7].split()
    assert h.time == 70.0 + words.index("tea") * 0.5  # not the "and" of "kettle on and make"


def test_best_start_prefers_the_shortest_complete_run():
    text = "and the cat sat and then tea and biscuits"
    terms, _ = parse_search("tea and biscuits ")
    flat, pos, _ = flatten(terms)
    assert best_start(find_matches(text, flat), pos) == text.index("tea")


# ---- syntax --------------------------------------------------------------------------------


def test_exclude_or_phrase_and_prefix(ix):
    assert {h.media_id for h in search(ix, "harbour -master ").hits} == {"coast"}
    assert search(ix, '"the harbour" -"harbour master" ').hits == []
    r = search(ix, "cinnamon OR kettle ")
    assert {(h.media_id, h.segment_index) for h in r.hits} == {("coast", 1), ("coast", 7)}
    assert [h.segment_index for h in search(ix, '"tea and biscuits"').hits] == [7]
    assert search(ix, '"biscuits and tea"').hits == []
    assert search(ix, "lightho").hits[0].segment_index == 0  # as you type
    assert search(ix, "-harbour").hits == []  # nothing to find but exclusions


def test_parse_search_syntax():
    terms, excluded = parse_search('tea OR coffee -milk -"no sugar" e-mail or')
    assert [t.raw for t in terms] == ["tea OR coffee", "e-mail", "or"]
    assert [t.tokens for t in excluded] == [["milk"], ["no", "sugar"]]
    terms, _ = parse_search("OR rock OR")
    assert [t.raw for t in terms] == ["rock"]


# ---- the pieces -----------------------------------------------------------------------------


def test_numbers_both_ways():
    assert digits_to_words(("17",)) == (("seventeen",),)
    assert ("nineteen", "fifty", "three") in digits_to_words(("1953",))
    assert digits_to_words(("50", "000")) == (("fifty", "thousand"), ("50000",))
    assert digits_to_words(("21st",)) == (("twenty", "first"),)
    assert digits_to_words(("007",)) == () and digits_to_words(("3", "5")) == ()
    assert words_to_digits(("nineteen", "fifty", "three")) == (("1953",),)
    assert words_to_digits(("fifty", "thousand")) == (("50000",), ("50", "000"))
    assert words_to_digits(("third",)) == (("3rd",),)
    assert words_to_digits(("and",)) == ()


def test_spellings_and_splits():
    assert variants("harbour") == ["harbor"] and variants("color") == ["colour"] and variants("tea") == []
    vocab = {"sour", "dough", "e", "mail", "don", "t", "so", "urdough"}
    assert splits("sourdough", vocab) == [["sour", "dough"]]
    assert splits("email", vocab) == [["e", "mail"]] and splits("dont", vocab) == [["don", "t"]]


def test_vocabulary_typos_and_sounds():
    assert [max_typos(w) for w in ("tea", "cinam", "lighthose")] == [0, 1, 2]
    v = Vocabulary()
    words = ["lighthouse", "lightning", "cinnamon", "katherine", "kathy"]
    v.add([(i + 1, w, sound_key(w)) for i, w in enumerate(words)])
    assert v.typos("lighthose") == [("lighthouse", 1)]
    assert v.typos("cinamon") == [("cinnamon", 1)]
    assert v.sounds_like("kathryn") == [("katherine", 3)]
    assert v.typos("xqzvwk") == [] and v.sounds_like("xqzvwk") == []


# ---- the vocabulary is shared and survives -------------------------------------------------


def test_other_processes_see_new_words(tmp_path):
    a = SqliteIndex(tmp_path / "index.sqlite3")
    b = SqliteIndex(tmp_path / "index.sqlite3")  # e.g. the web server, another process
    try:
        assert search(b, "lighthose ").hits == []
        fill(a)
        assert search(b, "lighthose ").hits[0].segment_index == 0
    finally:
        a.close()
        b.close()


def test_index_made_before_the_vocabulary_is_filled_once(tmp_path):
    path = tmp_path / "index.sqlite3"
    fill(SqliteIndex(path)).close()
    c = sqlite3.connect(path)  # what an index of the previous version has
    c.executescript("DROP TABLE vocab; DROP TABLE media_fts; DELETE FROM meta WHERE key = 'vocab';")
    c.close()
    ix = SqliteIndex(path)
    try:
        assert search(ix, "cinamon ").hits[0].segment_index == 1
        assert search(ix, "harbour lights ").hits[0].match == "title"
        assert search(ix, "special ").hits[0].media_id == "kitchen"
    finally:
        ix.close()


def test_deleted_media_leave_no_title_hits_and_no_forgiven_words(tmp_path):
    ix = fill(SqliteIndex(tmp_path / "index.sqlite3"))
    try:
        ix.delete("coast")
        assert search(ix, "calloway ").hits == []
        assert search(ix, "cinamon ").hits == []  # "cinnamon" is gone with its media
    finally:
        ix.close()


# ---- the CLI and the API say what was forgiven -----------------------------------------------


@pytest.fixture
def data_dir_filled(tmp_path):
    data = tmp_path / "data"
    fill(SqliteIndex(data / "index.sqlite3")).close()
    return data


def test_cli_did_you_mean_line_and_json(data_dir_filled):
    import json

    from click.testing import CliRunner

    from mediaindex.cli import cli

    r = CliRunner().invoke(cli, ["search", "lighthose keeper", "--data-dir", str(data_dir_filled)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "no exact match: showing results for 'lighthouse keeper'" in r.output
    assert "[lighthouse] [keeper]" in r.output and "Harbour Lights (/radio/coast/ep01.mp3)" in r.output
    r = CliRunner().invoke(cli, ["search", "colour", "--data-dir", str(data_dir_filled)], catch_exceptions=False)
    assert "also matched: colour -> color" in r.output
    out = json.loads(CliRunner().invoke(cli, ["search", "cinamon", "--json", "--data-dir",
                                              str(data_dir_filled)]).output)
    assert out["did_you_mean"] == "cinnamon" and out["hits"][0]["forgiven"] is True
    assert out["forgiven"] == [{"word": "cinamon", "matched": ["cinnamon"], "why": "typo"}]
    assert out["hits"][0]["title"] == "Harbour Lights" and out["hits"][0]["match"] == "text"


def test_api_did_you_mean_field(data_dir_filled):
    from starlette.testclient import TestClient

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.app import create_app

    p = Pipeline(Config.load(data_dir_filled))
    try:
        with TestClient(create_app(p), base_url="http://127.0.0.1") as c:
            out = c.get("/api/search", params={"q": "lighthose keeper"}).json()
            assert out["did_you_mean"] == "lighthouse keeper" and out["hits"][0]["forgiven"] is True
            out = c.get("/api/search", params={"q": "calloway"}).json()
            assert out["did_you_mean"] is None and out["forgiven"] == []
            assert (out["hits"][0]["match"], out["hits"][0]["title"], out["hits"][0]["time"]) == \
                ("title", "Harbour Lights", 0.0)
            spec = c.get("/api/openapi.json").json()
            assert "did_you_mean" in spec["components"]["schemas"]["SearchResult"]["properties"]
    finally:
        p.close()


def test_a_long_query_pays_for_a_few_unknown_words_only(ix):
    from mediaindex.forgive.query import MAX_FUZZY_WORDS, AnyOf, expand

    terms, _ = parse_search("cinamon lighthose tomatos kathryn wether biscits kettel " * 3)
    plan = expand(terms, ix._sync_vocab(), ix._df, ix._token_df)
    fuzzy = [t for t in plan if isinstance(t, AnyOf) and any(a.why in ("typo", "sound") for a in t.alts)]
    assert len(fuzzy) == MAX_FUZZY_WORDS == 4


def test_paging_and_facets_include_forgiven_matches(ix):
    pages = [search(ix, "seventeen ", limit=1, offset=i).hits for i in range(4)]
    assert [(p[0].media_id, p[0].forgiven) for p in pages[:3]] == [(h.media_id, h.forgiven) for h in
                                                                    search(ix, "seventeen ").hits]
    assert pages[3] == []
    assert ix.facets(SearchQuery("cinamon ")).language == {"en": 1}
    assert ix.facets(SearchQuery("seventeen ")).folder == {"/radio/coast": 1, "/radio/kitchen": 1, "/radio/misc": 1}
