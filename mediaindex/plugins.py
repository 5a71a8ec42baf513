"""The plugin manager: built-ins and third-party plugins load the same way, by entry point."""
from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any

import pluggy

from . import hookspecs
from .safety import printable

ENTRY_POINT_GROUP = "mediaindex"
LOAD_PLUGINS_ENV = "MEDIAINDEX_LOAD_PLUGINS"

pm = pluggy.PluginManager("mediaindex")
pm.add_hookspecs(hookspecs)

_loaded = False


def _allowed() -> set[str] | None:
    """The allow-list of distributions from MEDIAINDEX_LOAD_PLUGINS ("" loads none), or None (all)."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Load every plugin of the ``mediaindex`` entry-point group once; return the manager.

    The core's own built-ins are always loaded; MEDIAINDEX_LOAD_PLUGINS (a comma-separated list
    of distribution names) limits which other distributions load.
    """
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    allowed = _allowed()
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        name = dist.metadata["Name"]
        if not eps or name in seen:  # a distribution can be on sys.path twice (editable installs)
            continue
        seen.add(name)
        if name != "mediaindex" and allowed is not None and name not in allowed:
            continue
        for ep in eps:
            if pm.get_plugin(ep.name) is not None or pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as e:  # one broken plugin must not take the tool down
                print(printable(f"mediaindex: could not load plugin {ep.name!r} from {name}: {e}"), file=sys.stderr)
                continue
            pm.register(module, name=ep.name)
            pm._mediaindex_dists[ep.name] = (name, dist.version)  # type: ignore[attr-defined]
    pm.check_pending()
    return pm


pm._mediaindex_dists = {}  # type: ignore[attr-defined]


def get_plugins() -> list[dict[str, Any]]:
    """Every loaded plugin: name, distribution, version and the hooks it implements."""
    load_plugins()
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        dist, version = pm._mediaindex_dists.get(name, (None, None))  # type: ignore[attr-defined]
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
    return sorted(out, key=lambda p: p["name"])
