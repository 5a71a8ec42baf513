"""What leaves the process (issue 8, items 3 and 4): no credential anywhere, no control character
on a terminal.

A real plugin engine echoes its credentials in every error it raises and logs; the real CLI, the
state database, ``status --json`` and ``/api/status`` are then searched for them. Files with
escape sequences and newlines in their names are indexed, failed and searched for real.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from mediaindex import FatalError, PermanentError, Segment, Transcriber, Transcript, TransientError, hookimpl
from mediaindex.cli import cli
from mediaindex.config import Config
from mediaindex.pipeline import Pipeline
from mediaindex.plugins import load_plugins
from mediaindex.watch_cli import WatchProgress
from mediaindex.web.app import create_app

# one value under each secret-looking name that the old pattern missed
NAMED = {
    "secret_access_key": "sak-7f3e9a1c55d2",
    "private_key": "pk-9c1d7e3b2a40",
    "api-key": "dash-api-5e8f2c1a",
    "passwd": "pw-hunter2-0451",
    "key": "bare-key-77aa91",
    "bearer": "bearer-3c9f01d2e4",
}
CREDENTIALS = "cred-list-6d0b2f9e"  # inside a list under [leaky.credentials]
ENV_KEY = "env-only-41b7c9e2d08f"  # the plugin's own variable, a name no pattern knows
ENV_NAME = "LEAKY_SERVICE_ACCESS"
ALL = [*NAMED.values(), CREDENTIALS, ENV_KEY]

CONFIG = "[leaky]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in NAMED.items()) + \
    f'model = "whisper-large-v3"\n[leaky.credentials]\nlist = ["{CREDENTIALS}"]\n'


def leaks(text: str) -> list[str]:
    return [v for v in ALL if v in text]


class LeakyEngine(Transcriber):
    """An engine that puts its credentials in every error and log line (as HTTP clients do)."""

    name = "leaky"

    def __init__(self, config):
        self.key = config.secret("leaky", "service_key", env=ENV_NAME)
        self.named = [str(v) for k, v in config.section("leaky").items() if k in NAMED]
        mode = os.environ.get("LEAKY_MODE", "")
        if mode == "usage":
            raise ValueError(f"[leaky] the key {self.key} is malformed")

    def transcribe(self, request):
        said = f"key {self.key}, config {', '.join(self.named)}, credentials {CREDENTIALS}"
        logging.getLogger("leaky").warning("the service said 401 for %s", said)
        if os.environ.get("LEAKY_MODE") == "fatal":
            raise FatalError(f"the service rejected {said}: fix [leaky] in config.toml")
        if request.path.name.startswith("retry"):
            raise TransientError(f"503 for {said}", retry_after=3600)
        raise PermanentError(f"401 for {said}")


class LeakyPlugin:
    @hookimpl
    def register_transcribers(self, register, config):
        register(LeakyEngine(config))


@pytest.fixture
def leaky(data_dir, monkeypatch):
    (data_dir / "config.toml").write_text(CONFIG)
    monkeypatch.setenv(ENV_NAME, ENV_KEY)
    load_plugins().register(LeakyPlugin(), name="leaky-test")
    yield
    load_plugins().unregister(name="leaky-test")


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# ---- item 3: credentials ------------------------------------------------------------------------


def test_per_file_errors_keep_no_credential_in_state_output_logs_or_api(leaky, corpus, data_dir, caplog):
    caplog.set_level(logging.INFO)
    lib = corpus / "talks"
    shutil.copy(lib / "space_station.mp3", lib / "retry.mp3")
    r = run("index", str(lib), "--data-dir", str(data_dir), "--transcriber", "leaky")
    assert r.exit_code == 1, r.output
    assert "failed: " in r.output and "401 for key ***" in r.output and not leaks(r.output)
    assert "the service said 401 for key ***" in caplog.text and not leaks(caplog.text)

    db = sqlite3.connect(data_dir / "state.sqlite3")
    files = [e for (e,) in db.execute("SELECT error FROM files WHERE error IS NOT NULL")]
    jobs = [e for (e,) in db.execute("SELECT error FROM jobs WHERE error IS NOT NULL")]
    db.close()
    assert len(files) == 3 and len(jobs) == 1 and "503 for key ***" in jobs[0]  # 2 failed, 1 to retry
    assert not leaks(" ".join(files + jobs))

    status = run("status", "--data-dir", str(data_dir), "--json")
    assert json.loads(status.output)["failed"] and not leaks(status.output)
    status = run("status", "--data-dir", str(data_dir))
    assert "failed: " in status.output and not leaks(status.output)

    p = Pipeline(Config.load(data_dir))
    try:
        with TestClient(create_app(p), base_url="http://127.0.0.1") as client:
            body = client.get("/api/status").text
        assert "401 for key ***" in body and not leaks(body)
    finally:
        p.close()


def test_fatal_and_usage_errors_print_no_credential(leaky, corpus, data_dir, caplog):
    lib = str(corpus / "talks")
    r = run("index", lib, "--data-dir", str(data_dir), "--transcriber", "leaky", env={"LEAKY_MODE": "fatal"})
    assert r.exit_code == 1 and "the service rejected key ***" in r.output, r.output
    assert not leaks(r.output) and not leaks(caplog.text)
    r = run("index", lib, "--data-dir", str(data_dir), "--transcriber", "leaky", env={"LEAKY_MODE": "usage"})
    assert r.exit_code == 2 and "the key *** is malformed" in r.output, r.output
    assert not leaks(r.output)


def test_watch_prints_no_credential(leaky, corpus, data_dir):
    lib = str(corpus / "talks")
    args = ["watch", lib, "--data-dir", str(data_dir), "--transcriber", "leaky", "--no-serve", "--stable", "0",
            "--rescan", "0"]
    r = run(*args, env={"LEAKY_MODE": "usage"})
    assert r.exit_code == 2 and "the key *** is malformed" in r.output and not leaks(r.output), r.output
    r = run(*args, env={"LEAKY_MODE": "fatal"})  # the watch stops on its own
    assert r.exit_code == 1 and "stopping: the service rejected key ***" in r.output, r.output
    assert not leaks(r.output)


def test_exceptions_logged_with_their_traceback_are_redacted(leaky, data_dir, caplog):
    key = Config.load(data_dir).secret("leaky", "service_key", env=ENV_NAME)
    try:
        raise RuntimeError(f"401 for {key}")
    except RuntimeError:
        logging.getLogger("leaky").exception("call failed")
    assert "RuntimeError: 401 for ***" in caplog.text and key not in caplog.text


def test_only_secret_looking_settings_are_redacted(data_dir):
    (data_dir / "config.toml").write_text(CONFIG)
    config = Config.load(data_dir)
    text = config.redact("model whisper-large-v3; " + ", ".join(ALL[:-1]))
    assert text == "model whisper-large-v3; " + ", ".join(["***"] * (len(ALL) - 1))


# ---- item 4: control characters on a terminal -----------------------------------------------------

EVIL = "talk\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e\n  failed: forged.mp3: no audio stream"


class ControlTextEngine(Transcriber):
    """An engine whose text holds escape sequences (a cloud service's answer is not trusted)."""

    name = "ctrl"

    def transcribe(self, request):
        text = "open the pod bay \x1b]52;c;cHduZWQ=\x07doors please"
        return Transcript(engine="ctrl", model="x", language="en",
                          segments=[Segment(index=0, start=0.0, end=2.0, text=text)])


class ControlTextPlugin:
    @hookimpl
    def register_transcribers(self, register):
        register(ControlTextEngine())


def assert_safe(output: str) -> None:
    assert not set(output) & {"\x1b", "\x07", "\x9b", "\u202e"}, repr(output)
    assert "\n  failed: forged" not in output


def test_control_characters_in_names_and_text_are_escaped(corpus, data_dir):
    lib = corpus / "evil"
    lib.mkdir()
    shutil.move(corpus / "talks" / "space_station.mp3", lib / f"{EVIL}.mp3")
    shutil.copy(corpus / "broken" / "empty.mp3", lib / f"bad {EVIL}.mp3")
    escaped = "talk\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e\\n  failed: forged.mp3: no audio stream"
    load_plugins().register(ControlTextPlugin(), name="ctrl-test")
    try:
        r = run("index", str(lib), "--data-dir", str(data_dir), "--transcriber", "ctrl")
    finally:
        load_plugins().unregister(name="ctrl-test")
    assert r.exit_code == 1, r.output
    assert_safe(r.output)
    assert f"  failed: {lib}/bad {escaped}.mp3: " in r.output

    r = run("status", "--data-dir", str(data_dir))
    assert_safe(r.output)
    assert f"failed: {lib}/bad {escaped}.mp3: " in r.output
    r = run("status", "--data-dir", str(data_dir), "--json")  # JSON stays exact
    assert f"{lib}/bad {EVIL}.mp3" in [f["path"] for f in json.loads(r.output)["failed"]]

    r = run("search", "pod bay", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert_safe(r.output)
    assert f"{lib}/{escaped}.mp3" in r.output and "[pod] [bay] \\x1b]52;c;cHduZWQ=\\x07doors" in r.output
    assert "ffplay -ss 0 $'" in r.output  # a command line that still names the file
    hit = json.loads(run("search", "pod bay", "--data-dir", str(data_dir), "--json").output)["hits"][0]
    assert hit["path"] == f"{lib}/{EVIL}.mp3" and "\x1b]52" in hit["text"]

    master, terminal = os.openpty()  # export to a terminal is escaped, to a file exact
    try:
        run("export", f"{lib}/{EVIL}.mp3", "--format", "txt", "-o", os.ttyname(terminal), "--data-dir", str(data_dir))
        assert os.read(master, 65536).decode().strip() == "open the pod bay \\x1b]52;c;cHduZWQ=\\x07doors please"
    finally:
        os.close(master)
        os.close(terminal)
    run("export", f"{lib}/{EVIL}.mp3", "--format", "txt", "-o", str(data_dir / "out.txt"), "--data-dir", str(data_dir))
    assert "\x1b]52;c;cHduZWQ=\x07" in (data_dir / "out.txt").read_text()


def test_watch_lines_escape_control_characters():
    class Log:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return False

    log = Log()
    progress = WatchProgress(lambda: None, stream=log)
    progress.finished(f"/m/{EVIL}.mp3", "failed", "no audio stream")
    progress.log(f"queued: /m/{EVIL}.mp3")
    progress.started(f"/m/{EVIL}.mp3", 3.0)
    text = log.text
    assert_safe(text)
    assert text.count("\n") == 2 and "failed: /m/talk\\x1b]0;pwned" in text


def test_shell_quote_names_the_same_file(tmp_path):
    import subprocess

    from mediaindex.cli import _shell_quote

    name = tmp_path / f"it's {EVIL} \\ \udcff.mp3"
    quoted = _shell_quote(os.fsdecode(bytes(name)))
    assert_safe(quoted)
    out = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True).stdout
    assert out == bytes(name)



def test_web_token_stays_out_of_the_access_log(corpus, data_dir, capfd):
    import urllib.request

    from mediaindex.web.server import start_server

    token = "web-token-c0ffee42d9"
    p = Pipeline(Config.load(data_dir))
    try:
        with start_server(p, port=0, token=token, log_level="info", access_log=True) as handle:
            with urllib.request.urlopen(f"{handle.url}api/status?token={token}") as r:
                assert r.status == 200
    finally:
        p.close()
    out = capfd.readouterr()
    log = out.out + out.err
    assert "GET /api/status?token=*** HTTP/1.1" in log and token not in log


def test_uncaught_tracebacks_are_redacted(tmp_path):
    """The CLI's last resort: a bug's traceback (main thread or another) shows no credential."""
    import subprocess
    import sys

    script = ("import threading\n"
              "from mediaindex.config import Config\n"
              "from mediaindex.safety import install_exception_hooks\n"
              f"key = Config(data_dir={str(tmp_path)!r}).secret('x', 'y', env={ENV_NAME!r})\n"
              "install_exception_hooks()\n"
              "def boom():\n    raise ValueError(f'thread saw {key}')\n"
              "t = threading.Thread(target=boom, name='worker')\n"
              "t.start(); t.join()\n"
              "raise RuntimeError(f'401 for {key}\\x1b]0;owned\\x07')\n")
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, ENV_NAME: ENV_KEY}, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "Exception in thread worker:" in r.stderr and "ValueError: thread saw ***" in r.stderr
    assert "RuntimeError: 401 for ***\\x1b]0;owned\\x07" in r.stderr and ENV_KEY not in r.stderr, r.stderr
