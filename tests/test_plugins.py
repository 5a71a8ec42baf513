"""The plugin system: entry-point loading, hook validation, docs kept honest."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from mediaindex import hookimpl, hookspecs
from mediaindex.plugins import get_plugins, load_plugins

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


def test_builtins_load_through_entry_points():
    plugins = {p["name"]: p for p in get_plugins()}
    for name, hook in [("file", "register_storage_backends"), ("sqlite", "register_index_backends"),
                       ("local", "register_transcribers"), ("enrich", "enrich_segments")]:
        assert plugins[name]["distribution"] == "mediaindex"
        assert hook in plugins[name]["hooks"]


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def register_transcriber(self, register):  # missing "s"
            pass

    pm = load_plugins()
    pm.register(Typo(), name="typo")
    try:
        with pytest.raises(pluggy.PluginValidationError):
            pm.check_pending()
    finally:
        pm.unregister(name="typo")


def _hooks():
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "mediaindex_spec")]


def test_every_hook_is_documented():
    docs = DOCS.read_text()
    assert len(_hooks()) >= 8
    for name in _hooks():
        fn = getattr(hookspecs, name)
        assert fn.__doc__, f"hookspec {name} has no docstring"
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"### {name}({params})" in docs, f"docs/plugins.md lacks '### {name}({params})'"


def test_documented_hooks_exist():
    documented = re.findall(r"^### (\w+)\(", DOCS.read_text(), re.M)
    assert sorted(documented) == sorted(_hooks())


def test_every_hook_has_a_test_of_its_own():
    """Each hook is named by a @pytest.mark.hook test (conftest fails that test unless the hook
    is called in it), so dropping a hook call from the core breaks a test."""
    tests = Path(__file__).parent
    marked = set()
    for path in tests.rglob("test_*.py"):
        for args in re.findall(r"@pytest\.mark\.hook\(([^)]*)\)", path.read_text()):
            marked.update(re.findall(r"\"(\w+)\"", args.split("subprocess=")[0]))
    missing = sorted(set(_hooks()) - marked)
    assert not missing, f"hooks without a @pytest.mark.hook test: {', '.join(missing)}"


def test_enrich_fills_language_from_text():
    from mediaindex.builtin.enrich import enrich_segments
    from mediaindex.models import Media, Segment, Transcript

    t = Transcript(engine="x", model="x", segments=[
        Segment(0, 0, 3, "The space station orbits the earth every ninety minutes."),
        Segment(1, 3, 6, "Astronauts grow lettuce in a small chamber with red and blue lights.")])
    m = Media(id="a" * 20, path="/x.mp3", paths=["/x.mp3"], size=1, mtime=0)
    enrich_segments(m, t, probe=None, path=None, config=None, open_beside=None)  # no file at hand
    assert t.language == "en" and m.language == "en"
    assert [s.language for s in t.segments] == ["en", "en"]
    assert all(s.emotion is None for s in t.segments)  # never invented
