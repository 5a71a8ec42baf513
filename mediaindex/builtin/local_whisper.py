"""The built-in offline transcriber ``local``: faster-whisper (CTranslate2) on the CPU.

Settings (``[local]`` in config.toml)::

    model = "base"          # "base" (bundled, multilingual), "tiny.en" (bundled, English, fast),
                            # a CTranslate2 model folder, or a hub id such as "large-v3" (internet)
    compute_type = "int8"   # CTranslate2 compute type
    beam_size = 5
    threads = 0             # CPU threads; 0/absent = os.cpu_count()
    vad = true              # Silero VAD (bundled in faster-whisper): skip silence and music
    language = ""           # force a language ("en", "zh"...); absent = detect per file
    window_seconds = 300    # audio is decoded by ffmpeg and transcribed in windows this long
                            # (peak RSS grows with it: base used 1.06 GB at 600 s, 0.85 GB at 300 s)
    device = "cpu"          # "cuda" where a GPU build of CTranslate2 is available

Audio is decoded by an ffmpeg subprocess into 16 kHz mono PCM and read from its pipe in
windows (cut at the quietest moment near the window's end), so a 12-hour file never sits in
memory at once; timestamps are offset by the window's start.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from mediaindex.audio import SAMPLE_RATE, pcm_windows
from mediaindex.backends import PermanentError, TranscribeRequest, Transcriber, TranscriberLimits
from mediaindex.hookspecs import hookimpl
from mediaindex.models import Segment, Transcript, Word

from . import whisper_models

log = logging.getLogger(__name__)

_KNOWN_SETTINGS = {"model", "compute_type", "beam_size", "threads", "vad", "language", "window_seconds",
                   "device"}

# A segment is treated as invented text (Whisper "hallucination" on noise/music) when the
# model itself says it is probably not speech and it is unsure of the words.
NO_SPEECH_DROP = 0.6
LOGPROB_DROP = -1.0
# ... or when every word is very unlikely.
WORD_PROB_DROP = 0.15
# ... or when it is a repetition loop ("第4,第4,第4,...") that survived the temperature fallback.
COMPRESSION_DROP = 2.4


def _to_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


class LocalWhisperTranscriber(Transcriber):
    """Offline Whisper via faster-whisper; the model loads on first use and is shared."""

    name = "local"
    limits = TranscriberLimits(max_duration=None, word_timestamps=True, paid=False)

    def __init__(self, model: str = "base", compute_type: str = "int8", beam_size: int = 5,
                 threads: int | None = None, vad: bool = True, language: str | None = None,
                 window_seconds: float = 300.0, device: str = "cpu"):
        self.model = str(model or "base")
        self.compute_type = str(compute_type or "int8")
        self.beam_size = int(beam_size)
        if self.beam_size < 1:
            raise ValueError(f"[local] beam_size must be >= 1, not {beam_size!r}")
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        self.vad = _to_bool(vad)
        self.language = (str(language).strip() or None) if language else None
        self.window_seconds = float(window_seconds)
        if self.window_seconds < 5:
            raise ValueError(f"[local] window_seconds must be >= 5, not {window_seconds!r}")
        self.device = str(device or "cpu")

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> "LocalWhisperTranscriber":
        settings = dict(settings or {})
        unknown = set(settings) - _KNOWN_SETTINGS
        if unknown:
            log.warning("[local]: ignoring unknown setting(s) %s", ", ".join(sorted(unknown)))
        return cls(**{k: v for k, v in settings.items() if k in _KNOWN_SETTINGS and v is not None})

    @property
    def cache_key(self) -> str:
        key = f"local:{self.model}:{self.compute_type}:beam{self.beam_size}:{'vad' if self.vad else 'novad'}"
        if self.language:
            key += f":lang={self.language}"
        return key

    def options(self) -> dict[str, Any]:
        return {"model": self.model, "compute_type": self.compute_type, "beam_size": self.beam_size,
                "vad": self.vad, "language": self.language, "threads": self.threads,
                "window_seconds": self.window_seconds, "device": self.device}

    def load(self) -> Any:
        """Load (or fetch from the process cache) the WhisperModel. Raises ModelError."""
        return whisper_models.get_model(self.model, self.compute_type, self.threads, self.device)

    # ---- transcription ---------------------------------------------------------------------

    def transcribe(self, request: TranscribeRequest) -> Transcript:
        path = Path(request.path)
        probe = request.probe
        if probe is not None and probe.audio_streams == 0:
            raise PermanentError(f"{path}: no audio stream (nothing to transcribe)")
        model = None  # loaded once the first window decoded (a broken file fails fast)
        total = float(probe.duration) if probe is not None and probe.duration else 0.0
        forced = request.language or self.language
        language = forced
        detected: tuple[str, float] | None = None
        first_info = None
        reporter = _Progress(request.progress, total)

        segments: list[Segment] = []
        raw_segments: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        windows: list[dict[str, Any]] = []
        decoded = 0.0
        started = time.monotonic()

        windows_iter = _windows(path, self.window_seconds, total)
        with contextlib.closing(windows_iter):  # ffmpeg is killed even if a callback raises
            for offset, audio, is_last in windows_iter:
                length = len(audio) / SAMPLE_RATE
                decoded = offset + length
                if is_last and offset == 0.0:
                    _check_complete(path, decoded, total)
                if length == 0.0:
                    _check_complete(path, decoded, total)
                    break
                if model is None:
                    model = self.load()
                seg_iter, info = model.transcribe(
                    audio, language=language, task="transcribe", beam_size=self.beam_size,
                    word_timestamps=True, vad_filter=self.vad, initial_prompt=request.prompt or None,
                    condition_on_previous_text=True,
                )
                if first_info is None:
                    first_info = info
                win_lang = forced or info.language
                kept_here = 0
                for s in seg_iter:
                    summary = {"start": round(offset + s.start, 3), "end": round(offset + s.end, 3),
                               "avg_logprob": round(s.avg_logprob, 4), "no_speech_prob": round(s.no_speech_prob, 4),
                               "compression_ratio": round(s.compression_ratio, 3), "temperature": s.temperature}
                    words = [Word(text=w.word.strip(), start=round(offset + w.start, 3), end=round(offset + w.end, 3),
                                  probability=round(float(w.probability), 4))
                             for w in (s.words or []) if w.word.strip()]
                    reason = _hallucination(s, words)
                    if reason:
                        dropped.append({**summary, "text": s.text.strip(), "reason": reason})
                    else:
                        raw_segments.append(summary)
                        segments.append(Segment(index=len(segments), start=round(offset + s.start, 3),
                                                end=round(offset + s.end, 3), text=s.text.strip(), words=words,
                                                language=win_lang))
                        kept_here += 1
                    reporter(offset + s.end)
                windows.append({"offset": round(offset, 3), "duration": round(length, 3),
                                "language": info.language, "language_probability": round(info.language_probability, 4),
                                "duration_after_vad": round(info.duration_after_vad, 3), "segments": kept_here})
                if kept_here and detected is None and not forced:
                    detected = (info.language, float(info.language_probability))
                    language = info.language  # later windows keep the file's language
                reporter(offset + length)
                if is_last:
                    _check_complete(path, decoded, total)

        reporter.finish(decoded)
        if forced:
            lang, lang_p = forced, None
        elif detected:
            lang, lang_p = detected
        else:
            lang, lang_p = None, None  # nothing was said: no language
        raw = {
            "engine": "faster-whisper",
            "info": {
                "language": first_info.language if first_info else None,
                "language_probability": round(first_info.language_probability, 4) if first_info else None,
                "duration": round(decoded, 3),
                "duration_after_vad": round(sum(w["duration_after_vad"] for w in windows), 3),
            },
            "windows": windows,
            "segments": raw_segments,
            "dropped": dropped,
            "elapsed_s": round(time.monotonic() - started, 3),
        }
        return Transcript(engine="local", model=self.model, segments=segments, language=lang,
                          language_probability=round(lang_p, 4) if lang_p is not None else None,
                          options={**self.options(), "language": forced, "prompt": request.prompt or None},
                          raw=raw, cost=0.0)


# ---- helpers ---------------------------------------------------------------------------------


def _hallucination(s: Any, words: list[Word]) -> str | None:
    """Why a faster-whisper segment looks invented (None = keep it)."""
    if s.no_speech_prob > NO_SPEECH_DROP and s.avg_logprob < LOGPROB_DROP:
        return "no_speech"
    if not words:
        return "no_words"
    if max((w.probability or 0.0) for w in words) < WORD_PROB_DROP:
        return "low_word_probability"
    if s.compression_ratio > COMPRESSION_DROP:
        return "repetition"  # still a loop after faster-whisper's temperature fallbacks
    return None


class _Progress:
    """Calls the request's progress callback with non-decreasing values capped at the total."""

    def __init__(self, cb: Any, total: float):
        self.cb, self.total, self.last = cb, total, -1.0

    def __call__(self, done: float) -> None:
        if self.cb is None:
            return
        done = float(done)
        if self.total > 0:
            done = min(done, self.total)
        if done > self.last:
            self.last = done
            self.cb(done, self.total if self.total > 0 else done)

    def finish(self, decoded: float) -> None:
        if self.cb is None:
            return
        total = self.total if self.total > 0 else decoded
        if total > self.last or self.last < 0:
            self.last = total
            self.cb(float(total), float(total))


def _check_complete(path: Path, decoded: float, total: float) -> None:
    """A file whose audio stops far before its announced duration is truncated/corrupt."""
    if decoded <= 0.0:
        raise PermanentError(f"{path}: ffmpeg decoded no audio (empty or corrupt file)")
    if total > 0 and total - decoded > max(2.0, 0.1 * total):
        raise PermanentError(f"{path}: truncated or corrupt: only {decoded:.1f} s of its {total:.1f} s of "
                             f"audio could be decoded")


def _windows(path: Path, window_seconds: float, total: float = 0.0) -> Iterator[tuple[float, Any, bool]]:
    """Yield (offset seconds, float32 mono 16 kHz audio, is_last) windows decoded by ffmpeg.

    Each window is cut at the quietest moment in its last 40 % (at most 30 s), so words are
    not split between windows; see :func:`mediaindex.audio.pcm_windows` (``total`` is unused).
    """
    return pcm_windows(path, sample_rate=SAMPLE_RATE, window=window_seconds, mark_last=True)


# ---- plugin hook ------------------------------------------------------------------------------


@hookimpl
def register_transcribers(register, config):
    register(LocalWhisperTranscriber.from_settings(config.section("local")))
