"""The zoom rule on thin images (17 and 37 px strips), through plan_crops and `pal fix --mask`.

The rule: crop side = max(ceil(zoom x longest component side), min_side). A padded square always
honours it; with overflow="fit" the square may only shrink to the largest one inside the image
that holds the component, and the crop then says the rule was capped.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from comfyui_pal.cli import main
from comfyui_pal.core.components import zoom_side
from comfyui_pal.core.crop import plan_crops


@st.composite
def thin_case(draw):
    thin = draw(st.sampled_from([17, 37]))
    long = draw(st.integers(40, 260))
    h, w = (thin, long) if draw(st.booleans()) else (long, thin)
    m = np.zeros((h, w), bool)
    for _ in range(draw(st.integers(1, 3))):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        m[y0 : y0 + draw(st.integers(1, 90)), x0 : x0 + draw(st.integers(1, 90))] = True
    return h, w, m


def check_crop(h, w, box, padding, side, rule_side, capped, component_bbox, zoom, min_side, overflow):
    bx0, by0, bx1, by1 = component_bbox
    rule = zoom_side(max(bx1 - bx0, by1 - by0), zoom, min_side)
    assert rule_side == rule
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0) + padding[0] + padding[2] == side == (y1 - y0) + padding[1] + padding[3]
    if any(padding):
        assert side == rule and not capped, f"padded square {side} breaks the rule {rule}"
    if overflow == "pad":
        assert side == rule and not capped
    elif side != rule:
        # fit shrank it: the largest square inside the image that still contains the component
        assert side == min(h, w) < rule and capped and not any(padding)
        assert x0 <= bx0 and y0 <= by0 and bx1 <= x1 and by1 <= y1
    assert capped == (side < rule)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thin_case(), st.sampled_from([1.5, 2.0]), st.sampled_from([0, 16, 64]), st.sampled_from(["fit", "pad"]),
       st.sampled_from([0, "auto"]))
def test_plan_crops_thin_images_honour_the_rule(case, zoom, min_side, overflow, dilate):
    h, w, m = case
    plan = plan_crops([(h, w)], [m], zoom=zoom, min_side=min_side, overflow=overflow, dilate=dilate,
                      size=64, max_regions=None)
    assert plan.crops or not m.any()
    for c in plan.crops:
        check_crop(h, w, c.box, c.padding, c.side, c.rule_side, c.capped, c.component_bbox,
                   zoom, min_side, overflow)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thin_case(), st.sampled_from(["fit", "pad"]))
def test_pal_fix_mask_reports_thin_crops_that_honour_the_rule(case, overflow):
    h, w, m = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(h * 1000 + w)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp / "thin.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp / "thin_mask.png")
        rc = main(["fix", str(tmp / "thin.png"), "--mask", str(tmp / "thin_mask.png"), "--out", str(tmp / "out"),
                   "--size", "64", "--overflow", overflow, "--min-area", "0", "--inpainter", "identity"])
        assert rc == 0
        rep = json.loads((tmp / "out" / "thin_fix.json").read_text())
    zoom, min_side = rep["options"]["zoom"], rep["options"]["min_side"]
    assert rep["crops"]
    for c in rep["crops"]:
        check_crop(h, w, c["box"], c["padding"], c["side"], c["rule_side"], c["capped"], c["component_bbox"],
                   zoom, min_side, overflow)


def test_the_issue_case_211x37():
    m = np.zeros((37, 211), bool)
    m[5:30, 80:141] = True  # 61 px wide after no dilation
    (c,) = plan_crops([(37, 211)], [m], dilate=0, size=64).crops
    assert c.component_bbox == [80, 5, 141, 30]
    assert c.side == 92 and c.rule_side == 92 and not c.capped and c.padding[1] + c.padding[3] == 55
    m[:] = False
    m[5:30, 100:130] = True
    (c,) = plan_crops([(37, 211)], [m], dilate=0, size=64, zoom=1.5, min_side=0).crops
    # 30 px component on a 37 px strip: 45 px does not fit, 37 does: fit caps the rule, no padding
    assert c.side == 37 and c.rule_side == 45 and c.capped and c.padding == [0, 0, 0, 0]
