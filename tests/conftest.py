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


# ---- enrichment corpus: music, songs with lyrics, videos with subtitles (issue 12) ------------

ENRICH_SRT = ("1\n00:00:10,000 --> 00:00:13,000\nBasalt columns cool into hexagons\n\n"
              "2\n00:00:15,000 --> 00:00:18,000\nPumice floats on seawater\n")
ENRICH_MKV_SRT = "1\n00:00:08,000 --> 00:00:11,000\nThe bishop pair rewards patience\n"
ENRICH_LRC = "[ti:Harbour song]\n[00:04.00]Lanterns sway above the crème harbour\n[00:12.50]Gulls circle the tower\n"
ENRICH_SYLT = [("Silver rivers carry moonlight", 3000), ("Paper boats drift downstream", 11000)]


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _make_enrich_corpus(src: Path, out: Path) -> Path:
    """Real files for the enrichers, built from the main corpus with ffmpeg and mutagen."""
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3, SYLT, TIT2, TPE1, USLT, Encoding
    from mutagen.mp4 import MP4

    out.mkdir(parents=True, exist_ok=True)
    files = json.loads((src / "manifest.json").read_text())["files"]
    by = {f["path"]: f for f in files}
    music, talk = src / "music/instrumental.mp3", src / "talks/space_station.mp3"
    entries = []
    # music then speech: 20.2 s of chords, then the space-station talk
    _ff("-i", str(music), "-i", str(talk), "-filter_complex",
        "[0:a]aresample=22050,aformat=channel_layouts=mono[a];[1:a]aresample=22050,aformat=channel_layouts=mono[b];"
        "[a][b]concat=n=2:v=0:a=1", str(out / "music_then_speech.mp3"))
    shift = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                  str(music)], capture_output=True, text=True, check=True).stdout)
    entries.append({"path": "music_then_speech.mp3", "kind": "speech", "language": "en", "music_end": shift,
                    "sentences": [{**s, "start": s["start"] + shift, "end": s["end"] + shift}
                                  for s in by["talks/space_station.mp3"]["sentences"]]})
    # an MP3 song with synced (SYLT) and unsynced (USLT) lyrics and title/artist tags
    shutil.copy(music, out / "sylt_song.mp3")
    tags = ID3()
    tags.add(TIT2(encoding=Encoding.UTF8, text="Moonlight rivers"))
    tags.add(TPE1(encoding=Encoding.UTF8, text="The Test Band"))
    tags.add(SYLT(encoding=Encoding.UTF8, lang="eng", format=2, type=1, text=ENRICH_SYLT))
    tags.save(out / "sylt_song.mp3")
    # an MP3 song with an .lrc sidecar in Latin-1 (not UTF-8: the encoding is detected)
    _ff("-i", str(music), "-af", "volume=0.9", str(out / "harbour.mp3"))
    (out / "harbour.lrc").write_bytes(ENRICH_LRC.encode("latin-1"))
    # a FLAC with untimed LYRICS
    _ff("-i", str(music), str(out / "plain_lyrics.flac"))
    flac = FLAC(out / "plain_lyrics.flac")
    flac["LYRICS"] = "Copper kettles sing at dawn\nMarmalade on the windowsill"
    flac.save()
    # an M4A with ©lyr
    _ff("-i", str(music), "-c:a", "aac", "-b:a", "64k", str(out / "tagged.m4a"))
    m4a = MP4(out / "tagged.m4a")
    m4a["\xa9lyr"] = ["Velvet thunder rolls away"]
    m4a.save()
    for name in ("sylt_song.mp3", "harbour.mp3", "plain_lyrics.flac", "tagged.m4a"):
        entries.append({"path": name, "kind": "music", "sentences": []})
    # a video with an .srt sidecar, and an MKV with a text subtitle stream
    shutil.copy(src / "video/volcano_lecture.mp4", out / "volcano.mp4")
    (out / "volcano.srt").write_text(ENRICH_SRT, encoding="utf-8")
    entries.append({**by["video/volcano_lecture.mp4"], "path": "volcano.mp4"})
    (out / "chess.srt.in").write_text(ENRICH_MKV_SRT, encoding="utf-8")
    _ff("-i", str(src / "video/chess_openings.mkv"), "-i", str(out / "chess.srt.in"), "-map", "0", "-map", "1",
        "-c", "copy", "-c:s", "srt", "-metadata:s:s:0", "language=eng", str(out / "chess.mkv"))
    (out / "chess.srt.in").unlink()
    entries.append({**by["video/chess_openings.mkv"], "path": "chess.mkv"})
    # bad input: a malformed .srt and broken tags must not stop indexing
    shutil.copy(talk, out / "broken_sidecar.mp3")
    (out / "broken_sidecar.srt").write_bytes(b"\x00\x01 this is not\n--> a subtitle\n")
    entries.append({**by["talks/space_station.mp3"], "path": "broken_sidecar.mp3"})
    (out / "manifest.json").write_text(json.dumps({"files": entries}, ensure_ascii=False, indent=1))
    return out


@pytest.fixture(scope="session")
def enrich_src(corpus_src, tmp_path_factory) -> Path:
    """Media for the enrichers (read-only; copy before changing); ``manifest.json`` for the test
    transcriber (``registered_manifest_transcriber(enrich_src)``)."""
    return _make_enrich_corpus(corpus_src, tmp_path_factory.mktemp("enrich") / "media")
