"""One implementation each: float<->uint8 conversion and file hashing (core/imageio.py), ImageNet
mean/std, resize and normalisation of the detector input (models/preprocess.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_pal.core.imageio import file_sha256, from_float01, to_float01, to_numpy, to_uint8
from comfyui_pal.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, mean_std, normalize, resize_uint8

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("core", "models", "cli", "training", "pal_nodes", "a1111", "scripts")


def _package_sources():
    for d in PACKAGE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))
    yield ROOT / "__init__.py"


@pytest.mark.parametrize("pattern, home", [
    (r"123\.675|58\.395|0\.485,\s*0\.456", "models/preprocess.py"),  # ImageNet mean/std
    (r"hashlib\.sha256\(", "core/imageio.py"),  # file_sha256
    (r"(?:rint|round)\(.*\*\s*(?:255|hi)\b|(?:\*\s*255|mul\(255)(?:\.0)?\)?\s*\)?\.round\(",
     "core/imageio.py"),  # float -> uint8
    (r"/\s*257(\.0)?\b", "core/imageio.py"),  # uint16 -> uint8
])
def test_each_piece_is_written_once(pattern, home):
    rx = re.compile(pattern)
    where = [f"{p.relative_to(ROOT)}:{i}" for p in _package_sources()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if rx.search(line.split("#", 1)[0])]
    assert where and all(w.startswith(home + ":") for w in where), f"{pattern!r} outside {home}: {where}"


def test_to_uint8_matches_every_formula_it_replaced():
    rng = np.random.default_rng(0)
    # values on and next to the rounding boundaries, plus out-of-range ones
    base = np.concatenate([rng.random(4000), (np.arange(256) + 0.5) / 255.0, [-0.2, 0.0, 1.0, 1.3]])
    for dt in (np.float32, np.float64):
        x = base.astype(dt)
        detector_old = (np.clip(x, 0, 1) * 255.0).round().astype(np.uint8)
        composite_old = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        assert np.array_equal(to_uint8(x), detector_old)
        assert np.array_equal(from_float01(x, np.uint8), composite_old)
    x32 = base.astype(np.float32)
    fix_old = np.clip(np.rint(x32.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(to_uint8(x32), fix_old)
    t = torch.from_numpy(x32)
    tensor_old = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    assert np.array_equal(to_uint8(t), tensor_old) and np.array_equal(to_uint8(t), to_uint8(x32))
    u16 = rng.integers(0, 65536, 1000).astype(np.uint16)
    assert np.array_equal(to_uint8(u16), (u16.astype(np.float32) / 257.0).round().astype(np.uint8))
    assert to_uint8(np.array([True, False])).tolist() == [255, 0]
    with pytest.raises(ValueError, match="int32"):
        to_uint8(np.zeros(3, np.int32))


def test_float01_round_trip_and_dtypes():
    u8 = np.arange(256, dtype=np.uint8)
    f = to_float01(u8)
    assert f.dtype == np.float32 and np.array_equal(f, u8.astype(np.float32) / 255.0)
    assert np.array_equal(to_uint8(f), u8) and np.array_equal(from_float01(f, np.uint8), u8)
    u16 = np.array([0, 257, 65535], np.uint16)
    assert np.array_equal(from_float01(to_float01(u16), np.uint16), u16)
    assert to_float01(np.array([-1.0, 0.5, 2.0])).tolist() == [0.0, 0.5, 1.0]
    assert from_float01(np.array([0.25], np.float32), np.float64).dtype == np.float64
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32


def test_file_sha256_is_memoised_but_sees_rewrites(tmp_path):
    import hashlib

    p = tmp_path / "w.bin"
    p.write_bytes(b"a" * 3_000_000)
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest() == file_sha256(str(p))
    p.write_bytes(b"b" * 10)
    assert file_sha256(p) == hashlib.sha256(b"b" * 10).hexdigest()


def test_preprocess_is_the_detectors():
    from comfyui_pal.models import create_model
    from comfyui_pal.models.detector import Detector

    assert mean_std({}) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    rgb = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for mode in ("bicubic", "bilinear"):
        assert resize_uint8(rgb, (64, 48), mode).shape == (64, 48, 3)
    assert resize_uint8(rgb, None) is rgb and resize_uint8(rgb, (37, 53)) is rgb
    with pytest.raises(ValueError, match="resize='lanczos'"):
        resize_uint8(rgb, 64, "lanczos")
    model = create_model("pal4vst-convnext-tiny")
    det = Detector(model, {"preprocess": {"size": [64, 64]}}, device="cpu")
    x = torch.from_numpy(resize_uint8(rgb, (64, 64)).copy()).permute(2, 0, 1)[None]
    assert torch.equal(det.normalize(x), normalize(x, {}))
    assert np.array_equal(det._resize_uint8(rgb), resize_uint8(rgb, (64, 64), "bicubic"))
