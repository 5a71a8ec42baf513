"""The whole pipeline on real media: real ffprobe, real SQLite state and index, the test transcriber."""
from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from mediaindex.models import SearchQuery
from mediaindex.scan import excluded_in

pytestmark = pytest.mark.usefixtures("manifest_transcriber")


def index_all(pipeline, *roots):
    pipeline.enqueue_plan(pipeline.plan([str(r) for r in roots]))
    return {os.path.relpath(o.path, roots[0]): o for o in pipeline.run_jobs()}


def search(pipeline, q, **kw):
    return pipeline.index.search(SearchQuery(q=q, **kw))


def speech_files(manifest):
    return [f for f in manifest["files"] if f["kind"] == "speech" and "long_meeting" not in f["path"]]


def test_every_file_indexed_or_clear_error(make_pipeline, corpus, manifest):
    p = make_pipeline()
    outcomes = index_all(p, corpus)
    for f in speech_files(manifest):
        assert outcomes[f["path"]].status == "indexed", outcomes[f["path"]]
    assert outcomes["music/instrumental.mp3"].status == "indexed"  # indexed, with no speech in it
    errors = {f["path"]: outcomes[f["path"]] for f in manifest["files"] if f["kind"] == "broken"}
    assert all(o.status == "failed" for o in errors.values()), errors
    assert "0 bytes" in errors["broken/empty.mp3"].error
    assert "truncated" in errors["broken/truncated.mp3"].error
    assert "not a readable media file" in errors["broken/not_really_video.mp4"].error
    assert "no audio stream" in errors["broken/silent_video.mp4"].error
    assert "notes.txt" not in outcomes  # not media: never even probed
    summary = p.state.summary()
    assert summary["files"]["failed"] == 4
    assert summary["files"]["indexed"] == len(speech_files(manifest)) + 1
    assert {f["path"] for f in summary["failed"]} == {str(corpus / path) for path in errors}


def test_query_from_a_sentence_lands_inside_it(make_pipeline, corpus, manifest):
    p = make_pipeline()
    index_all(p, corpus)
    checked = 0
    for f in speech_files(manifest):
        if f["language"] != "en":
            continue
        for s in f["sentences"]:
            words = [w.strip(".,!?") for w in s["text"].split()]
            query = " ".join(words[2:5])  # a few words from inside the sentence
            result = search(p, query)
            hit = next((h for h in result.hits if h.path == str(corpus / f["path"])), None)
            assert hit is not None, (query, [h.path for h in result.hits])
            assert s["start"] - 1 <= hit.time <= s["end"] + 1, (query, hit.time, s)
            checked += 1
    assert checked >= 20


def test_jump_time_is_the_first_matched_word(make_pipeline, corpus, manifest):
    p = make_pipeline()
    index_all(p, corpus)
    hit = search(p, "hurricanes").hits[0]
    s = next(s for s in manifest["files"][0]["sentences"] if "hurricanes" in s["text"])
    # "hurricanes" is the 8th of 11 words: its time is well after the sentence start
    assert hit.time > s["start"] + (s["end"] - s["start"]) / 2
    assert hit.time <= s["end"]


def test_move_keeps_transcript(make_pipeline, corpus):
    p = make_pipeline()
    index_all(p, corpus)
    before = p.state.transcription_count()
    src = corpus / "talks" / "space_station.mp3"
    dst_dir = corpus / "archive" / "2024"
    dst_dir.mkdir(parents=True)
    dst = dst_dir / "renamed.mp3"
    shutil.move(src, dst)
    outcomes = index_all(p, corpus)
    assert outcomes["archive/2024/renamed.mp3"].status == "indexed"
    assert not outcomes["archive/2024/renamed.mp3"].transcribed
    assert p.state.transcription_count() == before  # no second transcription
    hits = search(p, "cupola window").hits
    assert [h.path for h in hits] == [str(dst)]


def test_copy_is_a_second_path_of_the_same_media(make_pipeline, corpus):
    p = make_pipeline()
    index_all(p, corpus)
    before = p.state.transcription_count()
    src = corpus / "podcasts" / "ferry.webm"
    shutil.copy2(src, corpus / "ferry copy.webm")
    index_all(p, corpus)
    assert p.state.transcription_count() == before
    media_id = p.state.get_file(str(src)).media_id
    assert p.state.get_file(str(corpus / "ferry copy.webm")).media_id == media_id
    assert sorted(p.state.get_media(media_id).paths) == sorted([str(src), str(corpus / "ferry copy.webm")])
    assert len(search(p, "dolphins jumping").hits) == 1  # one media, not two
    os.remove(src)  # deleting one copy keeps the other searchable
    index_all(p, corpus)
    assert [h.path for h in search(p, "dolphins jumping").hits] == [str(corpus / "ferry copy.webm")]


def test_delete_removes_hits(make_pipeline, corpus):
    p = make_pipeline()
    index_all(p, corpus)
    assert search(p, "sourdough starter").hits
    os.remove(corpus / "talks" / "bread_baking.m4a")
    outcomes = index_all(p, corpus)
    assert outcomes["talks/bread_baking.m4a"].status == "removed"
    assert search(p, "sourdough starter").total == 0
    assert p.state.get_file(str(corpus / "talks" / "bread_baking.m4a")) is None


def test_modified_file_is_reindexed(make_pipeline, corpus):
    p = make_pipeline()
    index_all(p, corpus)
    target = corpus / "talks" / "space_station.mp3"
    old_id = p.state.get_file(str(target)).media_id
    shutil.copy2(corpus / "podcasts" / "ferry.webm", target)  # new content at the same path
    os.remove(corpus / "podcasts" / "ferry.webm")
    os.utime(target, (1, 1))
    index_all(p, corpus)
    assert search(p, "cupola window").total == 0  # the old content left the index
    assert p.state.get_media(old_id) is None
    assert [h.path for h in search(p, "dolphins jumping").hits] == [str(target)]


def test_unchanged_files_are_skipped(make_pipeline, corpus):
    p = make_pipeline()
    index_all(p, corpus)
    plan = p.plan([str(corpus)])
    assert plan.changed == [] and plan.deleted == []
    assert plan.unchanged >= 12  # speech + music + broken files: failed ones are not retried either


def test_chinese_found_by_two_character_word(make_pipeline, corpus, manifest):
    p = make_pipeline()
    index_all(p, corpus)
    zh = next(f for f in manifest["files"] if f["language"] == "zh")
    for word, sentence in (("北京", 0), ("下雨", 1), ("公园", 2)):
        hits = search(p, word).hits
        assert hits, word
        assert hits[0].path == str(corpus / zh["path"])
        s = zh["sentences"][sentence]
        assert s["start"] - 1 <= hits[0].time <= s["end"] + 1
        assert hits[0].language == "zh"


def test_offline_root_keeps_its_entries(make_pipeline, corpus, tmp_path):
    p = make_pipeline()
    index_all(p, corpus)
    hidden = tmp_path / "unmounted"
    corpus.rename(hidden)  # the drive went away
    plan = p.plan([str(corpus)])
    assert plan.offline == [str(corpus)] and plan.deleted == []
    assert p.state.roots()[str(corpus)] == "offline"
    assert search(p, "cupola window").total == 1


def test_empty_root_where_files_were_is_offline_not_purged(make_pipeline, corpus, tmp_path):
    """An unmounted drive leaves its empty mount point behind: not a folder whose files were deleted."""
    p = make_pipeline()
    talks = corpus / "talks"
    index_all(p, talks)
    talks.rename(tmp_path / "unmounted")
    talks.mkdir()  # the mount point, empty
    plan = p.plan([str(talks)])
    assert plan.offline == [str(talks)] and plan.deleted == []
    assert "is the drive mounted?" in plan.offline_why[str(talks)]
    assert p.state.roots()[str(talks)] == "offline"
    assert search(p, "cupola window").total == 1
    (tmp_path / "new").mkdir()  # an empty folder where nothing was indexed is just empty
    assert p.plan([str(tmp_path / "new")]).offline == []


def test_overlapping_roots_are_scanned_once(make_pipeline, corpus):
    p = make_pipeline()
    alone = [f.path for f in p.plan([str(corpus)]).changed]
    plan = p.plan([str(corpus / "talks"), str(corpus), str(corpus / "talks" / "space_station.mp3"),
                   str(corpus) + "/", str(corpus / "broken")])
    assert plan.roots == [str(corpus)]
    assert [f.path for f in plan.changed] == alone


def test_data_dir_inside_a_root_is_never_scanned(make_pipeline, data_dir, corpus, tmp_path):
    p = make_pipeline()  # its state database (and WAL) lives in data_dir, next to the corpus
    link = tmp_path / "link"
    os.symlink(tmp_path, link)  # the same folder under another name: still the data dir
    for root in (tmp_path, link):
        plan = p.plan([str(root)])
        paths = [f.path for f in plan.changed]
        assert str(root / "media" / "talks" / "space_station.mp3") in paths
        assert [path for path in paths if "/data/" in path] == []
        assert plan.excluded == [str(root / "data")]
    plan = p.plan([str(data_dir)])  # the data dir itself: nothing in it is media
    assert plan.changed == [] and plan.excluded == [str(data_dir)]
    assert excluded_in(str(tmp_path.parent), [str(tmp_path / ".local" / "data")]) == []  # hidden: never entered


def test_transient_error_is_retried(make_pipeline, corpus, monkeypatch):
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_FAIL_ONCE", "lighthouse.opus")
    monkeypatch.setattr("mediaindex.state.JobQueue.BACKOFF_BASE", 0.2)
    p = make_pipeline()
    p.enqueue_plan(p.plan([str(corpus / "podcasts")]))
    outcomes = p.run_jobs(wait_for_retries=5)
    statuses = [o.status for o in outcomes if o.path.endswith("lighthouse.opus")]
    assert statuses == ["retry", "indexed"]
    assert search(p, "lighthouse keeper").total == 1


def test_reindex_without_retranscribing(make_pipeline, corpus, data_dir):
    p = make_pipeline()
    index_all(p, corpus)
    before = p.state.transcription_count()
    media_id = p.state.get_file(str(corpus / "talks" / "space_station.mp3")).media_id
    p.index.delete(media_id)
    assert search(p, "cupola window").total == 0
    p.reindex(media_id)
    assert search(p, "cupola window").total == 1
    assert p.state.transcription_count() == before


def test_state_is_wal_and_survives_reopen(make_pipeline, corpus, data_dir):
    p = make_pipeline()
    index_all(p, corpus)
    p.close()
    conn = sqlite3.connect(data_dir / "state.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    p2 = make_pipeline()
    assert search(p2, "cupola window").total == 1
    assert p2.plan([str(corpus)]).changed == []


def test_per_folder_hint_reaches_the_transcriber(make_pipeline, corpus, data_dir, manifest_transcriber):
    (data_dir / "config.toml").write_text(
        f'[[hints]]\npath = "{corpus / "chinese"}"\nlanguage = "zh"\nprompt = "天气预报"\n')
    p = make_pipeline()
    seen = []
    t = p.transcribers["manifest"]
    original = t.transcribe
    t.transcribe = lambda req: seen.append((req.path.name, req.language, req.prompt)) or original(req)
    index_all(p, corpus / "chinese", corpus / "talks")
    assert ("weather.mp3", "zh", "天气预报") in seen
    assert ("space_station.mp3", None, None) in seen


def test_full_disk_stops_cleanly_and_loses_nothing(make_pipeline, corpus, monkeypatch):
    import errno

    from mediaindex.pipeline import FatalError

    p = make_pipeline()
    p.enqueue_plan(p.plan([str(corpus / "talks")]))
    original = p.index.upsert

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(p.index, "upsert", full)
    with pytest.raises(FatalError, match="disk full"):
        p.run_jobs()
    assert p.state.jobs.pending() == 2  # both files still queued
    monkeypatch.setattr(p.index, "upsert", original)  # space freed
    outcomes = p.run_jobs()
    assert sorted(o.status for o in outcomes) == ["indexed", "indexed"]
    assert p.state.transcription_count() == 2  # the transcript made before the failure was kept


def test_lost_index_is_rebuilt_from_cached_transcripts(make_pipeline, corpus, data_dir):
    p = make_pipeline()
    index_all(p, corpus)
    count = p.state.transcription_count()
    p.close()
    for f in data_dir.glob("index.sqlite3*"):
        f.unlink()  # the index is gone (deleted, corrupt, a new backend)
    p2 = make_pipeline()
    assert search(p2, "cupola window").total == 0
    rebuilt, dropped = p2.reconcile()
    assert rebuilt == 10 and dropped == 0  # 9 speech files + the music file
    assert search(p2, "cupola window").total == 1
    assert p2.state.transcription_count() == count  # nothing transcribed again


def test_symlink_loop_and_unreadable_folder_never_stop_the_scan(make_pipeline, corpus, monkeypatch):
    os.symlink("loop_b", corpus / "loop_a.mp3")
    os.symlink("loop_a.mp3", corpus / "loop_b")  # a symlink loop: stat fails with ELOOP
    p = make_pipeline()
    outcomes = index_all(p, corpus)
    assert outcomes["talks/space_station.mp3"].status == "indexed"
    plan = p.plan([str(corpus)])
    assert sorted(path for path, _ in plan.unreadable) == [str(corpus / "loop_a.mp3"), str(corpus / "loop_b")]
    # a folder that becomes unreadable is not a folder whose files were deleted
    real_scandir = os.scandir
    talks = str(corpus / "talks")

    def scandir(path):
        if os.fspath(path) == talks:
            raise PermissionError(13, "Permission denied", talks)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    plan = p.plan([str(corpus)])
    assert plan.deleted == []
    assert (talks, "cannot read folder: Permission denied") in plan.unreadable
    index_all(p, corpus)
    assert search(p, "cupola window").total == 1


def test_name_that_is_not_utf8_is_reported_not_fatal(make_pipeline, corpus):
    bad = os.path.join(os.fsencode(corpus / "talks"), b"caf\xe9.mp3")  # Latin-1 bytes in the name
    shutil.copy(corpus / "talks" / "space_station.mp3", bad)
    p = make_pipeline()
    outcomes = index_all(p, corpus)  # used to stop everything with UnicodeEncodeError
    assert outcomes["talks/bread_baking.m4a"].status == "indexed"
    plan = p.plan([str(corpus)])
    assert [(path, "not valid UTF-8" in why) for path, why in plan.unreadable] == [(os.fsdecode(bad), True)]


def test_file_deleted_while_processed_is_removed_not_failed(make_pipeline, corpus, monkeypatch, capsys):
    import mediaindex.pipeline as pipeline_mod

    p = make_pipeline()
    index_all(p, corpus / "talks")
    target = corpus / "talks" / "space_station.mp3"
    os.utime(target, (1, 1))  # changed: queued again
    real_probe = pipeline_mod.probe

    def probe_then_delete(path):
        info = real_probe(path)
        os.remove(path)  # deleted between the probe and the hash
        return info

    monkeypatch.setattr(pipeline_mod, "probe", probe_then_delete)
    outcomes = index_all(p, corpus / "talks")
    assert outcomes["space_station.mp3"].status == "removed"
    assert "Traceback" not in capsys.readouterr().err
    assert p.state.jobs.pending() == 0 and p.state.get_file(str(target)) is None
    assert search(p, "cupola window").total == 0


def test_file_replaced_by_unusable_content_leaves_the_index(make_pipeline, corpus, corpus_src, tmp_path):
    """The old words must not stay searchable under a path whose file now holds something else
    that cannot be indexed (a corrupt file, or media the engine rejects)."""
    import subprocess

    p = make_pipeline()
    index_all(p, corpus / "talks")
    assert search(p, "cupola window").total == 1 and search(p, "sourdough starter").total == 1
    shutil.copy(corpus_src / "broken" / "truncated.mp3", corpus / "talks" / "space_station.mp3")
    tone = tmp_path / "tone.m4a"  # playable media the test engine does not know: rejected (permanent)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(tone)],
                   check=True)
    shutil.copy(tone, corpus / "talks" / "bread_baking.m4a")
    outcomes = index_all(p, corpus / "talks")
    assert outcomes["space_station.mp3"].status == "failed" and outcomes["bread_baking.m4a"].status == "failed"
    assert search(p, "cupola window").total == 0
    assert search(p, "sourdough starter").total == 0
    assert p.state.get_file(str(corpus / "talks" / "space_station.mp3")).media_id is None


class _FamilyEngines:
    """Two engines of one family (short files to one, long to the other) and an enricher."""

    def __init__(self, cost=0.0, delay=0.0):
        import time

        from mediaindex import Transcriber, TranscriberLimits, Transcript, hookimpl

        outer = self
        self.used, self.enriched, self.indexed = [], [], []

        class Engine(Transcriber):
            family = "fake"

            def __init__(self, name, max_duration):
                self.name = name
                self.limits = TranscriberLimits(max_duration=max_duration, paid=cost > 0)

            def estimate_cost(self, probe):
                return cost

            def transcribe(self, request):
                outer.used.append((self.name, request.path.name))
                time.sleep(delay)  # long enough for a second worker to start meanwhile
                return Transcript(engine=self.name, model="x", segments=[], language="en", cost=cost)

        class Plugin:
            @hookimpl
            def register_transcribers(self, register):
                register(Engine("fake-long", None))  # registered first: routing must still pick by limits
                register(Engine("fake-short", 15.0))

            @hookimpl
            def enrich_segments(self, media, path):
                outer.enriched.append(path)

            @hookimpl
            def media_indexed(self, media):
                outer.indexed.append(media.id)

        self.plugin = Plugin()


@pytest.fixture
def family_engines():
    from mediaindex.plugins import load_plugins

    def register(cost=0.0, delay=0.0):
        engines = _FamilyEngines(cost, delay)
        load_plugins().register(engines.plugin, name="fake-family")
        return engines

    yield register
    load_plugins().unregister(name="fake-family")


@pytest.mark.hook("register_transcribers", "enrich_segments", "media_indexed")
def test_family_routes_each_file_by_duration(make_pipeline, corpus, family_engines):
    engines = family_engines()
    p = make_pipeline(transcriber="fake")
    p.enqueue_plan(p.plan([str(corpus / "podcasts" / "ferry.webm"), str(corpus / "talks" / "space_station.mp3")]))
    assert {o.status for o in p.run_jobs()} == {"indexed"}
    assert sorted(engines.used) == [("fake-long", "space_station.mp3"), ("fake-short", "ferry.webm")]
    assert sorted(x.name for x in engines.enriched) == ["ferry.webm", "space_station.mp3"]  # enrichers get the file
    assert len(engines.indexed) == 2


def test_forged_duration_never_reaches_an_engine(make_pipeline, corpus, family_engines, tmp_path):
    """An Ogg file whose last granule claims 1,000x its length fails at the probe: no engine is
    routed, costed or capped on the lie, and the stored error says why."""
    from tests.test_probe import forge_last_granule

    engines = family_engines()
    p = make_pipeline(transcriber="fake")
    forged = corpus / "podcasts" / "forged.opus"
    forge_last_granule(corpus / "podcasts" / "lighthouse.opus", forged, 1000)
    p.enqueue_plan(p.plan([str(forged), str(corpus / "podcasts" / "ferry.webm")]))
    outcomes = {o.path: o for o in p.run_jobs()}
    assert outcomes[str(forged)].status == "failed" and "forged" in outcomes[str(forged)].error
    assert engines.used == [("fake-short", "ferry.webm")]
    assert p.state.get_file(str(forged)).media_id is None


def test_ten_millisecond_clip_is_indexed_not_called_corrupt(make_pipeline, corpus, family_engines):
    import subprocess

    engines = family_engines()
    p = make_pipeline(transcriber="fake")
    clip = corpus / "talks" / "click.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.01", str(clip)],
                   check=True)
    p.enqueue_plan(p.plan([str(clip)]))
    [outcome] = p.run_jobs()
    assert outcome.status == "indexed", outcome.error
    assert engines.used == [("fake-short", "click.mp3")]


def test_spending_cap_stops_paid_work_and_keeps_files_queued(make_pipeline, corpus, data_dir, family_engines):
    from mediaindex.pipeline import BudgetExceeded

    (data_dir / "config.toml").write_text("max_cost = 1.5\n")
    family_engines(cost=1.0)
    p = make_pipeline(transcriber="fake")
    p.enqueue_plan(p.plan([str(corpus / "talks")]))
    with pytest.raises(BudgetExceeded, match="spending cap reached"):
        p.run_jobs()
    assert p.state.total_cost() == 1.0
    assert p.state.jobs.pending() == 1  # the second file waits; it did not fail
    assert p.state.summary()["files"]["failed"] == 0


def test_credentials_never_reach_stored_errors_or_logs(make_pipeline, corpus, data_dir, monkeypatch, capsys):
    """An engine error that echoes the API key is stored and printed with the key removed."""
    from mediaindex.config import Config

    key = "sk-live-0123456789abcdef"
    monkeypatch.setenv("DASHSCOPE_API_KEY", key)
    (data_dir / "config.toml").write_text('[meilisearch]\nmaster_key = "meili-master-abcdef123"\n')
    p = make_pipeline()
    t = p.transcribers["manifest"]

    def leaky(request):
        raise RuntimeError(f"401 for Authorization: Bearer {key} (meili key meili-master-abcdef123)")

    monkeypatch.setattr(t, "transcribe", leaky)
    p.enqueue_plan(p.plan([str(corpus / "talks" / "space_station.mp3")]))
    outcomes = p.run_jobs(max_attempts=1)
    assert outcomes[0].status == "failed"
    stored = p.state.get_file(str(corpus / "talks" / "space_station.mp3")).error
    assert key not in stored and "meili-master" not in stored and "***" in stored
    err = capsys.readouterr().err
    assert "Traceback" in err and key not in err and "meili-master" not in err
    assert key not in repr(Config.load(data_dir)) and "meili-master" not in repr(Config.load(data_dir))


def test_paid_chunks_are_booked_at_once_and_a_retry_resumes_from_the_checkpoint(make_pipeline, corpus, data_dir,
                                                                                 monkeypatch):
    """A paid engine fails after 2 of 3 chunks: the spend is booked, the retry resumes, nothing counts twice."""
    from mediaindex import Transcriber, TranscriberLimits, Transcript, TransientError, hookimpl
    from mediaindex.plugins import load_plugins

    monkeypatch.setattr("mediaindex.state.JobQueue.BACKOFF_BASE", 0.05)
    calls = []

    class Chunked(Transcriber):
        name = "chunked"
        limits = TranscriberLimits(paid=True)

        def estimate_cost(self, probe):
            return 0.9

        def transcribe(self, request):
            done = (request.checkpoint.load() or {}).get("chunks", 0)
            calls.append(done)
            for chunk in range(done, 3):
                if chunk == 2 and len(calls) == 1:
                    raise TransientError("429 Throttling", retry_after=0.05)
                request.charge(10.0, 0.3, {"chunk": chunk})
                request.checkpoint.save({"chunks": chunk + 1})
            return Transcript(engine="chunked", model="x", segments=[], cost=0.9)

    class Plugin:
        @hookimpl
        def register_transcribers(self, register):
            register(Chunked())

    (data_dir / "config.toml").write_text("max_cost = 5\n")
    load_plugins().register(Plugin(), name="chunked-test")
    try:
        p = make_pipeline(transcriber="chunked")
        p.enqueue_plan(p.plan([str(corpus / "talks" / "space_station.mp3")]))
        statuses = [o.status for o in p.run_jobs(wait_for_retries=2)]
    finally:
        load_plugins().unregister(name="chunked-test")
    assert statuses == ["retry", "indexed"]
    assert calls == [0, 2]  # the retry started at the third chunk: the first two were not paid again
    assert p.state.total_cost() == pytest.approx(0.9)  # 0.6 booked before the 429, 0.3 after, no double count
    assert p.state.transcription_count() == 1
    media_id = p.state.get_file(str(corpus / "talks" / "space_station.mp3")).media_id
    assert p.state.get_checkpoint(media_id, "chunked") is None  # dropped with the saved transcript


def test_workers_cannot_overspend_the_cap_together(make_pipeline, corpus, data_dir, family_engines, monkeypatch):
    from mediaindex.pipeline import BudgetExceeded

    (data_dir / "config.toml").write_text("max_cost = 1.5\n")
    engines = family_engines(cost=1.0, delay=1.0)
    p = make_pipeline(transcriber="fake")
    p.enqueue_plan(p.plan([str(corpus / "talks"), str(corpus / "podcasts")]))
    with pytest.raises(BudgetExceeded):
        p.run_jobs(workers=2)
    assert len(engines.used) == 1 and p.state.total_cost() == 1.0


def test_a_not_ready_job_is_polled_50_times_without_failing_and_frees_its_worker(make_pipeline, corpus):
    """A cloud task still running (NotReady) costs no attempt and holds no worker: another file is
    indexed while it waits, and 50 polls later (past every attempt limit) it is indexed, not failed."""
    from mediaindex import NotReady, Transcriber, TranscriberLimits, Transcript, hookimpl
    from mediaindex.plugins import load_plugins

    slow, quick = str(corpus / "talks" / "space_station.mp3"), str(corpus / "talks" / "bread_baking.m4a")
    polls: list[str] = []
    wait = {"s": 3600.0}

    class Polled(Transcriber):
        name = "polled"
        limits = TranscriberLimits()

        def transcribe(self, request):
            if str(request.path) == slow:
                task = request.checkpoint.load()
                if task is None:  # submit once; every later call asks about the same task
                    task = {"task": "t-1"}
                    request.checkpoint.save(task)
                polls.append(task["task"])
                if len(polls) <= 50:
                    raise NotReady("task t-1 is running", retry_after=wait["s"])
            return Transcript(engine="polled", model="x", segments=[])

    class Plugin:
        @hookimpl
        def register_transcribers(self, register):
            register(Polled())

    load_plugins().register(Plugin(), name="polled-test")
    try:
        p = make_pipeline(transcriber="polled")
        p.enqueue_plan(p.plan([slow]))
        p.enqueue_plan(p.plan([quick]))
        first = {o.path: o.status for o in p.run_jobs(workers=1, max_attempts=3)}
        assert first == {slow: "retry", quick: "indexed"}  # the one worker went on to the other file
        attempts = p.state.conn.execute("SELECT attempts FROM jobs WHERE path = ?", (slow,)).fetchone()[0]
        assert attempts == 0 and p.state.get_file(slow).status == "queued"

        wait["s"] = 0.0  # the service now says: ask again at once (as a poll loop would, hours later)
        p.state.jobs.enqueue(slow)
        statuses = [o.status for o in p.run_jobs(workers=1, max_attempts=3)]
    finally:
        load_plugins().unregister(name="polled-test")
    assert statuses == ["retry"] * 49 + ["indexed"]
    assert polls == ["t-1"] * 51  # one task, submitted once, polled until done
    assert p.state.get_file(slow).status == "indexed" and p.state.jobs.pending() == 0


def test_one_file_is_four_state_transactions_named_after_its_steps(make_pipeline, corpus, manifest_transcriber):
    """process_path tells the state what happened (claimed, transcribed, enriched, indexed), one
    transaction each, instead of going back and forth per field; a move is two (claimed, indexed)."""
    p = make_pipeline()
    path = str(corpus / "talks" / "space_station.mp3")
    begins: list[str] = []
    p.state.conn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    assert p.process_path(path).status == "indexed"
    assert len(begins) == 4
    moved = str(corpus / "talks" / "moved.mp3")
    os.rename(path, moved)
    begins.clear()
    assert p.process_path(moved).transcribed is False
    p.state.conn.set_trace_callback(None)
    assert len(begins) == 2
    assert p.state.get_file(moved).status == "indexed" and p.state.get_media(p.state.get_file(moved).media_id).status == "indexed"
