"""The CLI contract: commands, JSON fields and exit codes that scripts depend on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import pytest
from click.testing import CliRunner

from mediaindex.cli import cli

pytestmark = pytest.mark.usefixtures("manifest_transcriber")


def run(*args, code=None):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


@pytest.fixture
def indexed(corpus, data_dir):
    run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    return corpus


def test_index_exit_codes_and_summary(corpus, data_dir):
    good = corpus / "talks"
    r = run("index", str(good), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    assert "2 indexed (2 transcribed)" in r.output and "0 failed" in r.output
    r = run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "failed: " + str(corpus / "broken" / "empty.mp3") + ": " in r.output
    assert "no audio stream" in r.output
    # a second run changes nothing, and still reports the broken files
    r = run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "0 new or changed" in r.output and "4 failed" in r.output


def test_usage_errors_exit_2(corpus, data_dir, tmp_path):
    run("index", str(tmp_path / "nope"), "--data-dir", str(data_dir), code=2)
    r = run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "no-such-engine", code=2)
    assert "unknown transcriber 'no-such-engine'" in r.output
    run("index", str(corpus), "--data-dir", str(data_dir), "--index", "nope", code=2)
    run("search", "x", "--data-dir", str(data_dir), "--limit", "0", code=2)
    run("export", "x", "--format", "doc", "--data-dir", str(data_dir), code=2)


def test_search_json_contract(indexed, data_dir, manifest):
    r = run("search", "robotic arm", "--data-dir", str(data_dir), "--json", code=0)
    out = json.loads(r.output)
    assert out["query"] == "robotic arm" and out["total"] == 1
    hit = out["hits"][0]
    assert set(hit) >= {"media_id", "path", "time", "start", "end", "text", "snippet", "language", "emotion", "kind"}
    assert hit["path"] == str(indexed / "talks" / "space_station.mp3") and os.path.isabs(hit["path"])
    s = manifest["files"][0]["sentences"][2]
    assert s["start"] <= hit["time"] <= s["end"]
    assert "<mark>robotic</mark>" in hit["snippet"] and hit["kind"] == "speech" and hit["language"] == "en"


def test_search_filters(indexed, data_dir):
    def total(*extra):
        return json.loads(run("search", "the", "--data-dir", str(data_dir), "--json", "--limit", "50",
                              *extra).output)["total"]
    everything = total()
    assert everything > 5
    assert total("--lang", "zh") == 0
    assert 0 < total("--path", str(indexed / "video")) < everything
    assert total("--kind", "music") == 0
    assert total("--emotion", "happy") == 0
    month = time.strftime("%Y-%m", time.gmtime(os.stat(indexed / "talks" / "space_station.mp3").st_mtime))
    assert total("--date", month[:4]) == total("--date", month) == everything  # no date tags: the files' month
    assert total("--date", "1999") == 0
    assert "give a year (2024) or a month (2024-03)" in run("search", "the", "--data-dir", str(data_dir),
                                                             "--date", "March", code=2).output


def test_search_human_output(indexed, data_dir):
    r = run("search", "dolphins", "--data-dir", str(data_dir), code=0)
    line = r.output.strip().splitlines()[0]
    assert line.startswith("00:00:0") and "ferry.webm" in line and "[dolphins]" in line
    play = r.output.strip().splitlines()[-1]  # how to play it from there
    assert play.startswith("play the first: ffplay -ss ") and "ferry.webm" in play and "/m/" in play


def test_status_json(indexed, data_dir):
    out = json.loads(run("status", "--data-dir", str(data_dir), "--json", code=0).output)
    assert out["files"]["failed"] == 4 and out["files"]["indexed"] >= 10
    assert {"path", "error"} <= set(out["failed"][0])


def test_status_on_empty_data_dir(tmp_path):
    out = json.loads(run("status", "--data-dir", str(tmp_path / "fresh"), "--json", code=0).output)
    assert out["files"]["total"] == 0 and out["failed"] == []


@pytest.mark.parametrize("fmt,needle", [("srt", "00:00:00,500 --> "), ("vtt", "WEBVTT"), ("txt", "The space station"),
                                        ("json", '"segments"')])
def test_export_formats(indexed, data_dir, fmt, needle):
    path = str(indexed / "talks" / "space_station.mp3")
    r = run("export", path, "--format", fmt, "--data-dir", str(data_dir), code=0)
    assert needle in r.output
    media_id = json.loads(run("search", "cupola", "--data-dir", str(data_dir), "--json").output)["hits"][0]["media_id"]
    assert run("export", media_id, "--format", fmt, "--data-dir", str(data_dir), code=0).output == r.output


def test_export_unknown_media(data_dir):
    r = run("export", "/nowhere/x.mp3", "--data-dir", str(data_dir), code=1)
    assert "not in the index" in r.output


def test_installed_plugin_end_to_end(installed_manifest_plugin, corpus, data_dir):
    """A plugin installed as a real distribution is loaded by entry point and does the work."""
    env = installed_manifest_plugin
    exe = [sys.executable, "-m", "mediaindex"]
    plugins = json.loads(subprocess.run([*exe, "plugins", "--json"], env=env, capture_output=True, text=True,
                                        check=True).stdout)
    mine = next(p for p in plugins if p["name"] == "manifest")
    assert mine["distribution"] == "mediaindex-manifest-transcriber" and mine["version"] == "0.1.0"
    assert mine["hooks"] == ["register_transcribers"]
    r = subprocess.run([*exe, "index", str(corpus / "podcasts"), "--data-dir", str(data_dir),
                        "--transcriber", "manifest"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*exe, "search", "harbour", "--data-dir", str(data_dir), "--json"], env=env,
                       capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["hits"][0]["path"].endswith("(draft).ogg")
    # the allow-list keeps it out
    env2 = dict(env, MEDIAINDEX_LOAD_PLUGINS="")
    plugins = json.loads(subprocess.run([*exe, "plugins", "--json"], env=env2, capture_output=True, text=True,
                                        check=True).stdout)
    assert "manifest" not in {p["name"] for p in plugins}
    assert {"file", "sqlite", "local", "enrich"} <= {p["name"] for p in plugins}


def test_bad_config_and_unusable_data_dir_are_usage_errors(corpus, data_dir, tmp_path):
    (data_dir / "config.toml").write_text("transcriber = \n")
    for args in (["status"], ["status", "--json"], ["index", str(corpus / "talks")], ["search", "x"]):
        r = run(*args, "--data-dir", str(data_dir), code=2)
        assert "config.toml: not valid TOML" in r.output, args
    (data_dir / "config.toml").write_bytes(b'transcriber = "caf\xe9"\n')  # Latin-1, not UTF-8
    assert "not UTF-8" in run("status", "--data-dir", str(data_dir), code=2).output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run("index", str(corpus / "talks"), "--data-dir", str(blocker / "data"), code=2)
    assert "cannot create the data dir" in r.output
    (tmp_path / "dir-as-db").mkdir()
    (tmp_path / "dir-as-db" / "state.sqlite3").mkdir()  # the state database cannot be opened
    r = run("index", str(corpus / "talks"), "--data-dir", str(tmp_path / "dir-as-db"), code=2)
    assert "cannot open the state database" in r.output


def test_offline_root_is_reported_and_the_other_roots_indexed(corpus, data_dir, tmp_path):
    drive = tmp_path / "drive"
    drive.mkdir()
    os.rename(corpus / "talks", drive / "talks")
    run("index", str(drive), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    os.rename(drive, tmp_path / "unmounted")  # the drive went away
    r = run("index", str(drive), str(corpus / "podcasts"), "--data-dir", str(data_dir), "--transcriber", "manifest",
            code=1)
    assert f"offline: {drive}" in r.output and "4 indexed" in r.output
    out = json.loads(run("search", "cupola window", "--data-dir", str(data_dir), "--json", code=0).output)
    assert out["total"] == 1  # the offline drive's files stay in the index
    run("index", str(tmp_path / "never-seen"), "--data-dir", str(data_dir), code=2)  # a typo stays a usage error


def test_unreadable_entries_are_listed_and_exit_1(corpus, data_dir):
    os.symlink("loop.mp3", corpus / "talks" / "loop.mp3")  # points at itself
    r = run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "2 indexed" in r.output
    assert f"skipped: {corpus / 'talks' / 'loop.mp3'}: cannot read: Too many levels of symbolic links" in r.output


def test_index_refuses_while_another_writer_holds_the_data_dir(corpus, data_dir):
    from mediaindex.datalock import lock_data_dir

    held = lock_data_dir(data_dir, "watch")
    try:
        r = run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=2)
        assert "`mediaindex watch` (pid" in r.output and "already using" in r.output
    finally:
        held.close()
    run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)


def test_index_on_an_unmounted_drive_keeps_the_library(corpus, data_dir, tmp_path):
    drive = tmp_path / "drive"
    drive.mkdir()
    os.rename(corpus / "talks", drive / "talks")
    run("index", str(drive), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    os.rename(drive, tmp_path / "away")
    drive.mkdir()  # not mounted: the empty mount point stays
    r = run("index", str(drive), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert f"offline: {drive} (empty, but files were indexed under it: is the drive mounted?; " in r.output
    assert "0 gone" in r.output and "removed" not in r.output
    out = json.loads(run("search", "cupola window", "--data-dir", str(data_dir), "--json", code=0).output)
    assert out["total"] == 1


def test_overlapping_roots_are_counted_once(corpus, data_dir):
    from mediaindex.scan import walk

    files = len(list(walk(str(corpus))))
    r = run("index", str(corpus), str(corpus / "broken"), str(corpus / "talks" / "space_station.mp3"),
            "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert f"{files} new or changed, 0 unchanged" in r.output and "4 failed" in r.output
    assert r.output.count(f"failed: {corpus / 'broken' / 'empty.mp3'}: ") == 1


def test_named_paths_that_are_skipped_say_why_and_exit_1(corpus, data_dir, tmp_path):
    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    partial = tmp_path / "talk.mp3.part"
    partial.write_bytes((corpus / "talks" / "space_station.mp3").read_bytes())
    r = run("index", str(corpus / "talks"), str(fifo), "/dev/zero", str(corpus / "notes.txt"), str(partial),
            "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "2 indexed" in r.output
    assert f"skipped: {fifo}: a named pipe (FIFO): only regular files and folders are indexed" in r.output
    assert "skipped: /dev/zero: a device: only regular files and folders are indexed" in r.output
    assert f"skipped: {corpus / 'notes.txt'}: not media (.txt files are never indexed)" in r.output
    assert f"skipped: {partial}: a hidden or temporary file" in r.output


def test_data_dir_inside_the_indexed_folder_is_skipped_with_a_warning(corpus, tmp_path):
    data = tmp_path / "mi-data"
    r = run("index", str(tmp_path), "--data-dir", str(data), "--transcriber", "manifest", code=1)
    assert f"warning: {data} is the data dir (or inside it): never scanned" in r.output
    out = json.loads(run("status", "--data-dir", str(data), "--json", code=0).output)
    assert out["files"]["ignored"] == 0  # its database files were not probed as unknown media
    run("index", str(tmp_path), "--data-dir", str(data), "--transcriber", "manifest", code=1)
    assert json.loads(run("status", "--data-dir", str(data), "--json").output)["files"]["ignored"] == 0


def test_search_json_is_the_api_shape(manifest_transcriber, corpus, data_dir):
    """`search --json` and /api/search give one shape, the same values for the same hit."""
    from starlette.testclient import TestClient

    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline
    from mediaindex.web.app import create_app

    run("index", str(corpus / "podcasts"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    cli_json = json.loads(run("search", "ferry", "--data-dir", str(data_dir), "--json", "--limit", "5", "--path",
                              str(corpus / "podcasts"), code=0).output)
    pipeline = Pipeline(Config.load(data_dir))
    try:
        with TestClient(create_app(pipeline), base_url="http://127.0.0.1") as client:
            api_json = client.get("/api/search", params={"q": "ferry", "limit": 5, "path": str(corpus / "podcasts")}).json()
    finally:
        pipeline.close()
    assert cli_json["hits"] and cli_json == api_json


def test_every_command_reports_a_usage_error_in_one_safe_line(corpus, tmp_path):
    """One path from an error to an exit code and a message (errors.py): every command says a bad
    config in one line, exit code 2, with the control characters of a hostile name escaped."""
    data_dir = tmp_path / "data\x1b]0;owned\x07"
    data_dir.mkdir()
    (data_dir / "config.toml").write_text("transcriber = \n")
    for args in (["status"], ["index", str(corpus / "talks")], ["search", "x"], ["export", "x"],
                 ["watch", str(corpus / "talks"), "--no-serve"], ["serve"]):
        r = run(*args, "--data-dir", str(data_dir), code=2)
        assert "not valid TOML" in r.output and "\x1b" not in r.output and "\\x1b" in r.output, args
        assert "Traceback" not in r.output


def test_errors_map_to_exit_codes_and_redacted_messages():
    from mediaindex import safety
    from mediaindex.datalock import DataDirBusy
    from mediaindex.dberrors import DiskFull
    from mediaindex.errors import BudgetExceeded, ConfigError, UsageError, exit_status

    safety.add_secret("sk-topsecret-123")
    assert exit_status(UsageError("unknown engine \x1b[31m")) == (2, "unknown engine \\x1b[31m")
    assert exit_status(DataDirBusy("busy"))[0] == exit_status(ConfigError("bad"))[0] == 2
    assert exit_status(BudgetExceeded("cap sk-topsecret-123")) == (1, "cap ***")
    assert exit_status(DiskFull("full"))[0] == 1
    assert exit_status(ValueError("a bug")) is None and exit_status(ValueError("bad"), setup=True)[0] == 2
    assert exit_status(RuntimeError("a bug")) is None  # a bug keeps its traceback


def test_status_names_each_failed_path_once(indexed, data_dir):
    empty = str(indexed / "broken" / "empty.mp3")
    r = run("status", "--data-dir", str(data_dir), code=0)
    line = next(x for x in r.output.splitlines() if x.startswith(f"failed: {empty}"))
    assert line.count(empty) == 1, line
    out = json.loads(run("status", "--data-dir", str(data_dir), "--json", code=0).output)
    item = next(i for i in out["failed"] if i["path"] == empty)
    assert empty not in item["error"] and item["error"]


def test_search_without_a_library_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    r = run("search", "x", "--data-dir", str(missing), code=2)
    assert "no library in" in r.output and str(missing) in r.output
    assert not missing.exists()


def test_status_shows_files_of_a_killed_writer_as_interrupted(corpus, data_dir):
    """After `kill -9` of a watcher its files stay `running` in the database: status says interrupted."""
    from mediaindex.datalock import lock_data_dir
    from mediaindex.state import State

    state = State(data_dir / "state.sqlite3")
    state.set_file(str(corpus / "talks" / "space_station.mp3"), size=1, mtime=1.0, status="running")
    state.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (data_dir / "writer.lock").write_text(f"`mediaindex watch` (pid {dead.stdout.strip()})")
    r = run("status", "--data-dir", str(data_dir), code=0)
    assert "1 interrupted" in r.output and "0 running" in r.output
    out = json.loads(run("status", "--data-dir", str(data_dir), "--json", code=0).output)
    assert out["files"]["interrupted"] == 1 and out["files"]["running"] == 0
    lock = lock_data_dir(data_dir, "watch")  # a live writer: its files are running
    try:
        out = json.loads(run("status", "--data-dir", str(data_dir), "--json", code=0).output)
        assert out["files"]["running"] == 1 and out["files"]["interrupted"] == 0
    finally:
        lock.close()


def test_retry_indexes_failed_files_again_all_or_under_a_path(corpus, data_dir):
    r = run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "mediaindex retry" in r.output  # index says how to retry
    # unchanged files: `index` skips them, `retry` runs them again
    assert "0 new or changed" in run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber",
                                     "manifest", code=1).output
    empty = corpus / "broken" / "empty.mp3"
    r = run("retry", str(empty), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "retrying 1 failed file(s)" in r.output and "1 new or changed" in r.output
    assert r.output.count(f"failed: {empty}: ") == 1
    r = run("retry", "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "retrying 4 failed file(s)" in r.output and "4 new or changed" in r.output and "4 failed" in r.output
    # the cause is gone (here: the file was repaired): it is indexed, the others still fail
    empty.write_bytes((corpus / "talks" / "space_station.mp3").read_bytes())
    r = run("retry", str(corpus / "broken"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "3 failed" in r.output
    r = run("retry", str(corpus / "talks"), "--data-dir", str(data_dir), code=0)
    assert "no failed file to retry there" in r.output


def _index(corpus, data_dir, code):
    return run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=code)


def _file_status(data_dir, path) -> str:
    from mediaindex.state import State

    state = State(data_dir / "state.sqlite3")
    try:
        return state.get_file(str(path)).status
    finally:
        state.close()


def test_a_file_failed_for_a_transient_cause_is_retried_by_the_next_index(corpus, data_dir, monkeypatch):
    from mediaindex.state import JobQueue

    monkeypatch.setattr(JobQueue, "BACKOFF_BASE", 0.01)  # the retries within a run come at once
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_FAIL_ALWAYS", "lighthouse.opus")
    lighthouse = corpus / "podcasts" / "lighthouse.opus"
    r = _index(corpus, data_dir, 1)
    assert f"failed: {lighthouse}: simulated 503" in r.output
    monkeypatch.delenv("MEDIAINDEX_MANIFEST_FAIL_ALWAYS")  # the service is back
    r = _index(corpus, data_dir, 1)  # the broken files still fail
    assert "trying again 1 failed file(s) whose cause may be gone" in r.output
    assert "1 new or changed" in r.output and "1 indexed (1 transcribed)" in r.output
    assert _file_status(data_dir, lighthouse) == "indexed"
    assert "trying again" not in _index(corpus, data_dir, 1).output


def test_files_an_engine_refused_are_retried_when_the_engine_or_its_settings_change(corpus, data_dir, monkeypatch):
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_REFUSE", "ferry.webm")
    ferry = corpus / "podcasts" / "ferry.webm"
    _index(corpus, data_dir, 1)
    assert _file_status(data_dir, ferry) == "failed"
    # the same engine with the same settings: a refused file stays failed, like a corrupt one
    r = _index(corpus, data_dir, 1)
    assert "0 new or changed" in r.output and "trying again" not in r.output
    monkeypatch.delenv("MEDIAINDEX_MANIFEST_REFUSE")
    assert "trying again" not in _index(corpus, data_dir, 1).output
    # the settings change: the refused file is tried again, the broken ones (their own fault) are not
    (data_dir / "config.toml").write_text("[manifest]\nlanguage = \"en\"\n")
    r = _index(corpus, data_dir, 1)
    assert "trying again 1 failed file(s)" in r.output and "1 new or changed" in r.output
    assert _file_status(data_dir, ferry) == "indexed"
    assert _file_status(data_dir, corpus / "broken" / "empty.mp3") == "failed"


def test_files_stopped_by_a_misconfigured_engine_are_indexed_once_it_is_fixed(corpus, data_dir, monkeypatch):
    monkeypatch.setenv("MEDIAINDEX_MANIFEST_NO_KEY", "1")
    r = run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=1)
    assert "no manifest API key" in r.output
    assert _file_status(data_dir, corpus / "talks" / "space_station.mp3") != "indexed"
    monkeypatch.delenv("MEDIAINDEX_MANIFEST_NO_KEY")  # the key is set
    r = run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    assert "2 indexed (2 transcribed)" in r.output


def test_a_state_database_from_before_failure_kinds_opens_and_keeps_its_failures(corpus, data_dir):
    import sqlite3

    from mediaindex.state import State

    _index(corpus, data_dir, 1)
    conn = sqlite3.connect(data_dir / "state.sqlite3")
    conn.execute("ALTER TABLE files DROP COLUMN failure")  # as an older version made it
    conn.commit()
    conn.close()
    r = _index(corpus, data_dir, 1)
    assert "0 new or changed" in r.output and "4 failed" in r.output and "trying again" not in r.output
    state = State(data_dir / "state.sqlite3")
    try:
        assert "failure" in {row[1] for row in state.conn.execute("PRAGMA table_info(files)")}
    finally:
        state.close()


def test_retry_without_a_library(tmp_path):
    run("retry", "--data-dir", str(tmp_path / "nowhere"), code=2)


def test_mediaindexignore_leaves_files_and_folders_out(corpus, data_dir):
    (corpus / ".mediaindexignore").write_text("# drafts and the broken ones\n*draft*\nbroken/\n")
    (corpus / "video" / ".mediaindexignore").write_text("chess_*\n")
    r = run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    assert "0 failed" in r.output  # broken/ is not scanned
    out = json.loads(run("status", "--data-dir", str(data_dir), "--json", code=0).output)
    from mediaindex.state import State

    state = State(data_dir / "state.sqlite3")
    paths = set(state.file_signatures())
    state.close()
    assert out["files"]["failed"] == 0 and paths
    assert not [p for p in paths if "/broken/" in p or "draft" in p or "/chess_" in p], paths
    assert any(p.endswith("space_station.mp3") for p in paths)
    # ignoring a file that was indexed takes it out of the index at the next scan
    (corpus / ".mediaindexignore").write_text("*draft*\nbroken/\ntalks/space_station.mp3\n")
    run("index", str(corpus), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    r = run("search", "lettuce chamber", "--data-dir", str(data_dir), "--json", code=0)
    assert json.loads(r.output)["total"] == 0


class _OtherEngine:
    """A second engine for `reindex`: the manifest's words with "lettuce" heard as "cabbage", or
    an engine that fails on every file."""

    def __init__(self, manifest_module, fail=False):
        from mediaindex import PermanentError, Transcriber, TranscriberLimits

        base = manifest_module.ManifestTranscriber()

        class Other(Transcriber):
            name = "broken-engine" if fail else "other-engine"
            limits = TranscriberLimits(word_timestamps=True)

            def transcribe(self, request):
                if fail:
                    raise PermanentError("the engine refused the file")
                t = base.transcribe(request)
                for s in t.segments:
                    s.text = s.text.replace("lettuce", "cabbage")
                    for w in s.words:
                        w.text = w.text.replace("lettuce", "cabbage")
                t.engine = t.model = self.name
                return t

        self.engine = Other()


@pytest.fixture
def other_engines(manifest_transcriber):
    from mediaindex import hookimpl
    from mediaindex.plugins import load_plugins

    pm = load_plugins()
    names = []
    for fail in (False, True):
        engine = _OtherEngine(manifest_transcriber, fail).engine

        @hookimpl
        def register_transcribers(register, engine=engine):
            register(engine)

        plugin = types.ModuleType(f"test_other_{fail}")
        plugin.register_transcribers = register_transcribers
        names.append(pm.register(plugin, name=f"test-other-{fail}"))
    yield
    for name in names:
        pm.unregister(name=name)


def test_reindex_with_another_engine_keeps_the_old_transcript_until_the_new_one_is_ready(corpus, data_dir,
                                                                                        other_engines):
    talks = corpus / "talks"
    space = talks / "space_station.mp3"
    run("index", str(talks), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)

    def total(q):
        return json.loads(run("search", q, "--data-dir", str(data_dir), "--json").output)["total"]

    assert total("lettuce") == 1 and total("cabbage") == 0
    r = run("reindex", str(space), "--data-dir", str(data_dir), "--transcriber", "no-such-engine", code=2)
    assert "unknown transcriber" in r.output
    # an engine that fails: the old transcript stays searchable
    run("reindex", str(space), "--data-dir", str(data_dir), "--transcriber", "broken-engine", code=1)
    assert total("lettuce") == 1
    r = run("reindex", str(space), "--data-dir", str(data_dir), "--transcriber", "other-engine", code=0)
    assert "transcribing 1 file(s) again with other-engine" in r.output and "1 indexed (1 transcribed)" in r.output
    assert total("cabbage") == 1 and total("lettuce") == 0
    out = json.loads(run("search", "cabbage", "--data-dir", str(data_dir), "--json").output)
    assert out["hits"][0]["path"] == str(space)
    r = run("reindex", str(corpus / "music"), "--data-dir", str(data_dir), "--transcriber", "other-engine", code=2)
    assert "nothing indexed" in r.output
