"""Layering and import graph (tests/check_imports.py, also runnable as `python tests/check_imports.py`),
and how pytest treats the checkout root (a ComfyUI node pack's __init__.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("pal_check_imports", ROOT / "tests" / "check_imports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CI = _checker()

# Cycles through imports inside functions that other work in progress removes; this list may only
# shrink (the test fails on a new cycle and on a listed one that is gone, so it gets deleted here).
KNOWN_LAZY_CYCLES: list[list[str]] = []


def test_core_imports_neither_models_nor_hosts_nor_private_names():
    files = CI.module_files()
    assert any(m.startswith("comfyui_pal.core.") for m in files)
    assert CI.core_violations(files) == []
    graph = CI.internal_edges(files)
    assert not [t for m, ts in graph.items() if m.startswith("comfyui_pal.core") for t in ts
                if not t.startswith("comfyui_pal.core")], "core imports only core"


def test_the_checker_catches_each_kind_of_slip(tmp_path):
    bad = tmp_path / "core" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from diffusers.utils import deprecation_utils\n"
        "import comfy.sd\n"
        "from .crop import _to_numpy\n"
        "def f():\n"
        "    from ..models import load_detector\n"
        "    import modules.shared\n"
        "    return hasattr(deprecation_utils, '_TORCH_DTYPE_DEPRECATION_MESSAGE'), deprecation_utils._x\n"
    )
    (bad.parent / "crop.py").write_text("def _to_numpy(x):\n    return x\n")
    out = CI.core_violations({"comfyui_pal.core.bad": bad, "comfyui_pal.core.crop": bad.parent / "crop.py"})
    text = "\n".join(out)
    assert len(out) == 6, text
    for needle in ("comfy.sd", "_to_numpy", "comfyui_pal.models", "modules.shared",
                   "hasattr(deprecation_utils", "deprecation_utils._x"):
        assert needle in text


def test_cycle_finder_sees_lazy_and_import_time_cycles(tmp_path):
    pkg = tmp_path
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    files = {"comfyui_pal": pkg / "__init__.py", "comfyui_pal.a": pkg / "a.py", "comfyui_pal.b": pkg / "b.py"}
    assert CI.find_cycles(CI.internal_edges(files)) == [["comfyui_pal.a", "comfyui_pal.b"]]
    assert CI.find_cycles(CI.internal_edges(files, lazy=False)) == []


def test_no_import_cycle_in_the_package():
    files = CI.module_files()
    assert CI.find_cycles(CI.internal_edges(files, lazy=False)) == [], "import-time cycle"
    assert CI.find_cycles(CI.internal_edges(files)) == sorted(KNOWN_LAZY_CYCLES)


def test_the_command_line_check_runs():
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "check_imports.py")], capture_output=True,
                       text=True, timeout=60)
    assert "core layering violations: 0" in r.stdout and "core -> models edges: 0" in r.stdout, r.stdout
    assert r.returncode == (1 if KNOWN_LAZY_CYCLES else 0)


# ----------------------------------------------------------------------------- pytest and the root
def test_pytest_does_not_import_the_checkout_under_its_folder_name():
    """Before, pytest made the root a test package: /work put on sys.path, the pack imported a second
    time as `main` (the folder's name)."""
    assert str(ROOT.parent) not in [os.path.abspath(p) for p in sys.path if p]
    twin = sys.modules.get(ROOT.name)
    assert twin is None or Path(getattr(twin, "__file__", "") or "").resolve() != ROOT / "__init__.py"
    import comfyui_pal

    assert Path(comfyui_pal.__file__).resolve() == ROOT / "__init__.py"


@pytest.mark.slow
def test_a_checkout_named_like_a_stdlib_module_still_runs_its_tests(tmp_path):
    """A checkout folder called `wave`: before, pytest put its parent on sys.path and imported the root
    __init__.py as `wave` when setting up the root "package", so a test's own `import wave` got it."""
    root = tmp_path / "wave"
    (root / "tests").mkdir(parents=True)
    (root / "__init__.py").write_text("raise ImportError('the checkout root was imported as a module')\n")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(ROOT / "tests" / "conftest.py", root / "tests" / "conftest.py")
    (root / "tests" / "test_stdlib.py").write_text(
        "def test_stdlib_wave():\n    import wave\n\n    assert wave.open\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
