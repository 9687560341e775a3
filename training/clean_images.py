"""Clean (artifact-free) pictures for training negatives and the clean-PAR evaluation.

Sources, all fetched with the ordinary package clients and never installed:

* scikit-image's bundled pictures (already a dependency);
* scikit-learn's ``china.jpg``/``flower.jpg`` and matplotlib's ``grace_hopper.jpg`` sample
  images, read out of their wheels (``pip download --no-deps``);
* Debian desktop wallpaper packages (``apt-get download`` + ``dpkg-deb -x``): photographs and
  artwork made by people, none generated.

The split is fixed by *source*, so no picture of the held-out set shares a source with
training:

* train: plasma-workspace-wallpapers, gnome-backgrounds, sklearn, matplotlib (+ the skimage
  pictures of ``synth.SKIMAGE_TRAIN`` that `pal synth` reads itself);
* heldout: mate-backgrounds, ukui-wallpapers, lomiri-wallpapers and the skimage pictures
  ``HELDOUT_SKIMAGE``.

    python -m comfyui_pal.training.clean_images /data/clean --cache /data/cache

writes ``/data/clean/train/*.jpg`` and ``/data/clean/heldout/*.png``, each at most 1024 px on
its long side, and ``sources.json`` (file -> package/path). Use ``train/`` with
``pal synth --folder`` and ``heldout/`` with ``benchmarks/bench_starter.py clean``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

WHEELS = {  # requirement -> members to read
    "scikit-learn": ("sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"),
    "matplotlib": ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
}
TRAIN_DEBS = ("plasma-workspace-wallpapers", "gnome-backgrounds")
HELDOUT_DEBS = ("mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers")
HELDOUT_SKIMAGE = ("coffee", "rocket", "retina", "cell", "colorwheel")
_EXTS = (".jpg", ".jpeg", ".png", ".webp")
MAX_SIDE = 1024


def _save(img: np.ndarray, path: Path) -> None:
    from ..core.imageio import save_image_atomic

    save_image_atomic(img, path)


def _fit(img: np.ndarray) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def _decode(data: bytes) -> np.ndarray | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 - an unreadable file is skipped, not fatal
        return None


def wheel_images(cache: Path) -> dict[str, np.ndarray]:
    out = {}
    for req, members in WHEELS.items():
        wheels = sorted(cache.glob(req.replace("-", "_") + "-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", req,
                            "-d", os.fspath(cache)], check=True, capture_output=True)
            wheels = sorted(cache.glob(req.replace("-", "_") + "-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as z:
            for m in members:
                img = _decode(z.read(m))
                if img is not None:
                    out[f"{req}:{m}"] = img
    return out


def deb_images(cache: Path, package: str) -> dict[str, np.ndarray]:
    """The largest picture of each wallpaper (packages ship several sizes of one picture)."""
    root = cache / "deb" / package
    if not root.is_dir():
        debs = sorted((cache / "deb").glob(f"{package}_*.deb"))
        if not debs:
            (cache / "deb").mkdir(parents=True, exist_ok=True)
            subprocess.run(["apt-get", "download", package], cwd=cache / "deb", check=True, capture_output=True)
            debs = sorted((cache / "deb").glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", os.fspath(debs[-1]), os.fspath(root)], check=True)
    groups: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in _EXTS or not p.is_file() or "screenshot" in p.name.lower():
            continue
        # plasma: wallpapers/<Name>/contents/images/<WxH>.jpg; others: one file per picture.
        # Names like Elephants_3840x2160.jpg are sizes of Elephants.jpg.
        key = p.parts[p.parts.index("wallpapers") + 1] if "contents" in p.parts else p.stem.split("_")[0]
        if key not in groups or p.stat().st_size > groups[key].stat().st_size:
            groups[key] = p
    out = {}
    for key, p in sorted(groups.items()):
        img = _decode(p.read_bytes())
        if img is not None and min(img.shape[:2]) >= 64:
            out[f"{package}:{key}"] = img
    return out


def build(out: str | os.PathLike, cache: str | os.PathLike) -> dict:
    from .synth import load_skimage

    out, cache = Path(out), Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    sets: dict[str, dict[str, np.ndarray]] = {"train": {}, "heldout": {}}
    sets["train"].update(wheel_images(cache))
    for pkg in TRAIN_DEBS:
        sets["train"].update(deb_images(cache, pkg))
    for pkg in HELDOUT_DEBS:
        sets["heldout"].update(deb_images(cache, pkg))
    for name in HELDOUT_SKIMAGE:
        sets["heldout"][f"skimage:{name}"] = load_skimage(name)
    sources: dict = {}
    for split, imgs in sets.items():
        for i, (src, img) in enumerate(sorted(imgs.items())):
            # heldout as PNG: the clean-PAR test should not see our own JPEG blocks
            name = f"{split}_{i:03d}." + ("png" if split == "heldout" else "jpg")
            _save(_fit(img), out / split / name)
            sources[f"{split}/{name}"] = src
    from ..core.imageio import atomic_write_text

    atomic_write_text(out / "sources.json", json.dumps(sources, indent=1))
    return {"out": os.fspath(out), "train": len(sets["train"]), "heldout": len(sets["heldout"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Collect clean pictures (train / held-out by source).")
    ap.add_argument("out")
    ap.add_argument("--cache", default="~/.cache/comfyui-pal/clean-sources")
    a = ap.parse_args(argv)
    print(json.dumps(build(a.out, Path(a.cache).expanduser())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
