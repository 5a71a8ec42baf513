"""The ``mediaindex`` command line: parse, call the library, print."""
from __future__ import annotations

import html
import json
import os
import re
import shlex
import sqlite3
import sys
import threading

import click

from . import __version__
from .backends import is_local, normalize_location
from .config import Config
from .datalock import DataDirBusy, lock_data_dir
from .errors import FatalError, UsageError, cli_errors, click_error  # noqa: F401  (re-exported)
from .errors import PermanentError, TransientError
from .export import FORMATS, clock, render
from .hits import path_prefix as under, search_json
from .models import SearchQuery
from .pipeline import Pipeline
from .plugins import get_plugins, load_plugins
from .safety import CONTROL_CHARS, install_exception_hooks, printable, terminal_safe

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), envvar="MEDIAINDEX_DATA_DIR",
    help="Where state and the index live (default ~/.local/share/mediaindex; env MEDIAINDEX_DATA_DIR).")


queue_option = click.option(
    "--queue", envvar="MEDIAINDEX_QUEUE", metavar="URL", default=None,
    help="Coordinate: hand the work on files to `mediaindex worker`s through this Redis "
         "(redis://host:6379/0; a password or rediss:// beyond loopback; env MEDIAINDEX_QUEUE); "
         "--workers then counts the jobs handed out at once (default 32).")


def open_pipeline(data_dir, **kw) -> Pipeline:
    with cli_errors(setup=True):  # a bad config, an unknown engine, a damaged state database, a full disk
        return Pipeline(Config.load(data_dir), **kw)


def database_failure(e: sqlite3.Error, config: Config) -> Exception:
    """What to raise for a database error: a clear message for a full disk, a damaged or a
    read-only database (see dberrors); any other error as it is (a bug: its traceback helps)."""
    return click_error(e, config.state_path) or e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mediaindex")
def cli():
    """Search audio and video by what is said in it, down to the second."""
    install_exception_hooks()  # an unexpected traceback is printed without credentials


class BarReporter:
    """Feeds the pipeline's progress into a click progress bar, one step per file."""

    def __init__(self, bar):
        self.bar = bar
        self.lock = threading.Lock()
        self.current = ""
        self.live = sys.stderr.isatty()  # in a log file, one line per finished file is enough

    def started(self, path, duration):
        if not self.live:
            return
        with self.lock:
            self.current = terminal_safe(os.path.basename(path))
            self.bar.label = f"transcribing {self.current[:40]}"
            self.bar.render_progress()

    def progress(self, path, done, total):
        if not self.live:
            return
        with self.lock:
            pct = int(100 * done / total) if total else 0
            self.bar.label = f"transcribing {terminal_safe(os.path.basename(path))[:40]} {pct:3d}%"
            self.bar.render_progress()

    def finished(self, path, status, error):
        with self.lock:
            if status == "retry":
                return
            self.bar.label = f"{status:>8} {terminal_safe(os.path.basename(path))[:40]}"
            self.bar.update(1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@data_dir_option
@click.option("--transcriber", help="Speech engine (default: local; see `mediaindex plugins`).")
@click.option("--index", "index_name", help="Index backend (default: sqlite).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Files transcribed at once.")
@click.option("--estimate", is_flag=True, help="Print what transcribing would cost, per engine; send nothing.")
@queue_option
def index(paths, data_dir, transcriber, index_name, workers, estimate, queue=None):
    """Scan PATHS once and index every new or changed media file.

    Exit status: 0 when every file is indexed, 1 when any failed, was skipped (an unreadable
    entry, or a path named that is not media: a .txt, a FIFO, a device) or waits for a retry,
    or a root is offline (each listed with its reason), 2 on usage errors.
    """
    missing = [p for p in paths if is_local(p) and not os.path.exists(p)]
    pipeline = open_pipeline(data_dir, transcriber=transcriber, index=index_name)
    try:
        lock = lock_data_dir(pipeline.config.data_dir, "index")
    except DataDirBusy as e:
        pipeline.close()
        raise click_error(e) from None
    try:
        # a missing path with known files is a root that is offline (an unmounted drive): it is
        # reported and keeps its entries; a path never seen before is a typo
        pipeline.check_transcriber()
        if queue and not estimate:  # the work goes to `mediaindex worker`s; --workers: jobs handed out at once
            pipeline.use_queue(queue)
            workers = workers if click.get_current_context().get_parameter_source("workers").name != "DEFAULT" else 32
        known_roots = pipeline.state.roots()
        unknown = [p for p in missing if os.path.abspath(os.path.expanduser(p)) not in known_roots
                   and not pipeline.state.has_files_under(os.path.abspath(os.path.expanduser(p)))]
        if unknown:
            raise UsageError(f"no such file or folder: {', '.join(unknown)}")
        recovered = pipeline.state.jobs.recover()
        if recovered:
            click.echo(f"resuming {recovered} job(s) interrupted last time", err=True)
        repaired = pipeline.repair_index()
        if repaired:
            click.echo(f"{repaired}; rebuilding it from the cached transcripts", err=True)
        rebuilt, dropped = pipeline.reconcile()
        if rebuilt or dropped:
            click.echo(f"index repaired: {rebuilt} media rebuilt from cached transcripts, {dropped} stale dropped",
                       err=True)
        if not estimate and (stale := pipeline.requeue_stale_failures()):
            click.echo(f"trying again {len(stale)} failed file(s) whose cause may be gone (a transient error, "
                       "or the engine or its settings changed)", err=True)
        plan = pipeline.plan(list(paths))
        if estimate:
            return print_estimate(pipeline, plan)
        for path in plan.excluded:
            click.echo(f"warning: {printable(path)} is the data dir (or inside it): never scanned; better keep it "
                       "outside the indexed folders", err=True)
        pipeline.enqueue_plan(plan)
        total = pipeline.state.jobs.pending()
        click.echo(f"{len(plan.changed)} new or changed, {plan.unchanged} unchanged, "
                   f"{len(plan.deleted)} gone", err=True)
        with click.progressbar(length=total, label="indexing", show_eta=True, show_pos=True,
                               file=sys.stderr) as bar:
            outcomes = pipeline.run_jobs(workers=workers, reporter=BarReporter(bar), max_attempts=3,
                                         wait_for_retries=30)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        transcribed = sum(1 for o in outcomes if o.transcribed)
        failed = [rec for root in plan.roots for rec in pipeline.state.files_under(root) if rec.status == "failed"]
        still_queued = pipeline.state.jobs.pending()
        parts = [f"{counts.get('indexed', 0)} indexed ({transcribed} transcribed)"]
        if counts.get("removed"):
            parts.append(f"{counts['removed']} removed")
        if counts.get("ignored"):
            parts.append(f"{counts['ignored']} not media")
        parts.append(f"{len(failed)} failed")
        if still_queued:
            parts.append(f"{still_queued} waiting to retry")
        click.echo("done: " + ", ".join(parts), err=True)
        for rec in failed:
            reason = (rec.error or "").removeprefix(f"{rec.path}: ")
            click.echo(f"  failed: {printable(rec.path)}: {printable(reason)}", err=True)
        if failed:
            click.echo("  once the cause is fixed, index them again: mediaindex retry [PATH...]", err=True)
        for path, reason in plan.unreadable:
            click.echo(f"  skipped: {printable(path)}: {printable(reason)}", err=True)
        for root in plan.offline:
            click.echo(f"  offline: {printable(root)} ({printable(plan.offline_why.get(root, 'missing'))}; "
                       "its files stay in the index)", err=True)
        sys.exit(1 if failed or still_queued or plan.unreadable or plan.offline else 0)
    except TransientError as e:  # the index server is down at the start: nothing was queued
        raise click.ClickException(printable(f"{e}; nothing was changed: run again when it is back")) from None
    except Exception as e:  # a usage error, a FatalError, a database error: one line; a bug: its traceback
        raise click_error(e, pipeline.config.state_path) or e
    finally:
        lock.close()
        pipeline.close()


@cli.command()
@click.argument("paths", nargs=-1)
@data_dir_option
@click.option("--index", "index_name", help="Index backend to rebuild (default: the configured one).")
@click.option("--transcriber", help="With PATHS: the engine (or engine:model) to transcribe them with again.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Files transcribed at once.")
@click.pass_context
def reindex(ctx, paths, data_dir, index_name, transcriber, workers):
    """Rebuild an index from the cached transcripts, never transcribing again; or, with PATHS and
    --transcriber, transcribe the recordings at or under PATHS again with another engine.

    Without PATHS: moves a library to another backend (``--index meilisearch``) or refreshes
    one. Documents of media the state no longer has are dropped. Exit status 1 when a media
    could not be rebuilt. With PATHS: the old transcript stays searchable until the new one is
    ready (then it replaces it; a failure keeps the old one); exit status as `index`.
    """
    if paths or transcriber:
        if not (paths and transcriber):
            raise click.UsageError("to transcribe again, give both: reindex PATH... --transcriber NAME")
        return _retranscribe(ctx, paths, data_dir, transcriber, workers)
    pipeline = open_pipeline(data_dir, index=index_name)
    try:
        lock = lock_data_dir(pipeline.config.data_dir, "reindex")
    except DataDirBusy as e:
        pipeline.close()
        raise click.UsageError(printable(e)) from None
    failed: list[tuple[str, str]] = []
    try:
        ids = sorted(pipeline.state.all_media_ids("indexed"))
        stale = pipeline.index.media_ids() - set(ids)
        with click.progressbar(ids, label=f"re-indexing into {pipeline.index.name}", show_pos=True,
                               show_eta=True, file=sys.stderr) as bar:
            for media_id in bar:
                try:
                    pipeline.reindex(media_id)
                except PermanentError as e:
                    failed.append((media_id, str(e)))
        for media_id in stale:
            pipeline.index.delete(media_id)
        click.echo(f"done: {len(ids) - len(failed)} media re-indexed into {pipeline.index.name}, "
                   f"{len(stale)} stale dropped, {len(failed)} failed", err=True)
        for media_id, why in failed:
            click.echo(f"  failed: {media_id}: {printable(why)}", err=True)
        if index_name and index_name != (pipeline.config.get("index") or "sqlite"):
            click.echo(f'to search it by default, put  index = "{index_name}"  in '
                       f"{pipeline.config.data_dir / 'config.toml'}", err=True)
    except TransientError as e:  # the index server is down: run it again when it is back
        raise click.ClickException(printable(e)) from None
    except Exception as e:  # a FatalError, a database error: one line; a bug: its traceback
        raise click_error(e, pipeline.config.state_path) or e
    finally:
        lock.close()
        pipeline.close()
    sys.exit(1 if failed else 0)


def print_estimate(pipeline: Pipeline, plan) -> None:
    """Files, hours, billed seconds and cost per engine for the new or changed files: each is
    probed and routed here; nothing is sent, staged or queued."""
    from .backends import MediaError
    from .probe import probe

    rows: dict[str, list[float]] = {}
    notes: dict[str, dict[str, None]] = {}  # engine -> its notes, each once, in order
    skipped = 0
    for f in plan.changed:
        try:
            info = probe(f.path)
            engine = pipeline.transcriber_for(info)
        except MediaError:
            skipped += 1
            continue
        row = rows.setdefault(engine.name, [0, 0.0, 0.0, 0.0])
        billed, cost, note = engine.estimate(info, pipeline.config.hint_for(f.path))
        row[0] += 1
        row[1] += info.duration / 3600
        row[2] += billed
        row[3] += cost
        if note:
            notes.setdefault(engine.name, {})[note] = None
    total = [sum(r[i] for r in rows.values()) for i in range(4)]
    click.echo(f"{'engine':<28} {'files':>6} {'hours':>8} {'billed s':>10} {'cost':>10}")
    for name, (n, hours, billed, cost) in sorted(rows.items()) + [("total", total)]:
        click.echo(f"{name:<28} {int(n):>6} {hours:>8.2f} {billed:>10.0f} {cost:>10.4f}")
    for name, said in notes.items():
        for note in said:
            click.echo(f"note: {name}: {note}")
    if skipped:
        click.echo(f"{skipped} file(s) not counted (not media, or no engine takes them)")


@cli.command()
@click.argument("paths", nargs=-1)
@data_dir_option
@click.option("--transcriber", help="Transcription engine (default: from config, else local-whisper).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Files transcribed at once.")
@click.pass_context
def retry(ctx, paths, data_dir, transcriber, workers):
    """Index again the files that failed: all of them, or those at or under PATHS.

    For a failure whose cause is gone (an engine fixed or changed, a network back) while the
    file itself did not change, so that `index` alone would skip it. Exit status as `index`.
    """
    _require_library(data_dir)
    pipeline = open_pipeline(data_dir)
    try:
        lock = lock_data_dir(pipeline.config.data_dir, "retry")
    except DataDirBusy as e:
        pipeline.close()
        raise click_error(e) from None
    try:
        under = [normalize_location(p) for p in paths] if paths else None
        again = pipeline.state.requeue_failed(under)
        roots = list(under) if under else _roots_of(again, pipeline.state.roots())
    finally:
        lock.close()
        pipeline.close()
    if not again:
        click.echo("no failed file to retry" + (" there" if paths else ""), err=True)
        return
    click.echo(f"retrying {len(again)} failed file(s)", err=True)
    ctx.invoke(index, paths=tuple(roots), data_dir=data_dir, transcriber=transcriber, index_name=None,
               workers=workers, estimate=False)


def _retranscribe(ctx, paths, data_dir, transcriber, workers):
    """`reindex PATH... --transcriber NAME`: queue the files again and index them with NAME."""
    _require_library(data_dir)
    pipeline = open_pipeline(data_dir, transcriber=transcriber)
    try:
        pipeline.check_transcriber()  # an unknown engine is a usage error before anything changes
        lock = lock_data_dir(pipeline.config.data_dir, "reindex")
    except Exception as e:
        pipeline.close()
        raise click_error(e, pipeline.config.state_path) or e
    try:
        again = pipeline.state.requeue_failed([normalize_location(p) for p in paths], ("indexed", "failed"))
    finally:
        lock.close()
        pipeline.close()
    if not again:
        raise click.UsageError(f"nothing indexed at or under {', '.join(printable(p) for p in paths)}")
    click.echo(f"transcribing {len(again)} file(s) again with {printable(transcriber)}", err=True)
    ctx.invoke(index, paths=tuple(paths), data_dir=data_dir, transcriber=transcriber, index_name=None,
               workers=workers, estimate=False)


def _roots_of(paths: list[str], roots) -> list[str]:
    """The known roots that hold these paths (a path outside every root stands for itself)."""
    out: list[str] = []
    for p in paths:
        holder = max((r for r in roots if p == r or p.startswith(r.rstrip("/") + "/")), key=len, default=p)
        if holder not in out:
            out.append(holder)
    return out


def _terminal_snippet(snippet: str, color: bool) -> str:
    on, off = ("\x1b[1;33m", "\x1b[0m") if color else ("[", "]")
    parts = re.split(r"(</?mark>)", snippet)  # the text is escaped; only the highlight is ours
    return "".join({"<mark>": on, "</mark>": off}.get(p) or printable(html.unescape(p)) for p in parts)


def _shell_quote(path: str) -> str:
    """path quoted for a shell; control characters as bash $'...' escapes (still the same path)."""
    if not CONTROL_CHARS.search(path):
        return shlex.quote(path)

    def escape(m: re.Match) -> str:
        o = ord(m.group())
        return f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\x{o:02x}" if o < 0x80 else f"\\u{o:04x}"

    return "$'" + CONTROL_CHARS.sub(escape, path.replace("\\", "\\\\").replace("'", "\\'")) + "'"


def _require_library(data_dir) -> None:
    """A usage error (exit 2) when there is no library in data_dir: searching must not create one."""
    with cli_errors(setup=True):  # a bad config
        config = Config.load(data_dir)
    if not config.data_dir.is_dir():
        raise click.UsageError(f"no library in {printable(str(config.data_dir))} (run `mediaindex index PATH` "
                               "to make one, or give --data-dir)")


@cli.command()
@click.argument("query")
@data_dir_option
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--lang", help="Only segments in this language (e.g. en, zh).")
@click.option("--emotion", help="Only segments with this emotion.")
@click.option("--kind", type=click.Choice(["speech", "singing", "music"]))
@click.option("--source", type=click.Choice(["asr", "lyrics", "subtitle", "sound"]),
              help="Only words from speech recognition, lyrics, subtitles, or sound moments.")
@click.option("--event", help="Only segments with this sound event (laughter, applause, music...).")
@click.option("--path", "path_prefix", help="Only media under this folder.")
@click.option("--date", help="Only recordings of this year (2024) or month (2024-03): the date tag, else the file's.")
@click.option("--index", "index_name", help="Index backend (default: sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search(query, data_dir, limit, offset, lang, emotion, kind, source, event, path_prefix, date, index_name,
           as_json):
    """Find the moments where QUERY was said."""
    query = query.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # bytes not UTF-8: U+FFFD
    if date and not re.fullmatch(r"[0-9]{4}(-(0[1-9]|1[0-2]))?", date):
        raise click.BadParameter(f"{date!r}: give a year (2024) or a month (2024-03)", param_hint="--date")
    _require_library(data_dir)
    pipeline = open_pipeline(data_dir, index=index_name)
    try:
        prefix = under(path_prefix) if path_prefix else None
        search_query = SearchQuery(q=query, limit=limit, offset=offset, language=lang, emotion=emotion, kind=kind,
                                   path_prefix=prefix, source=source, event=event, date=date)
        result = pipeline.index.search(search_query)
    except TransientError as e:  # an index server (Meilisearch) down or overloaded
        raise click.ClickException(printable(f"search failed: {e} (try again when it is back)")) from None
    except Exception as e:  # a damaged index (the next `index` or `watch` rebuilds it), a full disk
        raise click_error(e) or e
    finally:
        pipeline.close()
    if as_json:
        click.echo(json.dumps(search_json(result, search_query), ensure_ascii=False))
        return
    if not result.hits:
        click.echo(f"no match for {query!r}", err=True)
        return
    color = sys.stdout.isatty()
    if result.partial:
        click.echo("(no segment has every word: showing the closest matches)", err=True)
    if result.stopped_early:
        click.echo("(a long query: only its rarest words were weighed and the search stopped early)", err=True)
    if result.did_you_mean:
        click.echo(f"no exact match: showing results for {result.did_you_mean!r}", err=True)
    elif result.forgiven:
        click.echo("also matched: " + "; ".join(f"{f['word']} -> {', '.join(f['matched'])}" for f in result.forgiven),
                   err=True)
    for h in result.hits:
        stem = os.path.splitext(os.path.basename(h.path))[0]
        name = printable(h.path) if not h.title or h.title == stem else f"{printable(h.title)} ({printable(h.path)})"
        src = f" [{h.source}]" if h.source != "asr" else ""  # lyrics, subtitle, sound
        click.echo(f"{clock(h.time)}  {name}{src}  {_terminal_snippet(h.snippet, color)}")
    shown = offset + len(result.hits)
    if result.total > shown:
        more = f"{result.total - shown}" if result.total_exact else f"about {result.total - shown}"
        click.echo(f"... {more} more (--offset {shown})", err=True)
    top = result.hits[0]
    start = max(0, int(top.time) - 1)  # a second before the first matched word
    click.echo(f"play the first: ffplay -ss {start} {_shell_quote(top.path)}   or open "
               f"http://127.0.0.1:8844/m/{top.media_id}?t={start} (mediaindex serve)", err=True)


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
@queue_option
def status(data_dir, as_json, queue=None):
    """Counts of files by state, and every failed file with its error (with --queue: the workers)."""
    from .state import State

    with cli_errors(setup=True):
        config = Config.load(data_dir)
    if not config.state_path.exists():
        summary = {"files": {"queued": 0, "running": 0, "indexed": 0, "failed": 0, "ignored": 0, "total": 0}, "failed": []}
    else:
        try:
            state = State(config.state_path)
            summary = state.summary()
            summary["jobs"] = state.jobs.counts()
            state.close()
        except (OSError, sqlite3.Error) as e:
            raise click_error(e, config.state_path) or click.ClickException(
                printable(f"cannot read the state database {config.state_path}: {e}")) from None
    if queue:
        from .pipeline import queue_for

        with cli_errors(setup=True):
            summary["queue"] = queue_for(load_plugins(), config, queue).status(queue, config)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    f = summary["files"]
    if f.get("interrupted"):
        click.echo(f"{f['interrupted']} interrupted (the writer stopped while indexing; they run again at the "
                   "next `index` or `watch`)")
    click.echo(f"{f['indexed']} indexed, {f['queued']} queued, {f['running']} running, {f['failed']} failed, "
               f"{f.get('ignored', 0)} not media ({f['total']} files; {summary.get('hours_indexed', 0)} h of media; spent {summary.get('spent', 0)})")
    for engine, spend in summary.get("spent_by_engine", {}).items():
        click.echo(f"spent on {printable(engine)}: {spend['cost']:.4f} for {spend['seconds']:.0f} billed s "
                   f"({spend['media']} media)")
    for root in summary.get("roots", []):
        if root["status"] == "offline":
            click.echo(f"offline: {printable(root['path'])}")
    for item in summary["failed"]:
        click.echo(f"failed: {printable(item['path'])}: {printable(item['error'])}")
    if queue:
        print_queue_status(summary["queue"])


def print_queue_status(q: dict) -> None:
    """Workers seen, what each is doing, queue depth and throughput (``status --queue``)."""
    if q.get("error"):
        click.echo(f"queue {printable(q['url'])}: unreachable: {printable(q['error'])}")
        return
    depth = q["queue"]
    click.echo(f"queue {printable(q['url'])}: {depth['queued']} waiting, {depth['delayed']} delayed, "
               f"{len(q['workers'])} worker(s), {q['per_minute']} files/min (last 5 min)")
    for w in q["workers"]:
        doing = "; ".join(f"{d['stage']} {printable(d['path'])} ({d['for']:.0f} s)" for d in w["doing"]) or "idle"
        click.echo(f"  {printable(w['id'])}: {w['done']} done, {w['failed']} failed, {doing}")


@cli.command()
@click.argument("media")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="srt", show_default=True)
@data_dir_option
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-")
def export(media, fmt, data_dir, output):
    """Export the transcript of MEDIA (an id or a path) as SRT, WebVTT, JSON or text."""
    pipeline = open_pipeline(data_dir)
    try:
        state = pipeline.state
        m = state.get_media(media) if re.fullmatch(r"[0-9a-f]{20}", media) else None
        if m is None:
            m = state.media_for_path(normalize_location(media))
        if m is None:
            raise click.ClickException(f"{printable(media)}: not in the index (run `mediaindex index` on it first)")
        transcript = state.get_transcript(m.id)
        if transcript is None:
            raise click.ClickException(f"{printable(media)}: no transcript yet (status: {m.status})")
        text = render(fmt, m, transcript)
        output.write(terminal_safe(text, keep_newlines=True) if output.isatty() else text)  # a file stays exact
    except Exception as e:
        raise click_error(e, pipeline.config.state_path) or e
    finally:
        pipeline.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json):
    """List loaded plugins, their distributions, versions and hooks."""
    items = get_plugins()
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    for p in items:
        dist = f"{p['distribution']} {p['version']}" if p["distribution"] else "(registered in-process)"
        click.echo(f"{p['name']:<12} {dist:<36} {', '.join(p['hooks'])}")


def main():
    load_plugins()
    cli(prog_name="mediaindex")


from .watch_cli import watch_command  # noqa: E402  (watch mode lives in its own module)

cli.add_command(watch_command)
from .web.cli import serve_command  # noqa: E402  (the web UI: mediaindex/web/)
cli.add_command(serve_command)
load_plugins().hook.register_commands(cli=cli)
