"""The web UI and JSON API (``mediaindex serve``; ``watch`` serves it too).

- :func:`mediaindex.web.app.create_app` builds the Starlette app for a :class:`~mediaindex.pipeline.Pipeline`.
- :func:`mediaindex.web.server.start_server` runs it with uvicorn in a background thread and
  returns a handle with ``.stop()``; :func:`mediaindex.web.server.run_server` blocks.
"""
from __future__ import annotations

from .app import create_app
from .server import UnsafeBindError, run_server, start_server

__all__ = ["create_app", "start_server", "run_server", "UnsafeBindError"]
