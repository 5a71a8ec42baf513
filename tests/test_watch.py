"""Watch mode (issue 4): real files, the real watchdog observer, real SQLite, the manifest engine.

Conditions are polled with timeouts (never fixed sleeps for correctness); stability delays are
short (0.5-1 s) to keep the file fast.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediaindex.models import SearchQuery
from mediaindex.state import JobQueue
from mediaindex.watch import Watcher
from mediaindex.watch_cli import WatchProgress

VENV_BIN = Path(sys.executable).parent


def wait_for(pred, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def hit_paths(pipeline, q: str) -> set[str]:
    return {h.path for h in pipeline.index.search(SearchQuery(q=q, limit=50)).hits}


def copy(corpus_src: Path, rel: str, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(corpus_src / rel, dst)
    return dst


@pytest.fixture
def library(tmp_path, corpus_src) -> Path:
    """A small library: two talks and two podcasts."""
    lib = tmp_path / "lib"
    copy(corpus_src, "talks/bread_baking.m4a", lib / "talks" / "bread_baking.m4a")
    copy(corpus_src, "video/chess_openings.mkv", lib / "talks" / "chess_openings.mkv")
    copy(corpus_src, "podcasts/ferry.webm", lib / "podcasts" / "ferry.webm")
    copy(corpus_src, "podcasts/lighthouse.opus", lib / "podcasts" / "lighthouse.opus")
    return lib


@pytest.fixture
def start_watcher(make_pipeline, manifest_transcriber):
    made = []

    def start(roots, **kw):
        pipeline = make_pipeline()
        opts = {"stable": 0.5, "rescan": None, "workers": 2, "root_check": 0.3, **kw}
        w = Watcher(pipeline, [str(r) for r in roots], **opts)
        made.append(w)
        w.start()
        assert w.wait_idle(30), "initial scan did not finish"
        return w

    yield start
    for w in made:
        w.stop(grace=5)


# ---- stability ---------------------------------------------------------------------------------


def test_slow_copy_is_indexed_once_after_it_is_complete(start_watcher, library, corpus_src):
    w = start_watcher([library], stable=1.0)
    pipeline = w.pipeline
    engine = pipeline.transcribers["manifest"]
    before = pipeline.state.transcription_count()
    assert before == 4 and hit_paths(pipeline, "sourdough starter")

    data = (corpus_src / "talks" / "space_station.mp3").read_bytes()
    target = library / "talks" / "space_station.mp3"
    chunks = 8
    step = len(data) // chunks + 1
    with open(target, "wb") as f:  # a slow copy: 8 chunks, 0.4 s apart (3 s in all)
        for i in range(chunks):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            time.sleep(0.4)
            assert pipeline.state.get_file(str(target)) is None, "a half-written file was queued"
    finished = time.monotonic()
    wait_for(lambda: hit_paths(pipeline, "lettuce chamber"), what="the copied file to be searchable")
    latency = time.monotonic() - finished
    assert w.wait_idle(10)
    assert pipeline.state.transcription_count() == before + 1
    assert engine.calls.count(str(target)) == 1  # the engine saw it once, complete
    assert pipeline.state.get_file(str(target)).status == "indexed"
    assert latency < 1.0 + 3.0, latency  # stability delay + slack for a busy 2-core machine


def test_temporaries_hidden_and_non_media_are_ignored(start_watcher, library, corpus_src):
    w = start_watcher([library])
    pipeline = w.pipeline
    (library / "notes.txt").write_text("not media")
    (library / "blob.bin").write_bytes(os.urandom(4096))  # unknown type: probed, then ignored
    copy(corpus_src, "podcasts/nested/deeper/gardening.flac", library / ".hidden" / "gardening.flac")
    copy(corpus_src, "talks/space_station.mp3", library / "space.mp3.part")
    copy(corpus_src, "chinese/weather.mp3", library / "weather.mp3.crdownload")
    assert w.wait_idle(15)
    wait_for(lambda: pipeline.state.get_file(str(library / "blob.bin")), what="blob.bin to be probed")
    assert pipeline.state.get_file(str(library / "blob.bin")).status == "ignored"
    for name in ("notes.txt", ".hidden/gardening.flac", "space.mp3.part", "weather.mp3.crdownload"):
        assert pipeline.state.get_file(str(library / name)) is None, name
    assert pipeline.state.transcription_count() == 4
    # the download finishes: the browser renames it, and only then is it indexed
    os.rename(library / "space.mp3.part", library / "space.mp3")
    wait_for(lambda: hit_paths(pipeline, "lettuce") == {str(library / "space.mp3")}, what="renamed download")
    assert pipeline.state.summary()["files"]["failed"] == 0


# ---- moves, copies, deletes, modifications ------------------------------------------------------


def test_rename_move_copy_delete_modify(start_watcher, library, corpus_src):
    w = start_watcher([library])
    p = w.pipeline
    st = p.state
    n0 = st.transcription_count()
    old = library / "talks" / "bread_baking.m4a"
    media_id = st.get_file(str(old)).media_id

    # rename within a folder: same media, new path, no new transcription
    renamed = library / "talks" / "bread.m4a"
    os.rename(old, renamed)
    wait_for(lambda: hit_paths(p, "sourdough starter") == {str(renamed)}, what="rename")
    assert st.get_file(str(old)) is None and st.get_file(str(renamed)).media_id == media_id
    # move across folders
    moved = library / "podcasts" / "kitchen" / "bread.m4a"
    moved.parent.mkdir()
    os.rename(renamed, moved)
    wait_for(lambda: hit_paths(p, "sourdough starter") == {str(moved)}, what="move across folders")
    assert st.paths_of(media_id) == [str(moved)]
    # copy: a second path of the same media
    dup = library / "talks" / "bread copy.m4a"
    shutil.copy2(moved, dup)
    wait_for(lambda: sorted(st.paths_of(media_id)) == sorted([str(moved), str(dup)]), what="copy")
    assert w.wait_idle(10)
    assert st.transcription_count() == n0, "a move, rename or copy must not transcribe again"
    assert st.get_media(media_id).status == "indexed"
    # delete one copy: the media stays (other path); delete both: gone from the index
    os.remove(moved)
    wait_for(lambda: st.paths_of(media_id) == [str(dup)], what="delete of one copy")
    wait_for(lambda: hit_paths(p, "sourdough starter") == {str(dup)}, what="the index follows the state")
    os.remove(dup)
    wait_for(lambda: not hit_paths(p, "sourdough starter"), what="delete")
    assert st.get_media(media_id) is None and media_id not in p.index.media_ids()
    # modify: new content at the same path is re-indexed (old words gone, new words found)
    ferry = library / "podcasts" / "ferry.webm"
    assert hit_paths(p, "dolphins jumping") == {str(ferry)}
    data = (corpus_src / "video" / "volcano_lecture.mp4").read_bytes()
    with open(ferry, "wb") as f:
        f.write(data)
    wait_for(lambda: hit_paths(p, "volcano erupt") == {str(ferry)}, what="modified file re-indexed")
    wait_for(lambda: not hit_paths(p, "dolphins jumping"), what="old content gone")
    assert w.wait_idle(10)
    assert st.transcription_count() == n0 + 1
    assert st.summary()["files"]["failed"] == 0


def test_folder_moved_in_and_out(start_watcher, library, corpus_src, tmp_path):
    w = start_watcher([library])
    p = w.pipeline
    outside = tmp_path / "outside" / "show"
    copy(corpus_src, "podcasts/nested/deeper/gardening.flac", outside / "deep" / "gardening.flac")
    copy(corpus_src, "chinese/weather.mp3", outside / "weather.mp3")
    copy(corpus_src, "podcasts/episode 07 - café & crème (draft).ogg", outside / "café.ogg")
    inside = library / "show"
    os.rename(outside, inside)
    wait_for(lambda: hit_paths(p, "marigolds pests") == {str(inside / "deep" / "gardening.flac")},
             what="moved-in folder")
    wait_for(lambda: hit_paths(p, "espresso Naples") == {str(inside / "café.ogg")}, what="moved-in folder")
    wait_for(lambda: hit_paths(p, "天气"), what="moved-in folder (Chinese)")
    assert w.wait_idle(10)
    assert len(list(p.state.files_under(str(inside)))) == 3
    # a folder moved within the root: every file keeps its media, paths follow
    n = p.state.transcription_count()
    renamed = library / "archive"
    os.rename(inside, renamed)
    wait_for(lambda: hit_paths(p, "marigolds pests") == {str(renamed / "deep" / "gardening.flac")},
             what="renamed folder")
    # moved out of the root: removed from the index
    os.rename(renamed, tmp_path / "gone")
    wait_for(lambda: not hit_paths(p, "marigolds pests") and not hit_paths(p, "espresso Naples"),
             what="moved-out folder removed")
    assert w.wait_idle(10)
    assert p.state.transcription_count() == n
    assert not list(p.state.files_under(str(library / "archive")))
    assert hit_paths(p, "sourdough starter")  # the rest is untouched


def test_root_under_a_hidden_folder(start_watcher, tmp_path, corpus_src):
    lib = tmp_path / ".local" / "media"
    copy(corpus_src, "talks/bread_baking.m4a", lib / "bread.m4a")
    w = start_watcher([lib])
    p = w.pipeline
    assert hit_paths(p, "sourdough starter") == {str(lib / "bread.m4a")}
    copy(corpus_src, "podcasts/ferry.webm", lib / "ferry.webm")
    copy(corpus_src, "podcasts/lighthouse.opus", lib / ".cache" / "lighthouse.opus")  # hidden inside
    wait_for(lambda: hit_paths(p, "dolphins") == {str(lib / "ferry.webm")}, what="new file")
    w.request_rescan()
    assert w.wait_idle(10)
    assert hit_paths(p, "sourdough starter") and hit_paths(p, "dolphins") and not hit_paths(p, "lighthouse")


def test_polling_observer(start_watcher, library, corpus_src):
    w = start_watcher([library], poll=0.3)
    p = w.pipeline
    copy(corpus_src, "talks/space_station.mp3", library / "new" / "space.mp3")
    wait_for(lambda: hit_paths(p, "lettuce") == {str(library / "new" / "space.mp3")}, what="polled new file")
    os.remove(library / "podcasts" / "ferry.webm")
    wait_for(lambda: not hit_paths(p, "dolphins"), what="polled delete")


def test_rescan_catches_missed_changes(start_watcher, library, corpus_src):
    w = start_watcher([library])
    p = w.pipeline
    # simulate a missed event: stop the observer, change the disk, then rescan
    w._stop_observer()
    copy(corpus_src, "talks/space_station.mp3", library / "space.mp3")
    os.remove(library / "podcasts" / "ferry.webm")
    time.sleep(0.2)
    assert not hit_paths(p, "lettuce")
    w.request_rescan()
    wait_for(lambda: hit_paths(p, "lettuce") and not hit_paths(p, "dolphins"), what="rescan")


# ---- offline roots -----------------------------------------------------------------------------


def test_offline_root_keeps_its_entries(start_watcher, library, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    w = start_watcher([library, other])
    p = w.pipeline
    assert hit_paths(p, "sourdough starter")
    away = tmp_path / "unmounted"
    os.rename(library, away)  # the drive goes away
    wait_for(lambda: p.state.roots().get(str(library)) == "offline", what="root offline")
    assert w.wait_idle(10)
    time.sleep(1.0)  # give a wrong removal every chance to happen
    assert hit_paths(p, "sourdough starter") == {str(library / "talks" / "bread_baking.m4a")}
    assert len(list(p.state.files_under(str(library)))) == 4
    assert {"path": str(library), "status": "offline"} in p.state.summary()["roots"]
    os.remove(away / "podcasts" / "ferry.webm")  # changed while offline
    os.rename(away, library)  # and back: rescanned
    wait_for(lambda: p.state.roots().get(str(library)) == "online", what="root online")
    wait_for(lambda: not hit_paths(p, "dolphins"), what="rescan after coming back")
    assert hit_paths(p, "sourdough starter")
    assert p.state.transcription_count() == 4


def test_missing_root_at_start_is_offline_and_empty_root_is_not_purged(start_watcher, library, tmp_path):
    w = start_watcher([library])
    p = w.pipeline
    w.stop()
    # restart while the "drive" is not mounted: the mount point exists but is empty
    away = tmp_path / "unmounted"
    os.rename(library, away)
    library.mkdir()
    w2 = start_watcher([library])
    assert p.state.roots()[str(library)] == "offline"
    assert len(list(w2.pipeline.state.files_under(str(library)))) == 4
    assert hit_paths(w2.pipeline, "sourdough starter")


def test_data_dir_inside_a_watched_folder_is_never_scanned(start_watcher, library, data_dir, tmp_path, corpus_src):
    """The state database's own writes must not be queued (and re-queued) as media."""
    logs: list[str] = []
    w = start_watcher([tmp_path], log=logs.append)  # holds both lib/ and data/
    p = w.pipeline
    assert f"warning: {data_dir} is the data dir (or inside it): never scanned; " \
           "better keep it outside the watched folders" in logs
    copy(corpus_src, "talks/space_station.mp3", library / "space_station.mp3")  # writes the database
    wait_for(lambda: hit_paths(p, "cupola window"), what="the new file to be indexed")
    assert w.wait_idle(15)
    assert list(p.state.files_under(str(data_dir))) == []
    assert p.state.jobs.pending() == 0 and p.state.transcription_count() == 5


# ---- failures ----------------------------------------------------------------------------------


def test_transient_failure_is_retried(start_watcher, library, monkeypatch):
    monkeypatch.setattr(JobQueue, "BACKOFF_BASE", 0.5)
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_FAIL_ONCE", "lighthouse.opus")
    w = start_watcher([library])
    p = w.pipeline
    path = str(library / "podcasts" / "lighthouse.opus")
    wait_for(lambda: hit_paths(p, "lighthouse keeper") == {path}, what="the retry to succeed")
    assert w.wait_idle(10, include_retries=True)
    assert p.state.get_file(path).status == "indexed"
    assert p.transcribers["manifest"].calls.count(path) == 2
    assert p.state.summary()["files"]["failed"] == 0


def test_a_watcher_retries_files_whose_failure_cause_is_gone_when_it_starts(start_watcher, library, monkeypatch):
    monkeypatch.setattr(JobQueue, "BACKOFF_BASE", 0.01)
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_FAIL_ALWAYS", "lighthouse.opus")
    path = str(library / "podcasts" / "lighthouse.opus")
    w = start_watcher([library])
    wait_for(lambda: w.pipeline.state.get_file(path).status == "failed", what="the retries to run out")
    w.stop(grace=5)
    monkeypatch.delenv("MEDIAINDEX_MANIFEST_FAIL_ALWAYS")  # the service is back
    logs: list[str] = []
    w = start_watcher([library], log=logs.append)
    wait_for(lambda: w.pipeline.state.get_file(path).status == "indexed", what="the file to be retried")
    assert "trying again 1 failed file(s) whose cause may be gone" in logs
    assert hit_paths(w.pipeline, "lighthouse keeper") == {path}


def test_a_path_that_settles_as_a_symlink_loop_never_holds_up_the_others(start_watcher, library, corpus_src):
    """ELOOP from stat made the whole batch stay pending forever, even past rescans."""
    logs: list[str] = []
    w = start_watcher([library], log=logs.append)
    p = w.pipeline
    loop = library / "new" / "a_loop.mp3"
    copy(corpus_src, "talks/space_station.mp3", loop)  # a regular file when first seen...
    copy(corpus_src, "chinese/weather.mp3", library / "new" / "b.mp3")
    copy(corpus_src, "music/instrumental.mp3", library / "new" / "c.mp3")
    copy(corpus_src, "podcasts/nested/deeper/gardening.flac", library / "new" / "d.flac")
    os.remove(loop)
    os.symlink(loop.name, loop)  # ... that settles as a link to itself
    assert w.wait_idle(20), "paths stayed pending"
    for name in ("b.mp3", "c.mp3", "d.flac"):
        assert p.state.get_file(str(library / "new" / name)).status == "indexed", name
    assert p.state.get_file(str(loop)) is None
    assert f"skipped: {loop}: cannot read: Too many levels of symbolic links" in logs
    w.request_rescan()
    assert w.wait_idle(20)
    assert p.state.jobs.pending() == 0 and p.state.transcription_count() == 7


def test_permanent_failure_is_recorded_and_watch_goes_on(start_watcher, library, corpus_src):
    w = start_watcher([library])
    p = w.pipeline
    copy(corpus_src, "broken/truncated.mp3", library / "broken.mp3")
    wait_for(lambda: (p.state.get_file(str(library / "broken.mp3")) or 0) and
             p.state.get_file(str(library / "broken.mp3")).status == "failed", what="failure recorded")
    copy(corpus_src, "talks/space_station.mp3", library / "space.mp3")
    wait_for(lambda: hit_paths(p, "lettuce"), what="next file indexed")
    assert w.wait_idle(10, include_retries=True)


def test_fatal_error_stops_the_watch_and_keeps_the_job(start_watcher, tmp_path, corpus_src, monkeypatch):
    """A missing model or a full disk is not a per-file failure: the watch stops (it used to retry
    every file every 5 s forever, each release giving the attempt back) and the job stays queued."""
    from mediaindex.backends import FatalError

    lib = tmp_path / "lib"
    lib.mkdir()
    w = start_watcher([lib])
    p = w.pipeline
    calls = []

    def broken(request):
        calls.append(request.path)
        raise FatalError("the Whisper model is damaged: reinstall it")

    monkeypatch.setattr(p.transcribers["manifest"], "transcribe", broken)
    copy(corpus_src, "talks/space_station.mp3", lib / "space.mp3")
    wait_for(lambda: w.fatal is not None, what="the watcher to stop on a fatal error")
    assert isinstance(w.fatal, FatalError)
    w.stop(grace=5)
    assert len(calls) == 1
    row = p.state.conn.execute("SELECT status, attempts FROM jobs WHERE path = ?", (str(lib / "space.mp3"),)).fetchone()
    assert tuple(row) == ("queued", 0)  # redone on the next start, no attempt used up
    assert p.state.get_file(str(lib / "space.mp3")).status != "failed"


# ---- progress output ---------------------------------------------------------------------------


class _Stream:
    def __init__(self, tty):
        self.parts, self.tty = [], tty

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass

    def isatty(self):
        return self.tty

    @property
    def text(self):
        return "".join(self.parts)


def test_progress_plain_lines_and_tty_status_line():
    plain = _Stream(False)
    prog = WatchProgress(lambda: None, stream=plain)
    prog.started("/m/a.mp3", 60.0)
    prog.progress("/m/a.mp3", 30.0, 60.0)
    prog.finished("/m/a.mp3", "indexed", None)
    prog.finished("/m/b.mp3", "failed", "no audio stream")
    lines = plain.text.splitlines()
    assert "\r" not in plain.text and len(lines) == 3
    assert lines[1].endswith("indexed: /m/a.mp3") and "failed: /m/b.mp3: no audio stream" in lines[2]

    tty = _Stream(True)
    prog = WatchProgress(lambda: None, stream=tty)
    prog.started("/m/c.mp3", 60.0)
    prog.progress("/m/c.mp3", 45.0, 60.0)
    prog._draw()
    for i in range(50):  # each file indexed gets a line above the status line
        prog.finished(f"/m/{i}.mp3", "indexed", None)
    assert tty.text.count("\n") == 50 and "indexed: /m/49.mp3" in tty.text
    assert "c.mp3  75%" in prog.status_line() and "50 done" in prog.status_line()
    prog.finished("/m/bad.mp3", "failed", "corrupt")
    assert tty.text.count("\n") == 51 and "failed: /m/bad.mp3: corrupt" in tty.text
    assert "1 failed" in prog.status_line()
    # the file is fixed and indexed: it no longer counts as failed (as in `mediaindex status`)
    prog.finished("/m/bad.mp3", "indexed", None)
    assert "0 failed" in prog.status_line() and "51 done" in prog.status_line()
    prog.stop()


# ---- the CLI in a subprocess: kill -9, restart, SIGTERM -----------------------------------------


def _watch_proc(root, data_dir, plugin_env, log, delay=0.0, workers=2, grace=3):
    """`mediaindex watch` in a subprocess with the installed test transcriber (plugin_env is
    what the installed_manifest_plugin fixture returns)."""
    env = {**plugin_env, "MEDIAINDEX_MANIFEST_DELAY": str(delay), "PYTHONUNBUFFERED": "1"}
    env.pop("MEDIAINDEX_MANIFEST_FAIL_ONCE", None)
    return subprocess.Popen([str(VENV_BIN / "mediaindex"), "watch", str(root), "--data-dir", str(data_dir),
                             "--no-serve", "--transcriber", "manifest", "--stable", "0.5",
                             "--workers", str(workers), "--grace", str(grace)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _db(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    return conn


def _count(path, sql, args=()):
    if not Path(path).exists():
        return 0
    conn = _db(path)
    try:
        return conn.execute(sql, args).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_kill_9_then_restart_indexes_every_file_exactly_once(installed_manifest_plugin, corpus, corpus_src,
                                                             manifest, data_dir, tmp_path):
    state_db, index_db = data_dir / "state.sqlite3", data_dir / "index.sqlite3"
    speech = {e["path"]: e for e in manifest["files"] if e["kind"] in ("speech", "music")
              and (corpus / e["path"]).exists()}
    log = open(tmp_path / "watch.log", "wb")
    proc = _watch_proc(corpus, data_dir, installed_manifest_plugin, log, delay=0.7)
    try:
        wait_for(lambda: _count(state_db, "SELECT COUNT(*) FROM ledger") >= 2, timeout=40,
                 what="a few files transcribed")
        assert _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued','running')") > 0
    finally:
        proc.kill()  # kill -9, mid-batch
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    proc = _watch_proc(corpus, data_dir, installed_manifest_plugin, log)
    try:
        def done():
            n = _count(state_db, "SELECT COUNT(*) FROM files WHERE status IN ('indexed','failed','ignored')")
            total = _count(state_db, "SELECT COUNT(*) FROM files")
            jobs = _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued','running')")
            return n == total and total >= len(speech) and jobs == 0
        wait_for(done, timeout=60, what="everything indexed after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    assert proc.returncode == 0, (tmp_path / "watch.log").read_text()
    st, ix = _db(state_db), _db(index_db)
    try:
        for rel, entry in speech.items():
            path = str(corpus / rel)
            row = st.execute("SELECT media_id, status FROM files WHERE path = ?", (path,)).fetchone()
            assert row and row[1] == "indexed", (rel, row)
            assert st.execute("SELECT COUNT(*) FROM ledger WHERE media_id = ?", (row[0],)).fetchone()[0] == 1, rel
            docs = ix.execute("SELECT COUNT(*) FROM docs WHERE media_id = ? AND source = 'asr'",
                              (row[0],)).fetchone()[0]  # the engine's segments (music moments aside)
            assert docs == len(entry["sentences"]), (rel, docs)  # no duplicate, none missing
        broken = st.execute("SELECT COUNT(*) FROM files WHERE path LIKE ? AND status = 'failed'",
                            (str(corpus / "broken") + "/%",)).fetchone()[0]
        assert broken >= 3
        assert ix.execute("SELECT COUNT(DISTINCT media_id) FROM docs WHERE source = 'asr'").fetchone()[0] == \
            sum(1 for e in speech.values() if e["sentences"])
    finally:
        st.close()
        ix.close()


@contextlib.contextmanager
def _watcher_mid_job(library, data_dir, plugin_env, tmp_path, **kw):
    """A `mediaindex watch` subprocess, handed over once a job is running; killed if still alive
    at the end. Its output is in tmp_path / "watch.log"."""
    state_db = data_dir / "state.sqlite3"
    with open(tmp_path / "watch.log", "wb") as log:
        proc = _watch_proc(library, data_dir, plugin_env, log, **kw)
        try:
            wait_for(lambda: _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status = 'running'") >= 1,
                     timeout=30, what="a running job")
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_sigterm_stops_cleanly(installed_manifest_plugin, library, corpus_src, data_dir, tmp_path):
    state_db = data_dir / "state.sqlite3"
    with _watcher_mid_job(library, data_dir, installed_manifest_plugin, tmp_path, delay=3, workers=1) as proc:
        # a second watcher on the same data dir is refused (it would re-run the first one's jobs)
        with open(tmp_path / "second.log", "wb") as log2:
            second = _watch_proc(library, data_dir, installed_manifest_plugin, log2)
            assert second.wait(20) == 2
        assert "already using" in (tmp_path / "second.log").read_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        took = time.monotonic() - t0
    out = (tmp_path / "watch.log").read_text()
    assert proc.returncode == 0, out
    assert took < 3 + 3, took  # the running job finishes (or is released) within the grace period
    assert "stopping" in out
    assert _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 0
    assert _count(state_db, "SELECT COUNT(*) FROM files WHERE status = 'running'") == 0
    assert _count(state_db, "SELECT COUNT(*) FROM ledger") >= 1


def test_second_ctrl_c_exits_at_once_and_puts_jobs_back(installed_manifest_plugin, library, corpus_src, data_dir,
                                                        tmp_path):
    state_db = data_dir / "state.sqlite3"
    with _watcher_mid_job(library, data_dir, installed_manifest_plugin, tmp_path, delay=60, workers=1, grace=60) as proc:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None, "the first Ctrl-C waits for running jobs (grace period)"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        took = time.monotonic() - t0
    out = (tmp_path / "watch.log").read_text()
    assert proc.returncode == 130, out
    assert took < 5, took
    assert "put back in the queue" in out
    assert _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 0
    assert _count(state_db, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == 4
    assert _count(state_db, "SELECT COUNT(*) FROM files WHERE status = 'failed'") == 0
    assert _count(state_db, "SELECT COUNT(*) FROM ledger") == 0


def test_watch_polls_a_not_ready_file_past_every_attempt_limit_and_indexes_others_meanwhile(
        make_pipeline, tmp_path, corpus_src):
    """watch's one worker (the pipeline's pool) is not held by a file whose cloud task runs: a file
    that arrives meanwhile is indexed, and the waiting one is polled 30 times, then indexed."""
    from mediaindex import NotReady, Transcriber, TranscriberLimits, Transcript, hookimpl
    from mediaindex.plugins import load_plugins

    lib = tmp_path / "lib"
    slow = copy(corpus_src, "talks/space_station.mp3", lib / "space_station.mp3")
    later = lib / "bread_baking.m4a"
    polls, done = [], []

    class Polled(Transcriber):
        name = "polled"
        limits = TranscriberLimits()

        def transcribe(self, request):
            # the task ends after 30 polls, and not before the new file is indexed (by the same,
            # only worker: it must not be held while the task runs)
            if request.path == slow and (len(polls) < 30 or later not in done):
                polls.append(1)
                if len(polls) == 1:  # a new file arrives while the task runs
                    copy(corpus_src, "talks/bread_baking.m4a", later)
                raise NotReady("task running", retry_after=0.02)
            done.append(request.path)
            return Transcript(engine="polled", model="x", segments=[])

    class Plugin:
        @hookimpl
        def register_transcribers(self, register):
            register(Polled())

    load_plugins().register(Plugin(), name="polled-watch-test")
    w = None
    try:
        w = Watcher(make_pipeline(transcriber="polled"), [str(lib)], stable=0.3, rescan=None, workers=1,
                    root_check=0.3)
        w.start()
        wait_for(lambda: w.state.get_file(str(slow)) and w.state.get_file(str(slow)).status == "indexed",
                 timeout=60, what="the polled file indexed")
        wait_for(lambda: w.state.get_file(str(later)) and w.state.get_file(str(later)).status == "indexed",
                 timeout=30, what="the other file indexed")
    finally:
        if w is not None:
            w.stop(grace=5)
        load_plugins().unregister(name="polled-watch-test")
    assert len(polls) >= 30 and done == [later, slow]  # past the 6 attempts a transient error gets


def test_a_running_watch_follows_the_mediaindexignore_file(installed_manifest_plugin, library, corpus_src,
                                                             data_dir, tmp_path):
    """New files that match are left out; an edit of the ignore file takes effect at once: files
    it now leaves out leave the index, files it no longer leaves out are indexed."""
    state_db = data_dir / "state.sqlite3"
    (library / ".mediaindexignore").write_text("*.opus\n")

    def status(path: Path):
        if not state_db.exists():
            return None
        conn = _db(state_db)
        try:
            row = conn.execute("SELECT status FROM files WHERE path = ?", (str(path),)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        return row[0] if row else None

    lighthouse, ferry = library / "podcasts" / "lighthouse.opus", library / "podcasts" / "ferry.webm"
    with open(tmp_path / "watch.log", "wb") as log:
        proc = _watch_proc(library, data_dir, installed_manifest_plugin, log)
        try:
            wait_for(lambda: status(ferry) == "indexed", timeout=40, what="the initial scan")
            assert status(lighthouse) is None
            # while it runs: a new file that matches, and one that does not (the sync point)
            copy(corpus_src, "podcasts/lighthouse.opus", library / "new" / "keeper.opus")
            copy(corpus_src, "chinese/weather.mp3", library / "new" / "weather.mp3")
            wait_for(lambda: status(library / "new" / "weather.mp3") == "indexed", timeout=30, what="the new file")
            assert status(library / "new" / "keeper.opus") is None
            # the ignore file changes: opus files are in again, the podcasts folder's webm is out
            (library / ".mediaindexignore").write_text("podcasts/*.webm\n")
            wait_for(lambda: status(lighthouse) == "indexed" and status(library / "new" / "keeper.opus") == "indexed",
                     timeout=30, what="the files no longer ignored to be indexed")
            wait_for(lambda: status(ferry) is None, timeout=30, what="the newly ignored file to leave the index")
            assert status(library / "talks" / "bread_baking.m4a") == "indexed"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert proc.returncode == 0, (tmp_path / "watch.log").read_text()
