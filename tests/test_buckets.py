"""The s3 and oss storage plugins against real HTTP object stores on loopback.

S3: moto's server. OSS: the real ``alibabacloud-oss-v2`` SDK against moto behind the OSS
adapter (tests/bucket_servers.py). Every test runs for both schemes: the real plugin, the real
CLI or Pipeline, real ffmpeg on the corpus, real SQLite.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import pytest
from click.testing import CliRunner

from bucket_servers import KEY_ID, SECRET, start_faulty, start_oss, start_s3
from mediaindex.backends import version_stamp
from mediaindex.cli import cli

pytestmark = pytest.mark.usefixtures("manifest_transcriber")
HERE = Path(__file__).parent
PLUGINS = {"s3": ("mediaindex_s3.plugin", "mediaindex-s3"), "oss": ("mediaindex_oss.plugin", "mediaindex-oss")}


@pytest.fixture(scope="module")
def servers():
    s3, s3_endpoint = start_s3()
    oss = start_oss()
    yield {"s3": s3_endpoint, "oss": oss.endpoint}
    oss.stop()
    s3.stop()


class Store:
    """One fresh bucket seen through one scheme; ``admin`` (boto3) changes it behind the plugin's back."""

    def __init__(self, scheme: str, endpoint: str, s3_endpoint: str, data_dir: Path):
        self.scheme, self.endpoint, self.data_dir = scheme, endpoint, data_dir
        self.bucket = f"media-{uuid.uuid4().hex[:10]}"
        self.admin = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                                  aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        self.admin.create_bucket(Bucket=self.bucket)
        self.configure()

    def uri(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}".rstrip("/")

    def configure(self, top: str = "", endpoint: str | None = None, **settings) -> None:
        """config.toml: the endpoint of this store plus ``settings`` in ``[s3]`` / ``[oss]``."""
        endpoint_key = "endpoint_url" if self.scheme == "s3" else "endpoint"
        table = {endpoint_key: endpoint or self.endpoint, "addressing_style": "path", "max_attempts": 2, **settings}
        lines = [top, f"[{self.scheme}]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        (self.data_dir / "config.toml").write_text("\n".join(lines) + "\n")

    def put(self, key: str, source: Path | bytes) -> None:
        body = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.admin.put_object(Bucket=self.bucket, Key=key, Body=body)

    def put_tree(self, folder: Path, prefix: str) -> None:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                self.put(f"{prefix}/{f.relative_to(folder).as_posix()}", f)

    def delete(self, key: str) -> None:
        self.admin.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        return [o["Key"] for o in self.admin.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])]

    def drop_bucket(self) -> None:
        for key in self.keys():
            self.delete(key)
        self.admin.delete_bucket(Bucket=self.bucket)


@pytest.fixture(params=["s3", "oss"])
def store(request, servers, data_dir, monkeypatch, tmp_path):
    """A fresh bucket, the scheme's plugin registered in-process, credentials in the environment,
    temporary downloads in a private folder (``store.tmp``) so the test can see them go."""
    import importlib

    from mediaindex.plugins import load_plugins

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "OSS_ENDPOINT", "OSS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    scheme = request.param
    s = Store(scheme, servers[scheme], servers["s3"], data_dir)
    s.tmp = tmp
    module = importlib.import_module(PLUGINS[scheme][0])
    pm = load_plugins()
    pm.register(module, name=f"{scheme}-test")
    try:
        yield s
    finally:
        pm.unregister(name=f"{scheme}-test")


def run(*args, code=None):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def hits(data_dir, q):
    out = run("search", q, "--data-dir", str(data_dir), "--json", code=0).output
    return [h["path"] for h in json.loads(out)["hits"]]


def test_version_stamp_folds_the_etag_into_the_second():
    assert int(version_stamp(1700000000.9, "aa")) == 1700000000 == int(version_stamp(1700000000.1, "bb"))
    assert version_stamp(1700000000.9, "aa") == version_stamp(1700000000.1, '"aa"')  # listing and HEAD agree
    assert version_stamp(1700000000.0, "aa") != version_stamp(1700000000.0, "bb")  # same second, new content


def test_bucket_end_to_end_through_the_cli(store, corpus, data_dir):
    store.configure(page_size=2)  # several pages even for a handful of objects
    store.put_tree(corpus / "talks", "lib/talks")
    store.put_tree(corpus / "podcasts", "lib/podcasts")
    store.put("lib/.trash/old.mp3", corpus / "talks" / "space_station.mp3")  # hidden below the root
    store.put("library-old/x.mp3", corpus / "talks" / "space_station.mp3")  # a sibling prefix, not lib/
    args = ("--data-dir", str(data_dir), "--transcriber", "manifest")
    r = run("index", store.uri("lib/"), *args, code=0)
    assert "0 failed" in r.output
    assert hits(data_dir, "cupola window") == [store.uri("lib/talks/space_station.mp3")]
    assert list(store.tmp.iterdir()) == []  # every temporary download removed
    r = run("search", "ferry", "--data-dir", str(data_dir), "--json", "--path", store.uri("lib/podcasts"), code=0)
    assert [h["path"] for h in json.loads(r.output)["hits"]] == [store.uri("lib/podcasts/ferry.webm")]

    # unchanged: nothing transcribed again
    assert "0 transcribed" in run("index", store.uri("lib"), *args, code=0).output

    # moved: same media under a new key, no second transcription
    store.put("lib/archive/moved.mp3", corpus / "talks" / "space_station.mp3")
    store.delete("lib/talks/space_station.mp3")
    assert "0 transcribed" in run("index", store.uri("lib"), *args, code=0).output
    assert hits(data_dir, "cupola window") == [store.uri("lib/archive/moved.mp3")]

    # changed in place (same key, new content): the new content is indexed, the old leaves
    store.put("lib/archive/moved.mp3", corpus / "chinese" / "weather.mp3")
    run("index", store.uri("lib"), *args, code=0)
    assert hits(data_dir, "cupola window") == []

    # deleted
    store.delete("lib/talks/bread_baking.m4a")
    run("index", store.uri("lib"), *args, code=0)
    assert hits(data_dir, "sourdough starter") == []

    # the bucket vanishes: offline, named, its media stay searchable
    store.drop_bucket()
    r = run("index", store.uri("lib"), *args, code=1)
    assert store.bucket in r.output and "does not exist" in r.output
    assert hits(data_dir, "ferry") == [store.uri("lib/podcasts/ferry.webm")]


def test_a_listing_that_fails_part_way_deletes_nothing(store, corpus, data_dir):
    faulty, faults = start_faulty(store.scheme)
    try:
        store.configure(endpoint=faulty.endpoint, page_size=2, max_attempts=1)
        store.put_tree(corpus / "talks", "lib")
        store.put_tree(corpus / "podcasts", "lib/podcasts")
        args = ("--data-dir", str(data_dir), "--transcriber", "manifest")
        run("index", store.uri("lib"), *args, code=0)
        before = hits(data_dir, "sourdough starter")
        assert before == [store.uri("lib/bread_baking.m4a")]
        token = "continuation-token"
        faults.fail = lambda environ: token in environ.get("QUERY_STRING", "")  # page 2 fails
        r = run("index", store.uri("lib"), *args, code=1)
        assert store.bucket in r.output and "busy or failing" in r.output
        assert hits(data_dir, "sourdough starter") == before  # unknown is not deleted
        assert len(hits(data_dir, "ferry")) == 1
    finally:
        faulty.stop()


def test_a_folder_that_fails_to_list_hides_only_its_own_deletions(store, corpus, data_dir):
    """Big folders are listed one by one: one that fails is unknown, the others are seen whole."""
    faulty, faults = start_faulty(store.scheme)
    try:
        store.configure(endpoint=faulty.endpoint, page_size=2, max_attempts=1)
        store.put_tree(corpus / "talks", "lib/talks")
        store.put_tree(corpus / "podcasts", "lib/podcasts")
        args = ("--data-dir", str(data_dir), "--transcriber", "manifest")
        run("index", store.uri("lib"), *args, code=0)
        store.delete("lib/talks/bread_baking.m4a")
        store.delete("lib/podcasts/ferry.webm")
        faults.fail = lambda environ: parse_qs(environ.get("QUERY_STRING", "")).get("prefix") == ["lib/talks/"]
        r = run("index", store.uri("lib"), *args, code=1)
        assert "busy or failing" in r.output and store.uri("lib/talks") in r.output
        assert hits(data_dir, "ferry") == []  # podcasts/ was listed: its deletion is seen
        assert hits(data_dir, "sourdough starter") == [store.uri("lib/talks/bread_baking.m4a")]  # unknown stays
    finally:
        faulty.stop()


@pytest.mark.parametrize("settings", [{"page_size": 1}, {"page_size": 1, "list_partitions": 1},
                                      {"page_size": 1, "list_concurrency": 1}, {"page_size": 8}])
def test_listing_gives_every_wanted_object_once(store, make_pipeline, settings):
    """Big folders side by side; flat for small folders (``page_size`` 8: the first pages touch
    many), past ``list_partitions`` folders, or for a small prefix."""
    store.configure(**settings)
    keys = ["lib/a.mp3", "lib/b/1.mp3", "lib/b/2.mp3", "lib/b/3.mp3", "lib/c/d/3.mp3", "lib/z.mp3",
            "lib/.hidden/x.mp3", "lib/e/.h/y.mp3", "lib/e/", "lib-old/z.mp3", "lib.mp3", "top.mp3"]
    keys += [f"lib/f{i}/x.mp3" for i in range(10)]
    for key in keys:
        store.put(key, b"ID3" + bytes(13))
    backend = make_pipeline().storage_for(store.uri())

    def listed(root):
        return [o.uri.split("/", 3)[3] for o in backend.list(store.uri(root))]

    wanted = ["lib/a.mp3", "lib/b/1.mp3", "lib/b/2.mp3", "lib/b/3.mp3", "lib/c/d/3.mp3", "lib/z.mp3"]
    wanted += [f"lib/f{i}/x.mp3" for i in range(10)]
    assert sorted(listed("lib")) == sorted(wanted)
    assert sorted(listed("")) == sorted(wanted + ["lib-old/z.mp3", "lib.mp3", "top.mp3"])
    assert sorted(listed("lib/b")) == ["lib/b/1.mp3", "lib/b/2.mp3", "lib/b/3.mp3"]
    assert listed("lib/b/2.mp3") == ["lib/b/2.mp3"]  # a root that is an object
    assert listed("lib.mp3") == ["lib.mp3"]
    for info in backend.list(store.uri("lib")):  # the listing's dates (ISO 8601) and HEAD's (RFC 1123) agree
        assert backend.stat(info.uri) == info


def test_unreachable_store_is_offline_with_a_clear_message(store, corpus, data_dir):
    store.put_tree(corpus / "talks", "lib")
    args = ("--data-dir", str(data_dir), "--transcriber", "manifest")
    run("index", store.uri("lib"), *args, code=0)
    store.configure(endpoint="http://127.0.0.1:9", max_attempts=1)  # nothing listens on the discard port
    r = run("index", store.uri("lib"), *args, code=1)
    assert "cannot reach" in r.output and store.bucket in r.output
    assert hits(data_dir, "sourdough starter") == [store.uri("lib/bread_baking.m4a")]


def _wait_for(check, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_watch_follows_a_bucket_prefix(store, corpus, make_pipeline):
    from mediaindex.watch import Watcher

    store.put_tree(corpus / "talks", "lib")
    p = make_pipeline()
    w = Watcher(p, [store.uri("lib")], stable=0, poll=0.2, rescan=None).start()

    def status(key):
        rec = p.state.get_file(store.uri(key))
        return rec.status if rec else None

    try:
        assert w.scan_done.wait(60) and w.wait_idle(120)
        assert status("lib/space_station.mp3") == "indexed"
        store.put("lib/new/ferry.webm", corpus / "podcasts" / "ferry.webm")  # new
        assert _wait_for(lambda: status("lib/new/ferry.webm") == "indexed")
        old_id = p.state.get_file(store.uri("lib/space_station.mp3")).media_id
        store.put("lib/space_station.mp3", corpus / "chinese" / "weather.mp3")  # changed in place
        assert _wait_for(lambda: (rec := p.state.get_file(store.uri("lib/space_station.mp3"))) is not None
                         and rec.status == "indexed" and rec.media_id != old_id)
        store.delete("lib/bread_baking.m4a")  # deleted
        assert _wait_for(lambda: status("lib/bread_baking.m4a") is None)
        store.drop_bucket()  # unreachable: offline, entries kept
        assert _wait_for(lambda: store.uri("lib") in w.offline)
        assert status("lib/new/ferry.webm") == "indexed"
    finally:
        w.stop()


def test_watch_waits_for_an_object_to_settle(store, corpus, make_pipeline):
    """A fresh object is held for the stability delay (its ETag may still change), not processed."""
    from mediaindex.watch import Watcher

    seen = threading.Semaphore(0)
    p = make_pipeline()
    w = Watcher(p, [store.uri("lib")], stable=3600, poll=0.2, rescan=None,
                log=lambda line: seen.release() if line.startswith("rescan: 1 new") else None).start()
    try:
        assert w.scan_done.wait(60)
        store.put("lib/ferry.webm", corpus / "podcasts" / "ferry.webm")
        for _ in range(3):  # three polls saw it...
            assert seen.acquire(timeout=60)
        assert p.state.get_file(store.uri("lib/ferry.webm")) is None  # ...and none queued it
        assert p.state.jobs.pending() == 0
    finally:
        w.stop()


# ---- staging and presigned URLs for a URL-only engine ---------------------------------------


class _UrlEngine:
    """A URL-only engine that fetches what it is given with a plain HTTP client."""

    def __init__(self, store, mode="audio", fail=False):
        from mediaindex import PermanentError, Transcriber, TranscriberLimits, Transcript, hookimpl
        from mediaindex.audio import extract

        outer = self
        self.fetched: list[tuple[bytes, bytes]] = []  # (what was published, what the URL gave)
        self.staged_during: list[list[str]] = []

        class Engine(Transcriber):
            name = "urlonly"
            limits = TranscriberLimits(needs_url=True)

            def transcribe(self, request):
                with tempfile.TemporaryDirectory() as tmp:
                    file = request.path
                    if mode == "audio":
                        file = extract(request.path, 0, request.probe.duration, Path(tmp) / "audio.ogg")
                    url = request.publish(file)
                    with urllib.request.urlopen(url, timeout=30) as resp:
                        outer.fetched.append((Path(file).read_bytes(), resp.read()))
                outer.staged_during.append(store.keys("staging/"))
                if fail:
                    raise PermanentError("the engine said no")
                return Transcript(engine="urlonly", model="x", segments=[], language="en")

        class Plugin:
            @hookimpl
            def register_transcribers(self, register):
                register(Engine())

        self.plugin = Plugin()


@pytest.fixture
def url_engine(store):
    from mediaindex.plugins import load_plugins

    store.configure(top=f'stage_storage = "{store.scheme}"', bucket=store.bucket, prefix="staging", part_mb=5)

    def register(**kw):
        engine = _UrlEngine(store, **kw)
        load_plugins().register(engine.plugin, name="url-engine")
        return engine

    yield register
    load_plugins().unregister(name="url-engine")


@pytest.mark.parametrize("fail", [False, True])
def test_staged_audio_is_fetchable_then_deleted(store, make_pipeline, corpus, url_engine, fail):
    engine = url_engine(fail=fail)
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([str(corpus / "video" / "volcano_lecture.mp4")]))
    [outcome] = p.run_jobs()
    assert outcome.status == ("failed" if fail else "indexed")
    [(published, fetched)] = engine.fetched
    assert fetched == published  # the presigned URL serves the upload to a plain HTTP client
    [during] = engine.staged_during
    assert len(during) == 1 and during[0].startswith("staging/mediaindex-staging/") and during[0].endswith(".ogg")
    assert store.keys("staging/") == []  # deleted, success or failure
    assert p.state.conn.execute("SELECT count(*) FROM staged").fetchone()[0] == 0


def test_large_staging_upload_is_multipart(store, tmp_path, url_engine, data_dir):
    """Above one part (5 MB here) the upload goes in parts; the object is whole afterwards."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    big = tmp_path / "big.ogg"
    big.write_bytes(os.urandom(12 << 20))
    p = Pipeline(Config.load(data_dir))
    try:
        storage = p.storages[store.scheme]
        uri = storage.stage(big, "mediaindex-staging/big.ogg")
        head = store.admin.head_object(Bucket=store.bucket, Key="staging/mediaindex-staging/big.ogg")
        assert uri == store.uri("staging/mediaindex-staging/big.ogg")
        assert head["ContentLength"] == 12 << 20 and head["ETag"].strip('"').endswith("-3")  # 3 parts
        with urllib.request.urlopen(storage.public_url(uri, expires=600), timeout=30) as resp:
            assert resp.read() == big.read_bytes()
        storage.unstage("mediaindex-staging/big.ogg")
        storage.unstage("mediaindex-staging/big.ogg")  # gone already: no error
        assert store.keys("staging/") == []
    finally:
        p.close()


def test_bucket_source_is_presigned_not_uploaded(store, make_pipeline, corpus, url_engine):
    engine = url_engine(mode="source")
    store.put("lib/space_station.mp3", corpus / "talks" / "space_station.mp3")
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([store.uri("lib/space_station.mp3")]))
    assert [o.status for o in p.run_jobs()] == ["indexed"]
    [(published, fetched)] = engine.fetched
    assert fetched == (corpus / "talks" / "space_station.mp3").read_bytes()
    assert engine.staged_during == [[]]  # nothing uploaded


def test_upload_left_by_kill_9_is_deleted_on_the_next_run(store, make_pipeline, corpus, data_dir, url_engine):
    """A process killed during the call leaves its upload; the next run deletes it. The child
    loads the plugin through its real entry point."""
    script = textwrap.dedent(f"""
        import os, signal
        from mediaindex import Transcriber, TranscriberLimits, hookimpl
        from mediaindex.config import Config
        from mediaindex.pipeline import Pipeline
        from mediaindex.plugins import load_plugins

        class Crash(Transcriber):
            name = "crash"
            limits = TranscriberLimits(needs_url=True)
            def transcribe(self, request):
                request.publish(request.path)
                os.kill(os.getpid(), signal.SIGKILL)

        class Engines:
            @hookimpl
            def register_transcribers(self, register):
                register(Crash())

        load_plugins().register(Engines(), name="crash")
        p = Pipeline(Config.load({str(data_dir)!r}), transcriber="crash")
        p.enqueue_plan(p.plan([{str(corpus / "talks" / "space_station.mp3")!r}]))
        p.run_jobs()
    """)
    env = {**os.environ, "MEDIAINDEX_LOAD_PLUGINS": PLUGINS[store.scheme][1],
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    [left] = store.keys("staging/")
    assert left.startswith("staging/mediaindex-staging/") and left.endswith(".mp3")
    url_engine()
    p = make_pipeline(transcriber="urlonly")
    p.run_jobs()  # the next run cleans leftovers before work starts
    assert store.keys("staging/") == []
    assert p.state.conn.execute("SELECT count(*) FROM staged").fetchone()[0] == 0


def test_staging_without_a_bucket_says_what_to_set(store, make_pipeline, corpus, url_engine):
    url_engine()
    store.configure(top=f'stage_storage = "{store.scheme}"')
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([str(corpus / "talks" / "space_station.mp3")]))
    with pytest.raises(Exception) as e:
        p.run_jobs()
    assert f"[{store.scheme}] bucket" in str(e.value)


def test_open_and_ranges_read_the_object(store, corpus, data_dir):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    data = (corpus / "podcasts" / "ferry.webm").read_bytes()
    store.put("lib/ferry.webm", data)
    p = Pipeline(Config.load(data_dir))
    try:
        storage = p.storage_for(store.uri("lib/ferry.webm"))
        with storage.open(store.uri("lib/ferry.webm")) as f:
            assert f.read(10) == data[:10] and f.read() == data[10:]
        with storage.open_range(store.uri("lib/ferry.webm"), 1000, 500) as f:
            assert f.read(500) == data[1000:1500]
        with pytest.raises(FileNotFoundError):
            storage.open(store.uri("lib/nope.webm"))
    finally:
        p.close()


def test_staging_to_a_missing_bucket_stops_with_the_fix(store, make_pipeline, corpus, url_engine):
    """Every upload would fail the same way: a fatal error naming the bucket, not one failure per file."""
    from mediaindex.backends import FatalError

    url_engine()
    store.configure(top=f'stage_storage = "{store.scheme}"', bucket="no-such-bucket-here")
    p = make_pipeline(transcriber="urlonly")
    p.enqueue_plan(p.plan([str(corpus / "talks" / "space_station.mp3")]))
    with pytest.raises(FatalError, match="'no-such-bucket-here'.*does not exist"):
        p.run_jobs()
    assert p.state.jobs.pending() == 1  # the job stays queued for after the fix


# ---- playback in the web UI ------------------------------------------------------------------


@pytest.fixture
def bucket_site(store, corpus, make_pipeline):
    """The corpus podcasts indexed from the bucket, served by the real web server."""
    from mediaindex.web.server import start_server

    store.put_tree(corpus / "podcasts", "lib")
    p = make_pipeline()
    p.enqueue_plan(p.plan([store.uri("lib")]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    handle = start_server(p, port=0)
    yield handle, p
    handle.stop()


def _get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_bucket_media_stream_through_the_api_with_ranges(store, bucket_site, corpus):
    handle, p = bucket_site
    base = handle.url.rstrip("/")
    media = p.state.media_for_path(store.uri("lib/ferry.webm"))
    data = (corpus / "podcasts" / "ferry.webm").read_bytes()
    status, _, body = _get(f"{base}/api/media/{media.id}")
    assert status == 200 and json.loads(body)["playable"] is True, body
    status, headers, body = _get(f"{base}/api/media/{media.id}/stream", {"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    status, headers, body = _get(f"{base}/api/media/{media.id}/stream")
    assert status == 200 and body == data and headers["content-type"].startswith("video/webm")
    assert store.bucket not in json.dumps(headers)  # proxied: no bucket URL reaches the page
    store.delete("lib/ferry.webm")  # gone from the bucket: not served
    assert _get(f"{base}/api/media/{media.id}/stream")[0] == 404


def _probe_seconds(data: bytes, tmp_path: Path, ext: str) -> float:
    f = tmp_path / f"probe.{ext}"
    f.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(f)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def test_clips_of_bucket_media_are_cut_from_a_presigned_url(store, bucket_site, corpus, tmp_path):
    """ffmpeg reads the object by Range requests: the clip is the one a local file gives."""
    from mediaindex.web.files import cut_clip

    handle, p = bucket_site
    base = handle.url.rstrip("/")
    media = p.state.media_for_path(store.uri("lib/lighthouse.opus"))
    status, headers, body = _get(f"{base}/api/media/{media.id}/clip?t=4&before=1&after=2")
    assert status == 200, body
    assert headers["content-type"] == "audio/mpeg" and ".mp3" in headers["content-disposition"]
    assert _probe_seconds(body, tmp_path, "mp3") == pytest.approx(3, abs=0.3)
    out_dir, local_clip, _ = cut_clip(media, str(corpus / "podcasts" / "lighthouse.opus"), 3.0, 3.0)
    assert Path(local_clip).read_bytes() == body  # the same seconds as from the file itself
    shutil.rmtree(out_dir)
    status, _, other = _get(f"{base}/api/media/{media.id}/clip?t=8&before=1&after=2")
    assert status == 200 and other != body  # another place, other audio
    odd = p.state.media_for_path(store.uri("lib/episode 07 - café & crème (draft).ogg"))  # a key to escape
    status, _, body = _get(f"{base}/api/media/{odd.id}/clip?t=2&before=1&after=1")
    assert status == 200 and _probe_seconds(body, tmp_path, "mp3") == pytest.approx(2, abs=0.3)

    video = p.state.media_for_path(store.uri("lib/ferry.webm"))
    status, headers, body = _get(f"{base}/api/media/{video.id}/clip?t=1")
    assert status == 200 and headers["content-type"] == "video/mp4", body
    assert _probe_seconds(body, tmp_path, "mp4") > 1


def test_a_failed_clip_of_bucket_media_shows_no_presigned_url(store, bucket_site, corpus):
    handle, p = bucket_site
    media = p.state.media_for_path(store.uri("lib/lighthouse.opus"))
    size = (corpus / "podcasts" / "lighthouse.opus").stat().st_size
    store.put("lib/lighthouse.opus", b"\0" * size)  # same size, not media: ffmpeg fails naming its input
    status, _, body = _get(f"{handle.url.rstrip('/')}/api/media/{media.id}/clip?t=4")
    error = json.loads(body)["error"]
    assert status == 500 and "ffmpeg" in error, error
    assert "://127.0.0.1" not in error and "signature" not in error.lower(), error
    assert store.uri("lib/lighthouse.opus") in error


@pytest.mark.browser
@pytest.mark.parametrize("store", ["s3"], indirect=True)
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium is missing")
def test_a_hit_on_bucket_media_plays_in_the_browser(store, bucket_site):
    from playwright.sync_api import sync_playwright

    handle, p = bucket_site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            ranges: list[str] = []
            page.on("request", lambda r: ranges.append(r.headers.get("range", "")) if "/stream" in r.url else None)
            page.goto(handle.url)
            page.fill("#q", "dolphins")
            page.locator("#results .hit").first.click()
            page.wait_for_function("() => { const p = document.getElementById('player');"
                                   " return p && !p.paused && p.readyState >= 2 && p.currentTime > 0; }",
                                   timeout=20000)
            assert page.evaluate("document.getElementById('player').src").startswith(handle.url)
            assert any(r.startswith("bytes=") for r in ranges)  # the player asked for ranges
            assert not errors, errors
        finally:
            browser.close()


def test_refusals_are_named_with_their_fix():
    """What the services answer when credentials expire or access is denied (the servers here
    check no signatures): the real SDK exception types, mapped to a typed error with the fix."""
    from alibabacloud_oss_v2 import exceptions as oss_errors
    from botocore.exceptions import ClientError, EndpointConnectionError
    from mediaindex_oss.plugin import OssStorage
    from mediaindex_s3.plugin import S3Storage

    from mediaindex.backends import FatalError, PermanentError, TransientError

    s3 = S3Storage({"endpoint_url": "http://127.0.0.1:9"})
    expired = ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "HeadObject")
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    busy = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "ListObjectsV2")
    e = s3._error(expired, "media", "reading s3://media/a.mp3")
    assert isinstance(e, FatalError) and "'media'" in str(e) and "renew" in str(e)
    assert isinstance(e, OSError)  # a watcher's stat keeps what it knows (watch._stat_file)
    e = s3._error(denied, "media", "x")
    assert isinstance(e, PermanentError) and "s3:GetObject" in str(e)
    assert isinstance(s3._error(busy, "media", "x"), TransientError)
    lost = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert isinstance(s3._error(lost, "media", "x"), TransientError)

    o = OssStorage({"endpoint": "http://127.0.0.1:9"}, ("id", "secret", None))

    def service(code, status):
        answer = oss_errors.ServiceError(status_code=status, code=code, request_id="r1", message="m", ec="",
                                         timestamp="", request_target="GET /calls/a.mp3")
        return oss_errors.OperationError(name="GetObject", error=answer)

    e = o._error(service("SecurityTokenExpired", 403), "calls", "reading oss://calls/a.mp3")
    assert isinstance(e, FatalError) and isinstance(e, OSError) and "'calls'" in str(e) and "STS" in str(e)
    assert isinstance(o._error(service("AccessDenied", 403), "calls", "x"), PermanentError)
    assert isinstance(o._error(service("InternalError", 500), "calls", "x"), TransientError)
    assert "does not exist" in str(o._error(service("NoSuchBucket", 404), "calls", "x"))
