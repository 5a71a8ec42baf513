"""``mediaindex serve``: the web UI and JSON API over the index in a data dir."""
from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from .server import DEFAULT_HOST, DEFAULT_PORT


def resolve_token(token: str | None, token_file: str | None) -> str | None:
    """The token from --token, MEDIAINDEX_TOKEN or --token-file (for ``serve`` and ``watch``);
    a warning when it was typed on the command line, where every user sees it in ``ps``."""
    ctx = click.get_current_context()
    if token_file:
        if token:
            raise click.UsageError("give the token once: --token (or MEDIAINDEX_TOKEN) or --token-file")
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or e
            raise click.UsageError(f"cannot read the token file {token_file}: {reason}") from None
        token = token.strip()
        if not token:
            raise click.UsageError(f"the token file {token_file} is empty")
    elif token and ctx.get_parameter_source("token") == ParameterSource.COMMANDLINE:
        click.echo("warning: --token on the command line is visible to every user of this machine (ps); "
                   "use --token-file or MEDIAINDEX_TOKEN", err=True)
    if token and not token.strip():
        raise click.UsageError("the token is blank")
    return token or None


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on. Anything but loopback needs a token (16 characters or more).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port (0 = any free port).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDIAINDEX_DATA_DIR",
              help="Where state and the index live (default ~/.local/share/mediaindex; env MEDIAINDEX_DATA_DIR).")
@click.option("--token", envvar="MEDIAINDEX_TOKEN", default=None,
              help="Require this token on every API call (env MEDIAINDEX_TOKEN). Needed to bind a "
                   "non-loopback address (then at least 16 characters). On the command line it shows in "
                   "`ps`: prefer --token-file or the environment.")
@click.option("--token-file", type=click.Path(dir_okay=False), envvar="MEDIAINDEX_TOKEN_FILE",
              help="Read the token from this file (env MEDIAINDEX_TOKEN_FILE).")
@click.option("--index", "index_name", help="Index backend (default: sqlite).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes (one uses at most about 1.3 CPU cores; more serve more searches at "
                   "once). Default: one per CPU core, at most 4.")
def serve_command(host, port, data_dir, token, token_file, index_name, workers):
    """Serve the search web UI and JSON API (http://127.0.0.1:8844/ by default).

    The API is described at /api/openapi.json. Media are served by id only.
    """
    from ..config import Config
    from ..errors import EXIT_FAILED, cli_errors, click_error
    from ..pipeline import Pipeline
    from ..safety import printable
    from .server import UnsafeBindError, check_bind, default_workers, run_server

    token = resolve_token(token, token_file)
    try:
        check_bind(host, token)
    except UnsafeBindError as e:
        raise click_error(e) from None
    with cli_errors(setup=True):  # a bad config, an unknown index, a damaged state database, a full disk
        pipeline = Pipeline(Config.load(data_dir), index=index_name)

    def ready(url: str) -> None:
        suffix = " (token required: open it once with ?token=...)" if token else ""
        click.echo(f"mediaindex: serving {pipeline.config.data_dir} at {url}{suffix}", err=True)

    try:
        run_server(pipeline, host=host, port=port, token=token, on_ready=ready,
                   workers=workers or default_workers())
    except OSError as e:
        click.echo(f"error: {printable(e.strerror or e)}", err=True)
        sys.exit(EXIT_FAILED)
    except RuntimeError as e:  # a worker process could not start (its messages are above)
        click.echo(f"error: {printable(e)}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        pipeline.close()
