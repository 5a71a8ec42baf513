"""The index contract (IndexBackend, docs/plugins.md) and stored enrichment, on real components:
real SQLite state and index, real ffprobe, the manifest test transcriber."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from mediaindex.backends import FacetCounts, TransientError
from mediaindex.builtin.sqlite_index import SqliteIndex
from mediaindex.models import Media, SearchQuery, Segment

pytestmark = pytest.mark.usefixtures("manifest_transcriber")


def pipeline_at(data_dir, **kw):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    return Pipeline(Config.load(data_dir), **{"transcriber": "manifest", **kw})


def index_roots(p, *roots):
    p.enqueue_plan(p.plan([str(r) for r in roots]))
    return list(p.run_jobs())


# ---- one index, several data dirs ----------------------------------------------------------


@pytest.fixture
def shared(tmp_path, corpus):
    """Two data dirs whose config.toml points at one index file outside both; each indexes its
    own folder, and both index the same file (one media in two libraries)."""
    index_file = tmp_path / "shared" / "index.sqlite3"
    made = []
    for name, folder in (("a", "talks"), ("b", "podcasts")):
        data = tmp_path / f"data-{name}"
        data.mkdir()
        (data / "config.toml").write_text(f'[sqlite]\npath = "{index_file}"\n')
        made.append(pipeline_at(data))
    (a, b) = made
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(corpus / "talks" / "space_station.mp3", both / "space_station.mp3")
    assert {o.status for o in index_roots(a, corpus / "talks", both)} == {"indexed"}
    assert {o.status for o in index_roots(b, corpus / "podcasts", both)} == {"indexed"}
    yield a, b, index_file, corpus
    for p in made:
        p.close()


def paths_found(p, q, **kw):
    return {os.path.basename(h.path) for h in p.index.search(SearchQuery(q=q, limit=100, **kw)).hits}


def test_two_data_dirs_share_one_index_without_dropping_each_other(shared):
    a, b, index_file, corpus = shared
    assert a.index.path == b.index.path == index_file  # [sqlite] path is used
    assert a.state.library_id() != b.state.library_id()
    assert a.state.library_id() == a.state.library_id()  # made once per data dir
    assert a.index.media_ids() == set(a.state.all_media_ids("indexed"))
    assert b.index.media_ids() == set(b.state.all_media_ids("indexed"))
    # reconcile in each data dir drops nothing of the other's (it used to drop every media its
    # own state did not know) and rebuilds nothing
    assert a.reconcile() == (0, 0)
    assert b.reconcile() == (0, 0)
    # search covers both libraries, or one when asked
    assert "ferry.webm" in paths_found(a, "dolphins")
    assert "ferry.webm" not in paths_found(a, "dolphins", library=a.state.library_id())
    assert "ferry.webm" in paths_found(a, "dolphins", library=b.state.library_id())


def test_a_media_in_two_libraries_stays_in_the_other_when_one_removes_it(shared):
    a, b, index_file, corpus = shared
    both = index_file.parent.parent / "both"
    lettuce = {h.media_id for h in a.index.search(SearchQuery(q="lettuce chamber", limit=50)).hits
               if h.path.startswith(str(both))}
    assert len(lettuce) == 1
    (both / "space_station.mp3").unlink()
    index_roots(a, corpus / "talks", both)  # a forgets the copy; b still has it
    assert paths_found(b, "lettuce chamber", library=b.state.library_id()) == {"space_station.mp3"}
    assert lettuce <= b.index.media_ids()
    assert b.reconcile() == (0, 0)


# ---- facets --------------------------------------------------------------------------------


def _scan_facets(index: SqliteIndex, where: str = "1", params=()) -> dict:
    out: dict = {"language": {}, "emotion": {}, "kind": {}, "folder": {}}
    for lang, emo, kind, folder, n in index._conn().execute(
            f"SELECT language, emotion, kind, folder, count(*) FROM docs WHERE {where} GROUP BY 1, 2, 3, 4", params):
        for facet, v in (("language", lang), ("emotion", emo), ("kind", kind), ("folder", folder)):
            if v is not None:
                out[facet][v] = out[facet].get(v, 0) + n
    if where in ("1", "library = ?"):  # a whole library: also where words come from, sound events (issue 12)
        for source, events, n in index._conn().execute(
                f"SELECT source, events, count(*) FROM docs WHERE {where} GROUP BY 1, 2", params):
            if source:
                out.setdefault("source", {})[source] = out.get("source", {}).get(source, 0) + n
            for name in (events or "").split():
                out.setdefault("event", {})[name] = out.get("event", {}).get(name, 0) + n
        for month, n in index._conn().execute(  # and when they were recorded (issue 15)
                f"SELECT month, count(*) FROM docs WHERE {where} AND month IS NOT NULL GROUP BY 1", params):
            out.setdefault("month", {})[month] = n
    return out


def test_facets_of_the_empty_query_are_kept_at_write_time(shared):
    a, b, index_file, corpus = shared
    idx = a.index
    talks = str(corpus / "talks") + os.sep
    for q, where, params in ((SearchQuery(q=""), "1", ()),
                             (SearchQuery(q="", language="en"), "language = ?", ("en",)),
                             (SearchQuery(q="", path_prefix=talks), "path >= ? AND path < ?", (talks, talks + "\uffff"))):
        counts = idx.facets(q)
        assert isinstance(counts, FacetCounts) and not counts.estimated
        assert dict(counts) == _scan_facets(idx, where, params)
    # a move changes the folder facet
    (corpus / "moved").mkdir()
    os.replace(corpus / "talks" / "bread_baking.m4a", corpus / "moved" / "bread_baking.m4a")
    index_roots(a, corpus / "talks", corpus / "moved", index_file.parent.parent / "both")
    assert dict(idx.facets(SearchQuery(q=""))) == _scan_facets(idx)
    assert str(corpus / "moved") in idx.facets(SearchQuery(q=""))["folder"]
    # the kept counts are what a scan says, per library too
    lib = b.state.library_id()
    assert dict(idx.facets(SearchQuery(q="", library=lib))) == _scan_facets(idx, "library = ?", (lib,))


def test_facets_of_a_frequent_word_are_estimated_and_marked(tmp_path, monkeypatch):
    import mediaindex.builtin.sqlite_index as si

    idx = SqliteIndex(tmp_path / "i.sqlite3")
    for m in range(30):
        media = Media(id=f"{m:020x}", path=f"/m/{'ab'[m % 2]}/f{m}.mp3", paths=[], size=1, mtime=float(m))
        idx.upsert(media, [Segment(index=i, start=i, end=i + 1, text=f"common words here {'rare' if m == 3 else ''}",
                                   language="en") for i in range(20)])
    exact = idx.facets(SearchQuery(q="common"))
    assert not exact.estimated and exact["folder"] == {"/m/a": 300, "/m/b": 300}
    monkeypatch.setattr(si, "FACET_SAMPLE", 100)
    est = idx.facets(SearchQuery(q="common"))
    assert est.estimated
    assert sum(est["language"].values()) == 600  # one plain word: the total is exact
    rare = idx.facets(SearchQuery(q="rare"))
    assert not rare.estimated and rare["folder"] == {"/m/b": 20}
    idx.close()


# ---- outages and durability ----------------------------------------------------------------


def test_a_locked_index_is_a_transient_error(tmp_path, monkeypatch):
    """Another process holds the write lock past the timeout: the job waits and retries."""
    monkeypatch.setattr(SqliteIndex, "BUSY_TIMEOUT", 0.2)
    idx = SqliteIndex(tmp_path / "i.sqlite3")
    media = Media(id="0" * 20, path="/m/a.mp3", paths=[], size=1, mtime=0.0)
    idx.upsert(media, [Segment(index=0, start=0, end=1, text="hello")])
    other = sqlite3.connect(str(tmp_path / "i.sqlite3"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientError, match="busy"):
            idx.upsert(media, [Segment(index=0, start=0, end=1, text="again")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    idx.upsert(media, [Segment(index=0, start=0, end=1, text="again")])
    assert idx.search(SearchQuery(q="again")).total == 1
    assert idx._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: durable on return
    idx.close()


# ---- stored enrichment ---------------------------------------------------------------------


class _Moods:
    """An enricher that labels every segment (what an emotion model would do)."""

    ENRICH_VERSION = "1"

    def __init__(self):
        from mediaindex import hookimpl

        self.calls = 0
        outer = self

        class Plugin:
            ENRICH_VERSION = "1"

            @hookimpl
            def enrich_segments(self, transcript):
                outer.calls += 1
                for seg in transcript.segments:
                    seg.emotion = "calm"

        self.plugin = Plugin()


@pytest.fixture
def moods():
    from mediaindex.plugins import load_plugins

    m = _Moods()
    load_plugins().register(m.plugin, name="moods")
    yield m
    load_plugins().unregister(name="moods")


def test_enriched_segments_are_stored_and_shown(make_pipeline, corpus, moods, data_dir):
    from mediaindex.cli import cli
    from mediaindex.web.app import create_app

    p = make_pipeline()
    index_roots(p, corpus / "talks")
    hit = p.index.search(SearchQuery(q="lettuce chamber")).hits[0]
    assert hit.emotion == "calm"
    # the transcript API and the exports show what the index says
    with TestClient(create_app(p), base_url="http://127.0.0.1") as client:
        segments = client.get(f"/api/media/{hit.media_id}").json()["segments"]
    assert segments and {s["emotion"] for s in segments} == {"calm"}
    out = CliRunner().invoke(cli, ["export", hit.media_id, "--format", "json", "--data-dir", str(data_dir)])
    assert out.exit_code == 0, out.output
    assert {s["emotion"] for s in json.loads(out.output)["segments"]} == {"calm"}
    # a rebuild reads the stored result: the enricher does not run again
    calls = moods.calls
    p.index.delete(hit.media_id)
    assert p.reconcile() == (1, 0)
    assert moods.calls == calls
    assert p.index.search(SearchQuery(q="lettuce chamber")).hits[0].emotion == "calm"
    # new enrichers (a version bump): the rebuild enriches again
    moods.plugin.ENRICH_VERSION = "2"
    p.reindex(hit.media_id)
    assert moods.calls == calls + 1
