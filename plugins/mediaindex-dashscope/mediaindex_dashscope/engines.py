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
from dataclasses import dataclass
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
    channels: list[int] | None = None  # transcribed one by one, each billed; None: all mixed into one
    price_per_second: float | None = None
    filetrans: bool | None = None  # None: available when stage_storage is set (and not in us)
    # poll this long in the call before yielding the worker (NotReady), PENDING or RUNNING alike: the
    # core keeps what was published until the job ends
    wait_inline: float = 20.0
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
        for key in ("rpm", "timeout", "chunk_seconds", "wait_inline", "poll_after"):
            if sec.get(key) is not None:
                setattr(s, key, float(sec[key]))
        if sec.get("concurrency") is not None:
            s.concurrency = int(sec["concurrency"])
        s.itn = bool(sec.get("itn", False))
        s.context = str(sec.get("context") or "")
        s.language = sec.get("language") or None
        try:
            s.channels = parse_channels(sec.get("channels"), "[dashscope] channels")
        except PermanentError as e:
            raise ValueError(str(e)) from None
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


def parse_channels(value: Any, where: str) -> list[int] | None:
    """A ``channels`` setting: a channel number or a list of them (from 0), or ``"mix"`` / unset."""
    if value is None or value == "mix":
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in items):
        raise PermanentError(f"{where} must be \"mix\" or channel numbers from 0 (e.g. [0, 1]), not {value!r}")
    return list(dict.fromkeys(items))


def channel_note(channels: list[int] | None) -> str | None:
    """What ``--estimate`` says about a channel selection (None: the usual mono mix)."""
    if not channels:
        return None
    if len(channels) == 1:
        return f"channel {channels[0]} only (per [dashscope] channels or a [[hints]] entry)"
    return (f"channels {', '.join(map(str, channels))} are transcribed one by one: each is billed in full "
            f"({len(channels)} x the audio)")


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

    def _channels_key(self) -> str:
        """The cache key's part for ``[dashscope] channels`` (none for the mix; a ``[[hints]]``
        choice is per file and cannot be in it)."""
        return ":ch" + "-".join(map(str, self.settings.channels)) if self.settings.channels else ""

    def channels(self, probe: ProbeResult, hint: dict | None = None) -> list[int] | None:
        """The channels to transcribe one by one (each billed), from the file's ``[[hints]]``
        entry or ``[dashscope] channels``, those the file has; None: all mixed into one."""
        hint = hint or {}
        chosen = (parse_channels(hint["channels"], "[[hints]] channels") if "channels" in hint
                  else self.settings.channels)
        if not chosen or (probe.channels or 1) <= 1:
            return None
        return [c for c in chosen if c < probe.channels] or None

    def estimate(self, probe: ProbeResult, hint: dict | None = None) -> tuple[float, float, str | None]:
        """Billed seconds, cost and the channel note for this file (each chosen channel is billed)."""
        chosen = self.channels(probe, hint)
        seconds = self.estimate_seconds(probe) * len(chosen or [None])
        return seconds, seconds * self.settings.price, channel_note(chosen)

    def estimate_cost(self, probe: ProbeResult) -> float:
        return self.estimate(probe)[1]

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
        return (f"{self.name}:{self.settings.flash_model}:c{self.settings.chunk_seconds:g}"
                + (":itn" if self.settings.itn else "") + self._channels_key())

    def chunks(self, duration: float, silences: list[tuple[float, float]] | None = None) -> list[tuple[float, float]]:
        return audio.split_points(duration, silences or [], max_chunk=self.settings.chunk_seconds)

    def estimate_seconds(self, probe: ProbeResult) -> float:
        """Billed seconds of one channel (or the mix): the audio plus about half a second per
        chunk (each is rounded up)."""
        n = max(1, math.ceil(probe.duration / self.settings.chunk_seconds))
        return probe.duration + 0.5 * n

    def transcribe(self, request: TranscribeRequest) -> Transcript:
        path, what = request.path, str(getattr(request, "uri", "") or request.path)
        total = request.probe.duration
        chosen = self.channels(request.probe, request.hint)
        saved = (request.checkpoint.load() if request.checkpoint else None) or {}
        done: dict[str, dict] = dict(saved.get("chunks") or {})
        lock = threading.Lock()
        language, context = self._language(request), self._context(request)
        route = "flash" if total <= FLASH_MAX_SECONDS else "flash-chunks"

        def one(channel: int | None, source: Path, chunk: tuple[float, float], tmp: Path) -> None:
            start, end = chunk
            key = chunk_key(channel, start)
            if key in done:
                return
            data_url = self._encode(source, start, end, tmp / f"{key.replace(':', '-')}.opus")
            at = f"{what} at {start:.1f} s" + (f", channel {channel}" if channel is not None else "")
            got = self.client.flash(self.settings.flash_model, data_url, context=context, language=language,
                                    itn=self.settings.itn, what=at)
            seconds = got["seconds"] if got["seconds"] is not None else math.ceil(end - start)
            cost = self._charge(request, seconds, {"route": route, "chunk": [start, end], "channel": channel})
            with lock:
                done[key] = {"start": start, "end": end, "text": got["text"], "language": got["language"],
                             "emotion": got["emotion"], "seconds": seconds, "cost": cost}
                if request.checkpoint is not None:
                    request.checkpoint.save({"chunks": done})
                if request.progress is not None:
                    request.progress(sum(c["end"] - c["start"] for c in done.values()), total * len(tracks))

        with tempfile.TemporaryDirectory(prefix="mediaindex-flash-") as tmp:
            tracks = [self._track(path, channel, total, Path(tmp)) for channel in chosen or [None]]
            jobs = [(channel, source, chunk) for channel, source, _, chunks in tracks for chunk in chunks]
            workers = max(1, min(self.settings.concurrency, len(jobs)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dashscope-flash") as pool:
                for fut in [pool.submit(one, *job, Path(tmp)) for job in jobs]:
                    fut.result()
        return self._transcript(tracks, done, route=route, channels=chosen)

    def _track(self, path: Path, channel: int | None, total: float, tmp: Path):
        """(channel, audio, silences, chunks) of the mix (channel None) or of one channel, which
        ffmpeg extracts first (mono, 16 kHz Opus at 64 kb/s: the chunks are cut from it)."""
        source = path if channel is None else audio.extract(path, 0.0, total + 1.0, tmp / f"channel{channel}.opus",
                                                           bitrate="64k", channel=channel)
        silences = audio.silences(source)
        return channel, source, silences, self.chunks(total, silences)

    def _encode(self, path: Path, start: float, end: float, out: Path) -> str:
        """The chunk (written to ``out``, a name of its own) as a base64 data URL, mono 16 kHz
        Opus, re-encoded smaller if over 10 MB."""
        out = audio.extract(path, start, end, out)
        budget = FLASH_MAX_BYTES * 3 // 4 - 1024  # base64 grows it by a third; the limit counts that
        if out.stat().st_size > budget:
            out = audio.fit_bytes(out, budget, out.parent)
        data = base64.b64encode(out.read_bytes()).decode("ascii")
        out.unlink(missing_ok=True)
        return f"data:audio/ogg;base64,{data}"

    def _transcript(self, tracks, done, route: str, channels: list[int] | None) -> Transcript:
        segments: list[Segment] = []
        cost = seconds = 0.0
        langs: Counter = Counter()
        for channel, _, silences, chunks in tracks:
            for start, end in chunks:
                got = done[chunk_key(channel, start)]
                cost += got["cost"]
                seconds += got["seconds"]
                if got["language"]:
                    langs[got["language"]] += end - start
                if not got["text"]:
                    continue
                emotion = got["emotion"] if got["emotion"] in EMOTIONS else None
                for text, words in place(got["text"], voiced(start, end, silences)):
                    segments.append(Segment(index=0, start=words[0].start if words else start,
                                            end=words[-1].end if words else end, text=text, words=words,
                                            language=got["language"], emotion=emotion, channel=channel))
        segments.sort(key=lambda s: (s.start, s.channel or 0))
        for i, s in enumerate(segments):
            s.index = i
        return Transcript(engine=self.name, model=self.settings.flash_model, segments=segments,
                          language=langs.most_common(1)[0][0] if langs else None,
                          options={"route": route, "chunks": sum(len(t[3]) for t in tracks), "billed_seconds": seconds,
                                   "chunk_seconds": self.settings.chunk_seconds, "itn": self.settings.itn,
                                   "channels": channels},
                          cost=round(cost, 8))


def chunk_key(channel: int | None, start: float) -> str:
    """A done chunk's key in the checkpoint (the mix's keys are the start alone)."""
    return f"{start:.3f}" if channel is None else f"{channel}:{start:.3f}"


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
        return f"{self.name}:{self.settings.filetrans_model}" + (":itn" if self.settings.itn else "") + self._channels_key()

    def accepts(self, probe: ProbeResult, language: str | None = None) -> str | None:
        if not self.settings.filetrans:
            why = ("the us region has no filetrans" if self.settings.region == "us"
                   else "filetrans needs stage_storage (or [dashscope] filetrans = true)")
            return f"{self.name}: {why}"
        return super().accepts(probe, language)

    def estimate_seconds(self, probe: ProbeResult) -> float:
        """Billed seconds of one channel (or the mix)."""
        return math.ceil(probe.duration)

    def transcribe(self, request: TranscribeRequest) -> Transcript:
        what = str(request.uri or request.path)
        state = (request.checkpoint.load() if request.checkpoint else None) or {}
        fresh = not state.get("task_id")  # submitted in this call
        if fresh:
            state = self._submit(request, what, resubmits=0)
        deadline = time.monotonic() + self.settings.wait_inline
        polls = int(state.get("polls", 0))
        while True:
            reply = self.client.task(state["task_id"], what=what)
            output = reply.get("output") or {}
            status = str(output.get("task_status") or "UNKNOWN").upper()
            if status == "SUCCEEDED":
                return self._finish(request, state, reply, what)
            if status == "FAILED" and not fresh and not state.get("withdrawn"):
                # submitted by an earlier run that was killed: the next start deleted its staged
                # audio before the service fetched it (a failed task is not billed): once more
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
            if time.monotonic() + step > deadline:
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
            chosen = self.channels(request.probe, request.hint)
            params: dict[str, Any] = {"channel_id": chosen or [0], "enable_itn": self.settings.itn,
                                      "enable_words": True}
            language = self._language(request)
            if language:
                params["language"] = language
            task_id = self.client.submit(self.settings.filetrans_model, url, params, what=what)
        state = {"task_id": task_id, "submitted": time.time(), "resubmits": resubmits, "channels": chosen}
        self._save(request, state)
        return state

    def _url(self, request: TranscribeRequest, tmp: Path) -> str:
        """A URL the service can fetch: the extracted audio, published by the core: mono (the
        mix), or every channel (at 32 kb/s each) when channels are chosen (channel_id picks them)."""
        if request.publish is None:
            raise PermanentError(f"{request.uri or request.path}: filetrans needs a public URL and this caller "
                                 "cannot publish one (set [dashscope] filetrans = false to use flash in chunks)")
        channels = request.probe.channels if self.channels(request.probe, request.hint) else 1
        out = audio.extract(request.path, 0.0, request.probe.duration + 1.0, tmp / "audio.opus",
                            bitrate=f"{32 * min(channels, 8)}k", channels=channels)
        return request.publish(out)

    def _finish(self, request: TranscribeRequest, state: dict, reply: dict, what: str) -> Transcript:
        output = reply.get("output") or {}
        usage = reply.get("usage") or {}
        chosen = state.get("channels")
        seconds = float(usage.get("seconds") if usage.get("seconds") is not None
                        else math.ceil(request.probe.duration) * len(chosen or [0]))
        cost = round(seconds * self.settings.price, 8)
        if not state.get("charged"):  # booked once, even when fetching the result fails and is retried
            self._charge(request, seconds, {"route": "filetrans", "task_id": state["task_id"]})
            state["charged"] = True
            self._save(request, state)
        url = (output.get("result") or {}).get("transcription_url")
        if not url:
            raise TransientError(f"{what}: task {state['task_id']} succeeded without a result URL")
        result = self.client.fetch_result(url, what=what)
        segments = parse_result(result, channels=bool(chosen))
        langs: Counter = Counter()
        for s in segments:
            if s.language:
                langs[s.language] += s.end - s.start
        return Transcript(engine=self.name, model=self.settings.filetrans_model, segments=segments,
                          language=langs.most_common(1)[0][0] if langs else None,
                          options={"route": "filetrans", "task_id": state["task_id"], "billed_seconds": seconds,
                                   "channels": chosen, "itn": self.settings.itn},
                          cost=cost)


def failure(output: dict) -> str:
    """A FAILED task's code and message, wherever the service put them."""
    result = output.get("result") if isinstance(output.get("result"), dict) else {}
    code = output.get("code") or result.get("subtask_status") or "no code"
    message = output.get("message") or result.get("message") or "no message"
    return f"{code}: {message}"


def parse_result(result: dict, channels: bool = False) -> list[Segment]:
    """Segments (one per sentence, real word times, language, emotion) from a result file;
    ``channels``: each carries its channel (also when there is only one)."""
    transcripts = result.get("transcripts") or []
    multi = channels or len(transcripts) > 1
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
