"""Transcript exports: SRT, WebVTT, JSON and plain text."""
from __future__ import annotations

import json

from .models import Media, Segment, Transcript

FORMATS = ("srt", "vtt", "json", "txt")
MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json", "txt": "text/plain"}


def timestamp(seconds: float, sep: str = ".") -> str:
    """HH:MM:SS.mmm (sep="," for SRT)."""
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def clock(seconds: float) -> str:
    """HH:MM:SS for people."""
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _cue_text(text: str) -> str:
    # A blank line or "-->" inside a cue would end or break it.
    return " ".join(text.replace("-->", "->").split())


def to_srt(segments: list[Segment]) -> str:
    out = []
    for n, seg in enumerate(segments, 1):
        out.append(f"{n}\n{timestamp(seg.start, ',')} --> {timestamp(seg.end, ',')}\n{_cue_text(seg.text)}\n")
    return "\n".join(out)


def to_vtt(segments: list[Segment]) -> str:
    out = ["WEBVTT", ""]
    for seg in segments:
        text = _cue_text(seg.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(f"{timestamp(seg.start)} --> {timestamp(seg.end)}\n{text}\n")
    return "\n".join(out)


def to_txt(segments: list[Segment]) -> str:
    return "\n".join(seg.text.strip() for seg in segments) + "\n"


def to_json(media: Media, transcript: Transcript) -> str:
    data = {
        "media": {"id": media.id, "path": media.path, "paths": media.paths, "duration": media.duration,
                  "tags": media.tags, "language": transcript.language},
        "engine": transcript.engine, "model": transcript.model,
        "segments": [s.to_dict() for s in transcript.segments],
    }
    return json.dumps(data, ensure_ascii=False, indent=1)


def render(fmt: str, media: Media, transcript: Transcript) -> str:
    if fmt == "srt":
        return to_srt(transcript.segments)
    if fmt == "vtt":
        return to_vtt(transcript.segments)
    if fmt == "txt":
        return to_txt(transcript.segments)
    if fmt == "json":
        return to_json(media, transcript)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
