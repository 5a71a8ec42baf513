"""Every error mediaindex raises on purpose, and one path from an error to an exit code and a message.

A plugin raises, per file: :class:`PermanentError` (retrying will not help), :class:`TransientError`
(retry later, with backoff), :class:`NotReady` (the work goes on elsewhere: ask again later,
without spending an attempt). :class:`FatalError` stops all work (the user must act);
:class:`UsageError` is a bad choice by the user (exit code 2).

Every command reports through :func:`exit_status` (or :func:`cli_errors`, its click form): the
message is redacted (no credential) and terminal-safe (no control character); an error that is
none of these kinds is a bug and keeps its traceback.

The old import locations stay valid: ``mediaindex.backends``, ``mediaindex.pipeline``,
``mediaindex.dberrors`` and ``mediaindex`` re-export these classes.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .safety import printable

EXIT_OK = 0
EXIT_FAILED = 1  # a file failed, or work stopped (FatalError)
EXIT_USAGE = 2  # a bad option, an unknown engine, a busy data dir
EXIT_INTERRUPTED = 130  # stopped by a second Ctrl-C with jobs put back in the queue


class MediaError(Exception):
    """A per-file failure. ``transient`` errors are retried with backoff, permanent ones are not."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None):
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class PermanentError(MediaError):
    """Retrying will not help: corrupt file, no audio stream, rejected by the engine (400)."""

    transient = False


class TransientError(MediaError):
    """Worth retrying later: network failure, 429, 5xx, engine busy.

    ``retry_after`` (seconds) is honoured by the job queue when the service said when to retry
    (HTTP ``Retry-After``); otherwise the queue backs off exponentially. A rejected API key is
    not transient: raise FatalError, every file would fail the same way.
    """

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(TransientError):
    """The work is under way elsewhere (a submitted cloud task): ask again in ``retry_after`` s.

    The job goes back to the queue without spending an attempt and without holding a worker,
    so a task that takes 12 hours can be polled for 12 hours. Keep what is needed to ask again
    (the task id) in the request's checkpoint: the next call finds it there.
    """

    def __init__(self, message: str = "not ready yet", *, retry_after: float = 60.0):
        super().__init__(message, retry_after=retry_after)


class FatalError(Exception):
    """Stops all work, not one file: a full disk, a missing or damaged model. The user must act."""


class BudgetExceeded(FatalError):
    """The spending cap would be passed: paid work stops, the files stay queued (not failed)."""


class UsageError(Exception):
    """A bad choice by the user (unknown engine, unknown index): exit code 2, not a file failure."""


class ConfigError(UsageError, ValueError):
    """A config file or option that cannot be used (bad TOML, an unwritable data dir)."""


class DiskFull(FatalError):
    """No space left for the data dir: work stops, nothing is lost."""


class DatabaseDamaged(FatalError):
    """A database file is damaged (truncated, overwritten, not a database)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class IndexDamaged(DatabaseDamaged):
    """The search index is damaged: ``index`` or ``watch`` rebuilds it from cached transcripts."""


class StateDamaged(DatabaseDamaged):
    """The state database is damaged: it holds the only copy of the transcripts, the user decides."""


def message(e: BaseException) -> str:
    """What to print for an error: credentials redacted, control characters escaped."""
    return printable(e)


def exit_status(e: BaseException, state_path: Path | None = None, *,
                setup: bool = False) -> tuple[int, str] | None:
    """(exit code, message) for an error a command reports in one line; None for a bug (its
    traceback is shown). A database error is named (full disk, damaged, read-only) when
    ``state_path`` says which database it came from. ``setup``: raised while loading the config
    and the plugins, where a ValueError is a bad setting (a usage error), not a bug."""
    if isinstance(e, UsageError) or (setup and isinstance(e, ValueError)):
        return EXIT_USAGE, message(e)
    if isinstance(e, FatalError):
        return EXIT_FAILED, message(e)
    if state_path is not None and isinstance(e, (sqlite3.Error, OSError)):
        from .dberrors import database_error

        fatal = database_error(e, Path(state_path))
        if fatal is not None:
            return EXIT_FAILED, message(fatal)
    return None


def click_error(e: BaseException, state_path: Path | None = None, *, setup: bool = False) -> Exception | None:
    """The click exception that reports ``e`` (exit code and message from :func:`exit_status`);
    None for a bug: re-raise it as it is (``raise click_error(e) or e``)."""
    import click

    status = exit_status(e, state_path, setup=setup)
    if status is None:
        return None
    code, text = status
    if code == EXIT_USAGE:
        return click.UsageError(text)
    err = click.ClickException(text)
    err.exit_code = code
    return err


@contextmanager
def cli_errors(state_path: Path | None = None, *, setup: bool = False) -> Iterator[None]:
    """Wrap a command's body: a known error leaves as its exit code and one safe line."""
    import click

    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as e:
        err = click_error(e, state_path, setup=setup)
        if err is None:
            raise
        raise err from None
