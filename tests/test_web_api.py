"""The JSON API (mediaindex/web): every endpoint, bad parameters, byte ranges, traversal, tokens.

One corpus index (manifest transcriber) is built per module; most tests use Starlette's
TestClient, the traversal and server tests a real uvicorn on a free port.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from mediaindex.hits import safe_snippet
from mediaindex.web.app import api_routes, create_app
from mediaindex.web.files import Unsatisfiable, parse_range
from mediaindex.web.server import UnsafeBindError, start_server

from conftest import registered_manifest_transcriber

BASE = "http://127.0.0.1"


def build_index(corpus_src: Path, root: Path, *, extra=None):
    """Copy the corpus (without the long meeting) under root, index it with the manifest transcriber.

    Returns (pipeline, media folder). ``extra(media_dir)`` may add or rename files first.
    """
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    media = root / "media"
    shutil.copytree(corpus_src, media, ignore=shutil.ignore_patterns("long_meeting.mp3", "manifest.json"))
    if extra:
        extra(media)
    with registered_manifest_transcriber(corpus_src, "manifest-web"):
        p = Pipeline(Config.load(root / "data"), transcriber="manifest")
        p.enqueue_plan(p.plan([str(media)]))
        p.run_jobs()
    return p, media


@pytest.fixture(scope="module")
def indexed(corpus_src, tmp_path_factory):
    p, media = build_index(corpus_src, tmp_path_factory.mktemp("web"))
    yield p, media
    p.close()


@pytest.fixture(scope="module")
def client(indexed):
    p, _ = indexed
    with TestClient(create_app(p), base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def ids(client):
    def first(q):
        r = client.get("/api/search", params={"q": q})
        assert r.status_code == 200, r.text
        return r.json()["hits"][0]
    return {"space": first("lettuce chamber"), "volcano": first("geologists earthquakes"),
            "ferry": first("dolphins"), "chess": first("castling")}


@pytest.fixture(scope="module")
def server(indexed):
    p, _ = indexed
    handle = start_server(p, port=0)
    yield handle
    handle.stop()


def manifest_entry(manifest, rel):
    return next(e for e in manifest["files"] if e["path"] == rel)


# ---- search and facets ---------------------------------------------------------------------


def test_search_hit_has_everything_needed_to_jump(client, manifest, indexed):
    r = client.get("/api/search", params={"q": "lettuce chamber"})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 1 and body["partial"] is False
    hit = body["hits"][0]
    _, media = indexed
    assert hit["path"] == str(media / "talks" / "space_station.mp3")
    assert hit["title"] == "space_station"
    sentence = manifest_entry(manifest, "talks/space_station.mp3")["sentences"][1]
    assert sentence["start"] - 0.01 <= hit["time"] <= sentence["end"]
    assert hit["jump"] == pytest.approx(max(0, hit["time"] - 1), abs=0.01)
    assert "<mark>lettuce</mark>" in hit["snippet"] and "<mark>chamber</mark>" in hit["snippet"]
    assert hit["clock"] == "00:00:07"
    assert hit["link"].startswith(f"/m/{hit['media_id']}?t=")
    assert hit["start"] <= hit["time"] <= hit["end"]


def test_search_partial_flag_and_paging(client):
    r = client.get("/api/search", params={"q": "lettuce zzzunknownword"}).json()
    assert r["partial"] is True and r["hits"]
    all_hits = client.get("/api/search", params={"q": "the", "limit": 100}).json()
    assert all_hits["total"] >= 3
    page = client.get("/api/search", params={"q": "the", "limit": 2, "offset": 1}).json()
    assert [h["segment_index"] for h in page["hits"]] == [h["segment_index"] for h in all_hits["hits"][1:3]]
    assert len(page["hits"]) == 2 and page["limit"] == 2 and page["offset"] == 1


def test_search_grouped_by_recording(client):
    flat = client.get("/api/search", params={"q": "the", "limit": 100}).json()
    by_media: dict[str, list] = {}
    for h in flat["hits"]:
        by_media.setdefault(h["media_id"], []).append(h)
    r = client.get("/api/search", params={"q": "the", "group": "media", "limit": 100}).json()
    assert r["group"] == "media" and r["total"] == len(by_media) == len(r["groups"])
    assert [g["best"] for g in r["groups"]] == r["hits"]  # hits: the best hit of each recording
    for g in r["groups"]:
        times = [m["time"] for m in g["moments"]]
        assert times == sorted(times) and {m["media_id"] for m in g["moments"]} == {g["media_id"]}
        assert sorted(m["segment_index"] for m in g["moments"]) == sorted(
            h["segment_index"] for h in by_media[g["media_id"]]), g["title"]
        assert g["moments_total"] == len(by_media[g["media_id"]])
        assert set(g["best"]) == set(flat["hits"][0]) and all(set(m) == set(g["best"]) for m in g["moments"])
    assert max(len(g["moments"]) for g in r["groups"]) > 1  # several moments in one recording: one result
    # pages are pages of recordings: each once, in the same order as one big page
    pages = [client.get("/api/search", params={"q": "the", "group": "media", "limit": 2, "offset": o}).json()
             for o in range(0, r["total"], 2)]
    assert [g["media_id"] for p in pages for g in p["groups"]] == [g["media_id"] for g in r["groups"]]
    assert all(p["total"] == r["total"] for p in pages)
    few = client.get("/api/search", params={"q": "the", "group": "media", "moments": 1}).json()
    assert all(len(g["moments"]) == 1 for g in few["groups"])
    assert client.get("/api/search", params={"q": "the", "group": "episode"}).status_code == 400
    assert client.get("/api/search", params={"q": "the", "group": "none"}).json() == flat | {"limit": 20, "hits": flat["hits"][:20]}


def test_search_filters(client, indexed):
    _, media = indexed
    zh = client.get("/api/search", params={"q": "天气", "lang": "zh"}).json()
    assert zh["hits"] and all(h["language"] == "zh" for h in zh["hits"])
    assert client.get("/api/search", params={"q": "天气", "lang": "en"}).json()["total"] == 0
    assert client.get("/api/search", params={"q": "lettuce", "kind": "music"}).json()["total"] == 0
    talks = client.get("/api/search", params={"q": "the", "path": str(media / "talks") + "/", "limit": 100}).json()
    assert talks["hits"] and all(h["path"].startswith(str(media / "talks") + "/") for h in talks["hits"])
    none = client.get("/api/search", params={"q": "lettuce", "path": str(media / "video") + "/"}).json()
    assert none["total"] == 0
    # a folder is a folder: "/x/talk" does not match "/x/talks/..."
    assert client.get("/api/search", params={"q": "lettuce", "path": str(media / "talks")}).json()["total"] == 1
    assert client.get("/api/search", params={"q": "lettuce", "path": str(media / "talk")}).json()["total"] == 0
    one_file = str(media / "talks" / "space_station.mp3")
    assert client.get("/api/search", params={"q": "lettuce", "path": one_file}).json()["total"] == 1


def test_empty_query_returns_no_hits(client):
    r = client.get("/api/search", params={"q": ""})
    assert r.status_code == 200 and r.json()["hits"] == []


def test_facets(client, indexed):
    _, media = indexed
    f = client.get("/api/facets").json()
    assert f["language"]["en"] > 0 and f["language"]["zh"] > 0
    assert f["kind"]["speech"] > 0
    assert str(media / "talks") in f["folder"]
    assert set(f) >= {"language", "emotion", "kind", "folder"}
    q = client.get("/api/facets", params={"q": "lettuce"}).json()
    assert q["language"] == {"en": 1} and q["folder"] == {str(media / "talks"): 1}


@pytest.mark.parametrize("params", [
    {"q": "x", "limit": "-1"}, {"q": "x", "limit": "abc"}, {"q": "x", "limit": "1000"}, {"q": "x", "limit": "1.5"},
    {"q": "x", "offset": "-5"}, {"q": "x", "offset": "ten"}, {"q": "x", "offset": "99999999"},
    {"q": "x", "kind": "dance"}, {"q": "x", "lang": "<script>"}, {"q": "x", "emotion": "a b"},
    {"q": "x" * 600}, {"q": "x", "path": "relative/folder"}, {"q": "x", "path": "/a\x00b"},
])
@pytest.mark.parametrize("endpoint", ["/api/search", "/api/facets"])
def test_bad_search_parameters_are_400_with_json(client, endpoint, params):
    r = client.get(endpoint, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and isinstance(body["error"], str) and body["error"]


def test_no_parameter_soup_gives_a_500(client, ids):
    mid = ids["space"]["media_id"]
    weird = ["", " ", "-", "0x10", "1e309", "nan", "inf", "-inf", "%00", "\u202e", "1" * 400, "[]", "{}", "null"]
    for v in weird:
        for url, key in [("/api/search", "limit"), ("/api/search", "offset"), ("/api/search", "q"),
                         ("/api/search", "lang"), ("/api/facets", "path"), (f"/api/media/{mid}/clip", "t"),
                         (f"/api/media/{mid}/clip", "before"), (f"/api/media/{mid}/clip", "after")]:
            params = {key: v}
            if url.endswith("clip") and key != "t":
                params["t"] = "3"
            r = client.get(url, params=params)
            assert r.status_code < 500, (url, key, v, r.text)
            if r.status_code >= 400:
                assert "error" in r.json()


# ---- media, transcript, exports ------------------------------------------------------------


def test_media_metadata_and_transcript(client, ids, manifest):
    mid = ids["space"]["media_id"]
    m = client.get(f"/api/media/{mid}").json()
    assert m["id"] == mid and m["title"] == "space_station" and m["has_video"] is False
    assert m["playable"] is True and m["status"] == "indexed"
    assert m["duration"] == pytest.approx(32.86, abs=0.2)
    sentences = manifest_entry(manifest, "talks/space_station.mp3")["sentences"]
    assert [s["text"] for s in m["segments"]] == [s["text"] for s in sentences]
    words = m["segments"][1]["words"]
    assert words[0]["text"] == "Astronauts" and words[0]["start"] == pytest.approx(sentences[1]["start"], abs=0.01)
    assert m["stream_url"] == f"/api/media/{mid}/stream"
    assert set(m["exports"]) == {"srt", "vtt", "json", "txt"}
    video = client.get(f"/api/media/{ids['volcano']['media_id']}").json()
    assert video["has_video"] is True


@pytest.mark.parametrize("bad", ["zz", "ZZZZZZZZZZZZZZZZZZZZ", "0123456789ABCDEF0123", "abc", "a" * 65,
                                 "..", "%2e%2e", "0123456789abcdef012g", "x;rm -rf"])
def test_bad_media_ids_are_404(client, bad):
    for suffix in ("", "/stream", "/captions.vtt", "/export.srt", "/clip?t=1"):
        r = client.get(f"/api/media/{bad}{suffix}")
        assert r.status_code == 404, (bad, suffix, r.text)
        assert r.headers["content-type"].startswith("application/json")


def test_unknown_media_id_is_404(client):
    for suffix in ("", "/stream", "/captions.vtt", "/export.json", "/clip?t=1"):
        r = client.get(f"/api/media/0123456789abcdef0123{suffix}")
        assert r.status_code == 404
        assert "no media" in r.json()["error"]


def test_captions_vtt(client, ids):
    r = client.get(f"/api/media/{ids['volcano']['media_id']}/captions.vtt")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/vtt")
    assert r.text.startswith("WEBVTT") and "Magma rises" in r.text and "-->" in r.text


@pytest.mark.parametrize("fmt,ctype", [("srt", "application/x-subrip"), ("vtt", "text/vtt"),
                                       ("json", "application/json"), ("txt", "text/plain")])
def test_exports(client, ids, fmt, ctype):
    mid = ids["space"]["media_id"]
    r = client.get(f"/api/media/{mid}/export.{fmt}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(ctype)
    assert r.headers["content-disposition"].startswith("attachment;")
    assert f'space_station.{fmt}' in r.headers["content-disposition"]
    assert "lettuce" in r.text
    if fmt == "json":
        assert r.json()["segments"][1]["words"]
    if fmt == "srt":
        assert r.text.startswith("1\n00:00:00,")


def test_unknown_export_format_is_404(client, ids):
    r = client.get(f"/api/media/{ids['space']['media_id']}/export.exe")
    assert r.status_code == 404 and "srt" in r.json()["error"]


# ---- streaming with ranges -----------------------------------------------------------------


def test_stream_whole_file(client, ids, indexed):
    hit = ids["space"]
    data = Path(hit["path"]).read_bytes()
    r = client.get(f"/api/media/{hit['media_id']}/stream")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "audio/mpeg"


@pytest.mark.parametrize("header,expect", [
    ("bytes=0-99", (0, 99)), ("bytes=100-1099", (100, 1099)), ("bytes=5000-", (5000, None)),
    ("bytes=-500", (-500, None)), ("bytes=0-0", (0, 0)), ("bytes=1000-99999999", (1000, None)),
])
def test_stream_range_returns_exact_bytes(client, ids, header, expect):
    hit = ids["space"]
    data = Path(hit["path"]).read_bytes()
    size = len(data)
    a, b = expect
    if a < 0:
        a, b = size + a, size - 1
    elif b is None:
        b = size - 1
    r = client.get(f"/api/media/{hit['media_id']}/stream", headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == data[a:b + 1]
    assert r.headers["content-range"] == f"bytes {a}-{b}/{size}"
    assert r.headers["content-length"] == str(b - a + 1)
    assert r.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=131675-", "bytes=-0"])
def test_unsatisfiable_range_is_416(client, ids, header):
    hit = ids["space"]
    size = Path(hit["path"]).stat().st_size
    assert size == 131675 or header != "bytes=131675-"
    r = client.get(f"/api/media/{hit['media_id']}/stream", headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    assert "error" in r.json()


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-5", "bytes=10-5", "bytes=--1", "bytes=0-5,10-20"])
def test_malformed_or_multi_range_is_ignored(client, ids, header):
    """RFC 9110: a Range header that cannot be parsed (or asks for several ranges) may be ignored."""
    hit = ids["space"]
    r = client.get(f"/api/media/{hit['media_id']}/stream", headers={"Range": header})
    assert r.status_code == 200
    assert r.content == Path(hit["path"]).read_bytes()


def test_if_range_mismatch_sends_whole_file(client, ids):
    hit = ids["space"]
    url = f"/api/media/{hit['media_id']}/stream"
    etag = client.head(url).headers["etag"]
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}).status_code == 200
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_head_stream(client, ids):
    hit = ids["space"]
    r = client.head(f"/api/media/{hit['media_id']}/stream", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.headers["content-length"] == "10" and r.content == b""


def test_content_types(client, ids):
    assert client.head(f"/api/media/{ids['volcano']['media_id']}/stream").headers["content-type"] == "video/mp4"
    assert client.head(f"/api/media/{ids['ferry']['media_id']}/stream").headers["content-type"] == "video/webm"
    assert client.head(f"/api/media/{ids['chess']['media_id']}/stream").headers["content-type"] == "video/x-matroska"


def test_parse_range_unit():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-4", 10) == (0, 4)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=8-", 10) == (8, 9)
    assert parse_range("bytes=3-2", 10) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=10-", 10)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=0-", 0)


def test_media_outside_indexed_roots_is_not_served(client, ids, indexed, monkeypatch):
    p, _ = indexed
    monkeypatch.setattr(p.state, "roots", lambda: {"/nonexistent-root": "online"})
    r = client.get(f"/api/media/{ids['space']['media_id']}/stream")
    assert r.status_code == 404 and "offline" in r.json()["error"]
    assert client.get(f"/api/media/{ids['space']['media_id']}").json()["playable"] is False


def test_missing_file_is_404(corpus_src, tmp_path):
    p, media = build_index(corpus_src, tmp_path)
    try:
        with TestClient(create_app(p), base_url=BASE) as c:
            hit = c.get("/api/search", params={"q": "lettuce"}).json()["hits"][0]
            os.remove(hit["path"])
            r = c.get(f"/api/media/{hit['media_id']}/stream")
            assert r.status_code == 404 and "offline" in r.json()["error"]
            assert c.get(f"/api/media/{hit['media_id']}/clip", params={"t": 3}).status_code == 404
    finally:
        p.close()


# ---- clips ---------------------------------------------------------------------------------


def _duration(data: bytes, tmp_path: Path, ext: str) -> float:
    f = tmp_path / f"clip.{ext}"
    f.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(f)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_clip_audio_and_video(client, ids, tmp_path):
    r = client.get(f"/api/media/{ids['space']['media_id']}/clip", params={"t": 10, "before": 2, "after": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/mpeg"
    assert "attachment;" in r.headers["content-disposition"] and ".mp3" in r.headers["content-disposition"]
    assert _duration(r.content, tmp_path, "mp3") == pytest.approx(5, abs=0.4)
    r = client.get(f"/api/media/{ids['volcano']['media_id']}/clip", params={"t": 1})  # before clamps at 0
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert _duration(r.content, tmp_path, "mp4") == pytest.approx(11, abs=0.5)


@pytest.mark.parametrize("params", [
    {}, {"t": "abc"}, {"t": "-1"}, {"t": "1e9"}, {"t": "nan"}, {"t": "inf"}, {"t": "40"},
    {"t": "3", "before": "999"}, {"t": "3", "after": "-2"}, {"t": "3", "before": "x"},
    {"t": "0", "before": "0", "after": "0"},
])
def test_clip_bad_parameters(client, ids, params):
    r = client.get(f"/api/media/{ids['space']['media_id']}/clip", params=params)
    assert r.status_code == 400, (params, r.text)
    assert r.json()["error"]


# ---- status, openapi, pages ----------------------------------------------------------------


def test_status(client, indexed):
    _, media = indexed
    s = client.get("/api/status").json()
    assert s["media"] == 10 and s["files"]["indexed"] == 10 and s["files"]["failed"] == 4
    assert any(f["path"].endswith("broken/empty.mp3") and f["error"] for f in s["failed"])
    assert s["roots"] == [{"path": str(media), "status": "online"}]
    assert s["jobs"] == {"queued": 0, "running": 0}
    assert s["spent"] == 0 and s["hours_indexed"] > 0 and s["auth"] is False


def test_openapi_describes_every_endpoint(client):
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = api_routes()
    assert len(routes) >= 10
    for path, methods in routes:
        assert path in spec["paths"], f"{path} is not in the OpenAPI description"
        for m in methods:
            assert m.lower() in spec["paths"][path], f"{m} {path} is not described"
    search = spec["paths"]["/api/search"]["get"]
    assert {p["name"] for p in search["parameters"]} >= {"q", "limit", "offset", "lang", "emotion", "kind", "path"}


def test_pages_and_deep_links_serve_the_ui(client):
    for url in ("/", "/m/0123456789abcdef0123?t=12.5", "/?q=lettuce"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script src="/static/app.js"' in r.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/nowhere").status_code == 404
    assert client.get("/api/nowhere").json()["status"] == 404


def test_security_headers(client, ids):
    for url in ("/", "/api/status", f"/api/media/{ids['space']['media_id']}/stream", "/static/app.js", "/nowhere"):
        r = client.get(url, headers={"Range": "bytes=0-1"})
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"


def test_no_inline_scripts_in_page(client):
    html = client.get("/").text
    assert "<script>" not in html and "onclick" not in html.lower() and "style=" not in html


def test_safe_snippet_keeps_only_marks():
    assert safe_snippet("a <mark>b</mark> &lt;i&gt;") == "a <mark>b</mark> &lt;i&gt;"
    assert safe_snippet("<script>alert(1)</script> <mark>x</mark>") == \
        "&lt;script&gt;alert(1)&lt;/script&gt; <mark>x</mark>"
    assert "<img" not in safe_snippet("<img src=x onerror=alert(1)>")


def test_transcript_markup_is_escaped_in_snippets(corpus_src, tmp_path):
    from mediaindex.models import Segment, Transcript, Word

    p, _ = build_index(corpus_src, tmp_path)
    try:
        with TestClient(create_app(p), base_url=BASE) as c:
            hit = c.get("/api/search", params={"q": "lettuce"}).json()["hits"][0]
            media = p.state.get_media(hit["media_id"])
            text = "zebra <script>alert(1)</script> <img src=x onerror=alert(2)> & more"
            seg = Segment(index=0, start=1.0, end=4.0, text=text,
                          words=[Word(w, 1.0 + i * 0.3, 1.2 + i * 0.3) for i, w in enumerate(text.split())])
            p.state.save_transcript(media.id, media.engine, Transcript("manifest", "manifest", [seg]), 4.0)
            p.index.upsert(media, [seg])
            r = c.get("/api/search", params={"q": "zebra"}).json()
            snippet = r["hits"][0]["snippet"]
            assert "<script" not in snippet and "<img" not in snippet and "&lt;script&gt;" in snippet
            assert c.get(f"/api/media/{media.id}").json()["segments"][0]["text"] == text  # JSON: data, not HTML
            assert "<script>" not in c.get(f"/api/media/{media.id}/captions.vtt").text
    finally:
        p.close()


# ---- tokens, hosts, binding ----------------------------------------------------------------


def test_token_required_when_set(indexed, ids):
    p, _ = indexed
    mid = ids["space"]["media_id"]
    with TestClient(create_app(p, token="s3cret"), base_url=BASE) as c:
        for url in ("/api/status", "/api/search?q=lettuce", f"/api/media/{mid}", f"/api/media/{mid}/stream",
                    f"/api/media/{mid}/captions.vtt", "/api/facets", "/api/openapi.json"):
            r = c.get(url)
            assert r.status_code == 401, url
            assert "token" in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")
            assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(url, headers={"Authorization": "Bearer s3cret"}).status_code in (200, 206)
            sep = "&" if "?" in url else "?"
            assert c.get(f"{url}{sep}token=s3cret").status_code in (200, 206)
            assert c.get(f"{url}{sep}token=nope").status_code == 401
        assert c.get("/").status_code == 200  # the page itself holds no data
        # the UI logs in once; the HttpOnly cookie then works for fetch() and <audio src>
        assert c.post("/api/login", json={"token": "nope"}).status_code == 401
        r = c.post("/api/login", json={"token": "s3cret"})
        assert r.status_code == 204 and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/api/status").status_code == 200
        assert c.get(f"/api/media/{mid}/stream", headers={"Range": "bytes=0-3"}).status_code == 206
    with TestClient(create_app(p, token="s3cret"), base_url=BASE) as c:
        r = c.get(f"/m/{mid}?t=3&token=s3cret", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/m/{mid}?t=3"
        assert c.get("/api/status").status_code == 200  # the cookie from the link
        assert c.post("/api/login", data={"token": ""}).status_code == 400


def test_without_token_only_loopback_hosts_are_answered(indexed):
    p, _ = indexed
    with TestClient(create_app(p), base_url="http://evil.example") as c:
        r = c.get("/api/status")
        assert r.status_code == 421 and "loopback" in r.json()["error"]
    for host in ("127.0.0.1:8844", "localhost", "[::1]:8844"):
        with TestClient(create_app(p), base_url=BASE) as c:
            assert c.get("/api/status", headers={"Host": host}).status_code == 200, host
    with TestClient(create_app(p, token="t"), base_url="http://media.example.org") as c:
        assert c.get("/api/status?token=t").status_code == 200


def test_non_loopback_without_token_is_refused(indexed, tmp_path):
    p, _ = indexed
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(UnsafeBindError, match="token"):
            start_server(p, host=host, port=0)
    from mediaindex.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "token" in result.output
    handle = start_server(p, host="0.0.0.0", port=0, token="tok-long-enough-16")
    try:
        r = httpx.get(f"http://127.0.0.1:{handle.port}/api/status",
                      headers={"Authorization": "Bearer tok-long-enough-16"})
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{handle.port}/api/status").status_code == 401
    finally:
        handle.stop()


# ---- a real server -------------------------------------------------------------------------


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalisation of ../ or %2e)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("target", [
    "/api/media/../../etc/passwd/stream",
    "/api/media/..%2F..%2F..%2Fetc%2Fpasswd/stream",
    "/api/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd/stream",
    "/api/media/%252e%252e%252fetc%252fpasswd/stream",
    "/api/media/..%5c..%5cetc%5cpasswd/stream",
    "/api/media/%2e%2e/stream",
    "/api/media/..;/stream",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/m/../../etc/passwd",
])
def test_path_traversal_is_404(server, target):
    status, data = raw_get(server.port, target)
    assert status in (400, 404), data[:300]
    assert b"root:" not in data and b"import " not in data


def test_real_server_serves_ranges_and_stops(indexed, ids):
    p, _ = indexed
    handle = start_server(p, port=0)
    hit = ids["space"]
    data = Path(hit["path"]).read_bytes()
    try:
        assert handle.url == f"http://127.0.0.1:{handle.port}/"
        with httpx.Client(base_url=handle.url) as c:
            assert c.get("/api/status").json()["media"] == 10
            r = c.get(f"/api/media/{hit['media_id']}/stream", headers={"Range": "bytes=1000-1999"})
            assert r.status_code == 206 and r.content == data[1000:2000]
            r = c.get(f"/api/media/{hit['media_id']}/stream")
            assert r.content == data
    finally:
        handle.stop()
    assert not handle.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{handle.port}/api/status", timeout=2)


def test_port_in_use_is_a_clear_error(indexed):
    p, _ = indexed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(OSError, match="cannot listen"):
            start_server(p, port=port)


def test_empty_index_status_and_search(tmp_path):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    p = Pipeline(Config.load(tmp_path / "data"))
    try:
        with TestClient(create_app(p), base_url=BASE) as c:
            s = c.get("/api/status").json()
            assert s["media"] == 0 and s["files"]["total"] == 0 and s["roots"] == []
            assert c.get("/api/search", params={"q": "anything"}).json() == {
                "query": "anything", "total": 0, "total_exact": True, "partial": False, "stopped_early": False,
                "did_you_mean": None, "forgiven": [], "limit": 20, "offset": 0, "hits": []}
            assert c.get("/api/facets").status_code == 200
    finally:
        p.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_runs(indexed, workers):
    """`mediaindex serve` in its own process (as a user runs it), also with several workers."""
    import re
    import signal
    import sys
    import time

    p, _ = indexed
    proc = subprocess.Popen([sys.executable, "-m", "mediaindex", "serve", "--port", "0", "--data-dir",
                             str(p.config.data_dir), "--workers", str(workers)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, MEDIAINDEX_LOAD_PLUGINS=""))
    try:
        line = proc.stderr.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(m.group(1) + "api/status", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["media"] == 10
        hits = httpx.get(m.group(1) + "api/search", params={"q": "lettuce"}).json()["hits"]
        assert hits and hits[0]["title"] == "space_station"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(15)
            stopped = True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stopped = False
    assert stopped, "Ctrl-C did not stop the server within 15 s"


# ---- files that are not what they were: links out of the roots, changed files, odd names -----


def _tricky_files(media: Path) -> None:
    # A media file whose name says "page": probed and indexed like any unknown extension.
    shutil.move(media / "podcasts" / "lighthouse.opus", media / "podcasts" / "lighthouse.xhtml")
    # A link inside a root to a file outside every root.
    outside = media.parent / "outside"
    outside.mkdir()
    shutil.move(media / "talks" / "bread_baking.m4a", outside / "bread_baking.m4a")
    os.symlink(outside / "bread_baking.m4a", media / "talks" / "bread_baking.m4a")
    # A link inside a root to a file inside it (in a hidden folder the scan skips).
    (media / ".store").mkdir()
    shutil.move(media / "video" / "chess_openings.mkv", media / ".store" / "chess.mkv")
    os.symlink(Path("..") / ".store" / "chess.mkv", media / "video" / "chess_openings.mkv")


@pytest.fixture(scope="module")
def tricky(corpus_src, tmp_path_factory):
    p, media = build_index(corpus_src, tmp_path_factory.mktemp("web-tricky"), extra=_tricky_files)
    with TestClient(create_app(p), base_url=BASE) as c:
        yield p, media, c
    p.close()


def test_stream_is_never_served_as_a_page(tricky):
    """A media file named .xhtml (or .svg, .html) must not be sent with a document type: the
    browser would run it as a page of this origin (stored XSS past the CSP)."""
    p, media, c = tricky
    m = p.state.media_for_path(str(media / "podcasts" / "lighthouse.xhtml"))
    assert m is not None and m.status == "indexed"
    r = c.get(f"/api/media/{m.id}/stream")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    from mediaindex.web.files import content_type as _content_type
    for name in ("a.html", "a.svg", "a.xhtml", "a.js", "a.mjs", "a.xml", "a.css", "a.pdf", "a"):
        assert _content_type(f"/m/{name}", False) == "application/octet-stream", name
    assert _content_type("/m/a.mp3", False) == "audio/mpeg"
    assert _content_type("/m/a.webm", False) == "audio/webm"


def test_link_to_a_file_outside_the_roots_is_not_served(tricky):
    p, media, c = tricky
    m = p.state.media_for_path(str(media / "talks" / "bread_baking.m4a"))
    assert m is not None  # indexed (the scan follows file links), searchable ...
    assert c.get(f"/api/media/{m.id}").json()["playable"] is False
    r = c.get(f"/api/media/{m.id}/stream")  # ... but its bytes live outside every indexed folder
    assert r.status_code == 404 and "outside" in r.json()["error"]
    assert c.get(f"/api/media/{m.id}/clip", params={"t": 2}).status_code == 404
    # a link that stays inside the roots plays
    inside = p.state.media_for_path(str(media / "video" / "chess_openings.mkv"))
    assert c.get(f"/api/media/{inside.id}").json()["playable"] is True
    r = c.get(f"/api/media/{inside.id}/stream", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == (media / ".store" / "chess.mkv").read_bytes()[:10]


def test_file_swapped_for_a_link_after_indexing_is_not_served(tricky, tmp_path):
    p, media, c = tricky
    path = media / "chinese" / "weather.mp3"
    m = p.state.media_for_path(str(path))
    assert c.head(f"/api/media/{m.id}/stream").status_code == 200
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"x" * m.size)  # even with the indexed size
    backup = tmp_path / "weather.mp3"
    shutil.move(path, backup)
    os.symlink(secret, path)
    try:
        r = c.get(f"/api/media/{m.id}/stream")
        assert r.status_code == 404 and b"xxxx" not in r.content
    finally:
        os.remove(path)
        shutil.move(backup, path)
    assert c.head(f"/api/media/{m.id}/stream").status_code == 200


def test_file_changed_since_indexing_is_not_served(tricky):
    """The id names the indexed content: a file rewritten since (until it is indexed again) is
    not served under it (its transcript times and Range sizes would be wrong)."""
    p, media, c = tricky
    path = media / "video" / "volcano_lecture.mp4"
    m = p.state.media_for_path(str(path))
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\0" * 1000)
        r = c.get(f"/api/media/{m.id}/stream")
        assert r.status_code == 404 and "changed" in r.json()["error"]
        assert c.get(f"/api/media/{m.id}").json()["playable"] is False
    finally:
        path.write_bytes(original)
    assert c.head(f"/api/media/{m.id}/stream").status_code == 200


def test_any_loopback_address_is_answered_without_a_token(indexed):
    """`serve --host 127.0.0.2` (loopback, so no token needed) must answer its own address;
    names other than localhost still get 421 (DNS rebinding)."""
    p, _ = indexed
    with TestClient(create_app(p), base_url=BASE) as c:
        for host in ("127.0.0.2:8844", "127.1.2.3", "[::1]", "[0:0:0:0:0:0:0:1]:8844"):
            assert c.get("/api/status", headers={"Host": host}).status_code == 200, host
        for host in ("127.0.0.1.evil.example", "evil.example", "10.0.0.1:8844", "[::ffff:10.0.0.1]", "", "0x7f.1",
                     "127.0.0.1:80@evil.example", "127.0.0.1@evil.example", "localhost:80@evil.example",
                     "[::1]:80@evil.example", "127.0.0.1:8844 evil.example", "127.0.0.1:x"):
            assert c.get("/api/status", headers={"Host": host}).status_code == 421, host


@pytest.mark.parametrize("token", ["€uro-Ключ", "a b;c\"d\\e", "plain-token"])
def test_login_cookie_works_for_any_token(indexed, token):
    """Any token a user may choose (MEDIAINDEX_TOKEN is free text) logs in: no 500 for
    non-Latin-1 characters, and the cookie then authorises the API."""
    from urllib.parse import quote

    p, _ = indexed
    with TestClient(create_app(p, token=token), base_url=BASE) as c:
        r = c.post("/api/login", json={"token": token})
        assert r.status_code == 204, r.text
        assert token not in r.headers["set-cookie"]  # the jar holds a derived key, not the token
        assert c.get("/api/status").status_code == 200
    with TestClient(create_app(p, token=token), base_url=BASE) as c:
        r = c.get(f"/?q=x&token={quote(token)}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/?q=x"
        assert c.get("/api/status").status_code == 200


def test_login_cookie_survives_other_apps_cookies(indexed):
    """Cookies are shared by every port of 127.0.0.1: another local app's cookie that Python's
    http.cookies cannot parse must not hide ours (the UI would loop on the login form)."""
    p, _ = indexed
    with TestClient(create_app(p, token="s3cret"), base_url=BASE) as c:
        c.post("/api/login", json={"token": "s3cret"})
        ours = c.cookies["mediaindex_token"]
        c.cookies.clear()
        for other in ('a=b c', 'session={"user": "x y"}', 'p="unterminated', 'x=b\\c', 'lang=é'):
            r = c.get("/api/status", headers={"Cookie": f"{other}; mediaindex_token={ours}; z=1".encode()})
            assert r.status_code == 200, other
        assert c.get("/api/status", headers={"Cookie": "a=b c; mediaindex_token=s3cret"}).status_code == 401
        assert c.get("/api/status", headers={"Cookie": f"mediaindex_token={ours}x"}).status_code == 401


def test_openapi_matches_the_app_both_ways(client, ids):
    """Walk the description: every documented operation is a route, every documented query
    parameter is read (a bad value is a 400 naming it), and every answer a call can get is listed."""

    from mediaindex.export import FORMATS

    spec = client.get("/api/openapi.json").json()
    routes = {path: set(methods) for path, methods in api_routes()}
    assert set(spec["paths"]) == set(routes)
    mid = ids["space"]["media_id"]
    bad = {"integer": "1.5x", "number": "x1", "string": None}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert method.upper() in routes[path] | ({"HEAD"} if "GET" in routes[path] else set()), (method, path)
            url = path.replace("{media_id}", mid).replace("{fmt}", "srt")
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] == "fmt":
                    assert param["schema"]["enum"] == list(FORMATS)
                if param["in"] != "query":
                    continue
                schema = param["schema"]
                value = "zz-not-a-choice" if "enum" in schema else bad[schema["type"]]
                if value is None:
                    value = "x" * (schema["maxLength"] + 1) if "maxLength" in schema else None
                if value is None:
                    continue
                params = {"t": "3"} if param["name"] != "t" and "t" in {p["name"] for p in op["parameters"]} else {}
                params[param["name"]] = value
                r = client.request(method.upper(), url, params=params)
                assert r.status_code == 400 and param["name"] in r.json()["error"], (path, param["name"], r.text)
    # the answers each operation can give are the ones it lists (plus 401 with a token)
    def documented(path, method="get"):
        return set(spec["paths"][path][method]["responses"])
    stream = f"/api/media/{mid}/stream"
    etag = client.head(stream).headers["etag"]
    seen = {client.get(stream, headers=h).status_code for h in (
        {}, {"Range": "bytes=0-1"}, {"Range": "bytes=999999999-"}, {"If-None-Match": etag})}
    seen |= {client.get(f"/api/media/0123456789abcdef0123/stream").status_code}
    assert {str(s) for s in seen} <= documented("/api/media/{media_id}/stream"), seen
    assert {"400", "404", "503"} <= documented("/api/media/{media_id}/clip")
    assert "Unauthorized" in spec["components"]["responses"] and all(
        op["responses"].get("401") or op.get("security") == []
        for ops in spec["paths"].values() for op in ops.values())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_clip_burst_does_not_stall_playback(indexed, ids, monkeypatch):
    """Many clip requests at once: two are cut, the rest wait without holding the threads that
    stream media (a player keeps playing) and get a 503 when no slot frees in time."""
    import threading
    import time

    import mediaindex.web.app as webapp
    import mediaindex.web.files as webfiles

    real_run = subprocess.run
    running, peak = [0], [0]
    lock = threading.Lock()

    def slow_ffmpeg(*a, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(2)
            return real_run(*a, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(webfiles.subprocess, "run", slow_ffmpeg)
    monkeypatch.setattr(webapp, "CLIP_WAIT", 1.0, raising=False)
    p, _ = indexed
    mid = ids["space"]["media_id"]
    handle = start_server(p, port=0)
    codes: list[int] = []

    def clip():
        r = httpx.get(f"{handle.url}api/media/{mid}/clip", params={"t": 5, "before": 1, "after": 1}, timeout=60)
        codes.append(r.status_code)
    try:
        burst = [threading.Thread(target=clip) for _ in range(45)]
        for t in burst:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        r = httpx.get(f"{handle.url}api/media/{mid}/stream", headers={"Range": "bytes=0-99"}, timeout=60)
        took = time.monotonic() - t0
        assert r.status_code == 206 and len(r.content) == 100
        assert took < 3.0, f"streaming waited {took:.1f} s behind the clip requests"  # it was 5.8 s when clips held the threads
        for t in burst:
            t.join(60)
    finally:
        handle.stop()
    assert peak[0] <= 2
    assert codes.count(200) >= 2 and set(codes) <= {200, 503}, codes


@pytest.mark.hook("register_routes")
def test_plugin_routes_are_served_behind_the_token(indexed):
    """register_routes: a plugin adds an endpoint; the token guard covers it like the rest."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from mediaindex import hookimpl
    from mediaindex.plugins import load_plugins

    class Plugin:
        @hookimpl
        def register_routes(self, register, config):
            register(Route("/api/hello", lambda request: JSONResponse({"data_dir": str(config.data_dir)})))

    p, _ = indexed
    pm = load_plugins()
    pm.register(Plugin(), name="routes-test")
    try:
        with TestClient(create_app(p), base_url=BASE) as c:
            assert c.get("/api/hello").json() == {"data_dir": str(p.config.data_dir)}
        with TestClient(create_app(p, token="s3cret-token"), base_url=BASE) as c:
            assert c.get("/api/hello").status_code == 401
            assert c.get("/api/hello", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    finally:
        pm.unregister(name="routes-test")


def test_token_guessing_is_throttled(indexed):
    """Ten wrong tokens from one address within a minute: 429 with Retry-After before any token is
    checked (the right one too: a 429 tells nothing), then one more try every 6 s; login is no side
    door, and another app on the same data dir (a worker process) sees the same count."""
    p, _ = indexed
    guesser = {"client": ("10.9.0.1", 5000), "base_url": BASE}
    with TestClient(create_app(p, token="right-token-123"), **guesser) as c:
        assert c.get("/api/status").status_code == 401  # no credential: not counted
        for i in range(10):
            assert c.get("/api/status", headers={"Authorization": f"Bearer guess{i}"}).status_code == 401
        r = c.get("/api/status", headers={"Authorization": "Bearer right-token-123"})
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 6
        assert c.post("/api/login", json={"token": "right-token-123"}).status_code == 429  # no side door
    with TestClient(create_app(p, token="right-token-123"), **guesser) as c:  # another worker
        assert c.get("/api/status", headers={"Authorization": "Bearer right-token-123"}).status_code == 429
    with TestClient(create_app(p, token="right-token-123"), client=("10.9.0.2", 5000), base_url=BASE) as c:
        for i in range(10):
            assert c.post("/api/login", json={"token": f"guess{i}"}).status_code == 401
        assert c.get("/api/status", headers={"Authorization": "Bearer right-token-123"}).status_code == 429
    with TestClient(create_app(p, token="right-token-123"), client=("10.9.0.3", 5000), base_url=BASE) as c:
        assert c.get("/api/status", headers={"Authorization": "Bearer right-token-123"}).status_code == 200


def test_page_link_tokens_are_throttled_and_say_nothing(indexed):
    """`/?token=X` and `/m/<id>?token=X` count a wrong X like /api/login, answer a right and a
    wrong X alike (a redirect setting the cookie derived from X), and are blocked with the API."""
    p, _ = indexed
    token = "page-token-0123456789"
    app = create_app(p, token=token)
    answers = []
    for x in (token, "wrong-guess"):
        with TestClient(app, client=("10.9.1.1", 5000), base_url=BASE, follow_redirects=False) as c:
            r = c.get("/m/0123456789abcdef?t=3&token=" + x)
            answers.append((r.status_code, r.headers["location"], sorted(r.headers.keys()),
                            "mediaindex_token=" in r.headers.get("set-cookie", "")))
    assert answers[0] == answers[1] == (303, "/m/0123456789abcdef?t=3", answers[0][2], True)
    with TestClient(app, client=("10.9.1.2", 5000), base_url=BASE, follow_redirects=False) as c:
        for i in range(10):
            assert c.get(f"/?token=guess{i}").status_code == 303
            c.cookies.clear()
        assert c.get("/api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 429
        assert c.get(f"/?token={token}").status_code == 429
        assert c.get("/").status_code == 200  # the page itself stays open
    with TestClient(app, client=("10.9.1.3", 5000), base_url=BASE) as c:
        c.get("/?token=wrong-once")  # its cookie then fails once more: not counted again
        for _ in range(15):
            assert c.get("/api/status").status_code == 401
        assert c.post("/api/login", json={"token": token}).status_code == 204
        assert c.get("/api/status").status_code == 200


def test_stale_login_cookie_does_not_lock_its_owner_out(indexed):
    """After the token changed, a page polling with the old cookie gets 401s (its mismatch counts
    once), and logging in with the new token works."""
    p, _ = indexed
    who = {"client": ("10.9.2.1", 5000), "base_url": BASE}
    with TestClient(create_app(p, token="old-token-0123456789"), **who) as c:
        assert c.post("/api/login", json={"token": "old-token-0123456789"}).status_code == 204
        old_cookie = c.cookies["mediaindex_token"]
    with TestClient(create_app(p, token="new-token-0123456789"), **who) as c:
        c.cookies.set("mediaindex_token", old_cookie)
        for _ in range(20):  # the search box, letter by letter
            assert c.get("/api/search", params={"q": "lettuce"}).status_code == 401
        assert c.post("/api/login", json={"token": "new-token-0123456789"}).status_code == 204
        assert c.get("/api/search", params={"q": "lettuce"}).status_code == 200


def test_throttle_is_shared_and_bounded(tmp_path):
    """Two throttles on one file (two worker processes) share the counts; a spray of addresses
    past the bound does not free a blocked one; an IPv6 client is counted per /64."""
    from mediaindex.web.throttle import AuthThrottle

    a = AuthThrottle(tmp_path / "t.sqlite3", max_addresses=50)
    b = AuthThrottle(tmp_path / "t.sqlite3", max_addresses=50)
    for _ in range(5):
        a.failed("192.0.2.1")
        b.failed("192.0.2.1")
    assert a.retry_after("192.0.2.1") and b.retry_after("192.0.2.1")
    for i in range(500):
        a.failed(f"198.51.{i // 250}.{i % 250}")
    assert b.retry_after("192.0.2.1")
    assert a._conn.execute("SELECT count(*) FROM buckets").fetchone()[0] <= 50
    for i in range(10):
        a.failed(f"2001:db8::{i:x}")
    assert b.retry_after("2001:db8::ffff") and not b.retry_after("2001:db8:0:1::1")
    b.succeeded("192.0.2.1")
    assert a.retry_after("192.0.2.1") is None
    a.close()
    b.close()


def test_plugin_routes_outside_the_api_need_the_token(indexed):
    """Every route but the page, its static files and /api/login needs the token: a plugin's
    `/report` too, and an unknown path answers 401, not 404."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from mediaindex import hookimpl
    from mediaindex.plugins import load_plugins

    class Plugin:
        @hookimpl
        def register_routes(self, register, config):
            register(Route("/report", lambda request: PlainTextResponse("secret report")))
            register(Route("/static/plugin.txt", lambda request: PlainTextResponse("secret too")))

    p, _ = indexed
    pm = load_plugins()
    pm.register(Plugin(), name="routes-test-2")
    try:
        with TestClient(create_app(p, token="s3cret-token"), client=("10.9.3.1", 1), base_url=BASE) as c:
            assert c.get("/report").status_code == 401
            assert c.get("/nowhere").status_code == 401
            assert c.get("/static/plugin.txt").status_code == 404  # /static holds only the UI's files
            assert c.get("/report", headers={"Authorization": "Bearer s3cret-token"}).text == "secret report"
            assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
    finally:
        pm.unregister(name="routes-test-2")


def test_facets_follow_the_parsed_query(indexed):
    """"the" (a prefix: there, they...) and "the " (the whole word) have different facets, even
    when one is asked right after the other."""
    p, _ = indexed
    with TestClient(create_app(p), base_url=BASE) as c:
        for q in ("the ", "the"):
            facets = c.get("/api/facets", params={"q": q}).json()
            total = c.get("/api/search", params={"q": q}).json()["total"]
            assert sum(facets["kind"].values()) == total, q


def test_login_with_a_form(indexed):
    """The form-encoded login the OpenAPI description lists works (no python-multipart needed)."""
    p, _ = indexed
    with TestClient(create_app(p, token="form-token-0123456789"), client=("10.9.4.1", 1), base_url=BASE) as c:
        assert c.post("/api/login", data={"token": "wrong"}).status_code == 401
        r = c.post("/api/login", data={"token": "form-token-0123456789"})
        assert r.status_code == 204 and "mediaindex_token=" in r.headers["set-cookie"]
        assert c.get("/api/status").status_code == 200
        assert c.post("/api/login", content=b"token=x", headers={"content-type": "text/plain"}).status_code == 415
        assert c.post("/api/login", json={"token": "x" * 5000}).status_code == 413


def test_status_pages_the_failed_files(client):
    """/api/status counts every failed file and lists a page of them."""
    everything = client.get("/api/status", params={"failed_limit": 1000}).json()["failed"]
    assert len(everything) == 4
    s = client.get("/api/status", params={"failed_limit": 2}).json()
    assert s["files"]["failed"] == 4 and s["failed"] == everything[:2]
    s = client.get("/api/status", params={"failed_limit": 2, "failed_offset": 3}).json()
    assert s["failed"] == everything[3:] and s["failed_offset"] == 3
    assert client.get("/api/status", params={"failed_limit": 5000}).status_code == 400


def test_status_sends_a_bounded_page_by_default(tmp_path):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    p = Pipeline(Config.load(tmp_path / "data"))
    try:
        with p.state.conn:
            p.state.conn.executemany(
                "INSERT INTO files (path, size, mtime, status, error, added, updated)"
                " VALUES (?, 0, 0, 'failed', 'x', 0, 0)",
                [(f"/m/{i:05d}.mp3",) for i in range(1500)])
        with TestClient(create_app(p), base_url=BASE) as c:
            s = c.get("/api/status").json()
        assert s["files"]["failed"] == 1500 and len(s["failed"]) == 100
        assert s["failed"][0]["path"] == "/m/00000.mp3"
    finally:
        p.close()


# ---- tokens from files, connection limits (real servers) -----------------------------------


def test_short_or_blank_tokens_are_refused_beyond_loopback(indexed, tmp_path):
    p, _ = indexed
    for token in ("short-token", " " * 20, "a" + " " * 15):
        with pytest.raises(UnsafeBindError, match="16"):
            start_server(p, host="0.0.0.0", port=0, token=token)
    from mediaindex.cli import cli

    data = ["--data-dir", str(tmp_path / "d")]
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--token", "short-token", *data])
    assert r.exit_code == 2 and "16" in r.output and "ps" in r.output  # refused, and warned about ps
    (tmp_path / "blank").write_text("  \n")
    r = CliRunner().invoke(cli, ["serve", "--token-file", str(tmp_path / "blank"), *data])
    assert r.exit_code == 2 and "empty" in r.output
    (tmp_path / "short").write_text("short-token\n")
    r = CliRunner().invoke(cli, ["watch", str(tmp_path), "--host", "0.0.0.0", "--token-file",
                                 str(tmp_path / "short"), *data])
    assert r.exit_code == 2 and "16" in r.output
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", *data], env={"MEDIAINDEX_TOKEN": "short-token"})
    assert r.exit_code == 2 and "16" in r.output and "warning" not in r.output


def _serve(args: list[str]):
    """`mediaindex serve ARGS` in its own process; (process, base URL) once it answers."""
    import re
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mediaindex", "serve", "--port", "0", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, MEDIAINDEX_LOAD_PLUGINS=""))
    line = proc.stderr.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    assert m, line
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(m.group(1), timeout=5)
            return proc, m.group(1)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def test_serve_token_file_and_a_throttle_shared_by_workers(indexed, tmp_path):
    """`serve --token-file` (nothing in `ps`), two worker processes: ten wrong tokens spread over
    both block the address in both (not ten per worker)."""
    import signal

    p, _ = indexed
    token = "file-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    proc, url = _serve(["--data-dir", str(p.config.data_dir), "--token-file", str(tmp_path / "token"),
                        "--workers", "2"])
    try:
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert httpx.get(url + "api/status").status_code == 401
        assert httpx.get(url + "api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        for i in range(10):  # a new connection each: the parent hands them to both workers
            assert httpx.get(url + f"api/status?token=guess{i}").status_code == 401
        for _ in range(4):
            assert httpx.get(url + "api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 429
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        from mediaindex.web.throttle import AuthThrottle
        AuthThrottle(p.config.data_dir / "web-auth.sqlite3").succeeded("127.0.0.1")  # leave no block behind


def test_responses_on_a_kept_alive_connection_are_not_held_for_an_ack(server):
    """TCP_NODELAY on every accepted socket: without it each request after the first on a
    kept-alive connection (a browser's) waited 40 ms for the client's delayed ACK."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        conns = [c for c in server.server.server_state.connections if not c.transport.is_closing()]
        assert conns
        for c in conns:
            assert c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_idle_and_slow_connections_are_closed_and_capped(indexed, monkeypatch):
    """Connections that send nothing, or headers a byte at a time, are closed after the header
    timeout; past the per-address cap a connection gets a 503 at once; clients are served after."""
    import time

    from mediaindex.web import connections

    monkeypatch.setattr(connections, "HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(connections, "MAX_PER_ADDRESS", 20)
    p, _ = indexed
    handle = start_server(p, port=0)
    socks = []
    try:
        for _ in range(19):
            socks.append(socket.create_connection(("127.0.0.1", handle.port), timeout=30))
        slow = socket.create_connection(("127.0.0.1", handle.port), timeout=30)
        slow.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)  # let the server count them all
        extra = socket.create_connection(("127.0.0.1", handle.port), timeout=30)
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        extra.close()
        closed = False
        for _ in range(300):  # 30 s at most; the server closes it after about 1 s
            try:
                slow.sendall(b"X")
            except OSError:
                closed = True
                break
            slow.settimeout(0.1)
            try:
                closed = slow.recv(100) == b""
            except socket.timeout:
                pass
            if closed:
                break
        assert closed, "a connection sending its headers a byte at a time was kept open"
        for s in socks:
            s.settimeout(30)
            assert s.recv(100) == b"", "an idle connection got an answer instead of being closed"
        assert httpx.get(f"{handle.url}api/status", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()
        handle.stop()


@pytest.mark.skipif(shutil.which("ffmpeg") is None or not hasattr(socket, "TCP_INFO"),
                    reason="needs ffmpeg and Linux's TCP_INFO")
def test_a_response_nobody_reads_is_dropped(corpus_src, tmp_path, monkeypatch):
    """A client that asks for a media file and never reads it does not hold the connection (and
    its open file) forever: after the send timeout the server drops it (the client sees it end)."""
    import time

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web import connections

    media = tmp_path / "media"
    media.mkdir()
    big = media / "big.wav"  # 10 MB: more than the socket buffers on the way hold
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=sample_rate=44100",
                    "-ac", "2", "-t", "60", str(big)], check=True)
    with registered_manifest_transcriber(corpus_src, "manifest-big"):  # not in it: only probed
        p = Pipeline(Config.load(tmp_path / "data"), transcriber="manifest")
        p.enqueue_plan(p.plan([str(media)]))
        p.run_jobs()
    mid = p.state.get_file(str(big)).media_id
    monkeypatch.setattr(connections, "SEND_TIMEOUT", 1.0)
    handle = start_server(p, port=0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", handle.port))
        sock.sendall(f"GET /api/media/{mid}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        established = True
        for _ in range(300):  # 30 s at most; the server gives up after about 1 s
            time.sleep(0.1)
            # the TCP state, without reading (reading would let the server go on)
            established = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1
            if not established:
                break
        assert not established, "a response nobody read kept its connection open"
    finally:
        sock.close()
        handle.stop()
        p.close()


# ---- the library ---------------------------------------------------------------------------

def test_date_facets_and_filters(client, indexed):
    p, media = indexed
    month = time.strftime("%Y-%m", time.gmtime(os.stat(media / "talks" / "space_station.mp3").st_mtime))
    f = client.get("/api/facets", params={"q": "the"}).json()
    assert f["month"] == {month: sum(f["language"].values())} and f["year"] == {month[:4]: sum(f["language"].values())}
    flat = client.get("/api/search", params={"q": "the", "limit": 100}).json()
    assert client.get("/api/search", params={"q": "the", "limit": 100, "date": month}).json()["hits"] == flat["hits"]
    assert client.get("/api/search", params={"q": "the", "date": "1999"}).json()["total"] == 0
    assert client.get("/api/search", params={"q": "the", "date": "1999-13"}).status_code == 400
    everything = client.get("/api/media", params={"limit": 100}).json()
    assert client.get("/api/media", params={"limit": 100, "date": month[:4]}).json()["total"] == everything["total"]
    assert {i["month"] for i in everything["items"]} == {month}
    assert client.get("/api/media", params={"date": "1999-03"}).json()["total"] == 0
    assert client.get("/api/media", params={"date": "03/1999"}).status_code == 400


def test_library_lists_sorts_filters_and_pages(client, indexed):
    p, media = indexed
    everything = client.get("/api/media", params={"limit": 100}).json()
    assert everything["total"] == len(everything["items"]) == p.state.summary()["media"]
    item = everything["items"][0]
    assert {"id", "title", "folder", "duration", "added", "language", "engine", "status", "path"} <= set(item)
    added = [i["added"] for i in everything["items"]]
    assert added == sorted(added, reverse=True)  # recently added first
    durations = [i["duration"] for i in client.get("/api/media", params={"sort": "-duration", "limit": 100}).json()["items"]]
    assert durations == sorted(durations)
    titles = [i["title"] for i in client.get("/api/media", params={"sort": "title", "limit": 100}).json()["items"]]
    assert len(titles) == everything["total"]
    talks = client.get("/api/media", params={"path": str(media / "talks")}).json()
    assert 0 < talks["total"] < everything["total"]
    assert all(i["folder"] == str(media / "talks") for i in talks["items"])
    video = client.get("/api/media", params={"kind": "video"}).json()
    assert video["total"] >= 1 and all(i["has_video"] for i in video["items"])
    zh = client.get("/api/media", params={"lang": "zh"}).json()
    assert zh["total"] >= 1 and all(i["language"] == "zh" for i in zh["items"])
    # pages follow each other without overlap or gap
    ids = [i["id"] for off in range(0, everything["total"], 3)
           for i in client.get("/api/media", params={"limit": 3, "offset": off}).json()["items"]]
    assert ids == [i["id"] for i in everything["items"]]
    r = client.get("/api/media", params={"sort": "size"})
    assert r.status_code == 400 and "sort" in r.json()["error"]


# ---- actions: retry, re-transcribe (queued in the state database) ----------------------------


@pytest.fixture
def managed(corpus_src, tmp_path, monkeypatch):
    """A fresh library (actions change it) whose pipeline knows a second engine, manifest-other."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    monkeypatch.setenv("MEDIAINDEX_MANIFEST_OTHER", "1")
    p, media = build_index(corpus_src, tmp_path)
    p.close()
    with registered_manifest_transcriber(corpus_src, "manifest-actions"):
        p = Pipeline(Config.load(tmp_path / "data"), transcriber="manifest")
        try:
            with TestClient(create_app(p), base_url=BASE) as c:
                yield c, p, media
        finally:
            p.close()


def _total(p, q):
    from mediaindex.models import SearchQuery

    return p.index.search(SearchQuery(q=q)).total


def test_actions_refuse_cross_site_requests(managed):
    c, p, media = managed
    m = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    url = f"/api/media/{m.id}/reindex"
    body = {"transcriber": "manifest-other"}
    assert c.post(url, data={"transcriber": "manifest-other"}).status_code == 415  # a form: what another site can send
    assert c.post(url, content="{}", headers={"content-type": "text/plain"}).status_code == 415
    assert c.post(url, json=body, headers={"origin": "http://evil.example"}).status_code == 403
    assert c.post(url, json=body, headers={"origin": "null"}).status_code == 403
    assert c.post(url, json=body, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert c.post("/api/retry", json={}, headers={"sec-fetch-site": "same-site"}).status_code == 403
    assert p.state.jobs.depth() == 0  # nothing was queued
    r = c.post(url, json=body, headers={"origin": BASE, "sec-fetch-site": "same-origin"})
    assert r.status_code == 202 and r.json()["queued"] == [str(media / "talks" / "space_station.mp3")]
    assert c.get(url).status_code == 405
    with TestClient(create_app(p, token="a-token-of-16-chars-or-more"), base_url=BASE) as locked:
        assert locked.post(url, json=body).status_code == 401
        assert locked.post("/api/retry", json={}).status_code == 401
        assert locked.post(url, json=body, headers={"authorization": "Bearer a-token-of-16-chars-or-more"}
                           ).status_code == 202


def test_retry_a_failed_recording_and_every_failed_file(managed):
    c, p, media = managed
    path = str(media / "talks" / "space_station.mp3")
    m = p.state.media_for_path(path)
    assert c.post(f"/api/media/{m.id}/retry", json={}).status_code == 409  # nothing of it failed
    p.state.failed(path, f"{path}: the engine was misconfigured", retry=False)
    item = next(i for i in c.get("/api/media", params={"limit": 100}).json()["items"] if i["id"] == m.id)
    assert item["failed"] == "the engine was misconfigured"  # the path is said once
    assert c.get(f"/api/media/{m.id}").json()["failed"] == [{"path": path, "error": "the engine was misconfigured"}]
    r = c.post(f"/api/media/{m.id}/retry", json={})
    assert r.status_code == 202 and r.json() == {"queued": [path], "action": "retry", "worker": False}
    assert p.state.get_file(path).status == "queued" and p.state.jobs.is_active(path)
    p.run_jobs()
    assert p.state.get_file(path).status == "indexed" and c.get(f"/api/media/{m.id}").json()["failed"] == []
    failed = p.state.summary()["files"]["failed"]
    assert failed >= 3
    r = c.post("/api/retry", json={})
    assert r.status_code == 202 and len(r.json()["queued"]) == failed
    assert p.state.summary()["files"]["failed"] == 0 and p.state.jobs.depth() == failed
    p.run_jobs()
    assert p.state.summary()["files"]["failed"] == failed  # broken files stay broken


def test_reindex_with_another_engine_keeps_the_old_transcript_until_ready(managed):
    c, p, media = managed
    path = str(media / "talks" / "space_station.mp3")
    m = p.state.media_for_path(path)
    engines = c.get("/api/transcribers").json()
    assert engines["default"] == "manifest"
    assert {"manifest", "manifest-other"} <= {t["name"] for t in engines["transcribers"]}
    r = c.post(f"/api/media/{m.id}/reindex", json={"transcriber": "no-such-engine"})
    assert r.status_code == 400 and "manifest-other" in r.json()["error"]
    assert c.post(f"/api/media/{m.id}/reindex", json={}).status_code == 400
    assert c.post(f"/api/media/0123456789abcdef0123/reindex", json={"transcriber": "manifest"}).status_code == 404
    r = c.post(f"/api/media/{m.id}/reindex", json={"transcriber": "manifest-other"})
    assert r.status_code == 202 and r.json()["queued"] == [path]
    assert _total(p, "lettuce") == 1 and _total(p, "cabbage") == 0  # the old transcript until the new one
    p.run_jobs()
    assert _total(p, "cabbage") == 1 and _total(p, "lettuce") == 0
    assert p.state.get_media(m.id).engine == "manifest-other"
