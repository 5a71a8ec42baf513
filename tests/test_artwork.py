"""Cover art: embedded pictures (ID3 APIC, MP4 covr, FLAC, Opus METADATA_BLOCK_PICTURE) and video
frames, extracted once per media into the data dir's artwork cache and served by id over real HTTP."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from mediaindex import artwork
from mediaindex.artwork import ArtworkCache

from conftest import registered_manifest_transcriber

TOKEN = "artwork-token-long-enough"


def _image(out: Path, color: str, fmt: str) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color={color}:s=40x30",
                    "-frames:v", "1", str(out.with_suffix(fmt))], check=True)
    return out.with_suffix(fmt).read_bytes()


def _tag(path: Path, cover: bytes, mime: str) -> None:
    """Embed ``cover`` in ``path`` the way taggers do for its format."""
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3
    from mutagen.mp4 import MP4, MP4Cover
    from mutagen.oggopus import OggOpus

    if path.suffix == ".mp3":
        tags = ID3()
        tags.add(APIC(encoding=3, mime=mime, type=0, desc="back", data=b"\xff\xd8\xffnot the front"))
        tags.add(APIC(encoding=3, mime=mime, type=3, desc="front", data=cover))
        tags.save(path)
    elif path.suffix == ".m4a":
        f = MP4(path)
        f["covr"] = [MP4Cover(cover, imageformat=MP4Cover.FORMAT_JPEG)]
        f.save()
    else:
        pic = Picture()
        pic.type, pic.mime, pic.data = 3, mime, cover
        if path.suffix == ".flac":
            f = FLAC(path)
            f.add_picture(pic)
        else:
            f = OggOpus(path)
            f["metadata_block_picture"] = [base64.b64encode(pic.write()).decode("ascii")]
        f.save()


# file in the test corpus -> (its copy under art/, cover format, content type served)
COPIES = {
    "talks/space_station.mp3": ("covers/apic.mp3", ".png", "image/png"),
    "talks/bread_baking.m4a": ("covers/covr.m4a", ".jpg", "image/jpeg"),
    "podcasts/nested/deeper/gardening.flac": ("covers/picture.flac", ".png", "image/png"),
    "podcasts/lighthouse.opus": ("covers/block.opus", ".jpg", "image/jpeg"),
    "video/volcano_lecture.mp4": ("video/volcano.mp4", None, "image/jpeg"),
    "chinese/weather.mp3": ("plain/weather.mp3", None, None),
}


@pytest.fixture(scope="module")
def library(corpus_src, tmp_path_factory):
    """The copies, tagged, indexed with the manifest transcriber; (pipeline, {copy: cover bytes})."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    root = tmp_path_factory.mktemp("art")
    covers, entries = {}, []
    old = {e["path"]: e for e in json.loads((corpus_src / "manifest.json").read_text())["files"]}
    for i, (src, (dest, fmt, _)) in enumerate(COPIES.items()):
        target = root / "media" / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus_src / src, target)
        if fmt:
            covers[dest] = _image(root / f"cover{i}", ["red", "green", "blue", "yellow"][i % 4], fmt)
            _tag(target, covers[dest], "image/png" if fmt == ".png" else "image/jpeg")
        entries.append({**old[src], "path": f"media/{dest}"})
    (root / "manifest.json").write_text(json.dumps({"files": entries}))
    with registered_manifest_transcriber(root, "manifest-art"):
        p = Pipeline(Config.load(root / "data"), transcriber="manifest")
        p.enqueue_plan(p.plan([str(root / "media")]))
        outcomes = p.run_jobs()
    assert [o.status for o in outcomes] == ["indexed"] * len(COPIES), outcomes
    p.media_root = root / "media"
    yield p, covers
    p.close()


@pytest.fixture(scope="module")
def server(library):
    from mediaindex.web.server import start_server

    p, _ = library
    handle = start_server(p, port=0, token=TOKEN)
    yield handle
    handle.stop()


def _id(p, dest: str) -> str:
    return p.state.media_for_path(str(p.media_root / dest)).id


def _get(server, media_id: str, **headers) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}/api/media/{media_id}/artwork",
                     headers={"authorization": f"Bearer {TOKEN}", **headers}, timeout=60)


@pytest.mark.parametrize("dest", [d for d, fmt, _ in COPIES.values() if fmt])
def test_embedded_cover_is_served_as_embedded(library, server, dest):
    p, covers = library
    r = _get(server, _id(p, dest))
    assert r.status_code == 200, r.text
    ctype = next(c for d, _, c in COPIES.values() if d == dest)
    assert r.headers["content-type"] == ctype
    assert r.content == covers[dest]  # the front cover, as embedded (small: not re-encoded)
    assert "max-age" in r.headers["cache-control"]
    again = _get(server, _id(p, dest), **{"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_video_gets_a_frame(library, server):
    p, _ = library
    r = _get(server, _id(p, "video/volcano.mp4"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and r.content.startswith(b"\xff\xd8\xff")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "json", "-"],
                         input=r.content, capture_output=True, check=True)
    size = json.loads(out.stdout)["streams"][0]
    assert 0 < size["width"] <= artwork.MAX_SIDE and 0 < size["height"] <= artwork.MAX_SIDE


def test_no_artwork_is_404_and_never_looked_for_again(library, server):
    p, _ = library
    before = p.artwork.extractions
    for _ in range(3):
        r = _get(server, _id(p, "plain/weather.mp3"))
        assert r.status_code == 404 and "no artwork" in r.json()["error"]
    assert p.artwork.extractions == before


def test_artwork_needs_the_token_and_a_valid_id(library, server):
    p, _ = library
    media_id = _id(p, "covers/apic.mp3")
    assert httpx.get(f"http://127.0.0.1:{server.port}/api/media/{media_id}/artwork").status_code == 401
    for bad in ("..%2F..%2Fstate.db", "ZZZZ", "0" * 20):
        assert _get(server, bad).status_code in (400, 404)


def test_extracted_once_at_index_time_never_per_request(library, server):
    p, _ = library
    assert p.artwork.extractions == len(COPIES)  # one per media, while indexing
    for dest, _, _ in COPIES.values():
        for _ in range(3):
            _get(server, _id(p, dest))
    assert p.artwork.extractions == len(COPIES)


def test_media_indexed_before_artwork_existed_is_extracted_once_on_first_requests(library, server):
    p, covers = library
    media_id = _id(p, "covers/covr.m4a")
    p.artwork.delete(media_id)  # as for a library indexed by an older version
    before = p.artwork.extractions
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(_get(server, media_id))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200] * 8
    assert all(r.content == covers["covers/covr.m4a"] for r in answers)
    assert p.artwork.extractions == before + 1


def test_artwork_of_a_removed_or_changed_media_is_deleted(corpus_src, tmp_path, manifest_transcriber):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(corpus_src / "video/volcano_lecture.mp4", media / "v.mp4")
    shutil.copy(corpus_src / "talks/space_station.mp3", media / "a.mp3")  # an empty root would be offline
    p = Pipeline(Config.load(tmp_path / "data"), transcriber="manifest")
    try:
        p.enqueue_plan(p.plan([str(media)]))
        p.run_jobs()
        media_id = p.state.media_for_path(str(media / "v.mp4")).id
        assert p.artwork.lookup(media_id)
        (media / "v.mp4").unlink()
        p.enqueue_plan(p.plan([str(media)]))
        p.run_jobs()
        assert p.artwork.lookup(media_id) is None
        assert [f.name for f in (tmp_path / "data" / "artwork").iterdir()] == [
            p.state.media_for_path(str(media / "a.mp3")).id + ".none"]
    finally:
        p.close()


def test_extract_reads_each_format(library):
    p, covers = library
    for dest, fmt, _ in COPIES.values():
        got = artwork.extract(p.media_root / dest, p.state.get_probe(_id(p, dest)))
        if fmt:
            assert got == (covers[dest], fmt)
        elif dest.startswith("video/"):
            assert got[1] == ".jpg" and got[0].startswith(b"\xff\xd8")
        else:
            assert got is None


def test_a_large_or_odd_cover_is_made_a_small_jpeg(tmp_path, corpus_src):
    big = tmp_path / "big.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=2400x1800", "-frames:v", "1",
                    str(big)], check=True)
    assert big.stat().st_size > artwork.MAX_BYTES
    for data in (big.read_bytes(), b"BM" + b"\0" * 100):  # a poster; a BMP (not a served type)
        target = tmp_path / "a.mp3"
        shutil.copy(corpus_src / "talks/space_station.mp3", target)
        _tag(target, data, "image/png")
        got = artwork.extract(target, None)
        if data.startswith(b"BM"):  # ffmpeg cannot read that fake BMP: no art rather than a bad one
            assert got is None
        else:
            assert got[1] == ".jpg" and len(got[0]) < artwork.MAX_BYTES


def test_cache_stays_under_its_bound_and_names_only_come_from_ids(tmp_path):
    cache = ArtworkCache(tmp_path / "art", max_bytes=10_000)
    for i in range(10):
        cache._store(f"{i:020x}", (b"\xff\xd8\xff" + b"x" * 2000, ".jpg"))
    total = sum(f.stat().st_size for f in (tmp_path / "art").iterdir())
    assert total <= 10_000
    assert cache.lookup(f"{9:020x}")  # the newest stay
    for bad in ("../../etc/passwd", "abc", "0" * 19 + "/", "A" * 20):
        with pytest.raises(ValueError):
            cache.lookup(bad)
