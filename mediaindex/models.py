"""Plain data types shared by the core and every plugin."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Word:
    """One recognised word with its time in the media, in seconds."""

    text: str
    start: float
    end: float
    probability: float | None = None
    interpolated: bool = False  # True when the engine gave no time and we estimated it


@dataclass
class Segment:
    """A short stretch of media (a sentence, at most ~30 s): the unit that gets indexed."""

    index: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    emotion: str | None = None
    kind: str = "speech"  # speech | singing | music
    channel: int | None = None
    source: str = "asr"  # asr | lyrics | subtitle | sound (music or an event, no words)
    events: list[str] = field(default_factory=list)  # sound events heard here (laughter, applause...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Segment":
        d = dict(d)
        d["words"] = [Word(**w) for w in d.get("words") or []]
        return cls(**d)


@dataclass
class Transcript:
    """What a transcriber returned for one media: kept so re-indexing never re-transcribes."""

    engine: str
    model: str
    segments: list[Segment]
    language: str | None = None
    language_probability: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # the engine's own response, JSON-serialisable
    cost: float = 0.0  # money spent on this transcript (0 for local engines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Transcript":
        d = dict(d)
        d["segments"] = [Segment.from_dict(s) for s in d.get("segments") or []]
        return cls(**d)


@dataclass
class ProbeResult:
    """What ffprobe says about a file."""

    duration: float
    container: str
    size: int
    audio_streams: int
    video_streams: int
    channels: int
    sample_rate: int | None
    audio_codec: str | None
    video_codec: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def has_video(self) -> bool:
        return self.video_streams > 0


@dataclass
class Media:
    """One piece of content, identified by its content hash; it may live at several paths."""

    id: str
    path: str  # the primary (first live) path or URI
    paths: list[str]
    size: int
    mtime: float
    duration: float | None = None
    container: str | None = None
    has_video: bool = False
    channels: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "pending"
    error: str | None = None
    engine: str | None = None
    language: str | None = None
    cost: float = 0.0

    @property
    def title(self) -> str:
        import os

        return self.tags.get("title") or os.path.splitext(os.path.basename(self.path))[0]

    @property
    def folder(self) -> str:
        import os

        return os.path.dirname(self.path)

    @property
    def month(self) -> str | None:
        """When it was recorded, for the date facets: ``YYYY-MM`` (or ``YYYY`` when a tag gives
        only the year) from the ``date``/``year`` tag, else the file's modification month (UTC)."""
        return recorded_month(self.tags, self.mtime)


_TAG_DATE = re.compile(r"((?:1[89]|2[0-9])[0-9]{2})"
                       r"(?:[-/.](0[1-9]|1[0-2])(?![0-9])|(0[1-9]|1[0-2])(?=[0-9]{2}(?![0-9])|$))?")


def recorded_month(tags: dict[str, str] | None, mtime: float | None) -> str | None:
    """``YYYY-MM`` (``YYYY``) from a ``date``/``year`` tag ("2019", "2019-03-04", "20190304"),
    else from ``mtime`` (UTC); None when neither says."""
    for key in ("date", "year"):
        m = _TAG_DATE.match(str((tags or {}).get(key) or "").strip())
        if m:
            month = m.group(2) or m.group(3)
            return f"{m.group(1)}-{month}" if month else m.group(1)
    if mtime and mtime > 0:
        return time.strftime("%Y-%m", time.gmtime(mtime))
    return None


@dataclass
class SearchQuery:
    """A search request, the same for every index backend."""

    q: str
    limit: int = 20
    offset: int = 0
    language: str | None = None
    emotion: str | None = None
    kind: str | None = None
    path_prefix: str | None = None
    source: str | None = None  # asr | lyrics | subtitle | sound
    event: str | None = None  # a sound event the segment must have (laughter, applause...)
    media_id: str | None = None
    library: str | None = None  # only this library's documents (a shared index); None = all
    facets: bool = False  # also count the facets of the matches (SearchResult.facets), in one request
    one_per_media: bool = False  # only the best hit of each media (``total`` counts media)
    date: str | None = None  # recorded in this year (YYYY) or month (YYYY-MM): Media.month


@dataclass
class SearchHit:
    media_id: str
    path: str
    time: float  # the jump target: start of the first matched word
    start: float
    end: float
    text: str
    snippet: str  # text with matches wrapped in <mark>...</mark>; other text HTML-escaped
    segment_index: int = 0
    language: str | None = None
    emotion: str | None = None
    kind: str = "speech"
    title: str | None = None
    score: float = 0.0
    source: str = "asr"
    events: list[str] = field(default_factory=list)
    matched_words: int = 0  # how many query words this hit contains
    match: str = "text"  # "text": the words were said here; "title": the media's title, artist,
    # album, file name or folder has them (the hit is its best segment, or its start)
    forgiven: bool = False  # found only through a forgiven form (typo, sound-alike, number...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: str
    total: int
    hits: list[SearchHit]
    partial: bool = False  # True when hits match only some of the query words
    total_exact: bool = True  # False when ``total`` is an estimate (large result sets)
    # True when the partial-match fallback stopped at its work limit (a long query): segments
    # matching more of the words may exist
    stopped_early: bool = False
    # the query with the words that matched instead, when nothing matched the words as typed
    did_you_mean: str | None = None
    # [{"word": as typed, "matched": [index words found instead], "why": typo|sound|number|
    # spelling|compound}] for the hits shown
    forgiven: list[dict[str, Any]] = field(default_factory=list)
    facets: Any = None  # FacetCounts when the query asked for them (SearchQuery.facets)

    def to_dict(self) -> dict[str, Any]:
        out = {"query": self.query, "total": self.total, "total_exact": self.total_exact,
               "partial": self.partial, "stopped_early": self.stopped_early,
               "did_you_mean": self.did_you_mean, "forgiven": self.forgiven,
               "hits": [h.to_dict() for h in self.hits]}
        if self.facets is not None:
            out["facets"] = dict(self.facets)
        return out
