"""The detector's input pipeline, written once: ImageNet mean/std, the resize to the working size, the
normalisation. Used by `Detector` (inference), training/evaluation and the checkpoint/factory defaults.

Official PAL4VST user scripts (`utils.prepare_input`): RGB uint8, resize to 512x512 with PIL bicubic
(antialiased), subtract mean / divide by std on the 0..255 scale (mmseg's data_preprocessor). mmseg's
test pipeline resizes with cv2 bilinear instead: `mode="bilinear"`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# ImageNet statistics on the 0..255 scale (mmseg data_preprocessor / PAL4VST configs).
IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

RESIZE_MODES = ("bicubic", "bilinear")


def mean_std(preprocess: Mapping | None = None) -> tuple[list[float], list[float]]:
    """(mean, std) of a config's ``preprocess`` block, ImageNet's where it names none."""
    pre = preprocess or {}
    return list(pre.get("mean", IMAGENET_MEAN)), list(pre.get("std", IMAGENET_STD))


def resize_uint8(rgb: np.ndarray, size: int | Sequence[int] | None, mode: str = "bicubic") -> np.ndarray:
    """RGB uint8 HxWx3 -> (H, W) = ``size`` without keeping the ratio; ``size=None`` keeps the image.

    ``"bicubic"``: PIL bicubic, antialiased (official user scripts). ``"bilinear"``: cv2 INTER_LINEAR
    (mmseg test pipeline).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize={mode!r}: use 'bicubic' (official scripts) or 'bilinear' (mmseg test pipeline)")
    if size is None:
        return rgb
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if rgb.shape[:2] == (h, w):
        return rgb
    if mode == "bilinear":
        import cv2

        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


def normalize(x, preprocess: Mapping | None = None, *, mean=None, std=None):
    """NCHW RGB tensor on the 0..255 scale -> the segmenter's input ((x - mean) / std, float32, x's device).

    ``mean``/``std`` (tensors or sequences) override the config's ``preprocess`` block.
    """
    import torch

    m0, s0 = mean_std(preprocess)
    mean = torch.as_tensor(m0 if mean is None else mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(s0 if std is None else std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() - mean) / std
