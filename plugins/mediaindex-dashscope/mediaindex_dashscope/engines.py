"""The two Qwen3-ASR engines of the ``dashscope`` family, routed by duration.

* :class:`FlashTranscriber` (``qwen3-asr-flash``): synchronous, text only. The audio is cut at
  silences into chunks of at most ``chunk_seconds`` (30 s); each chunk's text gets its true
  offset and word times interpolated over the chunk's voiced stretches (``interpolated``).
  Takes files up to 5 min, or any length where filetrans is unavailable (no staging storage,
  the ``us`` region).
* :class:`FiletransTranscriber` (``qwen3-asr-flash-filetrans``): asynchronous, read from a URL
  (``request.publish`` of the extracted audio), real sentence and word times with per-sentence
  language and emotion. The task id is checkpointed before polling: a crash or a retry polls the
  same task and never pays twice; a task still running yields the worker (``NotReady``).
"""
from __future__ import annotations

import base64
import math
import re
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaindex import audio
from mediaindex.backends import TranscribeRequest, Transcriber, TranscriberLimits
from mediaindex.errors import NotReady, PermanentError, TransientError
from mediaindex.models import ProbeResult, Segment, Transcript, Word

from .client import BASE_URLS, Client

FLASH_MAX_SECONDS = 300.0
FLASH_MAX_BYTES = 10_000_000
FILETRANS_MAX_SECONDS = 12 * 3600.0
FILETRANS_MAX_BYTES = 2_000_000_000
PRICES = {"intl": 0.000035, "cn": 0.000032, "us": 0.000035}  # per audio second (US: assumed = intl)
EMOTIONS = {"surprised", "neutral", "happy", "sad", "disgusted", "angry", "fearful"}
POLL_STEPS = (1, 1, 2, 2, 2, 4, 4, 4, 5)  # the official SDK's schedule, seconds


@dataclass
class Settings:
    """The ``[dashscope]`` section of config.toml (environment variables win for key and URL)."""

    api_key: str | None = None
    region: str = "intl"
    base_url: str = ""
    flash_model: str = "qwen3-asr-flash"
    filetrans_model: str = "qwen3-asr-flash-filetrans"
    rpm: float = 60
    concurrency: int = 4
    timeout: float = 120.0
    chunk_seconds: float = 30.0
    itn: bool = False
    context: str = ""
    language: str | None = None
    channels: list[int] = field(default_factory=lambda: [0])
    price_per_second: float | None = None
    filetrans: bool | None = None  # None: available when stage_storage is set (and not in us)
    wait_inline: float = 20.0  # poll this long in the call before yielding the worker
    # keep polling while a task submitted in this call is PENDING (its audio not fetched yet): the
    # core deletes what was published when the call ends, NotReady included
    hold_pending: float = 600.0
    poll_after: float = 30.0  # NotReady: ask again after this many seconds

    @classmethod
    def from_config(cls, config) -> "Settings":
        import os

        sec = config.section("dashscope")
        region = str(sec.get("region") or "intl").lower()
        if region not in BASE_URLS:
            raise ValueError(f"[dashscope] region must be one of {', '.join(BASE_URLS)}, not {region!r}")
        s = cls(region=region)
        s.api_key = config.secret("dashscope", "api_key", env="DASHSCOPE_API_KEY")
        s.base_url = os.environ.get("DASHSCOPE_BASE_URL") or sec.get("base_url") or BASE_URLS[region]
        default_flash = "qwen3-asr-flash-us" if region == "us" else "qwen3-asr-flash"
        s.flash_model = str(sec.get("flash_model") or default_flash)
        s.filetrans_model = str(sec.get("filetrans_model") or s.filetrans_model)
        for key in ("rpm", "timeout", "chunk_seconds", "wait_inline", "poll_after", "hold_pending"):
            if sec.get(key) is not None:
                setattr(s, key, float(sec[key]))
        if sec.get("concurrency") is not None:
            s.concurrency = int(sec["concurrency"])
        s.itn = bool(sec.get("itn", False))
        s.context = str(sec.get("context") or "")
        s.language = sec.get("language") or None
        channels = sec.get("channels", [0])
        s.channels = [int(c) for c in (channels if isinstance(channels, list) else [channels])] or [0]
        s.price_per_second = float(sec["price_per_second"]) if sec.get("price_per_second") is not None else None
        if sec.get("filetrans") is not None:
            s.filetrans = bool(sec["filetrans"])
        else:
            s.filetrans = bool(config.get("stage_storage"))
        if region == "us":
            s.filetrans = False  # no filetrans in the US region
        if not 1 <= s.chunk_seconds <= FLASH_MAX_SECONDS:
            raise ValueError(f"[dashscope] chunk_seconds must be 1..300, not {s.chunk_seconds:g}")
        return s

    @property
    def price(self) -> float:
        return self.price_per_second if self.price_per_second is not None else PRICES[self.region]


class _Base(Transcriber):
    family = "dashscope"

    def __init__(self, settings: Settings, client: Client):
        self.settings = settings
        self.client = client

    def accepts(self, probe: ProbeResult, language: str | None = None) -> str | None:
        return super().accepts(probe, language)

    def _context(self, request: TranscribeRequest) -> str:
        return "\n".join(t for t in (self.settings.context, request.prompt or "") if t)

    def _language(self, request: TranscribeRequest) -> str | None:
        return request.language or self.settings.language

    def _charge(self, request: TranscribeRequest, seconds: float, details: dict) -> float:
        cost = round(seconds * self.settings.price, 8)
        if request.charge is not None:
            request.charge(seconds, cost, {"engine": self.name, **details})
        return cost


# ---- flash -----------------------------------------------------------------------------------


class FlashTranscriber(_Base):
    """``qwen3-asr-flash`` in silence-cut chunks (every chunk is one billed request)."""

    name = "qwen3-asr-flash"

    def __init__(self, settings: Settings, client: Client):
        super().__init__(settings, client)
        # without filetrans, flash takes long files too (in chunks)
        self.limits = TranscriberLimits(max_duration=FLASH_MAX_SECONDS if settings.filetrans else None,
                                        word_timestamps=False, paid=True)

    @property
    def cache_key(self) -> str:
        return f"{self.name}:{self.settings.flash_model}:c{self.settings.chunk_seconds:g}" + (":itn" if self.settings.itn else "")

    def chunks(self, duration: float, silences: list[tuple[float, float]] | None = None) -> list[tuple[float, float]]:
        return audio.split_points(duration, silences or [], max_chunk=self.settings.chunk_seconds)

    def estimate_cost(self, probe: ProbeResult) -> float:
        return self.estimate_seconds(probe) * self.settings.price

    def estimate_seconds(self, probe: ProbeResult) -> float:
        """Billed seconds: the audio plus about half a second per chunk (each is rounded up)."""
        n = max(1, math.ceil(probe.duration / self.settings.chunk_seconds))
        return probe.duration + 0.5 * n

    def transcribe(self, request: TranscribeRequest) -> Transcript:
        path, what = request.path, str(getattr(request, "uri", "") or request.path)
        total = request.probe.duration
        silences = audio.silences(path)
        chunks = self.chunks(total, silences)
        saved = (request.checkpoint.load() if request.checkpoint else None) or {}
        done: dict[str, dict] = dict(saved.get("chunks") or {})
        lock = threading.Lock()
        language, context = self._language(request), self._context(request)

        def one(chunk: tuple[float, float], tmp: Path) -> None:
            start, end = chunk
            key = f"{start:.3f}"
            if key in done:
                return
            data_url = self._encode(path, start, end, tmp)
            got = self.client.flash(self.settings.flash_model, data_url, context=context, language=language,
                                    itn=self.settings.itn, what=f"{what} at {start:.1f} s")
            seconds = got["seconds"] if got["seconds"] is not None else math.ceil(end - start)
            cost = self._charge(request, seconds, {"route": "flash", "chunk": [start, end]})
            with lock:
                done[key] = {"start": start, "end": end, "text": got["text"], "language": got["language"],
                             "emotion": got["emotion"], "seconds": seconds, "cost": cost}
                if request.checkpoint is not None:
                    request.checkpoint.save({"chunks": done})
                if request.progress is not None:
                    request.progress(sum(c["end"] - c["start"] for c in done.values()), total)

        with tempfile.TemporaryDirectory(prefix="mediaindex-flash-") as tmp:
            workers = max(1, min(self.settings.concurrency, len(chunks)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dashscope-flash") as pool:
                for fut in [pool.submit(one, c, Path(tmp)) for c in chunks]:
                    fut.result()
        return self._transcript(chunks, done, silences, route="flash" if total <= FLASH_MAX_SECONDS else "flash-chunks")

    def _encode(self, path: Path, start: float, end: float, tmp: Path) -> str:
        """The chunk as a base64 data URL, mono 16 kHz Opus, re-encoded smaller if over 10 MB."""
        out = audio.extract(path, start, end, tmp / f"{start:.3f}.opus")
        budget = FLASH_MAX_BYTES * 3 // 4 - 1024  # base64 grows it by a third; the limit counts that
        if out.stat().st_size > budget:
            out = audio.fit_bytes(out, budget, tmp)
        data = base64.b64encode(out.read_bytes()).decode("ascii")
        out.unlink(missing_ok=True)
        return f"data:audio/ogg;base64,{data}"

    def _transcript(self, chunks, done, silences, route: str) -> Transcript:
        segments: list[Segment] = []
        cost = seconds = 0.0
        langs: Counter = Counter()
        for start, end in chunks:
            got = done[f"{start:.3f}"]
            cost += got["cost"]
            seconds += got["seconds"]
            if got["language"]:
                langs[got["language"]] += end - start
            if not got["text"]:
                continue
            emotion = got["emotion"] if got["emotion"] in EMOTIONS else None
            for text, words in place(got["text"], voiced(start, end, silences)):
                segments.append(Segment(index=len(segments), start=words[0].start if words else start,
                                        end=words[-1].end if words else end, text=text, words=words,
                                        language=got["language"], emotion=emotion))
        return Transcript(engine=self.name, model=self.settings.flash_model, segments=segments,
                          language=langs.most_common(1)[0][0] if langs else None,
                          options={"route": route, "chunks": len(chunks), "billed_seconds": seconds,
                                   "chunk_seconds": self.settings.chunk_seconds, "itn": self.settings.itn},
                          cost=round(cost, 8))


def voiced(start: float, end: float, silences: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The stretches of [start, end] outside the silences (all of it when none is voiced)."""
    spans = audio.uncovered(start, end, silences)
    spans = [(a, b) for a, b in spans if b - a > 0.2]
    return spans or [(start, end)]


_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s*")


def place(text: str, spans: list[tuple[float, float]]) -> list[tuple[str, list[Word]]]:
    """(sentence, words) pieces of a chunk's text with interpolated word times. When the text has
    as many sentences as the chunk has voiced stretches, each sentence gets its own stretch;
    otherwise the whole text is spread over all of them."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1 and len(sentences) == len(spans):
        return [(s, interpolate(s, [span])) for s, span in zip(sentences, spans)]
    return [(text, interpolate(text, spans))]


_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\s\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+")


def interpolate(text: str, spans: list[tuple[float, float]]) -> list[Word]:
    """Words (CJK: characters) spread over the voiced spans by their length; all ``interpolated``."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return []
    weights = [len(t) + 1 for t in tokens]
    total_w = float(sum(weights))
    voiced_total = sum(b - a for a, b in spans)

    def at(fraction: float) -> float:  # a point of the voiced timeline -> media time
        left = fraction * voiced_total
        for a, b in spans:
            if left <= b - a:
                return a + left
            left -= b - a
        return spans[-1][1]

    words, acc = [], 0.0
    for tok, w in zip(tokens, weights):
        s, acc = at(acc / total_w), acc + w
        words.append(Word(text=tok, start=round(s, 3), end=round(at(acc / total_w), 3), interpolated=True))
    return words


# ---- filetrans -------------------------------------------------------------------------------


class FiletransTranscriber(_Base):
    """``qwen3-asr-flash-filetrans``: one task per file, read from a published URL."""

    name = "qwen3-asr-flash-filetrans"

    def __init__(self, settings: Settings, client: Client):
        super().__init__(settings, client)
        self.limits = TranscriberLimits(max_duration=FILETRANS_MAX_SECONDS, max_bytes=None, needs_url=True,
                                        word_timestamps=True, paid=True)

    @property
    def cache_key(self) -> str:
        return f"{self.name}:{self.settings.filetrans_model}" + (":itn" if self.settings.itn else "")

    def accepts(self, probe: ProbeResult, language: str | None = None) -> str | None:
        if not self.settings.filetrans:
            why = ("the us region has no filetrans" if self.settings.region == "us"
                   else "filetrans needs stage_storage (or [dashscope] filetrans = true)")
            return f"{self.name}: {why}"
        return super().accepts(probe, language)

    def estimate_cost(self, probe: ProbeResult) -> float:
        return self.estimate_seconds(probe) * self.settings.price

    @property
    def estimate_note(self) -> str | None:
        n = len(self.settings.channels)
        return f"each of the {n} channels in [dashscope] channels is billed in full" if n > 1 else None

    def estimate_seconds(self, probe: ProbeResult) -> float:
        """Billed seconds: every listed channel is billed in full."""
        return math.ceil(probe.duration) * len(self.settings.channels)

    def transcribe(self, request: TranscribeRequest) -> Transcript:
        what = str(request.uri or request.path)
        state = (request.checkpoint.load() if request.checkpoint else None) or {}
        fresh = not state.get("task_id")  # submitted in this call: its published audio still exists
        if fresh:
            state = self._submit(request, what, resubmits=0)
        began = time.monotonic()
        deadline = began + self.settings.wait_inline
        polls = int(state.get("polls", 0))
        while True:
            reply = self.client.task(state["task_id"], what=what)
            output = reply.get("output") or {}
            status = str(output.get("task_status") or "UNKNOWN").upper()
            if status == "SUCCEEDED":
                return self._finish(request, state, reply, what)
            if status == "FAILED" and not fresh and not state.get("withdrawn"):
                # submitted by an earlier call whose published audio the core has deleted since:
                # the service may have failed to fetch it (a failed task is not billed): once more
                state = self._submit(request, what, resubmits=int(state.get("resubmits", 0)))
                state["withdrawn"] = fresh = True
                self._save(request, state)
                continue
            if status in ("FAILED", "CANCELED"):
                self._save(request, {})  # a later retry by the user submits afresh
                raise PermanentError(f"{what}: DashScope task {state['task_id']} {status.lower()}: "
                                     f"{failure(output)}")
            if status == "UNKNOWN":  # expired (24 h) or never known: submit once more
                if state.get("resubmits", 0) >= 1:
                    self._save(request, {})
                    raise PermanentError(f"{what}: DashScope does not know task {state['task_id']} "
                                         "(expired twice): giving up")
                state = self._submit(request, what, resubmits=int(state.get("resubmits", 0)) + 1)
                fresh = True
                continue
            polls += 1
            state["polls"] = polls
            step = POLL_STEPS[min(polls - 1, len(POLL_STEPS) - 1)]
            holding = status == "PENDING" and fresh and time.monotonic() + step - began <= self.settings.hold_pending
            if time.monotonic() + step > deadline and not holding:
                self._save(request, state)
                raise NotReady(f"{what}: DashScope task {state['task_id']} is {status.lower()}",
                               retry_after=self.settings.poll_after)
            time.sleep(step)

    def _save(self, request: TranscribeRequest, state: dict) -> None:
        if request.checkpoint is not None:
            request.checkpoint.save(state)

    def _submit(self, request: TranscribeRequest, what: str, resubmits: int) -> dict:
        """Publish the audio, submit the task, checkpoint its id (before any poll)."""
        with tempfile.TemporaryDirectory(prefix="mediaindex-filetrans-") as tmp:
            url = self._url(request, Path(tmp))
            params: dict[str, Any] = {"channel_id": self.settings.channels, "enable_itn": self.settings.itn,
                                      "enable_words": True}
            language = self._language(request)
            if language:
                params["language"] = language
            task_id = self.client.submit(self.settings.filetrans_model, url, params, what=what)
        state = {"task_id": task_id, "submitted": time.time(), "resubmits": resubmits}
        self._save(request, state)
        return state

    def _url(self, request: TranscribeRequest, tmp: Path) -> str:
        """A URL the service can fetch: the extracted audio, published by the core."""
        if request.publish is None:
            raise PermanentError(f"{request.uri or request.path}: filetrans needs a public URL and this caller "
                                 "cannot publish one (set [dashscope] filetrans = false to use flash in chunks)")
        channels = request.probe.channels if max(self.settings.channels) > 0 else 1
        out = audio.extract(request.path, 0.0, request.probe.duration + 1.0, tmp / "audio.opus",
                            bitrate="32k", channels=max(1, channels or 1))
        return request.publish(out)

    def _finish(self, request: TranscribeRequest, state: dict, reply: dict, what: str) -> Transcript:
        output = reply.get("output") or {}
        usage = reply.get("usage") or {}
        seconds = float(usage.get("seconds") if usage.get("seconds") is not None
                        else math.ceil(request.probe.duration) * len(self.settings.channels))
        cost = round(seconds * self.settings.price, 8)
        if not state.get("charged"):  # booked once, even when fetching the result fails and is retried
            self._charge(request, seconds, {"route": "filetrans", "task_id": state["task_id"]})
            state["charged"] = True
            self._save(request, state)
        url = (output.get("result") or {}).get("transcription_url")
        if not url:
            raise TransientError(f"{what}: task {state['task_id']} succeeded without a result URL")
        result = self.client.fetch_result(url, what=what)
        segments = parse_result(result)
        langs: Counter = Counter()
        for s in segments:
            if s.language:
                langs[s.language] += s.end - s.start
        return Transcript(engine=self.name, model=self.settings.filetrans_model, segments=segments,
                          language=langs.most_common(1)[0][0] if langs else None,
                          options={"route": "filetrans", "task_id": state["task_id"], "billed_seconds": seconds,
                                   "channels": self.settings.channels, "itn": self.settings.itn},
                          cost=cost)


def failure(output: dict) -> str:
    """A FAILED task's code and message, wherever the service put them."""
    result = output.get("result") if isinstance(output.get("result"), dict) else {}
    code = output.get("code") or result.get("subtask_status") or "no code"
    message = output.get("message") or result.get("message") or "no message"
    return f"{code}: {message}"


def parse_result(result: dict) -> list[Segment]:
    """Segments (one per sentence, real word times, language, emotion) from a result file."""
    transcripts = result.get("transcripts") or []
    multi = len(transcripts) > 1
    segments: list[Segment] = []
    for tr in transcripts:
        channel = tr.get("channel_id") if multi else None
        for s in tr.get("sentences") or []:
            words = [Word(text=f"{w.get('text', '')}{w.get('punctuation') or ''}", start=w["begin_time"] / 1000,
                          end=w["end_time"] / 1000)
                     for w in s.get("words") or [] if w.get("begin_time") is not None]
            emotion = str(s.get("emotion") or "").lower() or None
            segments.append(Segment(index=0, start=s["begin_time"] / 1000, end=s["end_time"] / 1000,
                                    text=str(s.get("text") or "").strip(), words=words,
                                    language=s.get("language") or None,
                                    emotion=emotion if emotion in EMOTIONS else None, channel=channel))
    segments = [s for s in segments if s.text]
    segments.sort(key=lambda s: (s.start, s.channel or 0))
    for i, s in enumerate(segments):
        s.index = i
    return segments
