"""Clean (artifact-free) pictures for training negatives and the clean-PAR evaluation.

Sources, all fetched with the ordinary package clients and never installed:

* scikit-image's bundled pictures (already a dependency);
* scikit-learn's ``china.jpg``/``flower.jpg`` and matplotlib's ``grace_hopper.jpg`` sample
  images, read out of their wheels (``pip download --no-deps``);
* Debian desktop wallpaper packages (``apt-get download`` + ``dpkg-deb -x``): photographs and
  artwork made by people, none generated;
* the sample photographs of OpenCV's source distribution (``samples/data``, pinned by sha256,
  read out of the tarball).

The split is fixed by *source*, so no picture of the held-out set shares a source with
training:

* train: plasma-workspace-wallpapers, gnome-backgrounds, xfdesktop4-data, sway-backgrounds,
  desktop-base, the OpenCV samples, sklearn, matplotlib (+ the skimage pictures of
  ``synth.SKIMAGE_TRAIN`` that `pal synth` reads itself);
* heldout: mate-backgrounds, ukui-wallpapers, lomiri-wallpapers and the skimage pictures
  ``HELDOUT_SKIMAGE``;
* train_extra (more bases and negatives, kept apart so ``train/`` stays as the shipped starter
  was made): lxqt-themes wallpapers, extremetuxracer-data sky boxes, stellarium-data landscapes;
* calib_real (the operating point only, never trained on nor held out): photographs, drawings
  and cut-out objects from hugin-data, digikam-data, fluxbox, icewm-common, kstars-data and
  tuxpaint-stamps-default. Pictures with an alpha channel are put on white; mostly transparent
  ones (panorama strips, icons) are skipped.

    python -m comfyui_pal.training.clean_images /data/clean --cache /data/cache

writes ``/data/clean/train/*.jpg``, ``train_extra/*.jpg``, ``heldout/*.png`` and ``calib_real/*.png``, each at most 1024 px on
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
TRAIN_DEBS = ("plasma-workspace-wallpapers", "gnome-backgrounds", "xfdesktop4-data", "sway-backgrounds",
              "desktop-base")
# Packages whose pictures are not all wallpapers: only files matching the pattern, keyed by theme.
DEB_PICK = {"desktop-base": "desktop-base/*-theme/grub/grub-16x9.png"}  # under usr/share
# OpenCV's sample photographs (Apache-2.0 project; the pictures' own terms are in its README).
# Skipped on purpose: chessboards, logos, text, synthetic test patterns, the motion/defocus
# blurred and the ELA-*modified* pictures (they look like artifacts).
OPENCV_SDIST = ("opencv_python-5.0.0.93.tar.gz",
                "https://files.pythonhosted.org/packages/79/4c/a438d23e09ce2033c09f7b784ad2fbdb0adf529e434101ed28f142226f98/"
                "opencv_python-5.0.0.93.tar.gz",
                "66aac3e5b5faa48d4025816592f3af19e4bfc2c68dec067bae2dbb4ca10aa9e2")
OPENCV_PICTURES = ("aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
                   "box_in_scene.png", "building.jpg", "butterfly.jpg", "castle.jpg", "chicky_512.png",
                   "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "lena.jpg", "leuvenA.jpg", "messi5.jpg",
                   "orange.jpg", "pic2.png", "pic4.png", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg",
                   "starry_night.jpg", "stuff.jpg", "mcc_ccm_test.jpg", "Blender_Suzanne1.jpg")
HELDOUT_DEBS = ("mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers")
# Packages read by file pattern (under usr/share): package -> patterns. Each match is one picture.
PICKED_DEBS = {
    "train_extra": {
        "lxqt-themes": ("lxqt/wallpapers/*",),
        "extremetuxracer-data": ("games/etr/env/*/*/*.png",),
        "stellarium-data": ("stellarium/landscapes/*/*.png", "stellarium/landscapes/*/*.jpg"),
    },
    "calib_real": {
        "hugin-data": tuple(f"hugin/xrc/data/help_en_EN/{n}.jpg" for n in (
            "CA_fringes00", "CA_tCA00", "Medinet_habu_horizontal_fisheye", "Medinet_habu_horizontal_stereographic")),
        "digikam-data": ("digikam/about/images/body-background.jpg", "digikam/data/paper2-texture.png",
                         "digikam/themes/html5responsive/resources/images/BrownCard/brownCardAlbum.jpg"),
        "fluxbox": ("images/fluxbox/*",),
        "icewm-common": ("icewm/themes/*/*.jpg", "icewm/themes/default/default.png"),
        # constellation drawings: every third, so one style does not set the median
        "kstars-data": ("kstars/geomap.jpg", "kstars/kstarslite/qml/images/splash_bg@4x.jpeg",
                        *(f"kstars/skycultures/western/{n}.png" for n in (
                            "andromeda", "auriga", "capricornus", "cepheus", "draco", "hydra", "lynx",
                            "orion", "pisces", "scorpius", "ursa-major", "virgo"))),
        "tuxpaint-stamps-default": ("tuxpaint/stamps/**/*.png",),
    },
}
MIN_PICKED_SIDE = 360  # icons and thumbnails are not pictures
MIN_OPAQUE = 0.5       # share of opaque pixels below which an alpha picture is skipped
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


def _decode(data: bytes, on_white: bool = False) -> np.ndarray | None:
    """RGB uint8, or None for an unreadable file. ``on_white``: an alpha picture is put on white
    (cut-out objects, core.imageio.to_rgb_uint8) and one less than MIN_OPAQUE opaque gives None."""
    import io

    from PIL import Image

    from ..core.imageio import to_rgb_uint8

    try:
        with Image.open(io.BytesIO(data)) as im:
            if not on_white:
                return np.asarray(im.convert("RGB"))
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                if float((np.asarray(im.convert("RGBA"))[..., 3] > 127).mean()) < MIN_OPAQUE:
                    return None
            return to_rgb_uint8(im)
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


def _deb_root(cache: Path, package: str) -> Path:
    root = cache / "deb" / package
    if not root.is_dir():
        debs = sorted((cache / "deb").glob(f"{package}_*.deb"))
        if not debs:
            (cache / "deb").mkdir(parents=True, exist_ok=True)
            subprocess.run(["apt-get", "download", package], cwd=cache / "deb", check=True, capture_output=True)
            debs = sorted((cache / "deb").glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", os.fspath(debs[-1]), os.fspath(root)], check=True)
    return root


def picked_images(cache: Path, package: str, patterns) -> dict[str, np.ndarray]:
    """Every file under usr/share matching ``patterns``, at least MIN_PICKED_SIDE on its short side."""
    share = _deb_root(cache, package) / "usr" / "share"
    out = {}
    for pat in patterns:
        for p in sorted(share.glob(pat)):
            if p.suffix.lower() not in _EXTS or not p.is_file():
                continue
            img = _decode(p.read_bytes(), on_white=True)
            if img is not None and min(img.shape[:2]) >= MIN_PICKED_SIDE:
                out[f"{package}:{p.relative_to(share).as_posix()}"] = img
    return out


def deb_images(cache: Path, package: str) -> dict[str, np.ndarray]:
    """The largest picture of each wallpaper (packages ship several sizes of one picture)."""
    root = _deb_root(cache, package)
    groups: dict[str, Path] = {}
    if package in DEB_PICK:
        for p in sorted(root.glob("**/" + DEB_PICK[package])):
            groups[p.parts[-3]] = p
    for p in ([] if package in DEB_PICK else sorted(root.rglob("*"))):
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


def sdist_images(cache: Path) -> dict[str, np.ndarray]:
    """OPENCV_PICTURES out of the pinned OpenCV sdist (downloaded once from PyPI, sha256-checked)."""
    import tarfile
    import urllib.request

    from ..core.imageio import file_sha256

    name, url, sha = OPENCV_SDIST
    path = cache / "sdist" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        urllib.request.urlretrieve(url, tmp)  # noqa: S310 - a pinned https URL, checked below
        os.replace(tmp, path)
    if file_sha256(path) != sha:
        raise RuntimeError(f"{path}: sha256 is not {sha}; delete the file and run again")
    out = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            if "/samples/data/" in m.name and m.name.rsplit("/", 1)[-1] in OPENCV_PICTURES and m.isfile():
                img = _decode(t.extractfile(m).read())
                if img is not None:
                    out["opencv-python:" + m.name.rsplit("/", 1)[-1]] = img
    return out


def build(out: str | os.PathLike, cache: str | os.PathLike) -> dict:
    from .synth import load_skimage

    out, cache = Path(out), Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    sets: dict[str, dict[str, np.ndarray]] = {"train": {}, "heldout": {}, "train_extra": {}, "calib_real": {}}
    sets["train"].update(wheel_images(cache))
    for pkg in TRAIN_DEBS:
        sets["train"].update(deb_images(cache, pkg))
    sets["train"].update(sdist_images(cache))
    for pkg in HELDOUT_DEBS:
        sets["heldout"].update(deb_images(cache, pkg))
    for name in HELDOUT_SKIMAGE:
        sets["heldout"][f"skimage:{name}"] = load_skimage(name)
    for split, packages in PICKED_DEBS.items():
        for pkg, patterns in packages.items():
            sets[split].update(picked_images(cache, pkg, patterns))
    sources: dict = {}
    for split, imgs in sets.items():
        for i, (src, img) in enumerate(sorted(imgs.items())):
            # held-out and calibration pictures as PNG: the clean-PAR reads should not see our JPEG blocks
            name = f"{split}_{i:03d}." + ("jpg" if split.startswith("train") else "png")
            _save(_fit(img), out / split / name)
            sources[f"{split}/{name}"] = src
    from ..core.imageio import atomic_write_text

    atomic_write_text(out / "sources.json", json.dumps(sources, indent=1))
    return {"out": os.fspath(out), **{split: len(imgs) for split, imgs in sets.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Collect clean pictures (train / held-out by source).")
    ap.add_argument("out")
    ap.add_argument("--cache", default="~/.cache/comfyui-pal/clean-sources")
    a = ap.parse_args(argv)
    print(json.dumps(build(a.out, Path(a.cache).expanduser())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
