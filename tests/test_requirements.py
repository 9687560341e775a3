"""requirements.txt (read by ComfyUI-Manager and install.py) and pyproject.toml (pip) list the same
runtime dependencies with the same bounds; the bounds admit what the hosts ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _norm(req: str) -> tuple[str, str]:
    """'Pillow >= 9.5' -> ('pillow', '>=9.5'): canonical name, specifier without spaces (markers kept)."""
    req = req.split("#", 1)[0].strip()
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", req)
    assert m, f"unparseable requirement {req!r}"
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), re.sub(r"\s+", "", m.group(2))


def _requirements_txt() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, spec = _norm(line)
            assert name not in out, f"requirements.txt lists {name} twice"
            out[name] = spec
    return out


def _pyproject() -> dict[str, str]:
    deps = _toml(ROOT / "pyproject.toml")["project"]["dependencies"]
    out = dict(_norm(d) for d in deps)
    assert len(out) == len(deps), "pyproject.toml lists a dependency twice"
    return out


def test_requirements_txt_and_pyproject_agree():
    txt, proj = _requirements_txt(), _pyproject()
    only_txt = {k: v for k, v in txt.items() if k not in proj}
    only_proj = {k: v for k, v in proj.items() if k not in txt}
    differ = {k: (txt[k], proj[k]) for k in txt.keys() & proj.keys() if txt[k] != proj[k]}
    assert not (only_txt or only_proj or differ), (
        f"requirements.txt and pyproject.toml [project].dependencies disagree: only in requirements.txt "
        f"{only_txt}, only in pyproject.toml {only_proj}, different bounds (txt, pyproject) {differ}; "
        "edit both the same way"
    )


def test_host_owned_packages_are_not_dependencies():
    # ComfyUI and A1111 own torch; an extension that pins it can break their CUDA build.
    for name in ("torch", "torchvision", "torchaudio", "xformers"):
        assert name not in _requirements_txt() and name not in _pyproject()


def test_pillow_bound_admits_forge():
    # Forge ships Pillow 9.5.0: a >=10 floor makes install.py warn and pip resolvers refuse.
    from packaging.specifiers import SpecifierSet

    for deps in (_requirements_txt(), _pyproject()):
        assert SpecifierSet(deps["pillow"]).contains("9.5.0"), deps["pillow"]
