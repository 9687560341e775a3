"""Preview pictures for the zoom nodes: before|after crop strips and whole-image overlays with crop boxes.

Sizes are capped so a large batch never produces huge preview tensors: at most MAX_CROPS crops,
each shown at most CROP_PX wide per side, and overlays at most OVERLAY_PX wide.
"""

from __future__ import annotations

import numpy as np

MAX_CROPS = 32
CROP_PX = 256
OVERLAY_PX = 1024
MAX_NODE_PREVIEWS = 8  # images shown on the node itself
GREEN, RED = (0, 200, 0), (230, 30, 30)  # same colours as `pal fix`'s _fix_vis.png


def _u8(x) -> np.ndarray:
    from ..core.imageio import to_uint8  # the one float<->uint8 conversion

    # C order: a VAE decode gives channel-last *views*, which cv2 drawing refuses (seen in real ComfyUI)
    return np.ascontiguousarray(to_uint8(x))


def _resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    interp = cv2.INTER_AREA if w < arr.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(arr, (w, h), interpolation=interp)


def crop_strips(before, after, kept=None, max_crops: int = MAX_CROPS, px: int = CROP_PX):
    """[N,S,S,3] before / after crops -> uint8 [n, s, 2s+gap, 3]: before | after, framed green if the crop
    was kept, red if the PAR guard rejected it. n <= max_crops, s <= px. Returns (strips, n_left_out)."""
    b, a = _u8(before), _u8(after)
    n = min(len(b), max_crops)
    s = min(px, b.shape[1]) if n else px
    t = max(1, s // 64)
    gap = max(2, s // 32)
    out = np.full((max(n, 1), s, 2 * s + gap, 3), 255, np.uint8)
    for i in range(n):
        left, right = _resize(b[i], s, s).copy(), _resize(a[i], s, s).copy()
        colour = GREEN if kept is None or kept[i] else RED
        for im in (left, right):
            im[:t], im[-t:], im[:, :t], im[:, -t:] = colour, colour, colour, colour
        out[i, :, :s], out[i, :, s + gap:] = left, right
    if n == 0:
        out[:] = 0
    return out, max(0, len(b) - n)


def overlays(befores, afters, masks, crops_per_image, max_px: int = OVERLAY_PX) -> np.ndarray:
    """Per image: before (magenta artifact overlay + crop boxes) | after (boxes); kept green, rejected red.

    ``crops_per_image``: list (per image) of dicts with "box" and "kept" (the fix report's crops).
    All images of a batch share a size, so the result is one uint8 batch [B, h, w, 3] (w <= max_px).
    """
    from ..core.par import fix_vis  # the CLI's _fix_vis.png picture: one implementation for all hosts

    vis = [fix_vis(_u8(b), _u8(a), np.asarray(m) > 0.5, list(c))
           for b, a, m, c in zip(befores, afters, masks, crops_per_image)]
    h, w = vis[0].shape[:2]
    if w > max_px:
        w2, h2 = max_px, max(1, int(round(h * max_px / w)))
        vis = [_resize(v, w2, h2) for v in vis]
    return np.stack(vis)


def plan_mask(plan, image_index: int) -> np.ndarray:
    """Union of the plan's own crop masks for one image, at the image size (bool HxW)."""
    h, w = plan.image_sizes[image_index]
    m = np.zeros((h, w), bool)
    for _, c in plan.crops_for(image_index):
        if c.skip or c.mask is None:
            continue
        x0, y0, x1, y1 = c.box
        left, top = c.padding[0], c.padding[1]
        m[y0:y1, x0:x1] |= c.mask[top:top + (y1 - y0), left:left + (x1 - x0)]
    return m
