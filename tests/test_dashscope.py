"""The DashScope plugin (plugins/mediaindex-dashscope) against a loopback double of the service.

The real httpx client talks over real sockets to tests/dashscope_double.py, which speaks the
documented wire format and recognises the corpus audio it is sent (a wrong chunk offset gives
wrong text). Real ffmpeg cuts the real corpus media.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("mediaindex_dashscope", reason="plugins/mediaindex-dashscope is not installed")

from dashscope_double import Double  # noqa: E402

from mediaindex.backends import Checkpoint, FatalError, PermanentError, TranscribeRequest, TransientError  # noqa: E402
from mediaindex.probe import probe  # noqa: E402
from mediaindex_dashscope.client import Client, RateLimiter  # noqa: E402
from mediaindex_dashscope.engines import FiletransTranscriber, FlashTranscriber, NotReady, Settings  # noqa: E402

KEY = "sk-test-double-key"
HERE = Path(__file__).parent


@pytest.fixture
def double(corpus_src, manifest):
    with Double(corpus_src, manifest, key=KEY) as d:
        yield d


def engines(double, **kw):
    s = Settings(api_key=KEY, base_url=double.base_url, rpm=100000, filetrans=True, **kw)
    client = Client(s.api_key, s.base_url, rpm=s.rpm, concurrency=s.concurrency, timeout=30)
    return FlashTranscriber(s, client), FiletransTranscriber(s, client)


class Book:
    """What the core gives a request: a charge ledger and a checkpoint store."""

    def __init__(self):
        self.charges: list[tuple[float, float, dict]] = []
        self.saved: dict | None = None
        self.checkpoint = Checkpoint(load=lambda: self.saved, save=self.save)

    def save(self, data):
        self.saved = dict(data)

    def request(self, path: Path, publish=None) -> TranscribeRequest:
        return TranscribeRequest(path=path, probe=probe(str(path)), uri=str(path), publish=publish,
                                 charge=lambda s, c, d: self.charges.append((s, c, d)), checkpoint=self.checkpoint)


def sentence_of(manifest, rel):
    return next(f for f in manifest["files"] if f["path"] == rel)["sentences"]


# ---- flash -----------------------------------------------------------------------------------


def test_flash_chunks_at_silences_with_true_offsets(double, corpus_src, manifest):
    flash, _ = engines(double)
    book = Book()
    t = flash.transcribe(book.request(corpus_src / "talks/space_station.mp3"))
    sentences = sentence_of(manifest, "talks/space_station.mp3")
    assert double.flash_calls == 2 == len(book.charges)  # 33 s in chunks of at most 30 s
    assert " ".join(s.text for s in t.segments) == " ".join(s["text"] for s in sentences)
    words = [w for s in t.segments for w in s.words]
    assert words and all(w.interpolated for w in words)
    for s in sentences:  # each sentence's first word is placed inside that sentence (within 1 s)
        first = s["text"].split()[0]
        w = next(w for w in words if w.text == first and s["start"] - 1 <= w.start <= s["end"])
        assert s["start"] - 1 <= w.start <= s["end"]
    assert t.cost == pytest.approx(sum(c for _, c, _ in book.charges)) and t.cost > 0
    assert t.segments[0].language == "en" and t.segments[0].emotion == "neutral"
    assert t.options["route"] == "flash"


def test_flash_resumes_from_done_chunks(double, corpus_src):
    flash, _ = engines(double)
    book = Book()
    path = corpus_src / "talks/space_station.mp3"
    first = flash.transcribe(book.request(path))
    kept = dict(book.saved)
    kept["chunks"] = dict(list(kept["chunks"].items())[:1])  # a crash after the first chunk
    book.saved, calls = kept, double.flash_calls
    again = flash.transcribe(book.request(path))
    assert double.flash_calls == calls + 1  # only the missing chunk is sent (and paid)
    assert [s.text for s in again.segments] == [s.text for s in first.segments]


def test_flash_takes_a_long_file_in_chunks_when_filetrans_is_unavailable(double, corpus_src):
    s = Settings(api_key=KEY, base_url=double.base_url, rpm=100000, filetrans=False)
    client = Client(KEY, s.base_url, rpm=s.rpm)
    flash, filetrans = FlashTranscriber(s, client), FiletransTranscriber(s, client)
    info = probe(str(corpus_src / "meetings/long_meeting.mp3"))
    assert flash.accepts(info) is None and "stage_storage" in filetrans.accepts(info)
    s2 = Settings(api_key=KEY, base_url=double.base_url, filetrans=True)
    assert "longer" in FlashTranscriber(s2, client).accepts(info)


# ---- filetrans -------------------------------------------------------------------------------


def test_filetrans_lifecycle_real_times_language_emotion(double, corpus_src, manifest):
    _, ft = engines(double, wait_inline=60)
    double.steps_pending, double.steps_running = 2, 2
    book = Book()
    published = []

    def publish(p):
        published.append(Path(p).suffix)
        return double.publish(p)

    t = ft.transcribe(book.request(corpus_src / "meetings/long_meeting.mp3", publish))
    sentences = sentence_of(manifest, "meetings/long_meeting.mp3")
    assert double.submissions == 1 and published == [".opus"]  # the extracted audio, not the source
    assert len(t.segments) == len(sentences)
    for seg, s in zip(t.segments, sentences):
        assert seg.text == s["text"] and abs(seg.start - s["start"]) < 0.2
        assert seg.words and not seg.words[0].interpolated and seg.language == "en" and seg.emotion == "neutral"
    assert len(book.charges) == 1 and book.charges[0][2]["task_id"] == book.saved["task_id"]
    assert t.cost == pytest.approx(book.charges[0][1])
    posts = [p for _, m, p in double.hits if m == "POST"]
    assert posts == ["/api/v1/services/audio/asr/transcription"]


def test_filetrans_yields_and_the_retry_polls_the_same_task(double, corpus_src):
    _, ft = engines(double, wait_inline=0, poll_after=7)
    double.steps_pending, double.steps_running = 3, 3
    book = Book()
    req = book.request(corpus_src / "podcasts/ferry.webm", double.publish)
    for _ in range(10):
        try:
            t = ft.transcribe(req)
            break
        except NotReady as e:
            assert e.retry_after == 7 and book.saved["task_id"]
    else:
        pytest.fail("never finished")
    assert double.submissions == 1 and len(book.charges) == 1 and t.segments


def test_filetrans_failed_task_is_permanent_with_its_code(double, corpus_src):
    _, ft = engines(double, wait_inline=60)
    double.fail_next_task = ("InvalidFile.DownloadFailed", "The audio file cannot be downloaded.")
    book = Book()
    with pytest.raises(PermanentError, match="InvalidFile.DownloadFailed: The audio file cannot be downloaded"):
        ft.transcribe(book.request(corpus_src / "podcasts/ferry.webm", double.publish))
    assert book.saved == {} and not book.charges  # nothing billed; a later retry submits afresh


def test_filetrans_unknown_task_is_submitted_again_once(double, corpus_src):
    _, ft = engines(double, wait_inline=60)
    book = Book()
    book.saved = {"task_id": "expired-task", "resubmits": 0}
    t = ft.transcribe(book.request(corpus_src / "podcasts/ferry.webm", double.publish))
    assert double.submissions == 1 and t.segments
    book.saved = {"task_id": "expired-again", "resubmits": 1}
    with pytest.raises(PermanentError, match="expired"):
        ft.transcribe(book.request(corpus_src / "podcasts/ferry.webm", double.publish))
    assert double.submissions == 1


def test_filetrans_polling_survives_503(double, corpus_src):
    _, ft = engines(double, wait_inline=60)
    book = Book()
    req = book.request(corpus_src / "podcasts/ferry.webm", double.publish)
    double.inject("/api/v1/tasks/", 503, "ServiceUnavailable", "busy", {"Retry-After": "3"})
    with pytest.raises(TransientError) as err:
        ft.transcribe(req)
    assert err.value.retry_after == 3 and book.saved["task_id"]
    t = ft.transcribe(req)  # the retry polls the task submitted before the 503
    assert double.submissions == 1 and t.segments


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status,code,headers,kind,retry", [
    (429, "Throttling.RateQuota", {"Retry-After": "7"}, TransientError, 7.0),
    (429, "Throttling.RateQuota", {}, TransientError, None),
    (400, "Throttling.RateQuota", {}, TransientError, None),
    (503, "ServiceUnavailable", {"Retry-After": "2"}, TransientError, 2.0),
    (500, "InternalError", {}, TransientError, None),
    (400, "InvalidParameter", {}, PermanentError, None),
    (400, "DataInspectionFailed", {}, PermanentError, None),
])
def test_flash_errors_map_to_the_core_kinds(double, corpus_src, status, code, headers, kind, retry):
    flash, _ = engines(double)
    path = corpus_src / "podcasts/ferry.webm"
    double.inject("/api/v1/services/aigc", status, code, "the service's own words", headers)
    with pytest.raises(kind) as err:
        flash.transcribe(Book().request(path))
    assert type(err.value) is kind
    assert getattr(err.value, "retry_after", None) == retry
    assert "the service's own words" in str(err.value) and code in str(err.value)
    if kind is PermanentError:
        assert str(path) in str(err.value)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_fatal_names_the_setting_never_the_key(double, corpus_src, status):
    flash, _ = engines(double)
    flash.client.api_key = "sk-wrong-secret-123"
    if status == 403:
        double.inject("/api/v1/services/aigc", 403, "AccessDenied", "Access denied.")
    with pytest.raises(FatalError) as err:
        flash.transcribe(Book().request(corpus_src / "podcasts/ferry.webm"))
    assert "DASHSCOPE_API_KEY" in str(err.value) and "sk-wrong-secret-123" not in str(err.value)


def test_network_error_is_transient(corpus_src):
    s = Settings(api_key=KEY, base_url="http://127.0.0.1:9/api/v1", rpm=1000)
    flash = FlashTranscriber(s, Client(KEY, s.base_url, rpm=1000, timeout=5))
    with pytest.raises(TransientError, match="cannot reach DashScope"):
        flash.transcribe(Book().request(corpus_src / "podcasts/ferry.webm"))


def test_result_file_is_fetched_without_the_auth_header(double, corpus_src):
    _, ft = engines(double, wait_inline=60)
    book = Book()
    ft.transcribe(book.request(corpus_src / "podcasts/ferry.webm", double.publish))
    task = next(iter(double.tasks))
    url = f"{double.url}/results/{task}.json"
    assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 400  # the double refuses it
    assert ft.client.fetch_result(url)["transcripts"]


def test_rate_limiter_holds_any_window_under_the_limit():
    limiter = RateLimiter(rpm=4, window=0.3)
    stamps: list[float] = []
    lock = threading.Lock()

    def go():
        for _ in range(4):
            slot = limiter.acquire()
            with lock:
                stamps.append(time.monotonic())
            limiter.done(slot)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert len(stamps) == 12
    assert all(stamps[i + 4] - stamps[i] >= 0.3 for i in range(len(stamps) - 4))


def test_rate_limiter_counts_a_slow_request_from_its_end():
    """A request that took long (it may have reached the service only at its end) keeps its
    slot for a whole window after it ended: the next one waits for that, not for a window after
    the slow one started (the service would otherwise see two in one window)."""
    limiter = RateLimiter(rpm=1, window=0.3)
    slow = limiter.acquire()
    time.sleep(0.5)  # in flight longer than the window
    ended = time.monotonic()
    limiter.done(slow)
    limiter.done(limiter.acquire())
    assert time.monotonic() - ended >= 0.3


# ---- the official SDK reads the double the same way ---------------------------------------------


def test_official_sdk_reads_the_double_like_our_client(double, corpus_src):
    dashscope = pytest.importorskip("dashscope")
    from dashscope.audio.qwen_asr import QwenTranscription

    dashscope.base_http_api_url = double.base_url
    url = double.publish(corpus_src / "podcasts/ferry.webm")
    task = QwenTranscription.async_call(model="qwen3-asr-flash-filetrans", file_url=url, api_key=KEY,
                                        enable_words=True, channel_id=[0])
    assert task.status_code == 200, task
    done = QwenTranscription.wait(task=task.output.task_id, api_key=KEY)
    assert done.output.task_status == "SUCCEEDED"
    result = httpx.get(done.output.result["transcription_url"]).json()
    ours = Client(KEY, double.base_url).task(task.output.task_id)
    assert ours["output"]["result"]["transcription_url"] == done.output.result["transcription_url"]
    assert ours["usage"]["seconds"] == done.usage["seconds"]
    assert result["transcripts"][0]["sentences"][0]["text"].startswith("The ferry")

    from dashscope import MultiModalConversation
    import base64
    clip = Path(double.files_dir) / "clip.opus"
    from mediaindex import audio
    audio.extract(corpus_src / "podcasts/ferry.webm", 0, 6, clip)
    data = "data:audio/ogg;base64," + base64.b64encode(clip.read_bytes()).decode()
    sdk = MultiModalConversation.call(model="qwen3-asr-flash", api_key=KEY, messages=[
        {"role": "system", "content": [{"text": ""}]}, {"role": "user", "content": [{"audio": data}]}],
        asr_options={"enable_itn": False})
    assert sdk.status_code == 200, sdk
    mine = Client(KEY, double.base_url).flash("qwen3-asr-flash", data)
    assert sdk.output.choices[0].message.content[0]["text"] == mine["text"]
    assert sdk.usage["seconds"] == mine["seconds"]


# ---- end to end: mediaindex index --transcriber dashscope ------------------------------------


@pytest.fixture
def e2e(double, corpus_src, tmp_path, monkeypatch):
    """A media folder (short talks, Chinese, the long meeting), a data dir configured for the
    double (stage_storage served by it), and both plugins registered in-process."""
    import mediaindex_dashscope.plugin as ds_plugin
    from dashscope_double import staging_plugin
    from mediaindex.plugins import load_plugins

    media = tmp_path / "media"
    for sub in ("talks", "chinese", "meetings"):
        shutil.copytree(corpus_src / sub, media / sub)
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text('transcriber = "dashscope"\nstage_storage = "double"\n'
                                      "[dashscope]\nrpm = 100000\nwait_inline = 60\npoll_after = 1\n")
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("DASHSCOPE_BASE_URL", double.base_url)
    pm = load_plugins()
    pm.register(ds_plugin, name="dashscope")
    pm.register(staging_plugin(double.files_dir, double.url), name="dashscope-double-staging")
    yield media, data
    pm.unregister(name="dashscope")
    pm.unregister(name="dashscope-double-staging")


def run_cli(*args):
    from click.testing import CliRunner

    from mediaindex.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_index_routes_by_duration_searches_land_and_estimate_matches(double, e2e, manifest):
    from mediaindex.config import Config
    from mediaindex.models import SearchQuery
    from mediaindex.pipeline import Pipeline

    media, data = e2e
    est = run_cli("index", str(media), "--data-dir", str(data), "--estimate")
    assert est.exit_code == 0, est.output
    assert not double.hits and not list(double.files_dir.iterdir())  # nothing sent, nothing staged
    lines = {ln.split()[0]: ln.split() for ln in est.output.splitlines() if ln.strip()}
    assert lines["qwen3-asr-flash"][1] == "3" and lines["qwen3-asr-flash-filetrans"][1] == "1"
    estimated = float(lines["total"][4])

    out = run_cli("index", str(media), "--data-dir", str(data))
    assert out.exit_code == 0, out.output
    assert double.submissions == 1 and double.flash_calls >= 3
    p = Pipeline(Config.load(data), transcriber="dashscope")
    try:
        engines_used = {m.path.split("/")[-2]: m.engine.split(":")[0] for m in
                        (p.state.get_media(i) for i in p.state.all_media_ids("indexed"))}
        assert engines_used == {"talks": "qwen3-asr-flash", "chinese": "qwen3-asr-flash",
                                "meetings": "qwen3-asr-flash-filetrans"} or \
            set(engines_used.values()) == {"qwen3-asr-flash", "qwen3-asr-flash-filetrans"}
        charged = p.state.total_cost()
        assert charged == pytest.approx(double.billed * 0.000035)
        assert abs(estimated - charged) / charged < 0.05, (estimated, charged)

        meeting = sentence_of(manifest, "meetings/long_meeting.mp3")
        target = next(s for s in meeting if s["text"].startswith("Item 16:"))
        hits = p.index.search(SearchQuery(q="16 percent", limit=50)).hits
        hit = next(h for h in hits if h.text.startswith("Item 16:"))
        assert target["start"] <= hit.time <= target["end"]
        lettuce = sentence_of(manifest, "talks/space_station.mp3")[1]
        hit = p.index.search(SearchQuery(q="lettuce")).hits[0]
        assert lettuce["start"] - 1 <= hit.time <= lettuce["end"]
        assert p.index.facets(SearchQuery(q="")).emotion.get("neutral")
    finally:
        p.close()
    status = run_cli("status", "--data-dir", str(data), "--json")
    spend = json.loads(status.output)["spent_by_engine"]
    assert {k.split(":")[0] for k in spend} == {"qwen3-asr-flash", "qwen3-asr-flash-filetrans"}
    assert sum(v["seconds"] for v in spend.values()) == double.billed
    assert sum(v["cost"] for v in spend.values()) == pytest.approx(charged)
    assert KEY not in status.output and KEY not in run_cli("status", "--data-dir", str(data)).output
    for f in data.rglob("*"):  # the key is nowhere in the data dir
        assert not f.is_file() or KEY.encode() not in f.read_bytes(), f


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import mediaindex_dashscope.plugin as ds_plugin
    from dashscope_double import staging_plugin
    from mediaindex.plugins import load_plugins
    from mediaindex.cli import cli
    pm = load_plugins()
    pm.register(ds_plugin, name="dashscope")
    pm.register(staging_plugin({files!r}, {url!r}), name="dashscope-double-staging")
    cli(["index", {media!r}, "--data-dir", {data!r}])
""")


def test_a_running_task_yields_its_worker_through_the_queue(double, e2e):
    """Through the real job queue: NotReady while the task waits and runs, polled again without
    spending attempts (more polls than max_attempts). The task stays PENDING (the service has not
    fetched the published audio yet) over several yields: the core keeps the staged audio until
    the job ends, so the service finds it, and the task is submitted and paid once."""
    media, data = e2e
    for sub in ("talks", "chinese"):
        shutil.rmtree(media / sub)
    (data / "config.toml").write_text('transcriber = "dashscope"\nstage_storage = "double"\n'
                                      "[dashscope]\nrpm = 100000\nwait_inline = 0\npoll_after = 0.1\n")
    double.steps_pending, double.steps_running = 4, 6
    out = run_cli("index", str(media), "--data-dir", str(data))
    assert out.exit_code == 0, out.output
    polls = [p for _, m, p in double.hits if p.startswith("/api/v1/tasks/")]
    fetched = [p for _, m, p in double.hits if p.startswith("/files/")]
    assert double.submissions == 1 and len(polls) >= 11 and double.billed == 734
    assert len(fetched) == 1  # the service fetched the staged audio once, after four PENDING answers
    assert not list(double.files_dir.iterdir())  # the core deleted the staged audio when the job ended


@pytest.mark.parametrize("phase", ["running", "pending"])
def test_kill_9_while_polling_resumes_the_same_task(double, e2e, tmp_path, phase):
    """Killed while the task runs: the next run polls it, paid once. Killed while it is still
    queued: the core deletes the dead run's staged audio, the service cannot fetch it, the task
    fails unbilled and is submitted once more; still paid once."""
    media, data = e2e
    for sub in ("talks", "chinese"):
        shutil.rmtree(media / sub)
    if phase == "running":  # the service fetched the audio, then the task runs until let go
        double.steps_pending, double.steps_running = 1, 10 ** 6
    else:
        double.steps_pending = 10 ** 6
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(HERE), files=str(double.files_dir), url=double.url,
                                         media=str(media), data=str(data)))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(1200):  # until the task was submitted and polled three times
            polls = [p for _, m, p in double.hits if p.startswith("/api/v1/tasks/")]
            if double.submissions and len(polls) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert double.submissions == 1
    double.steps_pending, double.steps_running = 0, 1
    out = run_cli("index", str(media), "--data-dir", str(data))
    assert out.exit_code == 0, out.output
    assert double.submissions == (1 if phase == "running" else 2)
    assert double.billed == 734  # one billed task: ceil(733.2 s)
    from mediaindex.state import State
    state = State(data / "state.sqlite3")
    try:
        assert state.total_cost() == pytest.approx(734 * 0.000035)
    finally:
        state.close()


def test_settings_regions_and_overrides(tmp_path, monkeypatch, corpus_src):
    from mediaindex.config import Config
    from mediaindex.safety import redact

    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_BASE_URL", raising=False)
    (tmp_path / "config.toml").write_text('stage_storage = "s3"\n[dashscope]\nregion = "us"\napi_key = "sk-from-file-999"\n')
    s = Settings.from_config(Config.load(tmp_path))
    assert s.base_url == "https://dashscope-us.aliyuncs.com/api/v1" and s.flash_model == "qwen3-asr-flash-us"
    assert s.filetrans is False  # no filetrans in the US, whatever the staging
    assert "sk-from-file-999" not in redact("key sk-from-file-999")
    (tmp_path / "config.toml").write_text('stage_storage = "s3"\n[dashscope]\nchannels = [0, 1]\n')
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "http://gateway.local/api/v1")
    s = Settings.from_config(Config.load(tmp_path))
    assert s.region == "intl" and s.base_url == "http://gateway.local/api/v1" and s.filetrans is True
    assert s.channels == [0, 1]
    (tmp_path / "config.toml").write_text('[dashscope]\nchannels = "left"\n')
    with pytest.raises(ValueError, match="channel numbers"):
        Settings.from_config(Config.load(tmp_path))
    (tmp_path / "config.toml").write_text('[dashscope]\nregion = "mars"\n')
    with pytest.raises(ValueError, match="region"):
        Settings.from_config(Config.load(tmp_path))


def test_missing_key_is_fatal_before_any_request(double, corpus_src):
    s = Settings(api_key=None, base_url=double.base_url)
    flash = FlashTranscriber(s, Client(None, s.base_url))
    with pytest.raises(FatalError, match="DASHSCOPE_API_KEY"):
        flash.transcribe(Book().request(corpus_src / "podcasts/ferry.webm"))
    assert not double.hits


# ---- channels: each chosen channel transcribed on its own, and billed ----------------------------


@pytest.fixture
def stereo(corpus_src, tmp_path):
    """A real stereo file: the bread-baking talk (English) left, the weather report (Chinese)
    right; 22.5 s (the shorter one)."""
    out = tmp_path / "stereo" / "two voices.opus"
    out.parent.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(corpus_src / "talks/bread_baking.m4a"),
                    "-i", str(corpus_src / "chinese/weather.mp3"), "-filter_complex",
                    "[0:a]aresample=16000,pan=mono|c0=c0[l];[1:a]aresample=16000,pan=mono|c0=c0[r];"
                    "[l][r]amerge=inputs=2[a]", "-map", "[a]", "-c:a", "libopus", "-b:a", "64k", str(out)], check=True)
    assert probe(str(out)).channels == 2
    return out


def expected_by_channel(manifest, length=22.5):
    """The sentences each channel of the stereo file holds (those centred inside it)."""
    return {c: [s["text"] for s in sentence_of(manifest, rel) if (s["start"] + s["end"]) / 2 < length]
            for c, rel in ((0, "talks/bread_baking.m4a"), (1, "chinese/weather.mp3"))}


def texts_by_channel(transcript):
    out: dict = {}
    for s in transcript.segments:
        out.setdefault(s.channel, []).append(s.text)
    return out


def test_flash_transcribes_each_chosen_channel_and_bills_each(double, stereo, manifest):
    flash, _ = engines(double)
    book = Book()
    request = book.request(stereo)
    request.hint = {"channels": [0, 1]}  # a [[hints]] entry
    t = flash.transcribe(request)
    want = expected_by_channel(manifest)
    got = texts_by_channel(t)
    assert set(got) == {0, 1}
    assert " ".join(got[0]) == " ".join(want[0]) and "".join(got[1]).replace(" ", "") == "".join(want[1]).replace(" ", "")
    assert {s.language for s in t.segments if s.channel == 1} == {"zh"}
    assert {d["channel"] for _, _, d in book.charges} == {0, 1} and double.flash_calls == len(book.charges) == 2
    assert double.billed == 2 * 23  # each channel: ceil(22.5 s)
    seconds, cost, note = flash.estimate(request.probe, {"channels": [0, 1]})
    assert abs(seconds - double.billed) / double.billed < 0.05 and "each is billed" in note
    assert flash.estimate(request.probe)[0] == pytest.approx(seconds / 2)  # the mix: once
    assert flash.channels(probe(str(stereo)), {"channels": [1, 5]}) == [1]  # channels the file lacks: dropped


def test_filetrans_sends_channel_id_and_reads_each_channel(double, stereo, manifest):
    _, ft = engines(double, wait_inline=60, channels=[0, 1])
    book = Book()
    t = ft.transcribe(book.request(stereo, double.publish))
    body = next(iter(double.tasks.values()))["body"]
    assert body["parameters"]["channel_id"] == [0, 1]
    want, got = expected_by_channel(manifest), texts_by_channel(t)
    assert got[0] == want[0] and got[1] == want[1]
    assert double.billed == 2 * 23 and book.charges[0][0] == 2 * 23
    assert ft.estimate(probe(str(stereo)))[0] == 2 * 23


def test_channels_per_folder_estimate_and_index(double, e2e, stereo, manifest):
    """[[hints]] channels for one folder: the estimate counts and says it, the index bills each
    channel, and both channels' words are searchable; the folder without it is mixed, billed once."""
    from mediaindex.config import Config
    from mediaindex.models import SearchQuery
    from mediaindex.pipeline import Pipeline

    media, data = e2e
    for sub in ("chinese", "meetings"):
        shutil.rmtree(media / sub)
    (media / "talks/bread_baking.m4a").unlink()
    shutil.move(str(stereo.parent), str(media / "stereo"))
    (data / "config.toml").write_text('transcriber = "dashscope"\n[dashscope]\nrpm = 100000\n'
                                      f'[[hints]]\npath = "{media / "stereo"}"\nchannels = [0, 1]\n')
    est = run_cli("index", str(media), "--data-dir", str(data), "--estimate")
    assert est.exit_code == 0, est.output
    assert "note: qwen3-asr-flash: channels 0, 1 are transcribed one by one: each is billed" in est.output
    estimated = float(next(ln for ln in est.output.splitlines() if ln.startswith("total")).split()[3])
    assert estimated == pytest.approx(2 * (22.5 + 0.5) + 32.862 + 2 * 0.5, abs=1)
    out = run_cli("index", str(media), "--data-dir", str(data))
    assert out.exit_code == 0, out.output
    assert double.billed == 2 * 23 + 34 and abs(estimated - double.billed) / double.billed < 0.05
    p = Pipeline(Config.load(data), transcriber="dashscope")
    try:
        left, right = expected_by_channel(manifest)[0][0], expected_by_channel(manifest)[1][0]
        for text, channel in ((left, 0), (right, 1)):
            hits = p.index.search(SearchQuery(q=text.split()[-1].strip(".,!?。"), limit=20)).hits
            assert any(h.path.endswith("two voices.opus") for h in hits), (text, hits)
        stereo_id = p.state.media_for_path(str(media / "stereo/two voices.opus")).id
        assert {s.channel for s in p.state.get_transcript(stereo_id).segments} == {0, 1}
        assert p.state.total_cost() == pytest.approx((2 * 23 + 34) * 0.000035)
    finally:
        p.close()


# ---- per file: engine, route and cost (status --json, the API, the UI) -----------------------


def index_talk_and_meeting(double, e2e):
    """The space-station talk (flash) and the long meeting (filetrans) indexed through the CLI."""
    media, data = e2e
    shutil.rmtree(media / "chinese")
    (media / "talks/bread_baking.m4a").unlink()
    out = run_cli("index", str(media), "--data-dir", str(data))
    assert out.exit_code == 0, out.output
    assert double.submissions == 1 and double.flash_calls == 2
    return media, data


def test_status_and_api_show_engine_route_and_cost_per_file(double, e2e):
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.server import start_server

    media, data = index_talk_and_meeting(double, e2e)
    status = json.loads(run_cli("status", "--data-dir", str(data), "--json").output)
    files = {Path(f["path"]).name: f for f in status["spent_by_file"]}
    assert set(files) == {"long_meeting.mp3", "space_station.mp3"} and status["spent_files"] == 2
    meeting, talk = files["long_meeting.mp3"], files["space_station.mp3"]
    assert meeting["route"] == "filetrans" and meeting["model"] == "qwen3-asr-flash-filetrans"
    assert meeting["engine"].startswith("qwen3-asr-flash-filetrans") and meeting["seconds"] == 734
    assert meeting["cost"] == pytest.approx(734 * 0.000035)
    assert talk["route"] == "flash" and talk["model"] == "qwen3-asr-flash" and talk["seconds"] == 34
    assert talk["cost"] == pytest.approx(34 * 0.000035)
    assert sum(f["cost"] for f in files.values()) == pytest.approx(status["spent"], abs=1e-4)

    p = Pipeline(Config.load(data), transcriber="dashscope")
    handle = start_server(p, port=0)
    try:
        api = httpx.Client(base_url=handle.url, timeout=30)
        assert api.get("/api/status").json()["spent_by_file"] == status["spent_by_file"]
        items = {i["title"]: i for i in api.get("/api/media").json()["items"]}
        assert items["long_meeting"]["route"] == "filetrans" and items["space_station"]["route"] == "flash"
        assert items["long_meeting"]["cost"] == pytest.approx(meeting["cost"])
        one = api.get(f"/api/media/{items['long_meeting']['id']}").json()
        assert one["transcript"]["route"] == "filetrans" and one["cost"] == pytest.approx(meeting["cost"])
    finally:
        handle.stop()
        p.close()


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium is missing")
def test_library_and_recording_page_show_route_and_cost(double, e2e):
    from playwright.sync_api import sync_playwright

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.server import start_server

    media, data = index_talk_and_meeting(double, e2e)
    p = Pipeline(Config.load(data), transcriber="dashscope")
    handle = start_server(p, port=0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio"])
            pg = browser.new_page(viewport={"width": 1280, "height": 860})
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(handle.url)
            row = pg.locator("#library-list .lib-open", has_text="long_meeting")
            row.wait_for()
            meta = row.locator(".lib-meta").inner_text()
            assert "filetrans" in meta and f"cost {734 * 0.000035:.4f}" in meta, meta
            talk = pg.locator("#library-list .lib-open", has_text="space_station").locator(".lib-meta").inner_text()
            assert " flash " in f" {talk} ".replace("·", " ") and f"cost {34 * 0.000035:.4f}" in talk, talk
            mid = p.state.media_for_path(str(media / "meetings/long_meeting.mp3")).id
            pg.goto(f"{handle.url}m/{mid}")
            pg.wait_for_function("() => document.getElementById('media-meta').textContent.includes('filetrans')")
            meta = pg.locator("#media-meta").inner_text()
            assert "qwen3-asr-flash-filetrans filetrans" in meta and f"cost {734 * 0.000035:.4f}" in meta, meta
            assert not errors, errors
            browser.close()
    finally:
        handle.stop()
        p.close()
