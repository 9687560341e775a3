"""Install what comfyui-pal needs from requirements.txt, and only what is missing.

Run by two hosts, so it must survive both:
- AUTOMATIC1111 / Forge run it as a subprocess at *every* launch, with `import launch` available
  (`launch.run_pip`, `launch.args.skip_install`).
- ComfyUI-Manager runs it with `sys.executable` in the pack folder after installing
  requirements.txt line by line; there is no `launch` module there.

It never installs torch (the host owns it), never upgrades or downgrades a package the host
already has (a too-old one only gets a warning; set PAL_INSTALL_UPGRADE=1 to upgrade it), and
when everything is present it is a fast no-op: metadata look-ups only, no pip subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"

# Host-owned: installing these from an extension breaks CUDA builds (both hosts blacklist them).
NEVER_INSTALL = {"torch", "torchvision", "torchaudio", "torchsde", "xformers", "triton"}

# Any one of these provides `cv2`; adding a second variant next to the host's breaks cv2.
OPENCV_VARIANTS = (
    "opencv-python-headless",
    "opencv-python",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement lines (comments, blanks and pip options dropped; torch & co. removed)."""
    if not path.is_file():
        return []
    reqs = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _NAME_RE.match(line)
        if m and _canon(m.group(1)) not in NEVER_INSTALL:
            reqs.append(line)
    return reqs


def _installed_version(name: str) -> str | None:
    names = OPENCV_VARIANTS if _canon(name) in OPENCV_VARIANTS else (name,)
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


def _satisfies(req: str, version: str) -> bool | None:
    """True/False if `packaging` can judge the specifier, None when it cannot (treat as ok)."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion
    except ImportError:
        return None
    try:
        spec = Requirement(req).specifier
        return spec.contains(version, prereleases=True) if spec else True
    except (ValueError, InvalidVersion):
        return None


def plan(reqs: list[str]) -> tuple[list[str], list[str]]:
    """(requirements to install because missing, warnings for present-but-too-old ones)."""
    missing, warnings = [], []
    for req in reqs:
        name = _NAME_RE.match(req).group(1)
        have = _installed_version(name)
        if have is None:
            missing.append(req)
        elif _satisfies(req, have) is False:
            if os.environ.get("PAL_INSTALL_UPGRADE") == "1":
                missing.append(req)
            else:
                warnings.append(
                    f"[comfyui-pal] {name} {have} is installed but {req!r} is wanted; leaving the "
                    "host's version alone (set PAL_INSTALL_UPGRADE=1 to upgrade it)."
                )
    return missing, warnings


def _launch_module():
    """A1111's `launch` module, or None under ComfyUI-Manager / plain Python."""
    try:
        import launch  # type: ignore[import-not-found]
    except Exception:  # not A1111 (ImportError), or a broken host import: fall back to pip
        return None
    return launch


def _pip_install(req: str, launch) -> None:
    if launch is not None and hasattr(launch, "run_pip"):
        # run_pip quotes nothing itself; quote the spec so '>=' is not a shell redirect.
        launch.run_pip(f'install "{req}"', f"comfyui-pal requirement: {req}")
        return
    subprocess.run([sys.executable, "-m", "pip", "install", req], check=True)


def main(requirements: Path = REQUIREMENTS) -> int:
    launch = _launch_module()
    if launch is not None and getattr(getattr(launch, "args", None), "skip_install", False):
        return 0
    missing, warnings = plan(parse_requirements(requirements))
    for w in warnings:
        print(w)
    failed = 0
    for req in missing:
        print(f"[comfyui-pal] installing missing requirement: {req}")
        try:
            _pip_install(req, launch)
        except Exception as e:  # one failed package should not hide the others
            failed += 1
            print(f"[comfyui-pal] could not install {req}: {e}. Install it by hand: "
                  f'"{sys.executable}" -m pip install "{req}"', file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
