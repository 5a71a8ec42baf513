"""The ``meilisearch`` index plugin through the core: settings, batches, faults (refused
connections, 5xx mid-batch, failed tasks), the job queue waiting for the server, 503 in the API,
the CLI's line, ``reindex`` moving a library over. Against the spec-checked double
(tests/meili_double.py); the conformance suite (test_index_conformance.py) also runs on a real
server when MEILI_URL is set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meili_spec import need  # noqa: E402

need("meilisearch")
need("openapi_core")
need("mediaindex_meilisearch")

import mediaindex_meilisearch as plugin  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from meili_double import MeiliDouble  # noqa: E402
from mediaindex_meilisearch import SETTINGS, MeiliIndex  # noqa: E402

from mediaindex.backends import FatalError, PermanentError, TransientError  # noqa: E402
from mediaindex.models import SearchQuery  # noqa: E402
from test_sqlite_index import media, seg  # noqa: E402

FILES = ["talks/space_station.mp3", "podcasts/lighthouse.opus", "podcasts/ferry.webm"]


@pytest.fixture
def double():
    d = MeiliDouble()
    yield d
    d.stop()
    assert d.violations == [], "\n".join(d.violations)


@pytest.fixture
def meili_env(double, monkeypatch):
    """The plugin registered in-process (as its entry point would), pointed at the double."""
    from mediaindex.plugins import load_plugins

    monkeypatch.setenv("MEILI_URL", double.url)
    monkeypatch.setenv("MEILI_MASTER_KEY", double.master_key)
    pm = load_plugins()
    pm.register(plugin, name="meilisearch-test")
    yield double
    pm.unregister(name="meilisearch-test")


@pytest.fixture
def small_corpus(corpus_src, tmp_path) -> Path:
    root = tmp_path / "media"
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus_src / rel, root / rel)
    return root


def docs_of(double, media_id: str) -> list[dict]:
    return [d for ix in double.indexes.values() for d in ix.docs.values() if d["media_id"] == media_id]


def test_entry_point_registers_backend(tmp_path):
    env = {**os.environ, "MEDIAINDEX_LOAD_PLUGINS": "mediaindex-meilisearch"}
    out = subprocess.run([sys.executable, "-m", "mediaindex", "plugins", "--json"], env=env, capture_output=True,
                         text=True, check=True).stdout
    found = {p["name"]: p for p in json.loads(out)}
    assert found["meilisearch"]["distribution"] == "mediaindex-meilisearch"
    assert "register_index_backends" in found["meilisearch"]["hooks"]


def test_settings_applied_once_and_idempotent(double):
    ix = MeiliIndex(double.url, double.master_key, "s")
    ix.upsert(media("a", "/x/a.mp3"), [seg(0, "hello world", 0.0)])
    got = double.indexes["s"].settings
    assert got["searchableAttributes"] == SETTINGS["searchableAttributes"]
    assert set(SETTINGS["filterableAttributes"]) <= set(got["filterableAttributes"])
    assert got["localizedAttributes"] == SETTINGS["localizedAttributes"]
    assert got["typoTolerance"]["enabled"] is True
    patches = [r for r in double.requests if r[0] == "PATCH"]
    assert len(patches) == 1
    again = MeiliIndex(double.url, double.master_key, "s")  # another process starting: nothing to change
    assert again.media_ids() == {"a"}
    assert [r for r in double.requests if r[0] == "PATCH"] == patches


def test_failed_settings_task_is_fatal(double):
    double.fail_tasks(1, "invalid_settings_ranking_rules", kind="settings")
    with pytest.raises(FatalError, match="invalid_settings_ranking_rules"):
        MeiliIndex(double.url, double.master_key, "s").media_ids()


def test_wrong_key_is_fatal_and_not_shown(double):
    with pytest.raises(FatalError, match="rejected the key") as e:
        MeiliIndex(double.url, "not-the-key", "s").media_ids()
    assert "not-the-key" not in str(e.value)


def test_writes_in_bounded_batches(double):
    ix = MeiliIndex(double.url, double.master_key, "b", batch_docs=10)
    ix.upsert(media("m", "/x/m.mp3"), [seg(i, f"segment {i} text", i * 5.0) for i in range(35)])
    posts = [r for r in double.requests if r[0] == "POST" and r[1].endswith("/documents")]
    assert len(posts) == 4  # 36 documents (35 segments + the media) in batches of 10
    assert ix.search(SearchQuery("segment ", limit=0)).total == 35


def test_5xx_in_the_middle_of_a_batch_loses_nothing(double):
    ix = MeiliIndex(double.url, double.master_key, "f", batch_docs=5)
    segs = [seg(i, f"part {i} of the story", i * 5.0) for i in range(20)]
    ix.upsert(media("m", "/x/m.mp3"), segs[:8])  # an older version of the media
    double.fail_requests(1, 503, "POST", "/documents", skip=2)
    with pytest.raises(TransientError, match="503"):
        ix.upsert(media("m", "/x/m.mp3"), segs)
    ix.upsert(media("m", "/x/m.mp3"), segs)  # the job's retry
    assert sorted(d["seg"] for d in docs_of(double, "m") if d["type"] == "segment") == list(range(20))
    assert len({d["gen"] for d in docs_of(double, "m")}) == 1  # nothing left of the failed attempts


def test_connection_dropped_mid_batch_is_transient(double):
    ix = MeiliIndex(double.url, double.master_key, "f", batch_docs=5)
    segs = [seg(i, f"part {i}", i * 5.0) for i in range(12)]
    double.fail_requests(1, 0, "POST", "/documents", skip=1)
    with pytest.raises(TransientError) as e:
        ix.upsert(media("m", "/x/m.mp3"), segs)
    assert e.value.outage
    ix.upsert(media("m", "/x/m.mp3"), segs)
    assert ix.search(SearchQuery("part ", limit=0)).total == 12


def test_failed_task_raises_with_its_code(double):
    ix = MeiliIndex(double.url, double.master_key, "t")
    ix.media_ids()
    double.fail_tasks(1, "invalid_document_fields")
    with pytest.raises(PermanentError, match="invalid_document_fields"):
        ix.upsert(media("m", "/x/m.mp3"), [seg(0, "x", 0.0)])
    double.fail_tasks(1, "internal")
    with pytest.raises(TransientError, match="internal"):
        ix.upsert(media("m", "/x/m.mp3"), [seg(0, "x", 0.0)])


@pytest.mark.usefixtures("manifest_transcriber")
def test_jobs_wait_while_meilisearch_is_down(meili_env, make_pipeline, small_corpus):
    double = meili_env
    p = make_pipeline(index="meilisearch")
    double.stop()
    p.enqueue_plan(p.plan([str(small_corpus)]))
    outcomes = p.run_jobs(max_attempts=1)  # even with one attempt allowed, an outage is not a failure
    assert {o.status for o in outcomes} == {"retry"}
    assert "unreachable" in outcomes[0].error
    assert p.state.jobs.pending() == len(FILES)
    assert {r.status for r in p.state.files_under(str(small_corpus))} == {"queued"}
    double.start()
    p.state.jobs.recover()
    with p.state.tx() as c:  # due now (the test does not wait out the backoff)
        c.execute("UPDATE jobs SET next_try = 0")
    outcomes = p.run_jobs(max_attempts=1)
    assert {o.status for o in outcomes} == {"indexed"}
    assert not any(o.transcribed for o in outcomes)  # the transcripts were cached before the outage
    hits = p.index.search(SearchQuery("lighthouse ")).hits
    assert hits and hits[0].path.endswith("lighthouse.opus")


@pytest.mark.usefixtures("manifest_transcriber")
def test_failed_task_is_reported_on_its_file(meili_env, make_pipeline, small_corpus):
    double = meili_env
    p = make_pipeline(index="meilisearch")
    p.index.media_ids()
    double.fail_tasks(1, "invalid_document_fields")
    p.enqueue_plan(p.plan([str(small_corpus / "talks")]))
    (o,) = p.run_jobs()
    assert o.status == "failed" and "invalid_document_fields" in o.error
    (rec,) = p.state.files_under(str(small_corpus / "talks"))
    assert rec.status == "failed" and "invalid_document_fields" in rec.error


@pytest.mark.usefixtures("manifest_transcriber")
def test_api_503_and_cli_line_when_down(meili_env, make_pipeline, small_corpus, data_dir):
    from starlette.testclient import TestClient

    from mediaindex.cli import cli
    from mediaindex.web.app import create_app

    double = meili_env
    p = make_pipeline(index="meilisearch")
    p.enqueue_plan(p.plan([str(small_corpus)]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    with TestClient(create_app(p), base_url="http://127.0.0.1") as c:
        assert c.get("/api/search", params={"q": "lighthouse"}).json()["hits"]
        double.stop()
        for route in ("/api/search", "/api/facets"):
            r = c.get(route, params={"q": "ferry"})
            assert r.status_code == 503, r.text
            assert "unavailable" in r.json()["error"] and double.master_key not in r.text
            assert r.headers["retry-after"]
    res = CliRunner().invoke(cli, ["search", "ferry", "--index", "meilisearch", "--data-dir", str(data_dir)])
    assert res.exit_code == 1
    assert "search failed: Meilisearch at" in res.output and "unreachable" in res.output
    assert "Traceback" not in res.output


@pytest.mark.usefixtures("manifest_transcriber")
def test_index_command_says_when_meilisearch_is_down(meili_env, small_corpus, data_dir):
    from mediaindex.cli import cli

    meili_env.stop()
    res = CliRunner().invoke(cli, ["index", str(small_corpus), "--index", "meilisearch", "--transcriber", "manifest",
                                   "--data-dir", str(data_dir)])
    assert res.exit_code == 1, res.output
    assert "unreachable: Connection refused; nothing was changed" in res.output and "Traceback" not in res.output


@pytest.mark.usefixtures("manifest_transcriber")
def test_reindex_moves_a_library_without_transcribing(meili_env, make_pipeline, small_corpus, data_dir,
                                                      manifest_transcriber):
    from mediaindex.cli import cli

    double = meili_env
    p = make_pipeline()  # sqlite
    p.enqueue_plan(p.plan([str(small_corpus)]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    ids = p.index.media_ids()
    p.close()
    calls = manifest_transcriber.CALLS if hasattr(manifest_transcriber, "CALLS") else None
    res = CliRunner().invoke(cli, ["reindex", "--index", "meilisearch", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert f"{len(ids)} media re-indexed into meilisearch" in res.output
    assert 'index = "meilisearch"' in res.output
    ix = MeiliIndex(double.url, double.master_key)
    assert ix.media_ids() == ids
    assert ix.search(SearchQuery("lighthouse ")).hits
    if calls is not None:
        assert manifest_transcriber.CALLS == calls


def test_master_key_stays_on_the_server_side():
    """The web UI talks to mediaindex's API only: no Meilisearch address or key in what it serves."""
    static = Path(__file__).parent.parent / "mediaindex" / "web" / "static"
    for f in static.rglob("*"):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert "7700" not in text and "MEILI" not in text.upper().replace("MEILISEARCH", ""), f
    root = Path(__file__).parent.parent
    compose = (root / "docker-compose.yml").read_text()
    meili_block, app_block = compose.split("\n  mediaindex:\n")
    assert "ports:" not in meili_block  # Meilisearch is not published to the host
    assert "image: getmeili/meilisearch:v1.15.2" in meili_block and "healthcheck:" in meili_block
    assert '"127.0.0.1:8844:8844"' in app_block and "./media:/media:ro" in app_block
    assert '"--index", "meilisearch"' in app_block and "condition: service_healthy" in app_block
    assert ".env" in (root / ".dockerignore").read_text().split()  # the keys never go into the image


@pytest.mark.usefixtures("manifest_transcriber")
def test_core_forgives_what_the_server_cannot(meili_env, make_pipeline, small_corpus, data_dir):
    """Numbers through the pipeline (the core keeps the library's words in words.sqlite3), said
    in the CLI and the API; a lost word list is rebuilt by reconcile from the cached transcripts."""
    from starlette.testclient import TestClient

    from mediaindex.cli import cli
    from mediaindex.web.app import create_app

    p = make_pipeline(index="meilisearch")
    p.enqueue_plan(p.plan([str(small_corpus)]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    r = p.index.search(SearchQuery("90 minutes "))  # the transcript says "ninety minutes"
    assert r.hits and r.hits[0].path.endswith("space_station.mp3") and r.hits[0].forgiven
    assert r.did_you_mean == "ninety minutes"
    with TestClient(create_app(p), base_url="http://127.0.0.1") as c:
        out = c.get("/api/search", params={"q": "112 steps"}).json()
        assert out["did_you_mean"] == "one hundred and twelve steps" and out["hits"][0]["forgiven"] is True
        assert out["forgiven"] == [{"word": "112", "matched": ["one hundred and twelve"], "why": "number"}]
    p.close()
    res = CliRunner().invoke(cli, ["search", "90 minutes", "--index", "meilisearch", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert "no exact match: showing results for 'ninety minutes'" in res.output

    (data_dir / "words.sqlite3").unlink()
    for extra in ("-wal", "-shm"):
        (data_dir / f"words.sqlite3{extra}").unlink(missing_ok=True)
    p = make_pipeline(index="meilisearch")
    assert p.index.search(SearchQuery("90 minutes ")).hits == []  # the words are gone with the file
    assert p.reconcile() == (len(FILES), 0)  # rebuilt from the cached transcripts
    assert p.index.search(SearchQuery("90 minutes ")).did_you_mean == "ninety minutes"


def test_a_damaged_word_list_forgives_nothing_and_search_still_works(double, tmp_path):
    from mediaindex.forgive.layer import forgiving

    bad = tmp_path / "words.sqlite3"
    bad.write_bytes(b"this is not a database " * 100)
    ix = forgiving(MeiliIndex(double.url, double.master_key, "w"), bad)
    ix.inner.upsert(media("a", "/x/a.mp3"), [seg(0, "the lighthouse keeper was 17", 0.0)])
    r = ix.search(SearchQuery("lighthouse seventeen "))
    assert r.hits == [] or r.partial  # "17" is not offered: the word list cannot be read
    assert ix.search(SearchQuery("lighthose ")).did_you_mean == "lighthouse"  # the server's typo is still said
