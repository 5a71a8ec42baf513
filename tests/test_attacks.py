"""Attacks that held in the hardening run, kept as tests: FTS5/SQL injection queries, 20,000 empty
media files, `kill -9` of `mediaindex index` again and again."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mediaindex.builtin.sqlite_index import SqliteIndex
from mediaindex.cli import cli
from mediaindex.models import Media, SearchQuery, Segment, Word
from mediaindex.forgive.query import AnyOf, parse_search
from mediaindex.textsearch import fold

VENV_BIN = Path(sys.executable).parent

# ---- injection queries -------------------------------------------------------------------------

TEXTS = ["the rocket lifted off near the pad", "body and soul, not the table", "select the docs or drop them",
         "a café with crème near the station", "union rowid match extra", "北京的天气很好", "nothing special here"]

INJECTION = [
    # quotes
    '"', '""', '"""', "'", "''", '"the', 'the"', '"the rocket"', "'the rocket'", '"the" "rocket"', '""the""',
    "\u201cthe\u201d", "\u201ethe\u201c",
    # NEAR
    "NEAR", "NEAR(the rocket)", "NEAR(the rocket, 1)", "the NEAR rocket", "NEAR/2", "near/3 the",
    'NEAR("the" "pad", 0)', "{body}: NEAR(the pad)",
    # column filters
    "body:the", "extra:the", "{body extra}:the", "-body:the", "- body : the", "fts:the", "rowid:1", "text:rocket",
    "docs.text:rocket", "{text}:rocket",
    # prefix and initial-token operators
    "*", "**", "the*", "*the", "t*", "the * rocket", '"the"*', "^", "^the", "the^", '^"the rocket"',
    # parentheses and boolean operators
    "(", ")", "()", "(the", "the)", "((the OR rocket))", "the AND (rocket OR pad)", ")) OR ((", "AND", "OR",
    "NOT", "the OR rocket", "the NOT rocket", "NOT the", "the AND", "OR OR OR", "a + b",
    # SQL
    "'; DROP TABLE docs; --", '" OR 1=1 --', "the' OR '1'='1", 'x"); DELETE FROM docs; --',
    "1 UNION SELECT text FROM docs", "the; ATTACH DATABASE '/tmp/x.db' AS x", "%", "_", "%the%", "\\", '\\"',
    "?", "?1", ":name", "@x", "$x",
    # NUL and control characters
    "\x00", "the\x00rocket", "\x00the", "\x1b[31mthe", "\t\n\r", "\u200b", "the\u200brocket", "\ufeffthe",
    # huge strings
    "the " * 50_000, "a" * 200_000, '"' * 10_000, "(" * 10_000, "NEAR(" * 2_000,
    " ".join(f"w{i}" for i in range(3000)) + " rocket",
    # unicode
    "☃", "🚀 rocket", "café", "CAFÉ", "cafe\u0301", "ｆｕｌｌ", '北京"', "北京 OR rocket", "\ud800", "\udcff the",
    "İstanbul", "ß", "ﬁ", "Ⅻ", "٣",
]


def folded_tokens(text: str) -> list[str]:
    return [fold(t) for t in re.findall(r"[^\W_]+", text)]


def contains(text: str, term) -> bool:
    """The term's words, in order, among the text's words (the last one as a prefix if it is one)."""
    if term.cjk:
        return term.raw in text
    toks, want = folded_tokens(text), term.tokens
    for k in range(len(toks) - len(want) + 1):
        if all(t == w or (term.prefix and j == len(want) - 1 and t.startswith(w))
               for j, (t, w) in enumerate(zip(toks[k:], want))):
            return True
    return False


def check_hits(query: str, total: int, partial: bool, hits: list[tuple[str, int, bool]]) -> None:
    """Hits ([(text, words matched, forgiven)]) hold every word of the query (``a OR b``: either),
    none of a ``-word``, or for partial answers at least the number of words they claim: only
    our own syntax (phrases, prefix, -word, OR) is obeyed, never FTS5's or SQL's. A hit found
    through a forgiven form (typo, number...) is checked by tests/test_search_forgive.py."""
    terms, excluded = parse_search(query)
    assert len(hits) <= total
    if not terms:
        assert total == 0 and not hits, query[:80]
    for text, matched, forgiven in hits:
        if forgiven:
            continue
        have = sum(any(contains(text, a.term) for a in t.alts) if isinstance(t, AnyOf) else contains(text, t)
                   for t in terms)
        assert not any(contains(text, t) for t in excluded), (query[:80], text)
        if partial:
            assert have >= max(1, matched), (query[:80], text)
        else:
            assert have == len(terms), (query[:80], text)


@pytest.fixture
def library(tmp_path):
    """A data dir whose sqlite index holds TEXTS (one media per text)."""
    data = tmp_path / "data"
    ix = SqliteIndex(data / "index.sqlite3")
    for i, text in enumerate(TEXTS):
        ws = text.split()
        ix.upsert(Media(id=f"m{i}", path=f"/lib/m{i}.mp3", paths=[f"/lib/m{i}.mp3"], size=1, mtime=1.0),
                  [Segment(0, 0.0, 5.0, text, [Word(w, k * 0.5, k * 0.5 + 0.4) for k, w in enumerate(ws)])])
    yield data, ix
    ix.close()


def intact(ix: SqliteIndex) -> None:
    assert ix.search(SearchQuery("rocket ")).total == 1
    assert len(ix.media_ids()) == len(TEXTS)


@pytest.mark.parametrize("query", INJECTION, ids=lambda q: ascii(q[:24]))
def test_injection_query_through_the_index(library, query):
    _, ix = library
    r = ix.search(SearchQuery(query, limit=50))
    check_hits(query, r.total, r.partial, [(h.text, h.matched_words, h.forgiven) for h in r.hits])
    assert all(n > 0 for n in ix.facets(SearchQuery(query)).kind.values())
    intact(ix)


def test_injection_queries_through_the_cli(library):
    """`mediaindex search --json` answers every query (exit 0, one JSON object) with the right words."""
    data, ix = library
    answered = 0
    for query in INJECTION:
        # ("--": a query may start with "-", like any argument)
        r = CliRunner().invoke(cli, ["search", "--data-dir", str(data), "--json", "--limit", "50", "--", query])
        assert r.exit_code == 0 and r.exception is None, (query[:80], r.output[-500:])
        out = json.loads(r.output)
        check_hits(query, out["total"], out["partial"], [(h["text"], 1, h["forgiven"]) for h in out["hits"]])
        answered += bool(out["hits"])
    assert answered > len(INJECTION) // 3  # the words in the queries did find things
    # the installed command, with bytes that are not UTF-8 in its arguments, writing to a strict
    # UTF-8 stdout (as under an en_US.UTF-8 locale)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    for arg in (b"\xff", b"the\xff rocket", b"\xc3("):
        p = subprocess.run([os.fsencode(VENV_BIN / "mediaindex"), b"search", arg, b"--data-dir",
                            os.fsencode(data), b"--json"], capture_output=True, env=env)
        assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
        out = json.loads(p.stdout)
        check_hits(os.fsdecode(arg), out["total"], out["partial"], [(h["text"], 1, h["forgiven"]) for h in out["hits"]])
    intact(ix)


# ---- empty media files -------------------------------------------------------------------------


@pytest.mark.usefixtures("manifest_transcriber")
@pytest.mark.parametrize("count", [2_000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_thousands_of_empty_media_files_each_fail_clearly(tmp_path, count):
    """Every empty file gets its own clear failure; nothing crashes. (2,000 take the same path as
    the 20,000 of the attack run: batches of 500, one job each; the full count is marked slow.)"""
    from mediaindex.config import Config
    from mediaindex.state import State

    lib = tmp_path / "lib"
    for k in range(count // 1000):
        sub = lib / f"folder{k:02d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"empty{i:04d}.{('mp3', 'mp4', 'opus', 'wav')[i % 4]}").touch()
    data = tmp_path / "data"
    r = CliRunner().invoke(cli, ["index", str(lib), "--data-dir", str(data), "--transcriber", "manifest"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output[-2000:]
    assert f"0 indexed (0 transcribed), {count} failed" in r.output
    assert "Traceback" not in r.output
    state = State(Config.load(data).data_dir / "state.sqlite3")
    try:
        summary = state.summary()
        assert summary["files"]["failed"] == count and summary["files"]["total"] == count
        assert all(f["error"] == "empty file (0 bytes)" for f in summary["failed"])  # the path is beside it
    finally:
        state.close()


# ---- kill -9 of `index`, again and again -------------------------------------------------------


def _index_proc(corpus, data_dir, env, log, delay):
    return subprocess.Popen([str(VENV_BIN / "mediaindex"), "index", str(corpus), "--data-dir", str(data_dir),
                             "--transcriber", "manifest", "--workers", "2"],
                            env={**env, "MEDIAINDEX_MANIFEST_DELAY": str(delay)}, stdout=log, stderr=subprocess.STDOUT)


def _progress(state_db: Path) -> tuple[int, int]:
    """(files indexed, jobs running) as the state database says now."""
    if not state_db.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        return (conn.execute("SELECT COUNT(*) FROM files WHERE status = 'indexed'").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'running'").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0, 0
    finally:
        conn.close()


def test_kill_9_loop_of_index_then_every_file_indexed_once(installed_manifest_plugin, corpus, manifest, data_dir,
                                                            tmp_path):
    """`index` killed with SIGKILL again and again (once while starting up, then each time a
    little later into a job, after more files are in), then run to the end: every file indexed
    exactly once, none lost, none doubled."""
    rng = random.Random(8)
    state_db = data_dir / "state.sqlite3"
    log = open(tmp_path / "index.log", "wb")
    try:
        for target in (None, 0, 2, 4, 6, 8):
            proc = _index_proc(corpus, data_dir, installed_manifest_plugin, log, delay=0.4)
            if target is None:
                time.sleep(rng.uniform(0.1, 1.0))  # starting up, planning, queueing
            else:  # inside a job, once `target` files are in: transcribing, or committing
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    indexed, running = _progress(state_db)
                    if indexed >= target and running:
                        break
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.45))
            proc.kill()
            proc.wait(10)
            assert proc.returncode in (-signal.SIGKILL, 1), proc.returncode  # 1: it finished (broken files)
        proc = _index_proc(corpus, data_dir, installed_manifest_plugin, log, delay=0)
        assert proc.wait(120) == 1  # the broken files fail; everything else is indexed
    finally:
        log.close()
    out = (tmp_path / "index.log").read_text(errors="replace")
    assert "Traceback" not in out, out[-3000:]
    speech = [e for e in manifest["files"] if e["kind"] in ("speech", "music") and (corpus / e["path"]).exists()]
    st = sqlite3.connect(f"file:{data_dir / 'state.sqlite3'}?mode=ro", uri=True)
    ix = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        assert st.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0] == 0
        assert st.execute("SELECT COUNT(*) FROM files WHERE status IN ('queued', 'running')").fetchone()[0] == 0
        for e in speech:
            row = st.execute("SELECT media_id, status FROM files WHERE path = ?", (str(corpus / e["path"]),)).fetchone()
            assert row and row[1] == "indexed", (e["path"], row)
            assert st.execute("SELECT COUNT(*) FROM ledger WHERE media_id = ?", (row[0],)).fetchone()[0] == 1, e["path"]
            assert st.execute("SELECT COUNT(*) FROM transcripts WHERE media_id = ?", (row[0],)).fetchone()[0] == 1
            docs = ix.execute("SELECT COUNT(*) FROM docs WHERE media_id = ? AND source = 'asr'",
                              (row[0],)).fetchone()[0]  # the engine's segments (music moments aside)
            assert docs == len(e["sentences"]), (e["path"], docs)  # no duplicate, none missing
        assert ix.execute("SELECT COUNT(*) FROM media").fetchone()[0] == len(speech)
    finally:
        st.close()
        ix.close()
