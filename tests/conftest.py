"""Shared fixtures: the test corpus (real media made with espeak-ng + ffmpeg), data dirs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MAKE_CORPUS = HERE / "corpus" / "make_corpus.py"
CACHE = Path(os.environ.get("MEDIAINDEX_TEST_CACHE", HERE.parent / ".cache"))

# Installed third-party plugins must not leak into tests: only the core's built-ins load unless a
# test asks for more.
os.environ.setdefault("MEDIAINDEX_LOAD_PLUGINS", "")


def _make(out: Path, *args: str) -> Path:
    """Make (once, cached by the script's hash) a corpus folder and return it."""
    key = hashlib.sha256(MAKE_CORPUS.read_bytes() + repr(args).encode()).hexdigest()[:12]
    target = CACHE / f"corpus-{key}"
    if not (target / "manifest.json").exists():
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")  # concurrent runs don't collide
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, str(MAKE_CORPUS), str(tmp), *args], check=True)
        try:
            tmp.rename(target)
        except OSError:  # another run finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def corpus_src() -> Path:
    """The full corpus (read-only master copy; copy it before changing anything)."""
    return _make(CACHE, "--long-minutes", "7")


@pytest.fixture(scope="session")
def manifest(corpus_src) -> dict:
    return json.loads((corpus_src / "manifest.json").read_text())


@pytest.fixture
def corpus(corpus_src, tmp_path) -> Path:
    """A private copy of the corpus without the long meeting (tests may move/delete files)."""
    dst = tmp_path / "media"
    shutil.copytree(corpus_src, dst, ignore=shutil.ignore_patterns("long_meeting.mp3", "manifest.json"))
    return dst


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@contextlib.contextmanager
def registered_manifest_transcriber(corpus_src: Path, name: str = "manifest-test"):
    """The test transcriber (tests/plugins/mediaindex-manifest-transcriber) registered in-process
    under ``name`` while the block runs; yields its module."""
    import importlib.util

    from mediaindex.plugins import load_plugins

    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIAINDEX_MANIFEST", str(corpus_src / "manifest.json"))
    src = HERE / "plugins" / "mediaindex-manifest-transcriber" / "mediaindex_manifest_transcriber.py"
    spec = importlib.util.spec_from_file_location(f"mediaindex_manifest_transcriber_{name}", src)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pm = load_plugins()
    pm.register(module, name=name)
    try:
        yield module
    finally:
        pm.unregister(name=name)
        mp.undo()


@pytest.fixture
def manifest_transcriber(manifest, corpus_src):
    """Register the test transcriber in-process for one test."""
    with registered_manifest_transcriber(corpus_src) as module:
        yield module


@pytest.fixture
def make_pipeline(data_dir):
    """Build Pipelines on the test data dir; all are closed at the end."""
    from mediaindex.config import Config
    from mediaindex.pipeline import Pipeline

    made = []

    def make(**kw):
        p = Pipeline(Config.load(data_dir), **{"transcriber": "manifest", **kw})
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture(scope="session")
def installed_manifest_plugin(corpus_src):
    """The test transcriber installed as a real distribution (entry point and all).

    Returns the environment for subprocesses that should load it.
    """
    import importlib.metadata

    try:
        importlib.metadata.distribution("mediaindex-manifest-transcriber")
    except importlib.metadata.PackageNotFoundError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e",
                        str(HERE / "plugins" / "mediaindex-manifest-transcriber")], check=True)
    env = dict(os.environ)
    env["MEDIAINDEX_LOAD_PLUGINS"] = "mediaindex-manifest-transcriber"
    env["MEDIAINDEX_MANIFEST"] = str(corpus_src / "manifest.json")
    return env


@pytest.fixture
def mem_storage(tmp_path):
    """The ``mem://`` storage (tests/memstorage.py) registered while the test runs; yields it.
    ``mem://lib/x`` is the file ``<storage.folder>/lib/x``."""
    from memstorage import Plugin

    from mediaindex.plugins import load_plugins

    plugin = Plugin(tmp_path / "mem")
    plugin.storage.folder.mkdir()
    pm = load_plugins()
    pm.register(plugin, name="mem-storage")
    try:
        yield plugin.storage
    finally:
        pm.unregister(name="mem-storage")


def pytest_configure(config):
    config.addinivalue_line("markers", "hook(*names, subprocess=False): the test of a plugin hook; it fails "
                                       "unless each named hook is called during it (subprocess=True: called "
                                       "in a child process, which the test checks itself)")


@pytest.fixture(autouse=True)
def _hook_was_called(request):
    """A test marked ``@pytest.mark.hook("name")`` must call that hook: the marker cannot lie."""
    marks = [m for m in request.node.iter_markers("hook") if not m.kwargs.get("subprocess")]
    if not marks:
        yield
        return
    from mediaindex.plugins import load_plugins

    called: set[str] = set()
    undo = load_plugins().add_hookcall_monitoring(lambda name, impls, kwargs: called.add(name),
                                                  lambda outcome, name, impls, kwargs: None)
    try:
        yield
    finally:
        undo()
    missing = [n for m in marks for n in m.args if n not in called]
    assert not missing, f"marked @pytest.mark.hook but never called: {', '.join(missing)}"
