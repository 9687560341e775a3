"""SEGS interop: PAL to SEGS layout (Impact-Pack field-compatible) and SEGS driving PAL Zoom Crop."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch

from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS as NODES
from comfyui_pal.pal_nodes.segs import SEG, segs_to_components

# Impact-Pack modules/impact/core.py (2025): the fields its nodes read, in this order.
IMPACT_FIELDS = ("cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper")
ImpactSEG = namedtuple("SEG", list(IMPACT_FIELDS), defaults=[None])  # what Impact's own detectors emit


def result(out):
    return out["result"] if isinstance(out, dict) else out


def two_blob_image(h=96, w=128):
    img = torch.rand((1, h, w, 3), generator=torch.Generator().manual_seed(1))
    heat = torch.zeros((1, h, w))
    heat[0, 20:30, 10:26] = 0.9  # 16 wide, 10 high
    heat[0, 60:80, 90:100] = 0.7  # 10 wide, 20 high
    return img, heat


def test_seg_field_layout_matches_impact():
    assert SEG._fields == IMPACT_FIELDS
    s = SEG(None, np.zeros((2, 2), np.float32), 1.0, [0, 0, 2, 2], [0, 0, 2, 2], "artifact")
    assert s.control_net_wrapper is None  # same default as Impact's
    assert tuple(s) == tuple(ImpactSEG(*s))  # positional construction is interchangeable


def test_pal_to_segs_layout_crop_factor_and_confidence():
    img, heat = two_blob_image()
    segs, mask = result(NODES["PALToSEGS"]().to_segs(img, 0.5, 1.5, 1, 0, 0, mask=heat))
    (h, w), items = segs
    assert (h, w) == (96, 128) and len(items) == 2 and mask.shape == (1, 96, 128)
    for s in items:
        assert isinstance(s, SEG) and s.label == "artifact" and s.control_net_wrapper is None
        x0, y0, x1, y1 = s.crop_region
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        bx0, by0, bx1, by1 = s.bbox
        longest = max(bx1 - bx0, by1 - by0)
        # crop_factor == zoom: the square crop is 1.5 x the region's longest side (min side 64 here)
        assert x1 - x0 == y1 - y0 == max(int(np.ceil(1.5 * longest)), 64)
        assert s.cropped_image.shape == (1, y1 - y0, x1 - x0, 3)
        assert torch.equal(s.cropped_image, img[:, y0:y1, x0:x1])
        assert s.cropped_mask.dtype == np.float32 and s.cropped_mask.shape == (y1 - y0, x1 - x0)
        assert set(np.unique(s.cropped_mask)) <= {0.0, 1.0}
    confs = sorted(float(s.confidence) for s in items)
    assert confs == pytest.approx([0.7, 0.9], abs=1e-6)  # mean artifact probability of each region


def test_pal_to_segs_with_model_and_batch_refused(fixtures_dir):
    from comfyui_pal.models.detector import load_detector
    from comfyui_pal.pal_nodes.model import PalModel

    path = str(fixtures_dir / "tiny_swin_upernet_w7.pth")
    pm = PalModel(load_detector(path, device="cpu", input_size=(64, 64)), "tiny", path, torch.device("cpu"),
                  torch.float32)
    img = torch.rand((1, 64, 80, 3), generator=torch.Generator().manual_seed(5))
    segs, _ = result(NODES["PALToSEGS"]().to_segs(img, 0.5, 1.5, 1, 0, 0, pal_model=pm))
    assert segs[0] == (64, 80) and all(0.5 <= float(s.confidence) <= 1 for s in segs[1])
    with pytest.raises(ValueError, match="image has 2 images but SEGS describe one image"):
        NODES["PALToSEGS"]().to_segs(torch.cat([img, img]), pal_model=pm)
    with pytest.raises(ValueError, match="pal_model or a mask"):
        NODES["PALToSEGS"]().to_segs(img)


def test_segs_drive_zoom_crop_same_plan_as_the_mask():
    img, heat = two_blob_image()
    segs, _ = result(NODES["PALToSEGS"]().to_segs(img, 0.5, 1.5, 1, 0, 0, mask=heat))
    via_mask = result(NODES["PALZoomCrop"]().crop(img, heat, 1.5, 64, 1, 0, 0, -1))[2].plan
    via_segs = result(NODES["PALZoomCrop"]().crop(img, None, 1.5, 64, 1, 0, 0, -1, segs=segs))[2].plan
    assert sorted(c.box for c in via_segs.crops) == sorted(c.box for c in via_mask.crops)
    # and the composite path works on the SEGS plan
    crops, _, stitch = result(NODES["PALZoomCrop"]().crop(img, None, 1.5, 64, 1, 0, 0, -1, segs=segs))
    out = result(NODES["PALComposite"]().paste(img, torch.zeros_like(crops), stitch, -1, False))[0]
    assert out.shape == img.shape and float((out != img).any(dim=-1).float().sum()) > 0


def test_foreign_segs_duck_typed_tensor_masks_and_overlaps():
    # an Impact-style SEGS: its own namedtuple class, torch masks, overlapping regions, a rectangular crop
    m1 = torch.zeros(40, 60)
    m1[10:30, 10:50] = 1
    m2 = np.zeros((30, 30), np.float32)
    m2[5:25, 5:25] = 1
    segs = ((100, 120), [ImpactSEG(None, m1, 0.9, [0, 0, 60, 40], (10, 10, 50, 30), "face"),
                         ImpactSEG(None, m2, 0.8, [40, 20, 70, 50], (45, 25, 65, 45), "hand")])
    cs = segs_to_components(segs, 100, 120)
    assert len(cs.components) == 2
    assert int((cs.label_map == 1).sum()) == 800  # the first SEG keeps the overlap
    img = torch.rand((1, 100, 120, 3))
    crops, cmasks, stitch = result(NODES["PALZoomCrop"]().crop(img, None, 1.5, 64, 1, 0, 0, -1, segs=segs))
    assert crops.shape[0] == 2 and stitch.plan.n_active == 2


def test_empty_segs_give_the_placeholder():
    img = torch.rand((1, 64, 64, 3))
    crops, _, stitch = result(NODES["PALZoomCrop"]().crop(img, None, 1.5, 64, 1, 0, 0, -1, segs=((64, 64), [])))
    assert crops.shape[0] == 1 and stitch.placeholder
