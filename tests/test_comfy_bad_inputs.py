"""Bad input in the nodes: a ValueError that names the input and says what to do, never a deep traceback."""

from __future__ import annotations

import pytest
import torch

from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS as NODES
from comfyui_pal.pal_nodes.model import PalModel


@pytest.fixture(scope="module")
def pm(fixtures_dir) -> PalModel:
    from comfyui_pal.models.detector import load_detector

    path = str(fixtures_dir / "tiny_swin_upernet_w7.pth")
    det = load_detector(path, device="cpu", input_size=(64, 64))
    return PalModel(det, "tiny", path, torch.device("cpu"), torch.float32)


def _mask(b, h, w):
    m = torch.zeros((b, h, w))
    m[:, h // 3:h // 2, w // 3:w // 2] = 1
    return m


def crop(img, mask=None, size=64, **kw):
    return NODES["PALZoomCrop"]().crop(img, mask, 1.5, size, 1, 8, 0, -1, **kw)


def autofix(pm, img):
    return NODES["PALAutoFix"]().fix(img, pm, None, None, None, None, size=64, sampler=lambda c, m, **k: c)


def nan_image():
    img = torch.rand((2, 64, 64, 3))
    img[1, 5, 7, 0] = float("nan")
    return img


CASES = {
    "empty batch": (lambda: torch.zeros((0, 64, 64, 3)), r"image: empty image batch \(0 images"),
    "1x1 image": (lambda: torch.rand((1, 1, 1, 3)), r"image: 1x1 is too small"),
    "1xN image": (lambda: torch.rand((1, 1, 300, 3)), r"image: 300x1 is too small"),
    "NaN pixels": (nan_image, r"image: image\(s\) \[1\] contain NaN or infinite"),
    "inf pixels": (lambda: torch.full((1, 64, 64, 3), float("inf")), r"image: image\(s\) \[0\] contain NaN"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("node", ["PALDetect", "PALScore", "PALZoomCrop", "PALAutoFix", "PALToSEGS"])
def test_bad_images_name_the_input_and_the_fix(pm, case, node):
    make, msg = CASES[case]
    img = make()
    call = {
        "PALDetect": lambda: NODES["PALDetect"]().detect(pm, img, 0.5, 0),
        "PALScore": lambda: NODES["PALScore"]().score(img, 0.5, pal_model=pm),
        "PALZoomCrop": lambda: crop(img, _mask(1, *img.shape[1:3]) if img.shape[0] else torch.zeros(1, 8, 8)),
        "PALAutoFix": lambda: autofix(pm, img),
        "PALToSEGS": lambda: NODES["PALToSEGS"]().to_segs(img, pal_model=pm),
    }[node]
    with pytest.raises(ValueError, match=msg) as e:
        call()
    text = str(e.value)
    assert any(w in text for w in ("connect", "fix", "decode", "check")), text  # says what to do


def test_sort_reports_bad_images_by_list_index(pm):
    with pytest.raises(ValueError, match=r"images\[1\]: .* contain NaN"):
        NODES["PALSortByPAR"]().sort([torch.rand(1, 32, 32, 3), nan_image()],
                                     ["ascending (fewest artifacts first)"], [0], [1.0], [0.5], pal_model=[pm])


def test_mask_batch_neither_one_nor_b():
    img = torch.rand((2, 64, 64, 3))
    with pytest.raises(ValueError, match="mask: 3 masks for 2 images; give one mask per image or a single mask"):
        crop(img, _mask(3, 64, 64))
    with pytest.raises(ValueError, match="mask: 3 masks for 2 images"):
        NODES["PALScore"]().score(img, 0.5, mask=_mask(3, 64, 64))
    # 1 and B are fine
    assert crop(img, _mask(1, 64, 64))["result"][2].plan.n_active == 2
    assert crop(img, _mask(2, 64, 64))["result"][2].plan.n_active == 2


def test_image_smaller_than_the_working_size():
    img = torch.rand((1, 100, 90, 3))
    with pytest.raises(ValueError, match=r"size = 512 is larger than the image \(90x100\).*at most 96 or to 0 \(auto\)"):
        crop(img, _mask(1, 100, 90), size=512)
    out = crop(img, _mask(1, 100, 90), size=0)  # auto caps at the image
    assert out["result"][0].shape[1] == 96 and "size auto: 96" in out["ui"]["text"][0]


def test_segs_of_another_image_size():
    img = torch.rand((1, 64, 80, 3))
    segs = ((128, 160), [])
    with pytest.raises(ValueError, match=r"segs: SEGS were made for a 160x128 image but the image is 80x64"):
        crop(img, segs=segs)
    with pytest.raises(ValueError, match="segs: expected SEGS"):
        crop(img, segs=[1, 2, 3])


def test_zoom_crop_needs_mask_or_segs():
    with pytest.raises(ValueError, match="connect a mask .* or segs"):
        crop(torch.rand((1, 64, 64, 3)))


def test_crops_changed_between_zoom_crop_and_composite():
    img = torch.rand((1, 64, 64, 3))
    crops, _, stitch = crop(img, _mask(1, 64, 64))["result"]
    node = NODES["PALComposite"]()
    with pytest.raises(ValueError, match="inpainted has 2 crops but PAL Zoom Crop made 1 .* without adding or dropping"):
        node.paste(img, torch.cat([crops, crops]), stitch)
    with pytest.raises(ValueError, match="inpainted has 0 crops|inpainted: empty image batch"):
        node.paste(img, crops[:0], stitch)
    with pytest.raises(ValueError, match="inpainted crops are 64x48 but PAL Zoom Crop made square 64x64"):
        node.paste(img, torch.rand(1, 48, 64, 3), stitch)
    bad = crops.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="inpainted contains NaN"):
        node.paste(img, bad, stitch)
