"""fix_image / fix_images: masks, PAR guard, rounds, classical inpainters, the real detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comfyui_pal.core.fix import FixOptions, fix_image, fix_images
from comfyui_pal.core.inpainters import (
    BiharmonicInpainter,
    CallableInpainter,
    IdentityInpainter,
    OpenCVInpainter,
    make_inpainter,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class FakeDetection:
    def __init__(self, prob: np.ndarray):
        self.prob = prob

    def mask(self, threshold: float = 0.5) -> np.ndarray:
        return self.prob > threshold

    @property
    def par(self) -> float:
        return float((self.prob > 0.5).mean())


class RedDetector:
    """Stand-in for comfyui_pal.models.Detector (same .detect/.prob/.mask/.par interface):
    "artifacts" are saturated red pixels, so tests can plant and remove them at will."""

    def __init__(self):
        self.calls = 0

    def detect(self, img):
        self.calls += 1
        a = np.asarray(img).astype(np.int16)
        red = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)
        return FakeDetection(red.astype(np.float32))


def grey_gradient(h: int = 96, w: int = 128) -> np.ndarray:
    x = np.linspace(60, 180, w, dtype=np.float32)
    y = np.linspace(-20, 20, h, dtype=np.float32)[:, None]
    g = np.clip(x[None, :] + y, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def with_red(img: np.ndarray, *rects) -> np.ndarray:
    out = img.copy()
    for y0, y1, x0, x1 in rects:
        out[y0:y1, x0:x1] = (255, 0, 0)
    return out


OPTS = dict(size=64, min_side=16, min_area=0)  # tiny synthetic regions: keep every pixel


def test_fix_with_mask_replaces_region_and_keeps_the_rest():
    img = with_red(grey_gradient(), (40, 50, 60, 75))
    m = np.zeros(img.shape[:2], bool)
    m[40:50, 60:75] = True
    res = fix_image(img, m, "opencv", **OPTS)
    assert res.report["status"] == "fixed" and res.report["n_crops"] == 1
    assert res.report["par_source"] == "mask" and res.report["par_after"] is None
    assert res.report["par_before"] == pytest.approx(m.mean(), abs=1e-6)
    fixed = res.image
    assert not ((fixed[..., 0] > 200) & (fixed[..., 1] < 60)).any()  # the red blob is gone
    untouched = res.changed == 0
    assert untouched.any() and np.array_equal(fixed[untouched], img[untouched])
    crop = res.report["crops"][0]
    x0, y0, x1, y1 = crop["box"]
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    json.dumps(res.report)  # JSON-able


def test_zero_components_passes_through_bit_identically():
    img = grey_gradient(33, 17)
    for src in (np.zeros((33, 17), bool), np.zeros((5, 5), np.float32)):
        res = fix_image(img, src, "opencv")
        assert res.report["status"] == "no_artifacts" and res.report["crops"] == []
        assert np.array_equal(res.image, img) and res.image is not img
    det = RedDetector()
    res = fix_image(img, det, IdentityInpainter(), guard=True)
    assert res.report["status"] == "no_artifacts" and res.report["par_after"] == 0.0
    assert np.array_equal(res.image, img)


def test_guard_keeps_improving_crops_and_rejects_worsening_ones():
    img = with_red(grey_gradient(), (10, 20, 10, 20), (60, 75, 90, 110))
    det = RedDetector()
    res = fix_image(img, det, "opencv", guard=True, **OPTS)
    assert res.report["par_source"] == "detector"
    assert res.report["par_before"] > 0 and res.report["par_after"] == 0.0
    assert all(c["kept"] for c in res.report["crops"])
    assert all(c["artifact_ratio_after"] < c["artifact_ratio_before"] for c in res.report["crops"])

    # An inpainter that paints everything red makes things worse: the guard must undo it.
    def paint_red(crops, masks):
        out = crops.copy()
        out[..., 0], out[..., 1], out[..., 2] = 1.0, 0.0, 0.0
        return out

    res = fix_image(img, RedDetector(), CallableInpainter(paint_red), guard=True, **OPTS)
    assert res.report["status"] == "rejected" and not any(c["kept"] for c in res.report["crops"])
    assert np.array_equal(res.image, img)
    assert res.report["par_after"] == res.report["par_before"]
    # Without the guard the damage goes through.
    res = fix_image(img, RedDetector(), CallableInpainter(paint_red), **OPTS)
    assert res.report["par_after"] > res.report["par_before"]


def test_guard_mixed_keeps_only_the_good_crop():
    img = with_red(grey_gradient(), (10, 20, 10, 20), (60, 75, 90, 110))

    def fix_first_only(crops, masks):  # crop 0 (the larger blob) gets filled grey, crop 1 painted red
        out = crops.copy()
        out[0][masks[0] > 0.5] = 0.5
        out[1][...] = (1.0, 0.0, 0.0)
        return out

    res = fix_image(img, RedDetector(), CallableInpainter(fix_first_only), guard=True, dilate=0, **OPTS)
    kept = [c["kept"] for c in res.report["crops"]]
    assert kept == [True, False]
    big = res.report["crops"][0]["component_bbox"]
    assert big == [90, 60, 110, 75]
    assert (res.image[60:75, 90:110] == 128).all()
    assert np.array_equal(res.image[10:20, 10:20], img[10:20, 10:20])  # rejected crop untouched


def test_rounds_fix_remaining_regions_with_a_detector():
    img = with_red(grey_gradient(), (10, 20, 10, 20), (60, 75, 90, 110))
    res = fix_image(img, RedDetector(), "opencv", max_regions=1, rounds=3, **OPTS)
    assert res.report["rounds_run"] == 2  # round 3 found nothing
    assert [c["round"] for c in res.report["crops"]] == [0, 1]
    assert res.report["par_after"] == 0.0
    assert len(res.plans) == 2
    # With a mask and no detector there is nothing to re-detect: one round only.
    m = RedDetector().detect(img).prob > 0.5
    res = fix_image(img, m, "opencv", max_regions=1, rounds=3, **OPTS)
    assert res.report["rounds_run"] == 1


def test_batch_one_inpaint_call_for_all_images():
    calls = []

    def spy(crops, masks):
        calls.append(crops.shape)
        return crops

    imgs = [with_red(grey_gradient(40, 50), (5, 9, 5, 9)), grey_gradient(20, 30), with_red(grey_gradient(), (1, 4, 1, 4))]
    res = fix_images(imgs, RedDetector(), CallableInpainter(spy), **OPTS)
    assert calls == [(2, 64, 64, 3)]
    assert [r.report["status"] for r in res] == ["fixed", "no_artifacts", "fixed"]
    assert np.array_equal(res[1].image, imgs[1])


def test_core_never_loads_a_model_the_caller_passes_a_detector():
    # before: None / a name made core/fix.py import models/ and load one (a layering slip)
    img = grey_gradient(20, 20)
    with pytest.raises(TypeError, match=r"load_detector\(\)"):
        fix_image(img, None, "opencv")
    with pytest.raises(TypeError, match=r"load it first: comfyui_pal.models.load_detector\('pal-starter'\)"):
        fix_image(img, "pal-starter", "opencv")
    with pytest.raises(TypeError, match="not a detector"):
        fix_image(img, np.ones((20, 20), bool), "opencv", detector="pal-starter")
    res = fix_image(img, None, IdentityInpainter(), detector=RedDetector())  # detector= alone is enough
    assert res.report["status"] == "no_artifacts"


def test_guard_needs_detector_and_options_are_validated():
    img = grey_gradient(20, 20)
    with pytest.raises(ValueError, match="guard"):
        fix_image(img, np.ones((20, 20), bool), "opencv", guard=True)
    with pytest.raises(TypeError, match="unknown fix option"):
        fix_image(img, np.ones((20, 20), bool), "opencv", zoomm=2)
    assert FixOptions.from_any({"zoom": 2.0}, rounds=2).zoom == 2.0


def test_float_image_and_one_pixel_wide_image():
    img = grey_gradient(1, 50).astype(np.float32) / 255
    m = np.zeros((1, 50), bool)
    m[0, 20:23] = True
    res = fix_image(img, m, "opencv", size=16, dilate=0, min_side=4, min_area=0)
    assert res.image.dtype == np.float32 and res.image.shape == img.shape
    assert res.report["crops"][0]["padding"][1] + res.report["crops"][0]["padding"][3] > 0  # reflect-padded rows
    assert np.array_equal(res.image[0, :10], img[0, :10])


def test_classical_inpainters_only_touch_the_mask():
    rng = np.random.default_rng(0)
    crops = rng.random((2, 32, 32, 3), dtype=np.float32)
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, 10:20, 10:20] = 1
    for inp in (OpenCVInpainter("telea"), OpenCVInpainter("ns"), BiharmonicInpainter()):
        out = inp.inpaint(crops, masks)
        assert out.shape == crops.shape and out.dtype == np.float32
        keep = masks == 0
        assert np.array_equal(out[keep], crops[keep]), inp.name
        assert not np.allclose(out[0, 10:20, 10:20], crops[0, 10:20, 10:20])
    full = np.ones((1, 8, 8), np.float32)
    assert np.array_equal(BiharmonicInpainter().inpaint(crops[:1, :8, :8], full), crops[:1, :8, :8])


def test_make_inpainter_factory():
    assert make_inpainter("opencv").name == "opencv"
    assert make_inpainter("opencv-ns").name == "opencv-ns"
    assert make_inpainter("biharmonic").name == "biharmonic"
    ident = IdentityInpainter()
    assert make_inpainter(ident) is ident
    d = make_inpainter("diffusers:/nonexistent/model", prompt="p", steps=3, seed=None)  # lazy: no import yet
    assert d.name == "diffusers:/nonexistent/model" and d.steps == 3 and d.pipe is None
    assert make_inpainter("opencv", radius=9).radius == 9 and make_inpainter("biharmonic", margin=4).margin == 4


def test_make_inpainter_refuses_options_it_would_ignore():
    # before: every option a backend did not take was dropped without a word
    with pytest.raises(TypeError, match=r"does not take radius \(opencv.*\); it takes: prompt"):
        make_inpainter("diffusers:/nonexistent/model", prompt="p", radius=9)
    with pytest.raises(TypeError, match=r"'opencv' does not take prompt \(diffusers option\)"):
        make_inpainter("opencv", prompt="a cat")
    with pytest.raises(TypeError, match="stesp"):
        make_inpainter("diffusers:/x", stesp=3)  # a typo is an error, not a default
    with pytest.raises(TypeError, match="ready inpainter"):
        make_inpainter(IdentityInpainter(), radius=3)
    with pytest.raises(ValueError, match="unknown inpainter"):
        make_inpainter("magic")
    with pytest.raises(ValueError, match="needs a model"):
        make_inpainter("diffusers")


@pytest.mark.slow
def test_real_detector_end_to_end():
    """The lead's Detector with the tiny random fixture checkpoint drives the whole fix."""
    try:
        from comfyui_pal.models import load_detector
    except (ImportError, AttributeError) as e:  # pragma: no cover
        pytest.skip(f"detector API not available: {e}")
    det = load_detector(FIXTURES / "tiny_swin_upernet_w7.pth", device="cpu", input_size=(128, 128))  # fast
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(FIXTURES / "input_B.png").convert("RGB"))
    rgb = np.ascontiguousarray(rgb[::4, ::4])  # small: keep CI fast
    d0 = det.detect(rgb)
    # random weights: pick a threshold that marks a few percent of the image so there are components
    t = float(np.quantile(d0.prob, 0.97))
    res = fix_image(rgb, det, "opencv", threshold=t, size=64, max_regions=2, guard=True)
    rep = res.report
    assert rep["par_before"] == pytest.approx(d0.par, abs=1e-6)
    assert rep["status"] in ("fixed", "rejected") and 1 <= rep["n_crops"] <= 2
    for c in rep["crops"]:
        assert c["kept"] == (c["artifact_ratio_after"] < c["artifact_ratio_before"])
    untouched = res.changed == 0
    assert np.array_equal(res.image[untouched], rgb[untouched])
