"""Damaged databases and a full disk: a clear message, no traceback, nothing lost.

The damage is real (a truncated file, flipped bytes in a page, garbage, a broken FTS5 page) and
so is the full disk: a small tmpfs in a private mount namespace (``unshare``), filled up.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import mediaindex
from mediaindex.cli import cli

HERE = Path(__file__).parent
QUERY = "lettuce chamber"  # said in talks/space_station.mp3


def run(*args, code=None):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)  # a traceback fails the test
    if code is not None:
        assert result.exit_code == code, result.output
    return result


# ---- damage, made for real -----------------------------------------------------------------


def truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def flipped(db: Path, table: str = "docs") -> None:
    """Flip the first bytes (the b-tree page header) of the first page of a table."""
    with sqlite3.connect(db) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    c.close()
    page_size = int.from_bytes(db.read_bytes()[16:18], "big")
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        head = f.read(16)
        f.seek((root - 1) * page_size)
        f.write(bytes(b ^ 0xFF for b in head))


def garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * (db.stat().st_size // 23 + 1))


def broken_fts_page(db: Path) -> None:
    """Cut the FTS5 term pages in half: the file stays sound (quick_check says ok), only a search
    sees the damage."""
    with sqlite3.connect(db) as c:
        c.execute("UPDATE fts_data SET block = substr(block, 1, length(block) / 2) WHERE id > 10")
        assert c.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    c.close()


DAMAGE = [truncated, flipped, garbage, broken_fts_page]


@pytest.fixture
def talks(corpus, data_dir, manifest_transcriber):
    """The two talks indexed (through the CLI); the index closed."""
    run("index", str(corpus / "talks"), "--data-dir", str(data_dir), "--transcriber", "manifest", code=0)
    return corpus / "talks"


def index_again(talks, data_dir, code=0):
    return run("index", str(talks), "--data-dir", str(data_dir), "--transcriber", "manifest", code=code)


def assert_repaired(r, data_dir, transcribed=0):
    assert "was damaged" in r.output and "moved aside to index.damaged-" in r.output, r.output
    assert "2 media rebuilt from cached transcripts" in r.output
    assert f"({transcribed} transcribed)" in r.output  # the two talks come from the cached transcripts
    assert len(list(data_dir.glob("index.damaged-*.sqlite3"))) == 1
    assert not (data_dir / "index.sqlite3.damaged").exists()  # the mark a failed query left is gone
    hits = json.loads(run("search", QUERY, "--json", "--data-dir", str(data_dir), code=0).output)["hits"]
    assert [Path(h["path"]).name for h in hits] == ["space_station.mp3"]


# ---- a damaged index -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_index_search_says_so_and_index_rebuilds_it(talks, data_dir, damage):
    damage(data_dir / "index.sqlite3")
    r = run("search", QUERY, "--data-dir", str(data_dir), code=1)
    assert f"the search index {data_dir / 'index.sqlite3'} is damaged" in r.output
    assert "run `mediaindex index`" in r.output and "Traceback" not in r.output
    r = index_again(talks, data_dir)
    assert_repaired(r, data_dir)


@pytest.mark.parametrize("damage", [truncated, flipped, garbage], ids=lambda f: f.__name__)
def test_index_finds_damage_no_search_has_seen(talks, data_dir, damage):
    """Without a failed search first: index checks the file itself (header, quick_check)."""
    damage(data_dir / "index.sqlite3")
    assert_repaired(index_again(talks, data_dir), data_dir)


def test_watch_rebuilds_a_damaged_index(talks, data_dir, make_pipeline):
    from mediaindex.models import SearchQuery
    from mediaindex.watch import Watcher

    garbage(data_dir / "index.sqlite3")
    lines = []
    w = Watcher(make_pipeline(), [str(talks)], stable=0.2, rescan=0, log=lines.append).start()
    try:
        assert w.wait_idle(30)
        assert any("was damaged" in line and "moved aside to index.damaged-" in line for line in lines), lines
        assert w.pipeline.index.search(SearchQuery(q=QUERY)).total == 1
        assert w.pipeline.state.transcription_count() == 2  # nothing transcribed again
    finally:
        w.stop()


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_api_answers_503_on_a_damaged_index_and_recovers_after_index(talks, data_dir, damage, make_pipeline):
    from mediaindex.web.app import create_app

    damage(data_dir / "index.sqlite3")
    with TestClient(create_app(make_pipeline()), base_url="http://127.0.0.1") as client:
        r = client.get("/api/search", params={"q": QUERY})
        assert r.status_code == 503, r.text
        assert "is damaged" in r.json()["error"] and "mediaindex index" in r.json()["error"]
        index_again(talks, data_dir)  # another pipeline, as another process would
        r = client.get("/api/search", params={"q": QUERY})
        assert r.status_code == 200, r.text
        assert [h["title"] for h in r.json()["hits"]] == ["space_station"]


def test_a_server_reads_the_rebuilt_index_not_the_one_set_aside(talks, data_dir, corpus, make_pipeline,
                                                                 monkeypatch):
    """A server that never saw the damage (its queries do not read the broken page) follows
    the repair: it reopens the file at the path instead of reading the one set aside forever."""
    from mediaindex.builtin.sqlite_index import SqliteIndex
    from mediaindex.web.app import create_app

    monkeypatch.setattr(SqliteIndex, "REOPEN_CHECK", 0.0)  # check on every query, not once a second
    with TestClient(create_app(make_pipeline()), base_url="http://127.0.0.1") as client:
        assert client.get("/api/search", params={"q": "dolphins"}).json()["total"] == 0
        flipped(data_dir / "index.sqlite3", "media")  # a page search never reads
        shutil.copy(corpus / "podcasts" / "ferry.webm", talks)
        assert_repaired(index_again(talks, data_dir), data_dir, transcribed=1)
        r = client.get("/api/search", params={"q": "dolphins"})
        assert r.status_code == 200 and [h["title"] for h in r.json()["hits"]] == ["ferry"], r.text


# ---- a damaged state database --------------------------------------------------------------


def flipped_files(db: Path) -> None:
    """The files table and its status index are damaged, the rest is sound: the state opens,
    queries fail."""
    flipped(db, "files")
    flipped(db, "files_status")


@pytest.mark.parametrize("damage", [truncated, garbage, flipped_files], ids=lambda f: f.__name__)
def test_damaged_state_is_named_and_left_in_place(talks, data_dir, damage):
    state = data_dir / "state.sqlite3"
    damage(state)
    before = state.read_bytes()
    for args in (["index", str(talks), "--transcriber", "manifest"], ["status"]):
        r = run(*args, "--data-dir", str(data_dir), code=1)
        assert f"the state database {state} is damaged" in r.output, r.output
        assert "only copy of the transcripts" in r.output and ".recover" in r.output
        assert "writable" not in r.output
    assert state.read_bytes() == before  # never moved aside or changed: the user decides
    assert not list(data_dir.glob("state*.damaged*"))


def test_api_answers_503_on_a_damaged_state(talks, data_dir, make_pipeline):
    from mediaindex.web.app import create_app

    flipped_files(data_dir / "state.sqlite3")
    with TestClient(create_app(make_pipeline()), base_url="http://127.0.0.1") as client:
        r = client.get("/api/status")
        assert r.status_code == 503, r.text
        assert f"the state database {data_dir / 'state.sqlite3'} is damaged" in r.json()["error"]


# ---- a full disk ---------------------------------------------------------------------------


def test_sqlite_full_is_disk_full_and_the_next_transaction_works(data_dir):
    """SQLITE_FULL for real (the database may not grow): the clear message, and a commit that
    failed leaves no transaction open for the next ``tx()`` to join."""
    from mediaindex.dberrors import DiskFull, database_error
    from mediaindex.state import State

    state = State(data_dir / "state.sqlite3")
    pages = state.conn.execute("PRAGMA page_count").fetchone()[0]
    state.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as info:
        for i in range(1000):
            state.mark_queued(f"/media/{i:04d}-{'x' * 200}.mp3", 1, 1.0)
    fatal = database_error(info.value, state.path)
    assert isinstance(fatal, DiskFull)
    assert str(fatal).startswith(f"disk full: free space for {data_dir} and try again (nothing was lost")
    assert not state.conn.in_transaction
    state.conn.execute(f"PRAGMA max_page_count = {pages * 100}")  # space freed
    state.mark_queued("/media/after.mp3", 1, 1.0)
    assert state.get_file("/media/after.mp3").status == "queued"
    state.close()


def _tmpfs_works(tmp_path: Path) -> bool:
    mnt = tmp_path / "probe-mnt"
    mnt.mkdir()
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(mnt)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def full_disk(tmp_path, installed_manifest_plugin, corpus):
    """Run a scenario (``main`` below) on a 4 MiB tmpfs of its own; returns its JSON report."""
    if not _tmpfs_works(tmp_path):
        pytest.skip("needs `unshare -rm` and a tmpfs mount (user namespaces)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(installed_manifest_plugin, PYTHONPATH=str(Path(mediaindex.__file__).parent.parent))

    def scenario(setup: str, free: int, *command: str) -> dict:
        script = 'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"'
        p = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(mnt), sys.executable, __file__,
                            str(mnt), setup, str(free), str(corpus / "talks"), *command],
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout.splitlines()[-1])

    return scenario


def assert_disk_full_said(run_: dict, where: str) -> None:
    assert run_["rc"] == 1, run_
    assert f"disk full: free space for {where} and try again (nothing was lost" in run_["stderr"], run_["stderr"]
    assert "Traceback" not in run_["stderr"], run_["stderr"]


def test_disk_full_at_recover(full_disk):
    """A job was left running; the disk is full at the next start: recover() cannot write."""
    report = full_disk("running-job", 0, "index")
    assert_disk_full_said(report["full"], report["data"])
    assert report["freed"]["rc"] == 0, report["freed"]
    assert "resuming 1 job(s)" in report["freed"]["stderr"]
    assert "2 indexed (2 transcribed)" in report["freed"]["stderr"]


def test_disk_full_at_mark_queued(full_disk):
    """16 KiB left: the scan's first write fits, queueing the files does not."""
    report = full_disk("idle", 16 << 10, "index")
    assert_disk_full_said(report["full"], report["data"])
    assert report["freed"]["rc"] == 0 and "2 indexed (2 transcribed)" in report["freed"]["stderr"], report["freed"]


@pytest.mark.parametrize("setup, free", [("running-job", 0), ("idle", 16 << 10)], ids=["at-recover", "at-queueing"])
def test_watch_stops_with_the_disk_full_message(full_disk, setup, free):
    report = full_disk(setup, free, "watch", "--no-serve", "--stable", "0.1")
    assert_disk_full_said(report["full"], report["data"])
    assert "stopping: disk full" in report["full"]["stderr"]


def main(mnt: str, setup: str, free: str, media: str, command: str, *options: str) -> None:
    """In the private mount namespace: make the state (holding it open, so its shared-memory
    file exists, as while another command runs), fill the disk up to ``free`` bytes, run the
    command; then free the space and run it again. Prints a JSON report."""
    from mediaindex.config import Config
    from mediaindex.datalock import lock_data_dir
    from mediaindex.pipeline import Pipeline

    data = Path(mnt) / "data"
    p = Pipeline(Config.load(data), transcriber="manifest")
    p.index.media_ids()
    lock_data_dir(data, "index").close()  # left by an earlier run
    if setup == "running-job":
        p.enqueue_plan(p.plan([media]))
        assert p.state.jobs.claim() is not None  # and then the process died
    for conn in (p.state.conn, p.index._conn()):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # writes must grow the files
    filler = Path(mnt) / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - int(free)))
    cmd = [sys.executable, "-m", "mediaindex", command, media, "--data-dir", str(data), "--transcriber", "manifest",
           *options]

    def go() -> dict:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            return {"rc": "timeout", "stderr": (e.stderr or b"").decode(errors="replace")}
        return {"rc": r.returncode, "stderr": r.stderr}

    report = {"data": str(data), "full": go()}
    p.close()
    filler.unlink()
    if command == "index":
        report["freed"] = go()
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])

