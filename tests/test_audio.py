"""mediaindex.audio on the real test corpus: silences, chunking, cutting, re-encoding, PCM windows."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mediaindex import PermanentError, TransientError, audio

SPEECH = ["talks/space_station.mp3", "talks/bread_baking.m4a", "video/volcano_lecture.mp4",
          "podcasts/lighthouse.opus", "podcasts/nested/deeper/gardening.flac", "podcasts/ferry.webm"]


def entry(manifest: dict, path: str) -> dict:
    return next(f for f in manifest["files"] if f["path"] == path)


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          f"file:{path}"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def gaps(e: dict) -> list[tuple[float, float]]:
    s = e["sentences"]
    return [(a["end"], b["start"]) for a, b in zip(s, s[1:])]


def inside_sentence(e: dict, t: float, margin: float = 0.05) -> bool:
    return any(s["start"] + margin < t < s["end"] - margin for s in e["sentences"])


# ---- silences ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEECH)
def test_silences_cover_the_gaps_between_sentences(corpus_src, manifest, name):
    e = entry(manifest, name)
    found = audio.silences(corpus_src / name)
    assert found == sorted(found) and all(0 <= a < b for a, b in found)
    assert len(gaps(e)) >= 1
    for gap_start, gap_end in gaps(e):
        assert any(a - 0.1 <= gap_start and gap_end <= b + 0.1 for a, b in found), (gap_start, gap_end, found)


def test_silences_none_in_music_and_errors(corpus_src, monkeypatch):
    assert audio.silences(corpus_src / "music/instrumental.mp3") == []
    for name in ("broken/not_really_video.mp4", "broken/empty.mp3", "broken/silent_video.mp4"):
        with pytest.raises(PermanentError) as e:
            audio.silences(corpus_src / name)
        assert str(corpus_src / name) in str(e.value) and not e.value.transient
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(TransientError, match="ffmpeg not found"):
        audio.silences(corpus_src / "podcasts/ferry.webm")


# ---- split_points ------------------------------------------------------------------------------


def assert_covers(chunks, total, max_chunk):
    assert chunks[0][0] == 0.0 and chunks[-1][1] == total
    for (a, b), (c, _) in zip(chunks, chunks[1:]):
        assert b == c  # no gap, no overlap
    assert all(0 < b - a <= max_chunk + 1e-9 for a, b in chunks), chunks


@pytest.mark.parametrize("name", SPEECH + ["meetings/long_meeting.mp3"])
def test_split_points_cut_in_silences(corpus_src, manifest, name):
    e = entry(manifest, name)
    total = audio.duration(corpus_src / name)
    quiet = audio.silences(corpus_src / name)
    max_chunk = 8.0 if name != "meetings/long_meeting.mp3" else 60.0
    chunks = audio.split_points(total, quiet, max_chunk=max_chunk)
    assert_covers(chunks, total, max_chunk)
    assert len(chunks) >= 2
    for _, cut in chunks[:-1]:
        assert any(a <= cut <= b for a, b in quiet), cut  # every cut is in a detected silence
        if name != "meetings/long_meeting.mp3":  # (its sentences have pauses of their own, "Item 1: ...")
            assert not inside_sentence(e, cut), (cut, chunks)


def test_split_points_edge_cases():
    # No silence: hard cuts at the limit.
    assert audio.split_points(25.0, [], max_chunk=10.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    # Fits in one chunk.
    assert audio.split_points(9.5, [(3.0, 4.0)], max_chunk=10.0) == [(0.0, 9.5)]
    assert audio.split_points(0.0, [], max_chunk=10.0) == []
    # The latest silence before the limit wins; one straddling the limit is cut at the limit.
    assert audio.split_points(30.0, [(2.0, 3.0), (6.0, 7.0), (25.0, 26.0)], max_chunk=10.0) == [
        (0.0, 6.5), (6.5, 16.5), (16.5, 25.5), (25.5, 30.0)]
    assert audio.split_points(15.0, [(9.0, 12.0)], max_chunk=10.0) == [(0.0, 10.0), (10.0, 15.0)]
    # Unsorted input and silences past the end are tolerated.
    chunks = audio.split_points(20.0, [(14.0, 15.0), (4.0, 5.0), (19.0, 25.0)], max_chunk=10.0)
    assert chunks == [(0.0, 4.5), (4.5, 14.5), (14.5, 20.0)]
    with pytest.raises(ValueError):
        audio.split_points(10.0, [], max_chunk=0)


# ---- extract -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec,ext", [("libopus", ".opus"), ("libmp3lame", ".mp3")])
def test_extract_duration_and_awkward_names(corpus_src, tmp_path, codec, ext):
    src = tmp_path / "-dash café 曲.mp3"  # a leading '-' and non-ASCII characters
    shutil.copy(corpus_src / "talks/space_station.mp3", src)
    decoded_total = sum(len(a) for _, a in audio.pcm_windows(src, window=600)) / 16000
    for start, end in [(0.0, 5.39), (5.39, 12.09), (12.09, audio.duration(src))]:
        out = audio.extract(src, start, end, tmp_path / "out" / f"-chunk {start:.2f} ü{ext}", codec=codec)
        assert out.exists() and out.parent == tmp_path / "out"
        decoded = sum(len(a) for _, a in audio.pcm_windows(out, window=600)) / 16000
        assert decoded == pytest.approx(min(end, decoded_total) - start, abs=0.02)
        # ffprobe's figure for MP3 also counts the encoder delay and the last frame's padding
        # (~0.07-0.1 s at 16 kHz, skipped by decoders): the audio itself is exact (above).
        assert ffprobe_duration(out) == pytest.approx(end - start, abs=0.1 if codec == "libopus" else 0.15)
        info = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels,sample_rate",
                               "-of", "csv=p=0", f"file:{out}"], capture_output=True, text=True).stdout.strip()
        # (ffprobe reports every Opus stream at 48 kHz, its decoding rate; the input was 16 kHz)
        assert info == ("opus,48000,1" if codec == "libopus" else "mp3,16000,1")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"-chunk {s} ü{ext}" for s in ("0.00", "5.39", "12.09"))  # no temporary files left


def test_extract_is_sample_accurate(corpus_src, tmp_path):
    """The cut audio is the same as the same stretch of the fully decoded file."""
    src = corpus_src / "podcasts/nested/deeper/gardening.flac"
    out = audio.extract(src, 4.6, 11.3, tmp_path / "c.flac", codec="flac", bitrate="0")
    whole = np.concatenate([a for _, a in audio.pcm_windows(src, window=600)])
    part = np.concatenate([a for _, a in audio.pcm_windows(out, window=600)])
    ref = whole[int(4.6 * 16000):int(4.6 * 16000) + len(part)]
    assert len(part) == pytest.approx((11.3 - 4.6) * 16000, abs=16)
    assert np.abs(part - ref).max() < 0.02


def test_extract_errors(corpus_src, tmp_path, monkeypatch):
    with pytest.raises(PermanentError) as e:
        audio.extract(corpus_src / "broken/not_really_video.mp4", 0, 1, tmp_path / "x.opus")
    assert str(corpus_src / "broken/not_really_video.mp4") in str(e.value)
    assert not (tmp_path / "x.opus").exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError):
        audio.extract(corpus_src / "podcasts/ferry.webm", 5, 5, tmp_path / "x.opus")
    with pytest.raises(TransientError, match="disappeared"):
        audio.extract(tmp_path / "gone.mp3", 0, 1, tmp_path / "x.opus")
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(TransientError, match="ffmpeg not found"):
        audio.extract(corpus_src / "podcasts/ferry.webm", 0, 1, tmp_path / "x.opus")


# ---- fit_bytes ---------------------------------------------------------------------------------


def test_fit_bytes_picks_the_highest_bitrate_that_fits(corpus_src, tmp_path):
    src = corpus_src / "talks/space_station.mp3"
    limit = 150_000  # ~33 s of speech: some bitrates fit, some do not
    sizes = {br: audio.extract(src, 0, 40, tmp_path / "ref" / f"{br}.opus", bitrate=br).stat().st_size
             for br in audio.DEFAULT_BITRATES}
    expected = next(br for br in audio.DEFAULT_BITRATES if sizes[br] <= limit)
    assert expected not in (audio.DEFAULT_BITRATES[0], audio.DEFAULT_BITRATES[-1]), sizes  # a real choice
    out = audio.fit_bytes(src, limit, tmp_path / "fit")
    assert out == tmp_path / "fit" / f"space_station.{expected}.opus"
    assert out.stat().st_size <= limit
    assert ffprobe_duration(out) == pytest.approx(audio.duration(src), abs=0.1)
    assert [p.name for p in (tmp_path / "fit").iterdir()] == [out.name]  # failed tries removed
    # A generous limit gets the highest bitrate; mp3 too.
    big = audio.fit_bytes(src, 10_000_000, tmp_path / "mp3", codec="libmp3lame")
    assert big.name == "space_station.64k.mp3" and big.stat().st_size <= 10_000_000


def test_fit_bytes_fails_clearly(corpus_src, tmp_path):
    src = corpus_src / "talks/space_station.mp3"
    with pytest.raises(PermanentError) as e:
        audio.fit_bytes(src, 20_000, tmp_path)  # 33 s at 8k is ~33 kB
    msg = str(e.value)
    assert str(src) in msg and "20000 bytes" in msg and "8k" in msg and "split" in msg
    assert not e.value.transient
    assert not list(tmp_path.iterdir())  # failed tries are removed
    with pytest.raises(PermanentError, match="does not fit"):
        audio.fit_bytes(corpus_src / "meetings/long_meeting.mp3", 100_000, tmp_path)  # hopeless: estimated
    with pytest.raises(PermanentError, match="no audio stream"):
        audio.fit_bytes(corpus_src / "broken/silent_video.mp4", 10_000_000, tmp_path)


# ---- pcm_windows -------------------------------------------------------------------------------


def audio_stream_duration(path: Path) -> float:
    """The audio stream's own duration (a video's container can run longer than its audio)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=duration:format=duration", "-of", "json", f"file:{path}"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    value = info["streams"][0].get("duration")
    return float(value if value not in (None, "N/A") else info["format"]["duration"])


@pytest.mark.parametrize("name,window", [("talks/space_station.mp3", 8.0), ("talks/bread_baking.m4a", 10.0),
                                         ("video/volcano_lecture.mp4", 10.0),
                                         ("podcasts/nested/deeper/gardening.flac", 300.0)])
def test_pcm_windows_add_up(corpus_src, manifest, name, window):
    e = entry(manifest, name)
    pos = 0.0
    wins = list(audio.pcm_windows(corpus_src / name, window=window))
    for offset, samples in wins:
        assert offset == pytest.approx(pos, abs=1e-9)
        assert samples.dtype == np.float32 and samples.ndim == 1 and 0 < len(samples) <= window * 16000
        assert np.abs(samples).max() <= 1.0
        pos += len(samples) / 16000
    assert pos == pytest.approx(audio_stream_duration(corpus_src / name), abs=0.1)
    if window < e["duration"]:
        assert len(wins) >= 2
    if name == "talks/space_station.mp3":  # a pause falls in each window's last 40 %: cuts are in them
        for offset, _ in wins[1:]:
            assert not inside_sentence(e, offset), offset


def test_pcm_windows_options_and_errors(corpus_src):
    src = corpus_src / "talks/space_station.mp3"
    hard = list(audio.pcm_windows(src, window=10.0, cut_quiet=False, sample_rate=8000))
    assert [o for o, _ in hard] == [0.0, 10.0, 20.0, 30.0]
    assert all(len(a) == 80000 for _, a in hard[:-1])
    marked = list(audio.pcm_windows(src, window=10.0, mark_last=True))
    assert [m[2] for m in marked] == [False] * (len(marked) - 1) + [True]
    for name in ("broken/not_really_video.mp4", "broken/empty.mp3", "broken/silent_video.mp4"):
        with pytest.raises(PermanentError) as e:
            list(audio.pcm_windows(corpus_src / name))
        assert str(corpus_src / name) in str(e.value)


def test_pcm_windows_stops_ffmpeg_when_closed(corpus_src):
    gen = audio.pcm_windows(corpus_src / "meetings/long_meeting.mp3", window=30.0)
    offset, first = next(gen)
    assert offset == 0.0 and len(first) <= 30 * 16000
    gen.close()  # the finally block kills ffmpeg; nothing hangs


def test_local_whisper_uses_the_shared_helpers():
    from mediaindex.builtin import local_whisper

    assert local_whisper.pcm_windows is audio.pcm_windows
    assert local_whisper.SAMPLE_RATE == audio.SAMPLE_RATE
    assert not hasattr(local_whisper, "_ffmpeg_cmd") and not hasattr(local_whisper, "_StderrTail")
