"""The web UI in a real browser: Debian's Chromium driven by Playwright (sync API), headless.

A real uvicorn server (``start_server`` in a thread, free port) serves a corpus index built with
the manifest transcriber. One screenshot per state goes to ``test-artifacts/`` (gitignored).
It uses Debian's /usr/bin/chromium and never downloads a browser of its own.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from mediaindex.models import SearchQuery

try:  # tests/ is on sys.path (pytest's default "prepend" import mode): the same module pytest collected
    from test_web_api import build_index
except ImportError:  # pragma: no cover - other import modes
    from tests.test_web_api import build_index

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>"
TOKEN_TEXT = "It carried 50,000 tons across the mid-Atlantic."
XSS_TEXT = "zebra <script>alert('xss')</script> <img src=x onerror=alert(2)> & friends"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


def _rename_xss(media: Path) -> None:
    # A file name that is also HTML: it must show up as text, never as an element.
    shutil.move(media / "podcasts" / "lighthouse.opus", media / "podcasts" / f"{XSS_NAME}.opus")


@pytest.fixture(scope="module")
def site(corpus_src, tmp_path_factory):
    from mediaindex.models import Segment, Word
    from mediaindex.web.server import start_server

    p, media = build_index(corpus_src, tmp_path_factory.mktemp("webui"), extra=_rename_xss)
    # A transcript with markup in it (as an engine or a subtitle sidecar could produce).
    evil = p.state.media_for_path(str(media / "podcasts" / f"{XSS_NAME}.opus"))
    transcript = p.state.get_transcript(evil.id)
    words = [Word(w, 9.0 + i * 0.3, 9.25 + i * 0.3) for i, w in enumerate(XSS_TEXT.split())]
    transcript.segments.append(Segment(index=len(transcript.segments), start=9.0, end=12.0, text=XSS_TEXT,
                                       words=words, language="en"))
    p.state.save_transcript(evil.id, evil.engine, transcript, 13.0)
    p.index.upsert(evil, transcript.segments)
    # An engine's tokens carry their own spacing (Whisper: " 50", ",000", " mid", "-Atlantic").
    tokens = ["It", " carried", " 50", ",000", " tons", " across", " the", " mid", "-Atlantic", "."]
    transcript.segments.append(Segment(index=len(transcript.segments), start=13.0, end=16.0, text=TOKEN_TEXT,
                                       words=[Word(w, 13.0 + i * 0.3, 13.25 + i * 0.3) for i, w in enumerate(tokens)],
                                       language="en"))
    p.state.save_transcript(evil.id, evil.engine, transcript, 17.0)
    p.index.upsert(evil, transcript.segments)
    handle = start_server(p, port=0)
    yield handle, p, media
    handle.stop()
    p.close()


@pytest.fixture(scope="module")
def empty_site(tmp_path_factory):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.server import start_server

    p = Pipeline(Config.load(tmp_path_factory.mktemp("webui-empty") / "data"))
    handle = start_server(p, port=0)
    yield handle
    handle.stop()
    p.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        yield b
        b.close()


class Page:
    """A page that records dialogs, uncaught errors and console errors (CSP violations included)."""

    def __init__(self, browser, **kw):
        self.context = browser.new_context(**kw)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser):
    p = Page(browser, viewport={"width": 1280, "height": 860})
    yield p
    p.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=False)


def search(pg, query: str):
    """Type a query in the search box; returns the first hit once it is shown."""
    pg.fill("#q", query)
    hit = pg.locator("#results .hit").first
    hit.wait_for()
    return hit


def wait_playing(page, near: float | None = None, timeout: int = 15000) -> float:
    page.wait_for_function(
        "() => { const p = document.getElementById('player');"
        " return p && !p.paused && p.readyState >= 2 && p.currentTime > 0; }", timeout=timeout)
    return page.evaluate("document.getElementById('player').currentTime")


def test_search_click_plays_from_the_hit(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    hit = search(pg, "lettuce chamber")
    assert hit.locator(".hit-title").inner_text() == "space_station"
    assert hit.locator("mark").first.inner_text().lower() == "lettuce"
    chip = hit.locator(".chip").inner_text()
    assert chip == "0:07"
    shot(pg, "1-results")
    api_hit = p.index.search(SearchQuery(q="lettuce chamber")).hits[0]
    hit.click()
    t = wait_playing(pg)
    assert pg.evaluate("document.getElementById('player').tagName") == "AUDIO"
    assert abs(t - api_hit.time) <= 1.5, (t, api_hit.time)
    assert f"/m/{api_hit.media_id}?t=" in pg.url
    # the transcript follows the playback: the current word is highlighted
    pg.wait_for_selector("#transcript .w.current")
    current = pg.locator("#transcript .w.current").inner_text()
    assert current in "Astronauts grow lettuce in a small chamber with red and blue lights."
    shot(pg, "2-playing")
    # clicking a word seeks there
    pg.locator("#transcript .w", has_text="hurricanes").click()
    pg.wait_for_function("() => document.getElementById('player').currentTime > 19")
    assert not pg.evaluate("document.getElementById('player').paused")
    assert not page.dialogs and not page.errors, page.errors


def test_video_plays_with_captions(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    search(pg, "dolphins").click()  # podcasts/ferry.webm: VP8 + Opus
    t = wait_playing(pg)
    assert pg.evaluate("document.getElementById('player').tagName") == "VIDEO"
    track = pg.evaluate("(() => { const t = document.querySelector('#player track');"
                        " return t && [t.kind, t.src, t.track.mode]; })()")
    assert track[0] == "captions" and track[1].endswith("/captions.vtt") and track[2] == "showing"
    pg.wait_for_function("(() => { const t = document.querySelector('#player').textTracks[0];"
                         " return t.cues && t.cues.length > 0; })()")
    assert t > 0
    shot(pg, "3-video")
    assert not page.dialogs and not page.errors, page.errors


def test_deep_link_opens_at_its_time(site, page):
    handle, p, media = site
    m = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    pg = page.page
    pg.goto(f"{handle.url}m/{m.id}?t=15")
    t = wait_playing(pg)
    assert abs(t - 15) <= 1.5, t
    assert pg.locator("#media-title").inner_text() == "space_station"
    # "copy link to this moment" gives a deep link at the current time
    pg.click("#copy-link")
    pg.wait_for_function("() => document.getElementById('toast').textContent.includes('/m/')")
    assert f"/m/{m.id}?t=" in pg.locator("#toast").inner_text()
    # the clip button points at the clip endpoint around the current moment
    pg.hover("#clip-link")
    href = pg.get_attribute("#clip-link", "href")
    assert href.startswith(f"/api/media/{m.id}/clip?t=")
    shot(pg, "4-deep-link")
    pg.goto(f"{handle.url}m/0123456789abcdef0123?t=3")
    pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('not in the index')")
    assert not page.dialogs


def test_untrusted_names_and_transcripts_render_as_text(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    hit = search(pg, "lighthouse keeper")
    assert hit.locator(".hit-title").inner_text() == XSS_NAME
    pg.fill("#q", "zebra")
    pg.wait_for_function("() => { const s = document.querySelector('#results .snippet');"
                         " return s !== null && s.textContent.includes('zebra'); }")
    snippet = pg.locator("#results .snippet").first
    assert "<script>alert('xss')</script>" in snippet.inner_text()
    assert snippet.locator("mark").inner_text() == "zebra"
    pg.locator("#results .hit").first.click()
    wait_playing(pg)
    assert pg.locator("#media-title").inner_text() == XSS_NAME
    transcript = pg.locator("#transcript").inner_text()
    assert "<script>alert('xss')</script>" in transcript and "<img src=x onerror=alert(2)>" in transcript
    pg.wait_for_timeout(500)
    assert pg.evaluate("document.querySelectorAll('script').length") == 1  # only app.js
    # no image but the cover art the page made itself (from the API's artwork_url)
    assert pg.evaluate("[...document.querySelectorAll('img')].every(i => i.classList.contains('art') "
                       "&& new URL(i.src).pathname.endsWith('/artwork'))")
    shot(pg, "5-xss-as-text")
    assert page.dialogs == []
    assert not page.errors, page.errors


def test_keyboard_facets_and_status_panel(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    pg.wait_for_function("() => document.getElementById('summary').textContent.includes('recordings')")
    pg.evaluate("() => document.activeElement && document.activeElement.blur()")
    assert pg.evaluate("() => document.activeElement.id") != "q"
    pg.keyboard.press("/")
    assert pg.evaluate("document.activeElement.id") == "q"
    pg.keyboard.type("the")
    pg.locator("#results .hit").nth(2).wait_for()
    pg.keyboard.press("ArrowDown")
    assert pg.evaluate("document.activeElement.classList.contains('hit')")
    pg.keyboard.press("ArrowDown")
    assert pg.evaluate("document.activeElement.dataset.index") == "1"
    pg.keyboard.press("ArrowUp")
    pg.keyboard.press("Enter")
    wait_playing(pg)
    # facets filter the results
    pg.fill("#q", "天气")
    pg.locator(".facet-btn", has_text="zh").wait_for()
    n_before = pg.locator("#results .hit").count()
    assert n_before >= 1
    pg.locator(".facet-btn", has_text="zh").click()
    pg.wait_for_function("() => document.querySelector('.facet-btn[aria-pressed=\"true\"]') !== null")
    assert pg.locator("#results .hit .tag", has_text="zh").count() == pg.locator("#results .hit").count()
    # the status panel shows progress, failures and folders
    pg.click("#status-toggle")
    pg.wait_for_selector("#status-panel:not([hidden])")
    assert pg.locator("#st-media").inner_text() == "10"
    assert pg.locator("#st-failed").inner_text() == "4"
    assert str(media) in pg.locator("#st-roots").inner_text()
    assert pg.get_attribute("#status-toggle", "aria-expanded") == "true"
    shot(pg, "6-status-panel")
    assert not page.dialogs and not page.errors, page.errors


def test_empty_state_on_first_run(empty_site, page):
    pg = page.page
    pg.goto(empty_site.url)
    pg.wait_for_selector("#empty:not([hidden])")
    text = pg.locator("#empty").inner_text()
    assert "Nothing indexed yet" in text and "mediaindex index" in text and "mediaindex watch" in text
    assert pg.locator("#status-label").inner_text() == "0 indexed"
    # nothing else competes with the explanation: no empty player, no "More results"
    assert not pg.locator("#more").is_visible() and not pg.locator("#player-pane").is_visible()
    shot(pg, "7-empty-state")
    assert not page.errors, page.errors


def test_phone_layout(site, browser):
    handle, p, media = site
    page = Page(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        pg = page.page
        pg.goto(handle.url)
        search(pg, "magma")
        shot(pg, "8-phone-results")
        pg.locator("#results .hit").first.click()
        wait_playing(pg)
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        box = pg.locator("#player").bounding_box()
        assert box["width"] <= 390
        shot(pg, "9-phone-player")
        assert not page.errors, page.errors
    finally:
        page.close()


def test_token_login(site, browser):
    from mediaindex.web.server import start_server

    handle, p, media = site
    secured = start_server(p, port=0, token="letmein")
    page = Page(browser, viewport={"width": 1024, "height": 768})
    try:
        pg = page.page
        pg.goto(secured.url)
        pg.wait_for_selector("#login:not([hidden])")
        shot(pg, "10-token-login")
        pg.fill("#token", "letmein")
        pg.click("#login-form button")
        pg.wait_for_selector("#login", state="hidden")
        search(pg, "lettuce").click()
        wait_playing(pg)  # the media element is authorised by the cookie
        assert not page.dialogs
    finally:
        page.close()
        secured.stop()


def test_old_login_cookie_after_a_token_change(site, browser):
    """The token changed while the browser kept its cookie: the page asks to log in, its requests
    with the old cookie (a search as it is typed) do not lock it out, and the new token works."""
    from mediaindex.web.server import start_server

    handle, p, media = site
    first = start_server(p, port=0, token="first-token-0123456789")
    page = Page(browser, viewport={"width": 1024, "height": 768})
    try:
        pg = page.page
        pg.goto(first.url)
        pg.wait_for_selector("#login:not([hidden])")
        pg.fill("#token", "first-token-0123456789")
        pg.click("#login-form button")
        pg.wait_for_selector("#login", state="hidden")
        first.stop()
        second = start_server(p, port=0, token="second-token-0123456789")  # same host: the cookie goes along
        try:
            pg.goto(second.url)
            pg.wait_for_selector("#login:not([hidden])")
            codes = pg.evaluate("""async () => {
                const out = [];
                for (const q of ["l", "le", "let", "lett", "lettu", "lettuc", "lettuce", "lettuce c", "lettuce ch",
                                 "lettuce cha", "lettuce cham"]) {
                  out.push((await fetch("/api/search?q=" + encodeURIComponent(q))).status);
                  out.push((await fetch("/api/facets?q=" + encodeURIComponent(q))).status);
                }
                return out;
            }""")
            assert set(codes) == {401}, codes
            pg.fill("#token", "second-token-0123456789")
            pg.click("#login-form button")
            pg.wait_for_selector("#login", state="hidden")
            search(pg, "lettuce")
        finally:
            second.stop()
        assert not page.dialogs
    finally:
        page.close()
        first.stop()


def test_offline_media_shows_a_message_not_a_broken_player(site, page):
    handle, p, media = site
    path = media / "talks" / "bread_baking.m4a"
    m = p.state.media_for_path(str(path))
    moved = path.with_name("bread_baking.m4a.away")  # a drive that is not mounted
    pg = page.page
    shutil.move(path, moved)
    try:
        pg.goto(f"{handle.url}m/{m.id}?t=2")
        pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('offline')")
        assert pg.locator("#media-title").inner_text() == "bread_baking"
        assert pg.locator("#player").count() == 0  # no player that can only fail
        assert not pg.locator("#clip-link").is_visible()
        assert pg.locator("#transcript .w").count() > 0  # what was said is still there
        pg.locator("#transcript .w").first.click()  # and clicking a word does not throw
        shot(pg, "11-offline")
        # gone while the page is open: the player's error says so too (not "cannot play this format")
        shutil.move(moved, path)
        pg.goto(f"{handle.url}m/{m.id}?t=2")
        wait_playing(pg)
        shutil.move(path, moved)
        pg.evaluate("() => { const p = document.getElementById('player'); p.src = p.src + '?reload=1'; }")
        pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('offline')")
    finally:
        if moved.exists():
            shutil.move(moved, path)
    assert not page.dialogs
    assert not [e for e in page.errors if "404" not in e], page.errors


def test_slow_media_answer_does_not_replace_a_newer_one(site, page):
    """Open A (its /api/media answer is slow), then B: B stays, A's late answer is dropped."""
    handle, p, media = site
    a = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    b = p.state.media_for_path(str(media / "podcasts" / "ferry.webm"))
    pg = page.page
    pg.add_init_script("""(() => { const real = window.fetch;
      window.fetch = (url, ...rest) => String(url).endsWith('/api/media/%s')
        ? new Promise((ok) => setTimeout(ok, 1500)).then(() => real(url, ...rest)) : real(url, ...rest); })();""" % a.id)
    pg.goto(f"{handle.url}m/{a.id}?t=3&q=dolphins")
    pg.locator("#results .hit").first.click()
    wait_playing(pg)
    assert pg.locator("#media-title").inner_text() == "ferry"
    pg.wait_for_timeout(2000)  # A's answer has arrived by now
    assert pg.locator("#media-title").inner_text() == "ferry"
    assert pg.evaluate("document.getElementById('player').tagName") == "VIDEO"
    assert f"/m/{b.id}" in pg.url
    assert not page.dialogs and not page.errors, page.errors


def test_more_results_twice_quickly_skips_nothing(site, page):
    handle, p, media = site
    from mediaindex.models import SearchQuery

    total = p.index.search(SearchQuery(q="t*", limit=1)).total
    assert 20 < total <= 40
    pg = page.page
    pg.goto(f"{handle.url}?q=t*&group=none")  # one line per moment: 20 a page
    pg.locator("#results .hit").nth(19).wait_for()
    pg.evaluate("() => { const m = document.getElementById('more'); m.click(); m.click(); }")  # a double click
    pg.wait_for_function(f"() => document.querySelectorAll('#results .hit').length >= {total}", timeout=5000)
    pg.wait_for_timeout(300)
    assert pg.locator("#results .hit").count() == total
    assert not pg.locator("#more").is_visible()
    assert not page.errors, page.errors


def test_transcript_keeps_the_engine_token_spacing(site, page):
    handle, p, media = site
    m = p.state.media_for_path(str(media / "podcasts" / f"{XSS_NAME}.opus"))
    pg = page.page
    pg.goto(f"{handle.url}m/{m.id}?t=13")
    seg = pg.locator("#transcript .seg", has_text="tons")
    seg.wait_for()
    assert TOKEN_TEXT in seg.inner_text()  # "50,000", "mid-Atlantic": not "50 ,000", "mid -Atlantic"
    assert seg.locator(".w", has_text="-Atlantic").count() == 1  # each word still seeks on click
    assert not page.dialogs


def test_deep_link_to_an_unknown_id_says_not_found(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(f"{handle.url}m/doesnotexist?t=5")
    pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('not in the index')")
    assert pg.locator("#media-title").inner_text() == "Not found"
    assert not page.dialogs


def test_a_time_past_the_end_starts_at_the_end(site, page):
    handle, p, media = site
    m = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    pg = page.page
    # a browser that blocks autoplay (no click yet): the page says where playback is ready
    pg.add_init_script("HTMLMediaElement.prototype.play = function () {"
                       " return Promise.reject(new DOMException('blocked', 'NotAllowedError')); };")
    pg.goto(f"{handle.url}m/{m.id}?t=9999")
    pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('Ready at')")
    assert pg.locator("#media-note").inner_text() == f"Ready at 0:{int(m.duration - 1):02d}: press play."
    assert pg.evaluate("document.getElementById('player').currentTime") <= m.duration


def test_escape_closes_the_player(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    search(pg, "lettuce chamber").click()
    wait_playing(pg)
    pg.evaluate("() => document.activeElement && document.activeElement.blur()")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#player-pane", state="hidden")
    assert "/m/" not in pg.url and pg.locator("#player").count() == 0
    assert not page.dialogs and not page.errors, page.errors


def test_library_view_sorts_filters_pages_and_restores_from_a_link(site, browser, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    pg.locator("#library-list .lib-item").first.wait_for()
    total = p.state.summary()["media"]
    assert f"{total} recordings" in pg.locator("#lib-page").inner_text()
    assert pg.locator("#library-list .lib-item").count() == min(total, 25)
    shot(pg, "12-library")
    pg.select_option("#lib-sort", "-duration")
    pg.wait_for_function("() => location.search.includes('sort=-duration')")
    pg.wait_for_function("() => document.querySelector('#library-list .lib-title') !== null")
    shortest = min((m for m in (p.state.get_media(i) for i in p.state.all_media_ids()) if m), key=lambda m: m.duration)
    pg.wait_for_function("t => document.querySelector('#library-list .lib-title').textContent === t", arg=shortest.title)
    pg.select_option("#lib-kind", "video")
    pg.wait_for_function("() => location.search.includes('show=video')")
    pg.wait_for_function("() => document.getElementById('lib-page').textContent.includes('Page 1 of 1')")
    titles = pg.locator("#library-list .lib-title").all_inner_texts()
    assert titles and "ferry" in titles
    link = pg.url
    # the link shows the same view in a new tab
    other = Page(browser, viewport={"width": 1280, "height": 860})
    try:
        other.page.goto(link)
        other.page.wait_for_function("() => document.getElementById('lib-page').textContent.includes('Page 1 of 1')")
        assert other.page.locator("#library-list .lib-title").all_inner_texts() == titles
        assert other.page.input_value("#lib-sort") == "-duration" and other.page.input_value("#lib-kind") == "video"
    finally:
        other.close()
    # a recording opens from the library, without a search
    pg.locator("#library-list .lib-open", has_text="ferry").click()
    wait_playing(pg)
    assert pg.locator("#media-title").inner_text() == "ferry"
    assert not page.dialogs and not page.errors, page.errors


def test_library_and_recording_page_show_artwork(site, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    volcano = pg.locator("#library-list .lib-open", has_text="volcano")
    volcano.locator("img.lib-art").wait_for()
    # the video's frame, loaded (an image that failed would be swapped for the placeholder)
    pg.wait_for_function("() => [...document.querySelectorAll('#library-list img.lib-art')]"
                         ".some(i => i.complete && i.naturalWidth > 0)")
    assert volcano.locator("img.lib-art").evaluate("i => i.naturalWidth") > 0
    # an audio file without a cover: a placeholder, and no request for what is known to be absent
    assert pg.locator("#library-list .lib-open", has_text="space").locator(".art-none").count() == 1
    volcano.click()
    pg.locator("#player-pane img.media-art").wait_for()
    pg.wait_for_function("() => document.querySelector('#player-pane img.media-art').naturalWidth > 0")
    shot(pg, "14-library-artwork")
    assert not page.dialogs and not page.errors, page.errors


def test_library_pages(site, page):
    handle, p, media = site
    pg = page.page
    pg.set_viewport_size({"width": 1280, "height": 860})
    pg.goto(handle.url + "?page=2")
    pg.wait_for_function("() => document.getElementById('lib-page').textContent.startsWith('Page')")
    total = p.state.summary()["media"]
    pages = -(-total // 25)
    if pages == 1:  # the corpus is small: page 2 of 1 shows no recording and a way back
        assert pg.locator("#library-list .lib-item").count() == 0
        assert not pg.locator("#lib-prev").is_disabled()
        pg.click("#lib-prev")
        pg.wait_for_function("() => !location.search.includes('page=')")
        pg.locator("#library-list .lib-item").first.wait_for()
        assert pg.locator("#lib-prev").is_disabled() and pg.locator("#lib-next").is_disabled()
    assert not page.errors, page.errors


def test_library_on_a_phone(site, browser):
    handle, p, media = site
    page = Page(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        pg = page.page
        pg.goto(handle.url)
        pg.locator("#library-list .lib-item").first.wait_for()
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(pg, "13-phone-library")
        assert not page.errors, page.errors
    finally:
        page.close()


def test_a_search_link_restores_its_filters(site, browser, page):
    handle, p, media = site
    pg = page.page
    pg.goto(handle.url)
    pg.fill("#q", "the")
    pg.locator(".facet-btn", has_text="media/talks").wait_for()
    pg.locator(".facet-btn", has_text="media/talks").click()
    pg.wait_for_function("() => location.search.includes('path=')")
    pg.wait_for_function("() => [...document.querySelectorAll('#results .hit')].length > 0")
    link = pg.url
    other = Page(browser, viewport={"width": 1280, "height": 860})
    try:
        other.page.goto(link)
        other.page.wait_for_selector(".facet-btn[aria-pressed='true']")
        assert "media/talks" in other.page.locator(".facet-btn[aria-pressed='true']").inner_text()
        other.page.locator("#results .hit").first.wait_for()
        assert other.page.input_value("#q") == "the"
        paths = other.page.eval_on_selector_all("#results .hit", "hs => hs.map(h => h.textContent)")
        assert paths and all("bread_baking" in t or "space_station" in t for t in paths), paths
        assert not other.errors, other.errors
    finally:
        other.close()
    assert not page.errors, page.errors


def test_grouped_results_show_moments_as_chips_and_a_flat_toggle(site, browser, page):
    handle, p, media = site
    flat = p.index.search(SearchQuery(q="the", limit=100)).hits  # the box searches "the" as a prefix
    space = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    moments = sorted(h.time for h in flat if h.media_id == space.id)
    assert len(moments) >= 2
    pg = page.page
    pg.goto(handle.url)
    pg.fill("#q", "the ")
    pg.wait_for_function("() => document.getElementById('summary').textContent.includes('recordings found')")
    assert pg.locator("#results .hit").count() == len({h.media_id for h in flat})  # one result per recording
    group = pg.locator("#results .hit-item", has=pg.locator(".hit-title", has_text="space_station"))
    chips = group.locator(".moment")
    assert chips.all_inner_texts() == [f"0:{int(t):02d}" for t in moments]
    assert group.locator(".snippet mark").count() >= 1 and "talks" in group.locator(".hit-folder").inner_text()
    shot(pg, "14-grouped")
    chips.nth(1).click()  # a chip plays from its moment
    t = wait_playing(pg)
    assert abs(t - max(0.0, moments[1] - 1)) <= 1.5, (t, moments[1])
    assert f"/m/{space.id}?t=" in pg.url and pg.locator("#media-title").inner_text() == "space_station"
    # the flat list: one line per moment, kept in the URL
    pg.click("#group-toggle")
    pg.wait_for_function("() => location.search.includes('group=none')")
    pg.wait_for_function("() => document.getElementById('summary').textContent.includes('moments found')")
    assert pg.locator("#results .hit").count() == min(20, len(flat)) and pg.locator("#results .moment").count() == 0
    other = Page(browser, viewport={"width": 1280, "height": 860})
    try:
        other.page.goto(pg.url)
        other.page.wait_for_function("() => document.getElementById('summary').textContent.includes('moments found')")
        assert other.page.get_attribute("#group-toggle", "aria-pressed") == "true"
        assert not other.errors, other.errors
    finally:
        other.close()
    pg.click("#group-toggle")  # and back
    pg.wait_for_function("() => document.getElementById('summary').textContent.includes('recordings found')")
    assert "group=" not in pg.url
    assert not page.dialogs and not page.errors, page.errors


def test_grouped_results_on_a_phone(site, browser):
    handle, p, media = site
    page = Page(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        pg = page.page
        pg.goto(handle.url + "?q=the+")
        pg.locator("#results .moment").first.wait_for()
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(pg, "15-phone-grouped")
        assert not page.errors, page.errors
    finally:
        page.close()


def _date_files(media: Path) -> None:
    """Recordings of known months (no date tags in the corpus: the file's month dates them)."""
    import calendar

    for rel, (y, m) in {"talks/space_station.mp3": (2019, 3), "video/volcano_lecture.mp4": (2019, 7),
                        "podcasts/ferry.webm": (2021, 7)}.items():
        t = calendar.timegm((y, m, 15, 12, 0, 0))
        os.utime(media / rel, (t, t))


@pytest.fixture(scope="module")
def dated_site(corpus_src, tmp_path_factory):
    from mediaindex.web.server import start_server

    p, media = build_index(corpus_src, tmp_path_factory.mktemp("webui-dates"), extra=_date_files)
    handle = start_server(p, port=0)
    yield handle, p, media
    handle.stop()
    p.close()


def test_date_chips_filter_and_live_in_the_url(dated_site, browser, page):
    handle, p, media = dated_site
    pg = page.page
    pg.goto(handle.url)
    pg.fill("#q", "the")
    pg.locator("#facet-year").wait_for()
    years = pg.locator(".facet:has(#facet-year) .facet-btn .facet-val").all_inner_texts()
    assert {"2019", "2021"} <= set(years) and years == sorted(years, reverse=True)
    assert pg.locator("#facet-month").count() == 0  # months once a year is chosen
    pg.locator(".facet:has(#facet-year) .facet-btn", has_text="2019").click()
    pg.wait_for_function("() => location.search.includes('date=2019')")
    pg.locator("#facet-month").wait_for()
    assert pg.locator(".facet:has(#facet-month) .facet-val").all_inner_texts() == ["Mar", "Jul"]
    pg.wait_for_function("() => document.getElementById('summary').textContent.startsWith('2 recordings')")
    assert sorted(pg.locator("#results .hit-title").all_inner_texts()) == ["space_station", "volcano_lecture"]
    pg.locator(".facet:has(#facet-month) .facet-btn", has_text="Jul").click()
    pg.wait_for_function("() => location.search.includes('date=2019-07')")
    pg.wait_for_function("() => document.getElementById('summary').textContent.startsWith('1 recording')")
    assert pg.locator("#results .hit-title").all_inner_texts() == ["volcano_lecture"]
    link = pg.url
    other = Page(browser, viewport={"width": 1280, "height": 860})
    try:  # the link restores the chosen month
        other.page.goto(link)
        other.page.wait_for_function("() => document.getElementById('summary').textContent.startsWith('1 recording')")
        assert other.page.locator("#results .hit-title").all_inner_texts() == ["volcano_lecture"]
        other.page.locator(".facet:has(#facet-month) .facet-btn[aria-pressed='true']", has_text="Jul").wait_for()
        assert other.page.locator(".facet:has(#facet-year) .facet-btn[aria-pressed='true']").inner_text().startswith("2019")
        # the library view (empty search box) takes the date too
        other.page.goto(handle.url + "?date=2021")
        other.page.wait_for_function("() => document.getElementById('lib-page').textContent.includes('1 recording')")
        assert other.page.locator("#library-list .lib-title").all_inner_texts() == ["ferry"]
        assert not other.errors, other.errors
    finally:
        other.close()
    # a pressed month goes back to its year; a pressed year clears the date
    pg.locator(".facet:has(#facet-month) .facet-btn", has_text="Jul").click()
    pg.wait_for_function("() => new URLSearchParams(location.search).get('date') === '2019'")
    pg.locator(".facet:has(#facet-year) .facet-btn", has_text="2019").click()
    pg.wait_for_function("() => !location.search.includes('date=')")
    assert not page.dialogs and not page.errors, page.errors


def test_retry_and_retranscribe_from_the_ui_reach_a_running_watch(installed_manifest_plugin, corpus, corpus_src,
                                                                  tmp_path, browser, monkeypatch):
    """`mediaindex watch` runs in its own process; the page (another server on the same data dir)
    queues a retry and a re-transcription; the watcher picks both up from the state database."""
    import subprocess
    import sys

    from conftest import registered_manifest_transcriber
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.server import start_server
    from test_watch import wait_for

    library, data_dir, marker = tmp_path / "lib", tmp_path / "data", tmp_path / "engine-broken"
    shutil.copytree(corpus / "talks", library)
    marker.write_text("bread_baking.m4a")  # the engine fails on this file until the marker is gone
    plugin_src = Path(__file__).parent / "plugins" / "mediaindex-manifest-transcriber"
    env = {**installed_manifest_plugin, "MEDIAINDEX_MANIFEST_OTHER": "1", "MEDIAINDEX_MANIFEST_FAIL_WHILE": str(marker),
           "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(plugin_src), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "watch.log", "wb")
    watch = subprocess.Popen([str(Path(sys.executable).parent / "mediaindex"), "watch", str(library), "--data-dir",
                              str(data_dir), "--no-serve", "--transcriber", "manifest", "--stable", "0.5"],
                             env=env, stdout=log, stderr=subprocess.STDOUT)
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_OTHER", "1")
    page = None
    try:
        bread, space = str(library / "bread_baking.m4a"), str(library / "space_station.mp3")

        def status(path):
            if not (data_dir / "state.sqlite3").exists():
                return None
            conn = sqlite3.connect(f"file:{data_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
            try:
                row = conn.execute("SELECT status FROM files WHERE path = ?", (path,)).fetchone()
                return row[0] if row else None
            except sqlite3.OperationalError:
                return None
            finally:
                conn.close()
        wait_for(lambda: status(bread) == "failed" and status(space) == "indexed", timeout=60,
                 what="the first scan indexed")
        with registered_manifest_transcriber(corpus_src, "manifest-ui"):
            p = Pipeline(Config.load(data_dir))
        handle = start_server(p, port=0)
        try:
            page = Page(browser, viewport={"width": 1280, "height": 860})
            pg = page.page
            # the library marks the failed recording and retries it
            pg.goto(handle.url)
            item = pg.locator("#library-list .lib-item", has_text="bread_baking")
            assert "failed" in item.locator(".lib-meta").inner_text()
            marker.unlink()  # the cause is gone
            item.locator(".lib-retry").click()
            pg.wait_for_function("() => document.getElementById('library-note').textContent.includes('queued')")
            assert "picks it up now" in pg.locator("#library-note").inner_text()  # a watcher is running
            wait_for(lambda: status(bread) == "indexed", timeout=30, what="the watcher retried it")
            # re-transcribe: choose another engine on the recording's page
            m = p.state.media_for_path(space)
            pg.goto(f"{handle.url}m/{m.id}")
            pg.locator("#transcript .w", has_text="lettuce").wait_for()
            pg.locator("#manage summary").click()
            pg.wait_for_function("() => [...document.querySelectorAll('#engine-select option')]"
                                 ".some(o => o.value === 'manifest-other')")
            pg.select_option("#engine-select", "manifest-other")
            pg.click("#reindex-btn")
            pg.wait_for_function("() => document.getElementById('manage-note').textContent.includes('queued')")
            shot(pg, "16-retranscribe")
            wait_for(lambda: p.index.search(SearchQuery(q="cabbage")).total == 1, timeout=30,
                     what="the watcher transcribed it again")
            assert p.index.search(SearchQuery(q="lettuce")).total == 0
            pg.reload()
            pg.locator("#transcript .w", has_text="cabbage").wait_for()
            assert not page.dialogs and not page.errors, page.errors
        finally:
            handle.stop()
            p.close()
    finally:
        if page is not None:
            page.close()
        watch.terminate()
        watch.wait(20)
        log.close()
    assert watch.returncode == 0, (tmp_path / "watch.log").read_text()


_BOXES = """() => {
  const pane = document.getElementById('player-pane');
  const parts = [...pane.querySelectorAll('#media-title, #media-meta, #media-note, #player, #timeline, '
    + '.actions button, .actions a, #toast, #failed-box, #manage, #manage-note, #transcript-title, #transcript')];
  // a note's text, not its box: text that overflows a squeezed box still covers what is under it
  const rect = (e) => { if (e.tagName !== 'P') return e.getBoundingClientRect();
    const range = document.createRange(); range.selectNodeContents(e); return range.getBoundingClientRect(); };
  return parts.filter((e) => { const r = rect(e); return r.width > 0 && r.height > 0
      && getComputedStyle(e).visibility !== 'hidden' && !e.closest('[hidden]'); })
    .map((e) => { const r = rect(e);
      return [e.id || e.textContent.trim().slice(0, 20), r.left, r.top, r.right, r.bottom]; });
}"""


def _overlaps(boxes):
    """Pairs of boxes that share more than a pixel (none may contain another: they are siblings)."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            w = min(a[3], b[3]) - max(a[1], b[1])
            h = min(a[4], b[4]) - max(a[2], b[2])
            if w > 1 and h > 1:
                out.append((a[0], b[0]))
    return out


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 860}, {"width": 1024, "height": 540},
                                      {"width": 390, "height": 844}], ids=["desktop", "laptop", "phone"])
def test_status_notes_never_overlap_the_player_or_its_buttons(site, browser, viewport):
    handle, p, media = site
    space = p.state.media_for_path(str(media / "talks" / "space_station.mp3"))
    path = media / "talks" / "bread_baking.m4a"
    bread = p.state.media_for_path(str(path))
    phone = viewport["width"] < 600
    page = Page(browser, viewport=viewport, is_mobile=phone, has_touch=phone)
    try:
        pg = page.page
        # a deep link in a browser that blocks autoplay: "Ready at 0:15: press play." above the player
        pg.add_init_script("HTMLMediaElement.prototype.play = function () {"
                           " return Promise.reject(new DOMException('blocked', 'NotAllowedError')); };")
        pg.goto(f"{handle.url}m/{space.id}?t=15")
        pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('Ready at')")
        pg.click("#copy-link")  # the toast shows too
        pg.wait_for_function("() => document.getElementById('toast').textContent.length > 0")
        if pg.locator("#manage summary").count():  # (the re-transcribe form makes the pane taller)
            pg.locator("#manage summary").click()
        boxes = pg.evaluate(_BOXES)
        assert {"media-note", "player", "toast"} <= {b[0] for b in boxes}, boxes
        assert _overlaps(boxes) == [], boxes
        # an offline file: the long note, no player
        moved = path.with_name("bread_baking.m4a.away")
        shutil.move(path, moved)
        try:
            pg.goto(f"{handle.url}m/{bread.id}?t=2")
            pg.wait_for_function("() => document.getElementById('media-note').textContent.includes('offline')")
            boxes = pg.evaluate(_BOXES)
            assert _overlaps(boxes) == [], boxes
            shot(pg, f"17-{'phone' if phone else 'desktop'}-offline-note")
        finally:
            shutil.move(moved, path)
        assert not [e for e in page.errors if "404" not in e], page.errors
    finally:
        page.close()
