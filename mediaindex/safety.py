"""What may leave the process: no credential anywhere, no control character on a terminal.

``redact`` replaces every known credential with ``***``: the values that ``Config.secret()``
returned, config values under a secret-looking name, and secret-looking environment variables.
Every text that is stored, logged, printed or served goes through it; log records are redacted
as they are made (see ``_redacting_factory``). ``terminal_safe`` escapes control characters, so
a hostile file name cannot move the cursor, set the title, write the clipboard or forge a line;
``printable`` does both, for every line printed to a terminal or a log file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from urllib.parse import quote, quote_plus

# Environment variables that hold credentials, whatever their names look like.
SECRET_ENV = ("DASHSCOPE_API_KEY", "MEILI_MASTER_KEY", "MEILI_API_KEY", "MEDIAINDEX_TOKEN", "MEDIAINDEX_WEB_TOKEN",
              "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "OSS_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
# A setting or environment variable whose name ends like this holds a credential.
SECRET_NAME = re.compile(r"(keys?|tokens?|secrets?|passw(or)?ds?|credentials?|bearer|authorization)$", re.I)
MIN_SECRET = 6  # shorter values are not redacted: replacing them would garble ordinary text

_registry: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern | None = None  # every form of every secret; rebuilt when one is added


def add_secret(value: object) -> None:
    """Treat value as a credential from now on, in this process."""
    global _pattern
    if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value).strip()) >= MIN_SECRET:
        with _lock:
            if str(value) not in _registry:
                _registry.add(str(value))
                _pattern = None


def add_env_secrets() -> None:
    """Register the environment variables that hold credentials (by name, or named in SECRET_ENV)."""
    for name, value in os.environ.items():
        if name in SECRET_ENV or SECRET_NAME.search(name):
            add_secret(value)


def secret_values() -> list[str]:
    """Every credential known to this process, longest first."""
    with _lock:
        return sorted(_registry, key=len, reverse=True)


def _forms(value: str) -> list[str]:
    """The value as it may appear in a message: raw, URL-encoded, JSON-escaped."""
    forms = (value, quote(value), quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1])
    return list(dict.fromkeys(forms))


def _compiled() -> re.Pattern | None:
    global _pattern
    with _lock:
        if _pattern is None and _registry:
            forms = sorted({f for v in _registry for f in _forms(v)}, key=len, reverse=True)  # longest wins
            _pattern = re.compile("|".join(map(re.escape, forms)))
        return _pattern


def redact(text: str) -> str:
    """text with every known credential replaced by ***."""
    pattern = _compiled()
    return pattern.sub("***", text) if text and pattern is not None else text


# C0 and C1 controls, DEL, the invisible characters that reorder or break lines on display, and
# the bytes of a name that is not UTF-8 (os.fsdecode's surrogate escapes: unprintable as they are)
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\udc80-\udcff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    o = ord(m.group())
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\x{o - 0xDC00:02x}"  # the original byte
    return _SHORT.get(m.group()) or (f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")


def terminal_safe(text: str, keep_newlines: bool = False) -> str:
    """text with control characters written as escapes (``\\x1b``, ``\\n``): safe to print."""
    if keep_newlines:
        return "\n".join(terminal_safe(line) for line in text.split("\n"))
    return CONTROL_CHARS.sub(_escape, text)


def printable(text: object) -> str:
    """What may be printed: credentials redacted, control characters escaped."""
    return terminal_safe(redact(str(text)))


# ---- logs and uncaught exceptions -------------------------------------------------------------


def _redact_arg(arg: object) -> object:
    return printable(arg) if isinstance(arg, str) else arg


def _redacting_factory(previous):
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = terminal_safe(redact(logging.Formatter().formatException(record.exc_info)),
                                            keep_newlines=True)
        return record
    factory._mediaindex_redacts = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Redact every log record made in this process, whichever handler writes it (idempotent)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "_mediaindex_redacts", False):
        logging.setLogRecordFactory(_redacting_factory(current))


def _print_exception(exc_type, exc, tb, header: str = "") -> None:
    text = header + "".join(traceback.format_exception(exc_type, exc, tb))
    print(terminal_safe(redact(text), keep_newlines=True), file=sys.stderr, end="")


def install_exception_hooks() -> None:
    """Tracebacks of uncaught exceptions (main thread and others) are printed redacted."""
    sys.excepthook = _print_exception

    def thread_hook(a) -> None:
        if a.exc_type is not SystemExit:  # as the default hook does
            name = a.thread.name if a.thread is not None else "?"
            _print_exception(a.exc_type, a.exc_value, a.exc_traceback, f"Exception in thread {name}:\n")

    threading.excepthook = thread_hook


add_env_secrets()
install_log_redaction()  # also in web worker processes, which import this but never run the CLI
