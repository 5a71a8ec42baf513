"""mediaindex.probe on real ffmpeg-made media: forged durations, very short clips."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mediaindex import PermanentError
from mediaindex import probe as probe_module
from mediaindex.probe import probe


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


# ---- Ogg pages ---------------------------------------------------------------------------------

_CRC = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else _r << 1
    _CRC.append(_r & 0xFFFFFFFF)


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, over the page with
    its checksum field zeroed)."""
    crc = 0
    for b in page[:22] + b"\0\0\0\0" + page[26:]:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ b]
    return crc


def ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every page."""
    pages, at = [], 0
    while (at := data.find(b"OggS", at)) >= 0:
        count = data[at + 26]
        length = 27 + count + sum(data[at + 27:at + 27 + count])
        pages.append((at, length))
        at += length
    return pages


def forge_last_granule(src: Path, dst: Path, factor: int) -> None:
    """Copy src with its last page's granule position multiplied by factor, checksum fixed."""
    data = bytearray(src.read_bytes())
    pages = ogg_pages(bytes(data))
    for at, length in pages:  # the checksum is computed as the demuxer checks it
        assert ogg_crc(bytes(data[at:at + length])) == struct.unpack_from("<I", data, at + 22)[0]
    at, length = pages[-1]
    granule = struct.unpack_from("<q", data, at + 6)[0]
    struct.pack_into("<q", data, at + 6, granule * factor)
    struct.pack_into("<I", data, at + 22, ogg_crc(bytes(data[at:at + length])))
    dst.write_bytes(data)


# ---- forged durations --------------------------------------------------------------------------


@pytest.mark.parametrize("bitrate,factor", [(None, 1000), ("6k", 10)])
def test_forged_ogg_duration_fails_as_corrupt(corpus_src, tmp_path, bitrate, factor):
    """A last granule forged 1,000x (or 10x on a 6 kbit/s file) passes the tail check, since
    the last page decodes at the forged time; the decode measured against the size catches it."""
    real = tmp_path / "real.opus"
    if bitrate:
        ffmpeg("-i", str(corpus_src / "podcasts/lighthouse.opus"), "-c:a", "libopus", "-b:a", bitrate, str(real))
    else:
        shutil.copy(corpus_src / "podcasts/lighthouse.opus", real)
    forged = tmp_path / "forged.opus"
    forge_last_granule(real, forged, factor)
    true = probe(real).duration
    claimed = ffprobe_duration(forged)
    assert claimed > factor * true * 0.9  # ffprobe believes the header
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(forged), "-f", "null", "-"],
                   check=True)  # a valid file as far as ffmpeg is concerned: no checksum error
    with pytest.raises(PermanentError) as e:
        probe(forged)
    msg = str(e.value)
    assert str(forged) in msg and "forged" in msg, msg
    assert f"header says {claimed:.1f} s" in msg and f"only {true:.1f} s" in msg, msg


def test_low_bitrate_file_that_is_really_long_passes(tmp_path):
    """Digital silence in FLAC is below the bitrate floor: decoded, found whole, kept."""
    path = tmp_path / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "60", str(path))
    assert path.stat().st_size * 8 / 60 < probe_module.MIN_BITRATE  # the decode check really runs
    assert probe(path).duration == pytest.approx(60.0, abs=0.1)


# ---- very short media --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp3", "flac", "wav", "opus", "ogg", "m4a"])
def test_ten_millisecond_clip_is_valid_media(tmp_path, ext):
    """A 10 ms clip is indexed (the transcriber finds no speech in it), not called corrupt."""
    path = tmp_path / f"click.{ext}"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.01", str(path))
    info = probe(path)
    assert 0 < info.duration < 0.1 and info.audio_streams == 1
