"""install.py: shared by A1111 (`import launch` available) and ComfyUI-Manager (no `launch`).

`launch` here is a stand-in module object with only what install.py uses from A1111's real
launch.py: `args.skip_install` and `run_pip(command, desc)`. No test runs pip.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import types
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def install(monkeypatch):
    monkeypatch.delitem(sys.modules, "launch", raising=False)
    spec = importlib.util.spec_from_file_location("pal_install_under_test", ROOT / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def no_pip(*a, **k):
        raise AssertionError(f"pip must not run: {a}")

    monkeypatch.setattr(mod.subprocess, "run", no_pip)
    return mod


def fake_launch(skip_install=False):
    launch = types.ModuleType("launch")
    launch.args = types.SimpleNamespace(skip_install=skip_install)
    launch.calls = []
    launch.run_pip = lambda command, desc=None: launch.calls.append((command, desc))
    return launch


def test_noop_when_requirements_met_without_launch(install, capsys):
    reqs = install.parse_requirements()
    assert reqs and not any(r.split(">")[0].strip().lower().startswith("torch") for r in reqs)
    assert install.plan(reqs)[0] == []  # the dev venv has everything
    t = time.perf_counter()
    assert install.main() == 0
    assert time.perf_counter() - t < 2.0
    assert "installing" not in capsys.readouterr().out


def test_runs_as_a_subprocess_without_launch_module(tmp_path):
    """How ComfyUI-Manager runs it: `python install.py` in the pack dir, no `launch` importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(ROOT / "install.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "installing" not in out.stdout


def test_installs_only_missing_and_never_torch(install, tmp_path, monkeypatch):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nnumpy>=1.0\ntorch>=2\ntorchvision\n--extra-index-url https://x\n"
                   "pal-surely-missing-pkg>=1.0  # trailing comment\n\n")
    assert install.parse_requirements(req) == ["numpy>=1.0", "pal-surely-missing-pkg>=1.0"]
    calls = []
    monkeypatch.setattr(install, "_pip_install", lambda r, launch: calls.append((r, launch)))
    assert install.main(req) == 0
    assert calls == [("pal-surely-missing-pkg>=1.0", None)]


def test_uses_launch_run_pip_and_honours_skip_install(install, tmp_path, monkeypatch):
    req = tmp_path / "requirements.txt"
    req.write_text("pal-surely-missing-pkg>=1.0\n")
    launch = fake_launch(skip_install=True)
    monkeypatch.setitem(sys.modules, "launch", launch)
    monkeypatch.setattr(install, "plan", lambda r: pytest.fail("--skip-install must not even check"))
    assert install.main(req) == 0 and launch.calls == []
    monkeypatch.undo()

    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: pytest.fail("pip via subprocess"))
    launch = fake_launch(skip_install=False)
    monkeypatch.setitem(sys.modules, "launch", launch)
    assert install.main(req) == 0
    assert launch.calls == [('install "pal-surely-missing-pkg>=1.0"', "comfyui-pal requirement: pal-surely-missing-pkg>=1.0")]


def test_any_opencv_variant_satisfies_and_old_versions_only_warn(install, tmp_path, monkeypatch, capsys):
    real_version = metadata.version

    def version(name):
        if name == "opencv-python-headless":
            raise metadata.PackageNotFoundError(name)
        if name == "opencv-python":
            return "4.9.0"
        if name == "numpy":
            return "1.0.0"
        return real_version(name)

    monkeypatch.setattr(install.metadata, "version", version)
    missing, warnings = install.plan(["opencv-python-headless>=4.8", "numpy>=1.24"])
    assert missing == []  # never add headless next to the host's opencv-python
    assert len(warnings) == 1 and "numpy 1.0.0" in warnings[0]
    monkeypatch.setenv("PAL_INSTALL_UPGRADE", "1")
    assert install.plan(["numpy>=1.24"])[0] == ["numpy>=1.24"]


def test_failed_install_reports_and_continues(install, tmp_path, monkeypatch, capsys):
    req = tmp_path / "requirements.txt"
    req.write_text("pal-missing-a\npal-missing-b\n")
    seen = []

    def boom(r, launch):
        seen.append(r)
        raise RuntimeError("no network")

    monkeypatch.setattr(install, "_pip_install", boom)
    assert install.main(req) == 1
    assert seen == ["pal-missing-a", "pal-missing-b"]
    assert "pip install" in capsys.readouterr().err


def test_forge_pins_need_no_upgrade_and_print_nothing(install, monkeypatch, capsys):
    """Forge (A1111 1.10.1 based) ships Pillow 9.5.0 etc.: the real requirements.txt must be met by its
    pins, or install.py warns at every start (seen in the real Forge run, issue #13)."""
    forge = {"numpy": "1.26.2", "pillow": "9.5.0", "safetensors": "0.4.2", "opencv-python": "4.11.0.86",
             "scikit-image": "0.21.0", "scipy": "1.16.3", "timm": "1.0.31", "huggingface-hub": "0.26.2",
             "huggingface_hub": "0.26.2", "tqdm": "4.66.1"}

    def version(name):
        key = name.lower()
        if key in forge:
            return forge[key]
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(install.metadata, "version", version)
    missing, warnings = install.plan(install.parse_requirements())
    assert missing == [] and warnings == []
    assert install.main() == 0 and capsys.readouterr().out == ""
