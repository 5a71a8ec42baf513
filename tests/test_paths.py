"""paths.py: the leaf module of path and name tests (no scan, probe or ffmpeg pulled in)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mediaindex.paths import is_candidate_name, is_likely_media, is_under

ROOT = Path(__file__).parent.parent


def test_paths_imports_nothing_from_the_package():
    tree = ast.parse((ROOT / "mediaindex" / "paths.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("mediaindex"), ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("mediaindex") for a in node.names), ast.unparse(node)


@pytest.mark.parametrize("module, not_loaded", [
    ("mediaindex.config", ["mediaindex.scan", "mediaindex.probe", "ffmpeg"]),
    ("mediaindex.scan", ["mediaindex.probe", "ffmpeg"]),
    ("mediaindex.web.app", ["mediaindex.scan", "mediaindex.probe", "ffmpeg"]),
])
def test_path_helpers_pull_in_no_scanning_or_probing(module, not_loaded):
    code = f"import sys, {module}; print(' '.join(m for m in {not_loaded!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == ""


def test_name_and_folder_tests():
    assert is_under("/media/pod/a.mp3", "/media/pod") and is_under("/media/pod", "/media/pod")
    assert not is_under("/media/podcasts/a.mp3", "/media/pod")
    assert is_candidate_name("talk.mp3") and is_candidate_name("talk.dat")
    assert not is_candidate_name("talk.srt") and not is_candidate_name(".hidden.mp3")
    assert not is_candidate_name("talk.mp3.part")
    assert is_likely_media("a/Talk.MP4") and not is_likely_media("a/talk.dat")
