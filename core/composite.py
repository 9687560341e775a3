"""Paste inpainted crops back: resize, feathered alpha, optional Lab colour match, defined order.

Guarantees: pixels where every crop's alpha is 0 are bit-identical to the input; the artifact
(the crop's own mask) is always fully replaced (alpha 1); crops are applied in plan order on a
running copy, each with a smooth alpha, so overlapping crops fade into each other instead of
leaving a seam.
"""

from __future__ import annotations

import cv2
import numpy as np

from .crop import CropPlan, CropSpec, as_image_list, resize_square
from .imageio import from_float01, to_float01, to_numpy


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _own_in_box(c: CropSpec) -> np.ndarray:
    x0, y0, x1, y1 = c.box
    left, top = c.padding[0], c.padding[1]
    return c.mask[top : top + (y1 - y0), left : left + (x1 - x0)]


def _edge_taper(n: int, lo_internal: bool, hi_internal: bool, width: float) -> np.ndarray:
    """1-D ramp that goes to ~0 at crop edges lying inside the image (not at image borders)."""
    t = np.ones(n, np.float32)
    if width <= 0:
        return t
    idx = np.arange(n, dtype=np.float32)
    if lo_internal:
        t = np.minimum(t, _smoothstep((idx + 0.5) / width))
    if hi_internal:
        t = np.minimum(t, _smoothstep((n - idx - 0.5) / width))
    return t


def blend_alpha(c: CropSpec, height: int, width: int, feather: int | None = None):
    """Alpha of one crop over the sub-rectangle it can touch -> (alpha float32, (x0, y0, x1, y1)) or None.

    alpha = 1 on the crop's own mask and up to feather/3 px outside it (grow), then falls smoothly
    to exactly 0 at ``feather`` px (blur-like fade, computed from the L2 distance so its cost does
    not grow with the feather). It also fades out towards crop edges inside the image, because
    the patch does not exist beyond them.
    """
    if c.skip or c.mask is None:
        return None
    own = _own_in_box(c)
    ys, xs = np.nonzero(own)
    if ys.size == 0:
        return None
    fe = int(c.feather if feather is None else feather)
    bx0, by0, bx1, by1 = c.box
    bh, bw = by1 - by0, bx1 - bx0
    # Only the mask's bbox grown by the feather can be non-zero.
    sx0, sx1 = max(0, int(xs.min()) - fe), min(bw, int(xs.max()) + 1 + fe)
    sy0, sy1 = max(0, int(ys.min()) - fe), min(bh, int(ys.max()) + 1 + fe)
    sub = own[sy0:sy1, sx0:sx1]
    if fe > 0:
        dist = cv2.distanceTransform((~sub).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        grow = fe / 3.0
        alpha = _smoothstep((fe - dist) / max(fe - grow, 1e-6))
        taper_w = max(1.0, fe / 2.0)
        tx = _edge_taper(bw, bx0 > 0, bx1 < width, taper_w)[sx0:sx1]
        ty = _edge_taper(bh, by0 > 0, by1 < height, taper_w)[sy0:sy1]
        alpha = alpha * ty[:, None] * tx[None, :]
        alpha = np.maximum(alpha, sub.astype(np.float32))
    else:
        alpha = sub.astype(np.float32)
    return alpha.astype(np.float32), (bx0 + sx0, by0 + sy0, bx0 + sx1, by0 + sy1)


def _lab_match(patch: np.ndarray, orig: np.ndarray, ring: np.ndarray, min_pixels: int = 16) -> np.ndarray:
    """Shift/scale the patch's Lab mean/std on the ring to the original's (per channel, ratio clamped)."""
    if int(ring.sum()) < min_pixels:
        return patch
    pl = cv2.cvtColor(np.ascontiguousarray(patch, np.float32), cv2.COLOR_RGB2Lab)
    ol = cv2.cvtColor(np.ascontiguousarray(orig, np.float32), cv2.COLOR_RGB2Lab)
    pr, orr = pl[ring], ol[ring]
    mp, sp = pr.mean(0), pr.std(0)
    mo, so = orr.mean(0), orr.std(0)
    ratio = np.where(sp > 1e-3, so / np.maximum(sp, 1e-3), 1.0)
    ratio = np.clip(ratio, 0.5, 2.0).astype(np.float32)
    out = (pl - mp) * ratio + mo
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


def composite(
    images,
    plan: CropPlan,
    inpainted,
    *,
    feather: int | None = None,
    color_match: bool = False,
    include=None,
    return_alpha: bool = False,
):
    """Blend inpainted crops ([N,S,S,3], float 0..1 or uint8, numpy/torch) into copies of the images.

    ``feather`` overrides each crop's own fade width (original pixels). ``include``: optional
    iterable of crop indices to apply (others are treated as skipped; used by the PAR guard).
    Returns a list of images with the input dtype (and, with ``return_alpha``, a list of
    float32 HxW maps of the largest alpha applied per pixel).
    """
    ims = as_image_list(images)
    patches = to_numpy(inpainted)
    if patches.ndim == 3:
        patches = patches[None]
    if patches.shape[0] != len(plan.crops):
        raise ValueError(f"got {patches.shape[0]} inpainted crops for a plan with {len(plan.crops)} crops")
    if patches.shape[0] and tuple(patches.shape[1:3]) != (plan.size, plan.size):
        raise ValueError(f"inpainted crops are {patches.shape[1:3]}, the plan's working size is {plan.size}")
    allowed = None if include is None else {int(i) for i in include}
    outs = [im.copy() for im in ims]
    alphas = [np.zeros(im.shape[:2], np.float32) for im in ims] if return_alpha else None
    for i, c in enumerate(plan.crops):  # plan order = defined order
        if c.skip or (allowed is not None and i not in allowed):
            continue
        canvas = outs[c.image_index]
        h, w = canvas.shape[:2]
        got = blend_alpha(c, h, w, feather)
        if got is None:
            continue
        alpha, (x0, y0, x1, y1) = got
        patch_sq = resize_square(to_float01(patches[i][..., :3]), c.side)
        left, top = c.padding[0], c.padding[1]
        ox, oy = x0 - c.box[0] + left, y0 - c.box[1] + top  # sub-rect inside the padded square
        patch = patch_sq[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
        region = canvas[y0:y1, x0:x1]
        orig = to_float01(region)
        if color_match:
            inp = c.inpaint_mask if c.inpaint_mask is not None else c.mask
            inp_sub = inp[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
            patch = _lab_match(patch, orig, (alpha > 0) & ~inp_sub)
        blended = orig + alpha[..., None] * (patch - orig)
        # copyto with where= writes only alpha > 0 pixels (no fancy-index gathers on big regions)
        np.copyto(region, from_float01(blended, canvas.dtype), where=(alpha > 0)[..., None])
        if alphas is not None:
            np.maximum(alphas[c.image_index][y0:y1, x0:x1], alpha, out=alphas[c.image_index][y0:y1, x0:x1])
    return (outs, alphas) if return_alpha else outs
