"""``mediaindex serve``: the web UI and JSON API over the index in a data dir."""
from __future__ import annotations

import sys

import click

from .server import DEFAULT_HOST, DEFAULT_PORT


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port (0 = any free port).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDIAINDEX_DATA_DIR",
              help="Where state and the index live (default ~/.local/share/mediaindex; env MEDIAINDEX_DATA_DIR).")
@click.option("--token", envvar="MEDIAINDEX_TOKEN", default=None,
              help="Require this token on every API call (env MEDIAINDEX_TOKEN). Needed to bind a "
                   "non-loopback address.")
@click.option("--index", "index_name", help="Index backend (default: sqlite).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes (one uses at most about 1.3 CPU cores; more serve more searches at "
                   "once). Default: one per CPU core, at most 4.")
def serve_command(host, port, data_dir, token, index_name, workers):
    """Serve the search web UI and JSON API (http://127.0.0.1:8844/ by default).

    The API is described at /api/openapi.json. Media are served by id only.
    """
    from ..config import Config
    from ..pipeline import FatalError, Pipeline, UsageError
    from ..safety import printable
    from .server import UnsafeBindError, check_bind, default_workers, run_server

    token = token or None
    try:
        check_bind(host, token)
    except UnsafeBindError as e:
        raise click.UsageError(str(e)) from None
    try:
        pipeline = Pipeline(Config.load(data_dir), index=index_name)
    except (UsageError, ValueError) as e:
        raise click.UsageError(printable(e)) from None
    except FatalError as e:  # a damaged state database, a full disk
        raise click.ClickException(printable(e)) from None

    def ready(url: str) -> None:
        suffix = " (token required: open it once with ?token=...)" if token else ""
        click.echo(f"mediaindex: serving {pipeline.config.data_dir} at {url}{suffix}", err=True)

    try:
        run_server(pipeline, host=host, port=port, token=token, on_ready=ready,
                   workers=workers or default_workers())
    except OSError as e:
        click.echo(f"error: {e.strerror or e}", err=True)
        sys.exit(1)
    except RuntimeError as e:  # a worker process could not start (its messages are above)
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    finally:
        pipeline.close()
