"""Words that come with the media: embedded lyrics, subtitle sidecars, text subtitle streams.

- Embedded lyrics via mutagen: ID3 ``SYLT`` (synced, ms times) and ``USLT``, FLAC/Vorbis/Opus
  ``LYRICS``/``UNSYNCEDLYRICS``, M4A ``©lyr``. Lyrics text in LRC form is read as timed.
- Sidecars with the media's stem: ``.srt``, ``.vtt``, ``.ass``/``.ssa`` through pysubs2 (a
  maintained subtitle library) and ``.lrc`` (pysubs2 has no LRC reader; the format is one
  ``[mm:ss.xx]`` prefix per line, read by :func:`parse_lrc`). Encodings other than UTF-8 are
  detected with charset-normalizer.
- Text subtitle streams inside video containers (subrip, ass, webvtt, mov_text) extracted
  with ffmpeg as SRT.

Every reader returns :class:`Line` lists and never raises for bad input: what went wrong is
returned as a problem string for the enricher to report on the media.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .. import audio
from ..backends import TransientError

SIDECAR_EXTS = (".lrc", ".srt", ".vtt", ".ass", ".ssa")
TEXT_SUB_CODECS = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
MAX_SIDECAR_BYTES = 4_000_000  # a subtitle file is small; anything bigger is not one


@dataclass
class Line:
    """One line of lyrics or subtitles; ``start``/``end`` are None when untimed."""

    text: str
    start: float | None = None
    end: float | None = None
    language: str | None = None


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\\N", " ").replace("\\n", " ")).strip()


def _close_ends(lines: list[Line], duration: float | None, longest: float = 10.0) -> list[Line]:
    """Give timed lines without an end the next line's start (at most ``longest`` s later)."""
    lines.sort(key=lambda l: l.start or 0.0)
    for i, line in enumerate(lines):
        if line.start is not None and line.end is None:
            nxt = lines[i + 1].start if i + 1 < len(lines) else None
            cap = line.start + longest
            if duration:
                cap = min(cap, max(line.start, duration))
            line.end = min(nxt, cap) if nxt is not None and nxt > line.start else cap
    return lines


# ---- text decoding -------------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (BOM or not), UTF-16 with a BOM, else charset-normalizer's guess."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    results = list(from_bytes(data))
    if not results:
        return data.decode("latin-1"), "latin-1"
    # On short texts several code pages are equally clean; the Western one is the likeliest
    # for a sidecar (cp1250 would turn "crème" into "crčme").
    least = min(m.chaos for m in results)
    clean = [m for m in results if m.chaos <= least]
    best = next((m for m in clean if m.encoding == "cp1252"), clean[0])
    return str(best), best.encoding


# ---- LRC -----------------------------------------------------------------------------------

_LRC_TIME = re.compile(r"\[(\d{1,3}):(\d{1,2}(?:[.:]\d{1,3})?)\]")
_LRC_TAG = re.compile(r"^\[(ar|ti|al|au|by|re|ve|length|offset|#):?(.*)\]\s*$", re.I)
_LRC_WORD_TIME = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")


def parse_lrc(text: str) -> tuple[list[Line], list[str]]:
    """Timed lines of an LRC text (several time tags on a line repeat it; ``[offset:ms]`` is
    applied; enhanced word tags ``<mm:ss.xx>`` are dropped); and the problems found."""
    offset = 0.0
    lines: list[Line] = []
    bad = 0
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        tag = _LRC_TAG.match(raw)
        if tag:
            if tag.group(1).lower() == "offset":
                try:
                    offset = float(tag.group(2).strip()) / 1000.0
                except ValueError:
                    bad += 1
            continue
        times = []
        pos = 0
        while (m := _LRC_TIME.match(raw, pos)):
            minutes, seconds = int(m.group(1)), float(m.group(2).replace(":", "."))
            times.append(minutes * 60 + seconds)
            pos = m.end()
        if not times:
            bad += 1
            continue
        words = _clean(_LRC_WORD_TIME.sub("", raw[pos:]))
        for t in times:
            lines.append(Line(words, max(0.0, t - offset)))
    problems = [f"{bad} line(s) without a [mm:ss] time were skipped"] if bad else []
    lines.sort(key=lambda l: l.start or 0.0)
    for line, nxt in zip(lines, lines[1:]):  # an empty timed line ends the one before it
        if nxt.start is not None and line.start is not None and nxt.start > line.start:
            line.end = min(nxt.start, line.start + 10.0)
    return [l for l in lines if l.text], problems


def looks_like_lrc(text: str) -> bool:
    timed = sum(1 for ln in text.splitlines()[:50] if _LRC_TIME.match(ln.strip()))
    return timed >= 2


# ---- subtitles (pysubs2) -------------------------------------------------------------------


def parse_subtitles(text: str, fmt: str | None = None) -> tuple[list[Line], list[str]]:
    """Timed lines of an SRT/VTT/ASS text with pysubs2 (comments and drawings dropped)."""
    import pysubs2

    try:
        subs = pysubs2.SSAFile.from_string(text, format_=fmt)
    except Exception as e:  # pysubs2 raises several types for malformed input
        return [], [f"cannot read subtitles: {type(e).__name__}: {e}"[:300]]
    lines = []
    for ev in subs:
        if ev.is_comment or ev.is_drawing:
            continue
        words = _clean(ev.plaintext)
        if words and ev.end > ev.start >= 0:
            lines.append(Line(words, ev.start / 1000.0, ev.end / 1000.0))
    problems = [] if lines else ["no subtitle lines found"]
    return lines, problems


def read_sidecar(name: str, data: bytes, duration: float | None = None) -> tuple[str, list[Line], list[str]]:
    """(source, lines, problems) of one sidecar file's bytes; source is lyrics or subtitle."""
    if len(data) > MAX_SIDECAR_BYTES:
        return "subtitle", [], [f"{name}: {len(data)} bytes is too big for a subtitle file; skipped"]
    text, encoding = decode(data)
    ext = Path(name).suffix.lower()
    if ext == ".lrc":
        lines, problems = parse_lrc(text)
        source = "lyrics"
    else:
        fmt = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}.get(ext)
        lines, problems = parse_subtitles(text, fmt)
        source = "subtitle"
    if encoding not in ("utf-8", "utf-8-sig", "ascii") and lines:
        problems = [f"read as {encoding}"] + problems
    return source, _close_ends(lines, duration), [f"{name}: {p}" for p in problems]


def sidecars(stem: str, open_beside: Callable[[str], BinaryIO],
             duration: float | None = None) -> list[tuple[str, str, list[Line], list[str]]]:
    """(name, source, lines, problems) for each sidecar ``<stem><ext>`` that exists."""
    found = []
    for ext in SIDECAR_EXTS:
        for name in dict.fromkeys((stem + ext, stem + ext.upper())):
            try:
                with open_beside(name) as f:
                    data = f.read(MAX_SIDECAR_BYTES + 1)
            except (FileNotFoundError, IsADirectoryError, ValueError):
                continue
            except OSError as e:
                found.append((name, "subtitle", [], [f"{name}: cannot read: {e.strerror or e}"]))
                continue
            source, lines, problems = read_sidecar(name, data, duration)
            found.append((name, source, lines, problems))
            break
    return found


# ---- embedded lyrics (mutagen) -------------------------------------------------------------


def embedded(path: str | Path, duration: float | None = None) -> tuple[list[Line], list[Line], list[str]]:
    """(timed, untimed, problems): lyrics stored in the file's tags."""
    import mutagen

    try:
        f = mutagen.File(str(path))
    except Exception as e:  # mutagen raises its own errors and struct/ValueErrors on damage
        return [], [], [f"tags unreadable: {type(e).__name__}: {e}"[:300]]
    if f is None or f.tags is None:
        return [], [], []
    timed: list[Line] = []
    texts: list[tuple[str, str | None]] = []
    tags = f.tags
    try:
        if hasattr(tags, "getall"):  # ID3
            for frame in tags.getall("SYLT"):
                scale = 1000.0 if frame.format == 2 else None
                if scale is None:  # MPEG frames: not convertible without the frame rate; skip
                    continue
                lang = _iso639_1(getattr(frame, "lang", None))
                timed += [Line(_clean(t), ms / scale, None, lang) for t, ms in frame.text if _clean(t)]
            for frame in tags.getall("USLT"):
                texts.append((str(frame.text), _iso639_1(getattr(frame, "lang", None))))
        else:
            for key in ("lyrics", "unsyncedlyrics", "LYRICS", "UNSYNCEDLYRICS", "\xa9lyr"):
                try:
                    values = tags.get(key) if hasattr(tags, "get") else None
                except (KeyError, ValueError):
                    values = None
                for value in values or []:
                    if (str(value), None) not in texts:  # Vorbis keys ignore case: lyrics == LYRICS
                        texts.append((str(value), None))
    except Exception as e:
        return [], [], [f"lyrics tag unreadable: {type(e).__name__}: {e}"[:300]]
    untimed: list[Line] = []
    problems: list[str] = []
    for text, lang in texts:
        if looks_like_lrc(text):
            lines, probs = parse_lrc(text)
            timed += lines
            problems += [f"embedded lyrics: {p}" for p in probs]
        else:
            untimed += [Line(_clean(t), None, None, lang) for t in text.splitlines() if _clean(t)]
    return _close_ends(timed, duration), untimed, problems


def _iso639_1(code: str | None) -> str | None:
    """ID3's 3-letter language code as a 2-letter one where we know it (else None)."""
    table = {"eng": "en", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "spa": "es", "ita": "it",
             "por": "pt", "nld": "nl", "dut": "nl", "rus": "ru", "jpn": "ja", "zho": "zh", "chi": "zh",
             "kor": "ko", "yue": "zh"}
    return table.get((code or "").lower())


# ---- subtitle streams (ffmpeg) -------------------------------------------------------------


def subtitle_streams(path: str | Path, duration: float | None = None) -> tuple[list[tuple[str | None, list[Line]]], list[str]]:
    """([(language, lines)], problems) for each text subtitle stream in a container."""
    path = Path(path)
    try:
        probe = subprocess.run([audio._exe("ffprobe"), "-v", "error", "-select_streams", "s", "-show_entries",
                                "stream=index,codec_name:stream_tags=language", "-of", "json", audio._url(path)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=60)
        streams = json.loads(probe.stdout or "{}").get("streams") or []
    except (OSError, subprocess.TimeoutExpired, ValueError, TransientError) as e:
        return [], [f"cannot list subtitle streams: {e}"]
    out, problems = [], []
    for n, st in enumerate(streams):
        codec = st.get("codec_name") or "unknown"
        lang = (st.get("tags") or {}).get("language")
        if codec not in TEXT_SUB_CODECS:
            problems.append(f"subtitle stream {st.get('index')} ({codec}) is not text; skipped")
            continue
        try:
            run = subprocess.run([audio._exe(), "-nostdin", "-v", "error", "-i", audio._url(path), "-map", f"0:s:{n}",
                                  "-f", "srt", "-"], stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired, TransientError) as e:
            problems.append(f"subtitle stream {st.get('index')}: ffmpeg failed: {e}")
            continue
        if run.returncode != 0:
            detail = audio._tail(run.stderr.decode("utf-8", "replace"))
            problems.append(f"subtitle stream {st.get('index')} ({codec}): ffmpeg cannot convert it: {detail}")
            continue
        lines, probs = parse_subtitles(decode(run.stdout)[0], "srt")
        problems += [f"subtitle stream {st.get('index')}: {p}" for p in probs]
        if lines:
            out.append((_iso639_1(lang) or (lang if lang and len(lang) == 2 else None), _close_ends(lines, duration)))
    return out, problems
