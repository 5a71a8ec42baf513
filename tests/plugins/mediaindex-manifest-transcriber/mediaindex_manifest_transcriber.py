"""A fast, deterministic transcriber for tests: it "hears" what the corpus manifest says.

Point ``MEDIAINDEX_MANIFEST`` at a corpus's manifest.json. A file is recognised by its content
hash (so moved and renamed copies are still recognised); each sentence becomes a segment whose
words are spread evenly over the sentence's true interval (marked as interpolated).

Failures on demand, for tests (environment): ``MEDIAINDEX_MANIFEST_FAIL_ONCE`` (a file name:
one TransientError), ``MEDIAINDEX_MANIFEST_FAIL_ALWAYS`` (a file name: TransientError every
time), ``MEDIAINDEX_MANIFEST_REFUSE`` (a file name: the engine refuses it, PermanentError),
``MEDIAINDEX_MANIFEST_NO_KEY`` (set: a missing key, FatalError).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

from mediaindex import (FatalError, PermanentError, Segment, Transcriber, TranscriberLimits, Transcript,
                        TransientError, Word, hookimpl)

_CJK = re.compile(r"[\u3400-\u9fff]")


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _words(text: str, start: float, end: float) -> list[Word]:
    tokens = list(text) if _CJK.search(text) else text.split()
    tokens = [t for t in tokens if t.strip() and not re.fullmatch(r"[,。,.!?!?]", t)]
    step = (end - start) / max(1, len(tokens))
    return [Word(t, round(start + i * step, 3), round(start + (i + 1) * step, 3), 1.0, True)
            for i, t in enumerate(tokens)]


class ManifestTranscriber(Transcriber):
    name = "manifest"
    limits = TranscriberLimits(word_timestamps=True)

    def __init__(self):
        self._by_hash: dict[str, dict] | None = None
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def _table(self) -> dict[str, dict]:
        with self._lock:
            if self._by_hash is None:
                manifest = os.environ.get("MEDIAINDEX_MANIFEST")
                if not manifest:
                    raise PermanentError("MEDIAINDEX_MANIFEST is not set")
                root = Path(manifest).parent
                table = {}
                for entry in json.loads(Path(manifest).read_text())["files"]:
                    p = root / entry["path"]
                    if p.exists() and entry.get("kind") != "broken":
                        table[_hash(p)] = entry
                self._by_hash = table
            return self._by_hash

    def transcribe(self, request):
        self.calls.append(str(request.path))
        log = os.environ.get("MEDIAINDEX_MANIFEST_LOG")  # calls seen across processes (tests/test_redis_scale.py)
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {request.uri or request.path}\n")
        if os.environ.get("MEDIAINDEX_MANIFEST_CRASH") == request.path.name:  # a native crash in an engine
            os.kill(os.getpid(), 9)
        delay = float(os.environ.get("MEDIAINDEX_MANIFEST_DELAY", "0"))
        if delay:
            time.sleep(delay)
        if os.environ.get("MEDIAINDEX_MANIFEST_FAIL_ONCE") == request.path.name and not getattr(self, "_failed", False):
            self._failed = True
            raise TransientError("simulated 503 from the engine")
        marker = os.environ.get("MEDIAINDEX_MANIFEST_FAIL_WHILE")  # fails the file named in it while it exists
        if marker and os.path.exists(marker) and Path(marker).read_text().strip() == request.path.name:
            raise PermanentError(f"the engine is misconfigured (remove {marker})")
        if os.environ.get("MEDIAINDEX_MANIFEST_NO_KEY"):
            raise FatalError("no manifest API key: set MEDIAINDEX_MANIFEST_KEY")
        if os.environ.get("MEDIAINDEX_MANIFEST_FAIL_ALWAYS") == request.path.name:
            raise TransientError("simulated 503 from the engine, every time")
        if os.environ.get("MEDIAINDEX_MANIFEST_REFUSE") == request.path.name:
            raise PermanentError(f"{request.path}: the engine refuses this file (400)")
        entry = self._table().get(_hash(request.path))
        if entry is None:
            raise PermanentError(f"{request.path}: not in the test manifest")
        segments = []
        for i, s in enumerate(entry.get("sentences", [])):
            segments.append(Segment(index=i, start=s["start"], end=s["end"], text=s["text"],
                                    words=_words(s["text"], s["start"], s["end"])))
            if request.progress:
                request.progress(s["end"], request.probe.duration)
        return Transcript(engine=self.name, model=self.name, segments=segments,
                          language=entry.get("language"), raw={"path": entry["path"]})


class OtherTranscriber(ManifestTranscriber):
    """A second engine (MEDIAINDEX_MANIFEST_OTHER=1): it hears "lettuce" as "cabbage"."""

    name = "manifest-other"

    def transcribe(self, request):
        t = super().transcribe(request)
        for s in t.segments:
            s.text = s.text.replace("lettuce", "cabbage")
            for w in s.words:
                w.text = w.text.replace("lettuce", "cabbage")
        return t


@hookimpl
def register_transcribers(register):
    register(ManifestTranscriber())
    if os.environ.get("MEDIAINDEX_MANIFEST_OTHER"):
        register(OtherTranscriber())
