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


def plugin_label(name: str) -> str:
    """A plugin as a user can find it: its distribution, or that a program registered it."""
    dist, _ = pm._mediaindex_dists.get(name, (None, None))  # type: ignore[attr-defined]
    return f"{name!r} (distribution {dist})" if dist else f"{name!r} (registered in-process)"


def register_each(manager: pluggy.PluginManager, hook: str, registry: dict, attr: str, what: str,
                  config: Any) -> None:
    """Call a ``register_*`` hook plugin by plugin, filling ``registry`` keyed by ``attr``; a name
    two plugins (or one plugin twice) register is a ValueError that names both plugins."""
    owner: dict[str, str] = {}
    for impl in reversed(getattr(manager.hook, hook).get_hookimpls()):  # pluggy's call order, one plugin at a time
        if impl.hookwrapper or impl.wrapper:
            continue
        def register(obj, plugin=impl.plugin_name) -> None:
            key = getattr(obj, attr)
            if key in registry and owner[key] == plugin:
                raise ValueError(f"the plugin {plugin_label(plugin)} registers the {what} {key!r} twice")
            if key in registry:
                raise ValueError(f"two plugins register the {what} {key!r}: {plugin_label(owner[key])} and "
                                 f"{plugin_label(plugin)}; uninstall one, or leave it out of "
                                 f"{LOAD_PLUGINS_ENV}")
            registry[key], owner[key] = obj, plugin
        others = [p for p in manager.get_plugins() if p is not impl.plugin]
        manager.subset_hook_caller(hook, remove_plugins=others)(register=register, config=config)
