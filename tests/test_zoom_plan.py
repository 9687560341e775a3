"""Property and unit tests for components, crop plans and compositing (host-free zoom core)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_pal.core.components import auto_dilate_radius, find_components, to_float_mask
from comfyui_pal.core.composite import composite
from comfyui_pal.core.crop import (
    CropPlan,
    crop_geometry,
    extract_crops,
    plan_crops,
    rle_decode,
    rle_encode,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- strategies
@st.composite
def image_and_mask(draw, max_side: int = 72):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["empty", "pixel", "corner", "border", "full", "specks", "two_close", "rects"]))
    m = np.zeros((h, w), bool)
    if kind == "pixel":
        m[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    elif kind == "corner":
        cy = draw(st.sampled_from([0, h - 1]))
        cx = draw(st.sampled_from([0, w - 1]))
        r = draw(st.integers(0, 6))
        m[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1] = True
    elif kind == "border":
        t = draw(st.integers(1, 3))
        side = draw(st.sampled_from(["top", "left", "bottom", "right"]))
        if side == "top":
            m[:t, : max(1, w // 2)] = True
        elif side == "bottom":
            m[-t:, w // 3 :] = True
        elif side == "left":
            m[: max(1, h // 2), :t] = True
        else:
            m[h // 3 :, -t:] = True
    elif kind == "full":
        m[:] = True
    elif kind == "specks":
        seed = draw(st.integers(0, 2**16))
        m = np.random.default_rng(seed).random((h, w)) < 0.03
    elif kind == "two_close":
        # two blobs a few pixels apart: their zoom crops overlap
        y = draw(st.integers(0, max(0, h - 4)))
        x = draw(st.integers(0, max(0, w - 12)))
        m[y : y + 4, x : x + 4] = True
        m[y : y + 4, x + 8 : x + 12] = True
    elif kind == "rects":
        for _ in range(draw(st.integers(1, 4))):
            y0 = draw(st.integers(0, h - 1))
            x0 = draw(st.integers(0, w - 1))
            m[y0 : y0 + draw(st.integers(1, 20)), x0 : x0 + draw(st.integers(1, 20))] = True
    seed = draw(st.integers(0, 2**16))
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img, m


plan_opts = st.fixed_dictionaries({
    "zoom": st.sampled_from([1.0, 1.5, 2.3]),
    "min_side": st.sampled_from([1, 16, 64]),
    "overflow": st.sampled_from(["fit", "pad"]),
    "dilate": st.sampled_from(["auto", 0, 3]),
    "max_regions": st.sampled_from([1, 3, 8]),
    "merge_overlap": st.sampled_from([None, 0.3]),
    "size": st.sampled_from([16, 32]),
})


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Low-frequency float image: resizing it loses almost nothing, so round trips are comparable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = []
    for _ in range(3):
        fy, fx, ph = rng.uniform(0.5, 1.5, 3)
        chans.append(0.5 + 0.35 * np.sin(2 * math.pi * (fy * yy / 97.0 + fx * xx / 89.0) + ph))
    return np.stack(chans, -1).astype(np.float32)


# ----------------------------------------------------------------------------- components
def test_components_basic_counts_order_and_min_area():
    m = np.zeros((100, 120), bool)
    m[10:20, 10:20] = True  # 100 px
    m[50:70, 60:100] = True  # 800 px
    m[90, 5] = True  # 1 px
    cs = find_components(m, dilate=0)
    assert cs.n_found == 3
    assert [c.area for c in cs.components] == [800, 100, 1]
    assert cs.components[0].bbox == [60, 50, 100, 70]
    cs = find_components(m, dilate=0, min_area=50, max_regions=1)
    assert [c.area for c in cs.components] == [800]
    assert cs.n_dropped == 2
    assert not cs.region_mask(None)[15, 15]  # dropped components are not part of the fix


def test_components_eight_connectivity_and_score_order():
    m = np.zeros((10, 10), np.uint8)
    m[2, 2] = m[3, 3] = 255  # diagonal neighbours: one 8-connected component
    assert len(find_components(m, dilate=0).components) == 1
    prob = np.zeros((40, 40), np.float32)
    prob[2:6, 2:6] = 0.6  # 16 px, low confidence
    prob[30:33, 30:33] = 1.0  # 9 px, high confidence... but less total
    prob[20:22, 2:4] = 0.99
    by_area = find_components(prob, dilate=0, order="area").components
    by_score = find_components(prob, dilate=0, order="score").components
    assert by_area[0].area == 16
    assert by_score[0].score == pytest.approx(16 * 0.6 / 1600, rel=1e-5)
    assert [c.area for c in by_score] == [16, 9, 4]
    prob[2:6, 2:6] = 0.3  # now below threshold
    assert [c.area for c in find_components(prob, dilate=0).components] == [9, 4]


def test_auto_dilation_matches_official_at_512():
    assert auto_dilate_radius(512, 512) == (10, 10)
    assert auto_dilate_radius(1024, 2048) == (40, 20)
    m = np.zeros((512, 512), bool)
    m[100, 200] = True
    cs = find_components(m)
    # official: 5x5 ones kernel, 5 iterations -> 21x21 square
    assert cs.components[0].bbox == [190, 90, 211, 111]


def test_merge_overlapping_components():
    m = np.zeros((200, 200), bool)
    m[50:60, 50:60] = True
    m[50:60, 62:72] = True  # zoom-2 crops [45, 65) and [57, 77): 40% overlap
    assert len(find_components(m, dilate=0).components) == 2
    assert len(find_components(m, dilate=0, merge_overlap=0.5, zoom=2.0, min_side=0).components) == 2
    merged = find_components(m, dilate=0, merge_overlap=0.3, zoom=2.0, min_side=0).components
    assert len(merged) == 1 and merged[0].bbox == [50, 50, 72, 60] and merged[0].area == 200


def test_mask_any_size_and_dtype_is_resized():
    small = np.zeros((8, 8), np.uint8)
    small[0:2, 0:2] = 255
    f = to_float_mask(small, (64, 32))
    assert f.shape == (64, 32) and f[0, 0] == 1.0 and f[-1, -1] == 0.0
    soft = np.full((4, 4), 0.7, np.float32)
    assert to_float_mask(soft, (9, 9)).min() == pytest.approx(0.7)
    assert to_float_mask(np.ones((5, 6, 3), np.uint8)).shape == (5, 6)


# ----------------------------------------------------------------------------- crop geometry
def test_side_rule_centre_and_border_shift():
    box, pad, side = crop_geometry([100, 100, 140, 120], 1000, 1000, zoom=1.5, min_side=0)
    assert side == 60 and pad == [0, 0, 0, 0]
    assert box == [90, 80, 150, 140]  # centred on the component
    box, pad, side = crop_geometry([0, 0, 40, 10], 1000, 1000, zoom=1.5, min_side=0)
    assert box == [0, 0, 60, 60]  # shifted inward, not padded
    assert crop_geometry([0, 0, 3, 3], 1000, 1000, zoom=1.5, min_side=64)[2] == 64
    assert crop_geometry([0, 0, 41, 1], 1000, 1000, zoom=1.5, min_side=0)[2] == 62  # ceil(61.5)


def test_overflow_fit_and_pad():
    # 100 px tall strip, 80 px component: 120 px square does not fit
    box, pad, side = crop_geometry([10, 10, 90, 90], 100, 1000, zoom=1.5, min_side=0, overflow="fit")
    assert side == 100 and pad == [0, 0, 0, 0] and box[3] - box[1] == 100
    box, pad, side = crop_geometry([10, 10, 90, 90], 100, 1000, zoom=1.5, min_side=0, overflow="pad")
    assert side == 120 and pad[1] + pad[3] == 20 and box[1] == 0 and box[3] == 100
    # a component wider than the image is tall needs padding even in fit mode, and then the
    # padded square honours the rule (1.5 x 500), not just the component's own side
    box, pad, side = crop_geometry([0, 0, 500, 50], 100, 1000, zoom=1.5, min_side=0, overflow="fit")
    assert side == 750 and pad[1] + pad[3] == 650 and box[2] - box[0] == 750
    # the case: 211x37 image, 61 px wide component -> 92, not 61
    box, pad, side = crop_geometry([75, 0, 136, 37], 37, 211, zoom=1.5, min_side=64, overflow="fit")
    assert side == 92 and box == [59, 0, 151, 37] and pad == [0, 27, 0, 28]


@FAST
@given(image_and_mask(), plan_opts)
def test_plan_invariants(im_m, opts):
    img, m = im_m
    h, w = m.shape
    plan = plan_crops([img], [m], **opts)
    cs = find_components(m, (h, w), dilate=opts["dilate"], max_regions=None)
    if not m.any():
        assert plan.crops == []
    assert len(plan.crops) <= opts["max_regions"]
    for c in plan.crops:
        x0, y0, x1, y1 = c.box
        left, top, right, bottom = c.padding
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, "box inside the image"
        assert min(c.padding) >= 0
        assert (x1 - x0) + left + right == c.side == (y1 - y0) + top + bottom, "square = box + padding"
        if left + right:
            assert x0 == 0 and x1 == w and c.side > w, "padding only when the side exceeds the image"
        if top + bottom:
            assert y0 == 0 and y1 == h and c.side > h
        bx0, by0, bx1, by1 = c.component_bbox
        longest = max(bx1 - bx0, by1 - by0)
        rule = max(math.ceil(opts["zoom"] * longest - 1e-9), opts["min_side"], longest)
        assert c.rule_side == rule
        if opts["overflow"] == "pad" or left + right + top + bottom:
            assert c.side == rule and not c.capped, "a padded square honours the zoom rule"
        else:
            assert c.side == rule or (c.side == min(h, w) < rule and c.capped)
        sq = c.square
        assert sq[0] <= bx0 and sq[1] <= by0 and bx1 <= sq[2] and by1 <= sq[3], "component inside the square"
        assert c.mask.shape == (c.side, c.side) and c.inpaint_mask.shape == c.mask.shape
        assert (c.inpaint_mask | ~c.mask).all(), "inpaint mask covers the own mask"
        own = c.mask[top : top + y1 - y0, left : left + x1 - x0]
        assert own.any()
        assert c.scale == pytest.approx(opts["size"] / c.side)
    # every kept artifact pixel is in some crop's own mask
    covered = np.zeros((h, w), bool)
    for c in plan.crops:
        x0, y0, x1, y1 = c.box
        covered[y0:y1, x0:x1] |= c.mask[c.padding[1] : c.padding[1] + y1 - y0, c.padding[0] : c.padding[0] + x1 - x0]
    if len(cs.components) <= opts["max_regions"] and opts["merge_overlap"] is None:
        assert (covered | ~m).all()
    # JSON round trip
    back = CropPlan.from_json(plan.to_json())
    assert json.loads(back.to_json()) == json.loads(plan.to_json())
    for a, b in zip(plan.crops, back.crops):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.inpaint_mask, b.inpaint_mask)


@FAST
@given(image_and_mask(), plan_opts, st.integers(0, 2**16))
def test_composite_changes_only_inside_blend_masks(im_m, opts, seed):
    img, m = im_m
    plan = plan_crops([img], [m], **opts)
    crops, masks = extract_crops([img], plan)
    assert crops.shape == (len(plan.crops), opts["size"], opts["size"], 3)
    assert masks.shape == crops.shape[:3] and crops.dtype == np.float32
    assert crops.size == 0 or (0.0 <= crops.min() and crops.max() <= 1.0)
    noise = np.random.default_rng(seed).random(crops.shape, dtype=np.float32)
    (out,), (alpha,) = composite([img], plan, noise, return_alpha=True)
    assert out.dtype == img.dtype and out.shape == img.shape
    untouched = alpha == 0
    assert np.array_equal(out[untouched], img[untouched]), "pixels outside every blend mask changed"
    if not m.any():
        assert np.array_equal(out, img)
    for c in plan.crops:  # the artifact itself is always fully replaced (alpha == 1)
        x0, y0, x1, y1 = c.box
        own = c.mask[c.padding[1] : c.padding[1] + y1 - y0, c.padding[0] : c.padding[0] + x1 - x0]
        assert (alpha[y0:y1, x0:x1][own] == 1.0).all()


@FAST
@given(st.integers(1, 80), st.integers(1, 80), image_and_mask(), st.sampled_from([32, 64]), st.integers(0, 99))
def test_identity_round_trip_within_resize_error(h, w, im_m, size, seed):
    _, m0 = im_m
    m = to_float_mask(m0, (h, w)) > 0.5
    img = smooth_image(h, w, seed)
    plan = plan_crops([img], [m], size=size, min_side=16, overflow="pad")
    crops, _ = extract_crops([img], plan)
    out = composite([img], plan, crops)[0]
    assert out.dtype == np.float32
    # shrink->enlarge loses a little on the smooth image; reflect padding is not in the box
    assert np.abs(out - img).max() < 0.06


def test_batch_plan_indexes_and_zero_component_images():
    imgs = [np.full((30, 50, 3), 100, np.uint8), np.full((64, 17, 3), 50, np.uint8), np.zeros((5, 5, 3), np.uint8)]
    m1 = np.zeros((30, 50), bool)
    m1[5:8, 5:8] = True
    m1[20:25, 40:45] = True
    m2 = np.zeros((64, 17), bool)
    m2[60:, :3] = True
    plan = plan_crops(imgs, [m1, m2, np.zeros((5, 5))], size=16, dilate=0, min_side=8)
    assert [c.image_index for c in plan.crops] == [0, 0, 1]
    assert [i["n_found"] for i in plan.images] == [2, 1, 0]
    crops, masks = extract_crops(imgs, plan)
    assert crops.shape == (3, 16, 16, 3)
    assert crops[2].mean() == pytest.approx(50 / 255, abs=1e-6)
    outs = composite(imgs, plan, np.zeros_like(crops))
    assert np.array_equal(outs[2], imgs[2])  # no crops: bit-identical copy
    assert outs[2] is not imgs[2]
    # batch array + one mask broadcast to every image
    arr = np.stack([np.zeros((20, 20, 3), np.uint8)] * 2)
    mm = np.zeros((20, 20), bool)
    mm[3, 3] = True
    plan = plan_crops(arr, mm, size=8, dilate=0)
    assert [c.image_index for c in plan.crops] == [0, 1]


def test_placeholder_when_nothing_found_and_torch_inputs():
    torch = pytest.importorskip("torch")
    imgs = torch.rand(2, 24, 40, 3)
    masks = torch.zeros(2, 24, 40)
    plan = plan_crops(imgs, masks, size=16, placeholder_if_empty=True)
    assert len(plan.crops) == 1 and plan.crops[0].skip and plan.n_active == 0
    crops, cm = extract_crops(imgs, plan)
    assert crops.shape == (1, 16, 16, 3) and cm.sum() == 0
    out = composite(imgs, plan, torch.ones(1, 16, 16, 3))
    assert all(np.array_equal(o, i) for o, i in zip(out, imgs.numpy()))
    assert plan_crops(imgs, masks, size=16).crops == []


def test_overlapping_crops_blend_without_seams():
    # Two neighbouring components whose squares overlap, inpainted with different constant
    # colours: every transition (crop edges, the overlap, the outer fade) must be gradual; a
    # seam would be a jump of the full contrast at a crop box edge.
    img = np.zeros((120, 200, 3), np.uint8)
    m = np.zeros((120, 200), bool)
    m[50:70, 60:90] = True
    m[50:70, 100:130] = True
    plan = plan_crops([img], [m], size=32, dilate=0, min_side=0, feather=12)
    assert len(plan.crops) == 2
    a, b = (np.array(c.square) for c in plan.crops)
    assert min(a[2], b[2]) > max(a[0], b[0])  # the squares overlap
    patches = np.stack([np.full((32, 32, 3), 200 / 255), np.full((32, 32, 3), 120 / 255)]).astype(np.float32)
    out = composite([img], plan, patches)[0][..., 0].astype(int)
    assert (out[50:70, 60:90] == 200).all() and (out[50:70, 100:130] == 120).all()  # artifacts replaced
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 0.35 * 200, f"hard edge of {steps} levels"
    assert out[0, 0] == 0 and out[-1, -1] == 0


def test_color_match_removes_global_shift():
    img = (smooth_image(96, 96, 3) * 255).astype(np.uint8)
    m = np.zeros((96, 96), bool)
    m[40:56, 40:56] = True
    plan = plan_crops([img], [m], size=64, dilate=0, min_side=48, feather=8)
    crops, _ = extract_crops([img], plan)
    shifted = np.clip(crops * 0.8 + 0.15, 0, 1)  # a VAE-like tone shift of the whole crop
    plain = composite([img], plan, shifted)[0].astype(float)
    matched = composite([img], plan, shifted, color_match=True)[0].astype(float)
    ring = np.zeros_like(m)
    ring[34:62, 34:62] = True
    ring &= ~m
    err_plain = np.abs(plain - img)[ring].mean()
    err_matched = np.abs(matched - img)[ring].mean()
    assert err_matched < 0.5 * err_plain


def test_rle_round_trip_edge_cases():
    for m in (np.zeros((0, 3), bool), np.ones((1, 1), bool), np.zeros((2, 5), bool), np.eye(4, dtype=bool)):
        assert np.array_equal(rle_decode(rle_encode(m)), m)


def test_bad_arguments_have_clear_errors():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="multiple of 8"):
        plan_crops([img], [np.ones((10, 10))], size=100)
    with pytest.raises(ValueError, match="zoom"):
        plan_crops([img], [np.ones((10, 10))], zoom=0.5)
    with pytest.raises(ValueError, match="2 masks for 3 images"):
        plan_crops([img, img, img], [np.ones((10, 10))] * 2)
    plan = plan_crops([img], [np.ones((10, 10))], size=8)
    with pytest.raises(ValueError, match="inpainted crops"):
        composite([img], plan, np.zeros((3, 8, 8, 3)))
