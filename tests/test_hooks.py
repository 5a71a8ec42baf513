"""One test per hook, each marked @pytest.mark.hook (conftest fails a marked test whose hook is
never called), plus the rule that one name belongs to one plugin."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mediaindex import hookimpl
from mediaindex.models import SearchQuery, Segment
from mediaindex.paths import open_beside
from mediaindex.plugins import load_plugins

ROOT = Path(__file__).parent.parent


@pytest.fixture
def plugin():
    """Register in-process plugins for one test; all are unregistered at the end."""
    names = []

    def register(obj, name):
        load_plugins().register(obj, name=name)
        names.append(name)
        return obj

    yield register
    for name in names:
        load_plugins().unregister(name=name)


def _dist(folder: Path, dist: str, module: str, code: str, entry: str | None = None) -> None:
    """A real installed distribution on disk (module + dist-info with a mediaindex entry point)."""
    (folder / f"{module}.py").write_text(textwrap.dedent(code))
    info = folder / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mediaindex]\n{entry or module} = {module}\n")


def _run(folder: Path, dists: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]), MEDIAINDEX_LOAD_PLUGINS=dists)
    return subprocess.run([sys.executable, "-m", "mediaindex", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.hook("register_storage_backends")
def test_hook_register_storage_backends(make_pipeline, manifest_transcriber, mem_storage):
    """mem_storage (conftest) registers tests/memstorage.py through the hook."""
    p = make_pipeline()
    assert p.storages["mem"] is mem_storage and p.storage_for("mem://lib/x.mp3") is mem_storage
    assert "file" in p.storages  # the built-in is still there


@pytest.mark.hook("register_index_backends", "register_transcribers")
def test_hook_register_index_backends(make_pipeline, manifest_transcriber, plugin, corpus, tmp_path):
    from mediaindex.builtin.sqlite_index import SqliteIndex

    class Elsewhere(SqliteIndex):
        name = "elsewhere"

    class Plugin:
        @hookimpl
        def register_index_backends(self, register, config):
            register(Elsewhere(tmp_path / "elsewhere.sqlite3"))

    plugin(Plugin(), "elsewhere-index")
    p = make_pipeline(index="elsewhere")
    assert p.process_path(str(corpus / "podcasts" / "ferry.webm")).status == "indexed"
    hits = p.index.search(SearchQuery("ferry")).hits
    assert isinstance(p.index, Elsewhere) and hits and hits[0].path.endswith("ferry.webm")
    assert (tmp_path / "elsewhere.sqlite3").exists()


class _Lyrics:
    """A lyrics enricher: reads <stem>.lyrics ("start|end|text" lines) beside the media."""

    def __init__(self):
        self.missing = 0
        self.indexed: list[list[str]] = []

    @hookimpl
    def enrich_segments(self, media, transcript, open_beside):
        try:
            with open_beside(media.path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".lyrics") as f:
                lines = f.read().decode().splitlines()
        except FileNotFoundError:
            self.missing += 1
            return
        n = len(transcript.segments)
        for i, line in enumerate(lines):
            start, end, text = line.split("|")
            transcript.segments.append(Segment(n + i, float(start), float(end), text, source="lyrics"))

    @hookimpl
    def media_indexed(self, media, segments):
        self.indexed.append([s.source for s in segments])


@pytest.mark.hook("enrich_segments", "media_indexed")
def test_hook_enrich_segments_adds_segments_from_a_file_beside(make_pipeline, manifest_transcriber, plugin, corpus):
    """A lyrics enricher reads ferry.lyrics beside ferry.webm and adds a segment: it is indexed
    with source "lyrics"; a reindex with the file gone keeps them (stored enrichment); a new
    enricher version enriches again, and open_beside says the file is not at hand."""
    media = corpus / "podcasts" / "ferry.webm"
    (media.parent / "ferry.lyrics").write_text("1.0|2.5|zanzibar quokka chorus\n")
    lyrics = plugin(_Lyrics(), "lyrics")
    p = make_pipeline()
    assert p.process_path(str(media)).status == "indexed"
    hit = p.index.search(SearchQuery("quokka")).hits[0]
    assert hit.path == str(media) and hit.start == 1.0
    assert lyrics.indexed[0][-1] == "lyrics" and set(lyrics.indexed[0][:-1]) == {"asr"}
    os.remove(media)
    p.reindex(hit.media_id)  # the stored enrichment is reused: the lyrics stay, nothing is read
    assert lyrics.missing == 0 and p.index.search(SearchQuery("quokka")).hits
    lyrics.ENRICH_VERSION = "2"  # a new enricher version enriches again, without the file at hand
    p.reindex(hit.media_id)
    assert lyrics.missing == 1  # open_beside raised FileNotFoundError


@pytest.mark.hook("enrich_segments")
def test_open_beside_reads_through_the_media_storage(make_pipeline, manifest_transcriber, plugin, corpus, mem_storage):
    """Media behind mem://: the file beside it is read through that storage, not from the
    temporary local copy ffmpeg gets."""
    folder = mem_storage.folder / "lib"
    folder.mkdir()
    shutil.copy(corpus / "podcasts" / "ferry.webm", folder / "ferry.webm")
    (folder / "ferry.lyrics").write_text("1.0|2.5|zanzibar quokka chorus\n")
    plugin(_Lyrics(), "lyrics")
    p = make_pipeline()
    assert p.process_path("mem://lib/ferry.webm").status == "indexed"
    assert p.index.search(SearchQuery("quokka")).hits[0].path == "mem://lib/ferry.webm"
    assert "mem://lib/ferry.lyrics" in mem_storage.opened


def test_open_beside_takes_names_only(tmp_path):
    (tmp_path / "a.srt").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    opener = open_beside(tmp_path / "a.mp4")
    with opener("a.srt") as f:
        assert f.read() == b"x"
    for bad in ["../a.srt", "sub/a.srt", "..", ""]:
        with pytest.raises(ValueError):
            opener(bad)
    with pytest.raises(FileNotFoundError):
        opener("b.srt")
    with pytest.raises(FileNotFoundError):
        open_beside(None)("a.srt")


@pytest.mark.hook("media_removed")
def test_hook_media_removed(make_pipeline, manifest_transcriber, plugin, corpus):
    removed = []

    class Plugin:
        @hookimpl
        def media_removed(self, media_id, path):
            removed.append((media_id, path))

    plugin(Plugin(), "removed-listener")
    p = make_pipeline()
    path = str(corpus / "podcasts" / "ferry.webm")
    media_id = p.process_path(path).media_id
    os.remove(path)
    p.remove_path(path)
    p.remove_path(str(corpus / "never-indexed.mp3"))
    assert removed == [(media_id, path), ("", str(corpus / "never-indexed.mp3"))]
    assert not p.index.search(SearchQuery("ferry")).hits


@pytest.mark.hook("register_commands", subprocess=True)
def test_hook_register_commands(tmp_path):
    """An installed distribution adds a subcommand through its entry point."""
    _dist(tmp_path, "mediaindex-hello", "mediaindex_hello", """
        import click
        from mediaindex import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("who")
            def hello(who):
                '''Say hello.'''
                click.echo(f"hello {who}")
    """, entry="hello")
    r = _run(tmp_path, "mediaindex-hello", "hello", "world")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello world\n"
    plugins = json.loads(_run(tmp_path, "mediaindex-hello", "plugins", "--json").stdout)
    assert {"name": "hello", "distribution": "mediaindex-hello", "version": "0.1",
            "hooks": ["register_commands"]} in plugins
    assert _run(tmp_path, "", "hello", "world").returncode == 2  # not loaded: no such command


class _Named:
    def __init__(self, attr, value):
        setattr(self, attr, value)


@pytest.mark.parametrize("hook, attr, what", [("register_storage_backends", "scheme", "storage"),
                                              ("register_transcribers", "name", "transcriber"),
                                              ("register_index_backends", "name", "index")])
def test_two_plugins_cannot_register_one_name(make_pipeline, plugin, hook, attr, what):
    def make(label):
        impl = hookimpl(specname=hook)(lambda register: register(_Named(attr, "twin")))
        return type(label, (), {"impl": staticmethod(impl)})

    plugin(make("First"), "first-plugin")
    plugin(make("Second"), "second-plugin")
    with pytest.raises(ValueError) as e:
        make_pipeline()
    message = str(e.value)
    assert f"the {what} 'twin'" in message
    assert "'first-plugin' (registered in-process)" in message and "'second-plugin'" in message


def test_one_plugin_cannot_register_one_name_twice(make_pipeline, plugin):
    class Plugin:
        @hookimpl
        def register_storage_backends(self, register):
            register(_Named("scheme", "twin"))
            register(_Named("scheme", "twin"))

    plugin(Plugin(), "twice")
    with pytest.raises(ValueError, match="'twice' .* registers the storage 'twin' twice"):
        make_pipeline()


def test_two_distributions_with_one_index_name_stop_the_command(tmp_path, data_dir, corpus):
    """Installed distributions: the user reads both distribution names and the command stops."""
    code = """
        from mediaindex import hookimpl
        from mediaindex.builtin.sqlite_index import SqliteIndex

        class Twin(SqliteIndex):
            name = "twin"

        @hookimpl
        def register_index_backends(register, config):
            register(Twin(config.data_dir / "{0}.sqlite3"))
    """
    _dist(tmp_path, "mediaindex-index-one", "index_one", code.format("one"))
    _dist(tmp_path, "mediaindex-index-two", "index_two", code.format("two"))
    r = _run(tmp_path, "mediaindex-index-one,mediaindex-index-two", "index", str(corpus / "podcasts"),
             "--data-dir", str(data_dir))
    assert r.returncode == 2, r.stderr
    assert "two plugins register the index 'twin'" in r.stderr
    assert "(distribution mediaindex-index-one)" in r.stderr and "(distribution mediaindex-index-two)" in r.stderr
