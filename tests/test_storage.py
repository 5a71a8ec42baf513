"""Media in a storage other than local disk: a location is a URI, read through its backend.

The ``mem://`` scheme (tests/memstorage.py) stands for a bucket: no local paths, signed URLs,
staging uploads. Real ffmpeg, real SQLite, the real CLI.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mediaindex.backends import ObjectInfo, normalize_location, uri_scheme
from mediaindex.cli import cli
from mediaindex.scan import FileStat

pytestmark = pytest.mark.usefixtures("manifest_transcriber")
HERE = Path(__file__).parent


def run(*args, code=None):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def hits(data_dir, q):
    return json.loads(run("search", q, "--data-dir", str(data_dir), "--json", code=0).output)["hits"]


@pytest.fixture
def bucket(mem_storage, corpus):
    """mem://lib holding the talks and podcasts of the corpus."""
    lib = mem_storage.folder / "lib"
    lib.mkdir()
    shutil.copytree(corpus / "talks", lib / "talks")
    shutil.copytree(corpus / "podcasts", lib / "podcasts")
    return lib


def test_a_uri_stays_a_uri():
    assert uri_scheme("s3://b/k") == "s3" and uri_scheme("/x/y.mp3") == "file" and uri_scheme("file:///x") == "file"
    assert normalize_location("s3://b/k/") == "s3://b/k"  # not s3:/b/k, not $PWD/s3:/b/k
    assert normalize_location("file:///x/y.mp3") == "/x/y.mp3"
    assert normalize_location("rel.mp3") == os.path.abspath("rel.mp3")
    assert FileStat is ObjectInfo and ObjectInfo("mem://a/b", 1, 2.0).path == "mem://a/b"


def test_second_scheme_end_to_end_through_the_cli(bucket, mem_storage, data_dir):
    args = ("--data-dir", str(data_dir), "--transcriber", "manifest")
    r = run("index", "mem://lib", *args, code=0)
    assert "0 failed" in r.output
    [hit] = hits(data_dir, "cupola window")
    assert hit["path"] == "mem://lib/talks/space_station.mp3"
    assert any(u.startswith("mem://lib/") for u in mem_storage.opened)  # read through the backend
    # the folder facet and a path filter work on URIs
    r = run("search", "ferry", "--data-dir", str(data_dir), "--json", "--path", "mem://lib/podcasts", code=0)
    assert [h["path"] for h in json.loads(r.output)["hits"]] == ["mem://lib/podcasts/ferry.webm"]
    # export by URI
    r = run("export", "mem://lib/talks/space_station.mp3", "--format", "txt", "--data-dir", str(data_dir), code=0)
    assert "space station orbits" in r.output

    # move: same media, new URI, no second transcription
    (bucket / "archive").mkdir()
    shutil.move(bucket / "talks" / "space_station.mp3", bucket / "archive" / "moved.mp3")
    r = run("index", "mem://lib", *args, code=0)
    assert "0 transcribed" in r.output
    assert [h["path"] for h in hits(data_dir, "cupola window")] == ["mem://lib/archive/moved.mp3"]

    # delete
    (bucket / "talks" / "bread_baking.m4a").unlink()
    run("index", "mem://lib", *args, code=0)
    assert hits(data_dir, "sourdough starter") == []

    # offline: the bucket cannot be reached; its media stay searchable
    bucket.rename(bucket.with_name("elsewhere"))
    r = run("index", "mem://lib", *args, code=1)
    assert "mem://lib" in r.output and "cannot be reached" in r.output
    assert [h["path"] for h in hits(data_dir, "cupola window")] == ["mem://lib/archive/moved.mp3"]


def test_unknown_scheme_is_a_usage_error(data_dir):
    r = run("index", "nope://b/k", "--data-dir", str(data_dir), "--transcriber", "manifest", code=2)
    assert "no storage plugin for nope://" in r.output


def test_watch_polls_a_non_file_root(bucket, mem_storage, make_pipeline, corpus_src):
    from mediaindex.watch import Watcher

    shutil.rmtree(bucket / "podcasts")
    p = make_pipeline()
    w = Watcher(p, ["mem://lib"], stable=0, poll=0.2, rescan=None).start()
    try:
        assert w.scan_done.wait(60) and w.wait_idle(120)
        assert p.state.get_file("mem://lib/talks/space_station.mp3").status == "indexed"
        shutil.copy(corpus_src / "podcasts" / "ferry.webm", bucket / "ferry.webm")
        for _ in range(600):
            rec = p.state.get_file("mem://lib/ferry.webm")
            if rec is not None and rec.status == "indexed":
                break
            time.sleep(0.1)
        assert p.state.get_file("mem://lib/ferry.webm").status == "indexed"
    finally:
        w.stop()


# ---- publish: what a URL-only engine gets -------------------------------------------------


class _UrlEngine:
    """A URL-only engine: publishes the extracted audio (or the source) and can fail after it."""

    def __init__(self, storage, mode="audio", fail=False, not_ready=0):
        from mediaindex import PermanentError, Transcriber, TranscriberLimits, Transcript, hookimpl
        from mediaindex.audio import extract
        from mediaindex.errors import NotReady

        outer = self
        self.urls, self.staged_during = [], []

        class Engine(Transcriber):
            name = "urlonly"
            limits = TranscriberLimits(needs_url=True)

            def transcribe(self, request):
                if mode == "audio":
                    with tempfile.TemporaryDirectory() as tmp:
                        audio = extract(request.path, 0, request.probe.duration, Path(tmp) / "audio.ogg")
                        outer.urls.append(request.publish(audio))
                else:
                    outer.urls.append(request.publish(request.path))
                outer.staged_during.append(storage.staged())
                if len(outer.urls) <= not_ready:
                    raise NotReady("the task runs", retry_after=0)
                if fail:
                    raise PermanentError("the engine said no")
                return Transcript(engine="urlonly", model="x", segments=[], language="en")

        class Plugin:
            @hookimpl
            def register_transcribers(self, register):
                register(Engine())

        self.plugin = Plugin()


@pytest.fixture
def url_engine(mem_storage, data_dir):
    from mediaindex.plugins import load_plugins

    (data_dir / "config.toml").write_text('stage_storage = "mem"\n')

    def register(**kw):
        engine = _UrlEngine(mem_storage, **kw)
        load_plugins().register(engine.plugin, name="url-engine")
        return engine

    yield register
    load_plugins().unregister(name="url-engine")


def _staged_rows(p):
    return p.state.conn.execute("SELECT scheme, key FROM staged").fetchall()


@pytest.mark.parametrize("fail", [False, True])
def test_published_audio_is_deleted_after_the_call(make_pipeline, corpus, mem_storage, url_engine, fail):
    engine = url_engine(fail=fail)
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([str(corpus / "video" / "volcano_lecture.mp4")]))
    [outcome] = p.run_jobs()
    assert outcome.status == ("failed" if fail else "indexed")
    [url] = engine.urls
    [during] = engine.staged_during
    assert len(during) == 1 and during[0].endswith(".ogg")  # the audio was uploaded, not the video
    assert url.startswith("https://mem.invalid/staging/mediaindex-staging/")
    assert mem_storage.staged() == [] and _staged_rows(p) == []  # deleted, success or failure


@pytest.mark.parametrize("fail", [False, True])
def test_published_audio_is_kept_while_the_job_is_not_ready(make_pipeline, corpus, mem_storage, url_engine, fail):
    """NotReady: the engine's task still has to fetch what was published, so it stays until the
    job ends (done or failed); then every upload of the job is deleted."""
    engine = url_engine(fail=fail, not_ready=2)
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([str(corpus / "video" / "volcano_lecture.mp4")]))
    outcomes = p.run_jobs(wait_for_retries=5)
    assert outcomes[-1].status == ("failed" if fail else "indexed") and len(engine.urls) == 3
    assert [len(d) for d in engine.staged_during] == [1, 2, 3]  # the earlier uploads were still there
    assert mem_storage.staged() == [] and _staged_rows(p) == []


def test_source_in_a_bucket_is_presigned_not_uploaded(make_pipeline, bucket, mem_storage, url_engine):
    engine = url_engine(mode="source")
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan(["mem://lib/talks/space_station.mp3"]))
    assert [o.status for o in p.run_jobs()] == ["indexed"]
    assert engine.urls == [mem_storage.public_url("mem://lib/talks/space_station.mp3", expires=6 * 3600)]
    assert engine.staged_during == [[]] and _staged_rows(p) == []


def test_upload_left_by_a_crash_is_deleted_on_the_next_run(make_pipeline, corpus, mem_storage, data_dir, url_engine):
    """A process killed during the call (os._exit) leaves its upload; the next run deletes it."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(HERE)!r})
        from memstorage import Plugin
        from mediaindex import Transcriber, TranscriberLimits, hookimpl
        from mediaindex.config import Config
        from mediaindex.pipeline import Pipeline
        from mediaindex.plugins import load_plugins

        class Crash(Transcriber):
            name = "crash"
            limits = TranscriberLimits(needs_url=True)
            def transcribe(self, request):
                request.publish(request.path)
                os._exit(9)  # killed mid-call: no finally runs

        class Engines:
            @hookimpl
            def register_transcribers(self, register):
                register(Crash())

        pm = load_plugins()
        pm.register(Plugin({str(mem_storage.folder)!r}), name="mem-storage")
        pm.register(Engines(), name="crash")
        p = Pipeline(Config.load({str(data_dir)!r}), transcriber="crash")
        p.enqueue_plan(p.plan([{str(corpus / "talks" / "space_station.mp3")!r}]))
        p.run_jobs()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    [left] = mem_storage.staged()
    assert left.startswith("mediaindex-staging/") and left.endswith(".mp3")
    url_engine()  # the next run (any engine): leftovers are cleaned before work starts
    p = make_pipeline(transcriber="urlonly")
    assert [tuple(row) for row in _staged_rows(p)] == [("mem", left)]
    p.run_jobs()
    assert mem_storage.staged() == [] and _staged_rows(p) == []


# ---- routing by every declared limit ------------------------------------------------------


@pytest.fixture
def limited_family():
    from mediaindex import Transcriber, TranscriberLimits, Transcript, hookimpl
    from mediaindex.plugins import load_plugins

    used = []

    class Engine(Transcriber):
        family = "lim"

        def __init__(self, name, **limits):
            self.name, self.limits = name, TranscriberLimits(**limits)

        def transcribe(self, request):
            used.append((self.name, request.path.name))
            return Transcript(engine=self.name, model="x", segments=[], language="en")

    class Plugin:
        @hookimpl
        def register_transcribers(self, register):
            register(Engine("lim-zh", languages=["zh"]))
            register(Engine("lim-small", max_bytes=150_000))
            register(Engine("lim-any"))

    load_plugins().register(Plugin(), name="lim-family")
    yield used
    load_plugins().unregister(name="lim-family")


def test_routing_uses_max_bytes_and_languages(make_pipeline, corpus, data_dir, limited_family):
    chinese, talks = corpus / "chinese", corpus / "talks"
    (data_dir / "config.toml").write_text(f'[[hints]]\npath = "{chinese}"\nlanguage = "zh-CN"\n\n'
                                          f'[[hints]]\npath = "{talks}"\nlanguage = "en"\n')
    assert (talks / "space_station.mp3").stat().st_size <= 150_000 < (talks / "bread_baking.m4a").stat().st_size
    p = make_pipeline(transcriber="lim")
    p.enqueue_plan(p.plan([str(talks), str(chinese)]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    assert sorted(limited_family) == [("lim-any", "bread_baking.m4a"), ("lim-small", "space_station.mp3"),
                                      ("lim-zh", "weather.mp3")]


def test_accepts_says_which_limit_refused(make_pipeline, corpus):
    from mediaindex import Transcriber, TranscriberLimits
    from mediaindex.probe import probe

    class Engine(Transcriber):
        name = "tiny"
        limits = TranscriberLimits(max_bytes=1000, languages=["en"])

        def transcribe(self, request):
            raise AssertionError

    info = probe(corpus / "chinese" / "weather.mp3")
    assert "bytes" in Engine().accepts(info)
    Engine.limits = TranscriberLimits(languages=["en"])
    assert Engine().accepts(info, language="en-GB") is None
    assert "'zh'" in Engine().accepts(info, language="zh")


def test_api_path_filter_takes_a_uri_like_the_cli(bucket, mem_storage, data_dir):
    """One path-prefix rule for CLI and API: a storage URI names a folder of a bucket."""
    from starlette.testclient import TestClient

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.app import create_app

    run("index", "mem://lib", "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    cli_json = json.loads(run("search", "ferry", "--data-dir", str(data_dir), "--json", "--path",
                              "mem://lib/podcasts/", code=0).output)
    p = Pipeline(Config.load(data_dir))
    try:
        with TestClient(create_app(p), base_url="http://127.0.0.1") as client:
            r = client.get("/api/search", params={"q": "ferry", "limit": 10, "path": "mem://lib/podcasts"})
    finally:
        p.close()
    assert r.status_code == 200 and r.json() == cli_json
    assert [h["path"] for h in cli_json["hits"]] == ["mem://lib/podcasts/ferry.webm"]
