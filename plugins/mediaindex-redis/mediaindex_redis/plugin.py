"""The entry point: the ``redis`` shared queue (``--queue redis://...``) and ``mediaindex worker``."""
from __future__ import annotations

import signal
import sys
import threading

import click

from mediaindex.hookspecs import hookimpl

from .link import Link, check_url, safe_url


class RedisQueue:
    """What the core looks up by URL scheme (``Pipeline.use_queue``, ``status --queue``)."""

    schemes = ("redis", "rediss", "unix")

    def check(self, url: str) -> None:
        check_url(url)

    def coordinator(self, pipeline, url: str):
        from .coordinator import Coordinator

        return Coordinator(pipeline, url)

    def status(self, url: str, config) -> dict:
        return Link(url, config).status()


@hookimpl
def register_queues(register, config):
    register(RedisQueue())


@click.command("worker")
@click.option("--queue", required=True, envvar="MEDIAINDEX_QUEUE", metavar="URL",
              help="The coordinator's Redis: redis://host:6379/0 (a password or rediss:// beyond loopback; "
                   "env MEDIAINDEX_QUEUE).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Files worked on at once.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDIAINDEX_DATA_DIR",
              help="This worker's config (config.toml: engines, storage credentials); no state is kept there.")
@click.option("--grace", type=click.FloatRange(0), default=10.0, show_default=True, metavar="SECONDS",
              help="On Ctrl-C/SIGTERM, how long running jobs may finish (the others go to another worker).")
def worker_command(queue, workers, data_dir, grace):
    """Work on files for a coordinator (`mediaindex watch/index ... --queue URL`).

    Fetches each file by its URI (a bucket, or a shared mount at the same path), transcribes
    and enriches it, and sends the result back; the coordinator keeps the state and the index.
    A worker killed (or a machine lost) has its jobs delivered to another worker after the
    visibility timeout ([redis] visibility_timeout in config.toml, 60 s by default).
    """
    from mediaindex.config import Config
    from mediaindex.errors import UsageError, cli_errors, click_error
    from mediaindex.pipeline import Pipeline

    from .worker import Worker

    try:
        check_url(queue)
    except UsageError as e:
        raise click_error(e) from None
    with cli_errors(setup=True):
        pipeline = Pipeline(Config.load(data_dir))
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *a: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            w = Worker(queue, pipeline, threads=workers)
            w.link.redis.ping()
        except Exception as e:
            from mediaindex.safety import redact

            raise click.ClickException(redact(f"cannot reach the queue at {safe_url(queue)}: {e}")) from None
        w.start()
        click.echo(f"worker {w.id}: {workers} at once, queue {safe_url(queue)}", err=True)
        while not stop.wait(0.5):
            pass
        click.echo("stopping", err=True)
        w.stop(timeout=grace)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        pipeline.close()
    sys.exit(0)


@hookimpl
def register_commands(cli):
    cli.add_command(worker_command)
