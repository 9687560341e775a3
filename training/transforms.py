"""mmseg's PAL4VST train/test pipelines in numpy + OpenCV (no mmcv).

Train: RandomResize(scale 512, ratio 0.5-2.0, keep_ratio) -> RandomCrop(512, cat_max_ratio
0.75, 10 tries) -> RandomFlip(0.5) -> [PhotoMetricDistortion, opt-in] -> pad to the crop size
(image 0, label 255). The official config has PhotoMetricDistortion commented out (real data);
for synthetic data it is meant to weaken the "saturated smooth colour = artifact" shortcut that
the colour blotches teach (the starter marked clean red petals and magenta swooshes); measured on
the starter, it helped only a little (README, starter section).
Test: Resize to 512x512 without keeping the ratio (cv2 bilinear); labels stay at full size.
All randomness comes from the `numpy.random.Generator` passed in, so a sample's augmentation
is a pure function of its seed (what makes `--resume` bit-identical).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IGNORE_INDEX = 255


@dataclass
class TrainPipeline:
    scale: int = 512
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: int = 512
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    ignore_index: int = IGNORE_INDEX
    photometric: bool = False

    def __call__(self, img: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        img, label = random_resize(img, label, rng, self.scale, self.ratio_range)
        img, label = random_crop(img, label, rng, self.crop_size, self.cat_max_ratio, self.ignore_index)
        if rng.random() < self.flip_prob:
            img, label = img[:, ::-1], label[:, ::-1]
        if self.photometric:  # draws only when on: runs without it keep their augmentation streams
            img = photometric_distortion(img, rng)
        img, label = pad_to(img, label, self.crop_size, self.ignore_index)
        return np.ascontiguousarray(img), np.ascontiguousarray(label)


def photometric_distortion(img: np.ndarray, rng: np.random.Generator, brightness: float = 32,
                           contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue: int = 18) -> np.ndarray:
    """mmseg PhotoMetricDistortion on RGB uint8: each step with probability 1/2 - brightness
    +-32, contrast x0.5-1.5 (before or after the colour steps, at random), saturation x0.5-1.5
    and hue +-18 (OpenCV's 0-180 hue scale) in HSV. The label is untouched: the whole picture
    changes consistently, so nothing becomes or stops being an artifact."""
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        x = x + rng.uniform(-brightness, brightness)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        x = x * rng.uniform(*contrast)
    do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
    if do_sat or do_hue:
        hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation), 0, 255)
        if do_hue:
            hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-hue, hue + 1))) % 180
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first and rng.random() < 0.5:
        x = x * rng.uniform(*contrast)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def random_resize(img, label, rng, scale: int, ratio_range):
    """mmseg RandomResize(scale=(s, s), ratio_range, keep_ratio=True): long side -> s * ratio."""
    ratio = rng.uniform(ratio_range[0], ratio_range[1])
    target = scale * ratio
    h, w = img.shape[:2]
    factor = target / max(h, w)  # mmcv.rescale_size with a square scale: min(long/long, short/short)
    nw, nh = max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return img, label


def _crop_bbox(h, w, crop, rng):
    margin_h, margin_w = max(h - crop, 0), max(w - crop, 0)
    y = int(rng.integers(0, margin_h + 1))
    x = int(rng.integers(0, margin_w + 1))
    return y, min(y + crop, h), x, min(x + crop, w)


def random_crop(img, label, rng, crop: int, cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX,
                tries: int = 10):
    """mmseg RandomCrop: re-draw (up to 10 times) while one class covers >= cat_max_ratio."""
    h, w = label.shape[:2]
    y0, y1, x0, x1 = _crop_bbox(h, w, crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            seg = label[y0:y1, x0:x1]
            vals, cnt = np.unique(seg, return_counts=True)
            cnt = cnt[vals != ignore_index]
            if len(cnt) > 1 and cnt.max() / cnt.sum() < cat_max_ratio:
                break
            y0, y1, x0, x1 = _crop_bbox(h, w, crop, rng)
    return img[y0:y1, x0:x1], label[y0:y1, x0:x1]


def pad_to(img, label, size: int, ignore_index: int = IGNORE_INDEX):
    """Pad bottom/right to size x size: image with 0, label with ignore (SegDataPreProcessor)."""
    h, w = label.shape[:2]
    if h >= size and w >= size:
        return img, label
    ph, pw = max(size - h, 0), max(size - w, 0)
    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
    return img, label


def test_resize(img: np.ndarray, size, mode: str = "bilinear") -> np.ndarray:
    """Resize to (H, W) without keeping the ratio: 'bilinear' = mmseg (cv2), 'bicubic' = user scripts (PIL).
    The one implementation is `models.preprocess.resize_uint8` (the detector's)."""
    from ..models.preprocess import resize_uint8

    return resize_uint8(img, size, mode)


def working_input(img: np.ndarray, preprocess: dict, size=None, resize: str | None = None):
    """An RGB uint8 picture as the detector sees it: resized to the working size (no ratio kept),
    normalised, [1, 3, H, W] float32. The one place evaluation, calibration and precise BN make it."""
    import torch

    from ..models.preprocess import normalize

    size = tuple(size or preprocess.get("size") or (512, 512))
    x = torch.from_numpy(np.array(test_resize(img, size, resize or preprocess.get("resize", "bicubic"))))
    return normalize(x.permute(2, 0, 1)[None].float(), preprocess)
