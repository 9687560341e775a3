"""Artifact mask -> dilated, thresholded, 8-connected components (the regions the fix zooms into).

Host-free (numpy + OpenCV). Coordinates are in pixels of the image the mask is resized to,
boxes are ``[x0, y0, x1, y1]`` with x1/y1 exclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Official refine_artifacts.py: 5x5 ones kernel, 5 iterations on the 512x512 mask. Iterated
# rectangular dilation equals one dilation with a (2*5*2+1)-wide rectangle: radius 10 at 512.
OFFICIAL_DILATE_RADIUS_AT_512 = 10


@dataclass
class Component:
    """One region to fix: one or more (merged) 8-connected components of the dilated mask."""

    labels: list[int]  # ids in ComponentSet.label_map (several after merging)
    bbox: list[int]  # [x0, y0, x1, y1] of the dilated region, x1/y1 exclusive
    area: int  # artifact pixels before dilation (what min_area filters on)
    score: float  # PAR contribution: sum of artifact probability / image area

    @property
    def longest_side(self) -> int:
        return max(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])


@dataclass
class ComponentSet:
    """Components of one image plus the label map needed to cut each crop's own mask."""

    label_map: np.ndarray  # int32 HxW; 0 = background or a dropped component
    components: list[Component]  # kept, in processing order
    n_found: int = 0  # components before min_area / max_regions
    n_dropped: int = 0  # found but not kept (too small or beyond max_regions)
    dilate_radius: tuple[int, int] = (0, 0)  # (rx, ry) actually used, original pixels
    extra: dict = field(default_factory=dict)

    def region_mask(self, comp: Component | None = None, box=None) -> np.ndarray:
        """Bool mask of one component (or of all kept ones when comp is None), optionally cut to box."""
        lm = self.label_map
        if box is not None:
            x0, y0, x1, y1 = box
            lm = lm[y0:y1, x0:x1]
        if comp is None:  # the label map holds only kept labels (others were zeroed)
            return lm != 0
        ids = comp.labels
        if not ids:
            return np.zeros(lm.shape, bool)
        if len(ids) == 1:
            return lm == ids[0]
        return np.isin(lm, ids)


def to_float_mask(mask, size: tuple[int, int] | None = None) -> np.ndarray:
    """Any mask (bool, uint8 0/255 or 0/1, float 0..1, torch, PIL, HxW or HxWx1/3) -> float32 HxW in 0..1.

    With ``size=(H, W)`` the mask is resized to it (linear for soft masks, nearest for hard ones),
    so a 512x512 detector map can drive the fix of a 3000x2000 image.
    """
    m = mask
    if hasattr(m, "detach"):  # torch tensor
        m = m.detach().cpu().float().numpy()
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[-1] in (1, 3, 4):
        m = m[..., 0] if m.shape[-1] == 1 else m[..., :3].max(axis=-1)
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW (or HxWx1/3), got shape {m.shape}")
    if m.dtype == bool:
        f = m.astype(np.float32)
        hard = True
    elif np.issubdtype(m.dtype, np.integer):
        hi = 255.0 if m.max(initial=0) > 1 else 1.0
        f = m.astype(np.float32) / hi
        hard = hi == 1.0
    else:
        f = np.clip(np.nan_to_num(m.astype(np.float32)), 0.0, 1.0)
        hard = False
    if size is not None and tuple(f.shape) != tuple(size):
        h, w = int(size[0]), int(size[1])
        interp = cv2.INTER_NEAREST if hard else cv2.INTER_LINEAR
        f = cv2.resize(f, (w, h), interpolation=interp)
        f = f.reshape(h, w)  # cv2 drops singleton dims
    return np.ascontiguousarray(f, dtype=np.float32)


def auto_dilate_radius(height: int, width: int) -> tuple[int, int]:
    """(rx, ry): the official 512-scale dilation mapped to this image, per axis like the official resize."""
    rx = int(round(OFFICIAL_DILATE_RADIUS_AT_512 * width / 512.0))
    ry = int(round(OFFICIAL_DILATE_RADIUS_AT_512 * height / 512.0))
    return rx, ry


def _resolve_dilate(dilate, h: int, w: int) -> tuple[int, int]:
    if dilate is None or dilate == "auto":
        return auto_dilate_radius(h, w)
    if isinstance(dilate, (tuple, list)):
        return max(0, int(dilate[0])), max(0, int(dilate[1]))
    r = int(dilate)
    if r < 0:
        raise ValueError(f"dilate must be >= 0 pixels or 'auto', got {dilate}")
    return r, r


def zoom_side(longest: int, zoom: float, min_side: int) -> int:
    """The zoom rule, written once: crop side = max(ceil(zoom * longest side), min_side, longest side, 1)."""
    longest = int(longest)
    return max(int(math.ceil(zoom * longest - 1e-9)), int(min_side), longest, 1)


def square_box(bbox, zoom: float, min_side: int) -> tuple[int, int, int, int, int]:
    """Unclipped centred square for a bbox: (x0, y0, x1, y1, side), side from ``zoom_side``."""
    x0, y0, x1, y1 = bbox
    side = zoom_side(max(x1 - x0, y1 - y0), zoom, min_side)
    sx0 = (x0 + x1 - side) // 2
    sy0 = (y0 + y1 - side) // 2
    return sx0, sy0, sx0 + side, sy0 + side, side


def _overlap_ratio(a, b) -> float:
    """Intersection / smaller area of two boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    sa = (a[2] - a[0]) * (a[3] - a[1])
    sb = (b[2] - b[0]) * (b[3] - b[1])
    return iw * ih / max(1, min(sa, sb))


def merge_overlapping(
    components: list[Component], ratio: float, zoom: float = 1.5, min_side: int = 0
) -> list[Component]:
    """Merge components whose zoom crops overlap by >= ratio (of the smaller crop), until stable.

    One crop then serves both, so the inpainter sees them together instead of each crop
    showing the other's artifact as context.
    """
    comps = [Component(list(c.labels), list(c.bbox), c.area, c.score) for c in components]
    changed = True
    while changed and len(comps) > 1:
        changed = False
        boxes = [square_box(c.bbox, zoom, min_side)[:4] for c in comps]
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                if _overlap_ratio(boxes[i], boxes[j]) >= ratio:
                    a, b = comps[i], comps[j]
                    a.labels = sorted(a.labels + b.labels)
                    a.bbox = [
                        min(a.bbox[0], b.bbox[0]),
                        min(a.bbox[1], b.bbox[1]),
                        max(a.bbox[2], b.bbox[2]),
                        max(a.bbox[3], b.bbox[3]),
                    ]
                    a.area += b.area
                    a.score += b.score
                    del comps[j]
                    changed = True
                    break
            if changed:
                break
    return comps


def find_components(
    mask,
    size: tuple[int, int] | None = None,
    *,
    threshold: float = 0.5,
    dilate="auto",
    min_area: int = 0,
    max_regions: int | None = 8,
    order: str = "area",
    merge_overlap: float | None = None,
    zoom: float = 1.5,
    min_side: int = 0,
) -> ComponentSet:
    """Threshold, dilate and label a mask; keep at most ``max_regions`` regions.

    - ``mask``: bool / uint8 / float / torch, any size; resized to ``size=(H, W)`` if given.
    - ``dilate``: "auto" (official 5x5x5 at 512 scale, scaled per axis), pixels, (rx, ry) or 0.
    - ``min_area``: minimum artifact pixels (before dilation) of a component.
    - ``order``: "area" (largest first) or "score" (highest PAR contribution = summed
      probability first; equals area for hard masks).
    - ``merge_overlap``: merge components whose ``zoom`` crops overlap by at least this
      fraction of the smaller crop (None = never).
    """
    if order not in ("area", "score"):
        raise ValueError(f"order must be 'area' or 'score', got {order!r}")
    prob = to_float_mask(mask, size)
    h, w = prob.shape
    raw = (prob > threshold).astype(np.uint8)  # strict, like Detection.mask()
    rx, ry = _resolve_dilate(dilate, h, w)
    # Threshold then binary dilation equals grey dilation then threshold (flat kernel), and is cheaper.
    grown = cv2.dilate(raw, np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)) if (rx or ry) and raw.any() else raw
    n, label_map, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8, ltype=cv2.CV_32S)
    label_map = label_map.reshape(h, w)
    n_found = n - 1
    if n_found <= 0:
        return ComponentSet(np.zeros((h, w), np.int32), [], 0, 0, (rx, ry))
    raw_b = raw.astype(bool)
    areas = np.bincount(label_map[raw_b], minlength=n)
    scores = np.bincount(label_map[raw_b], weights=prob[raw_b], minlength=n) / float(h * w)
    comps = []
    for i in range(1, n):
        if areas[i] < max(1, min_area):
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        comps.append(Component([i], [x, y, x + bw, y + bh], int(areas[i]), float(scores[i])))
    key = (lambda c: (-c.area, -c.score, c.labels[0])) if order == "area" else (
        lambda c: (-c.score, -c.area, c.labels[0])
    )
    comps.sort(key=key)
    if merge_overlap is not None and len(comps) > 1:
        # Cap the quadratic merge; specks beyond this would be dropped by max_regions anyway.
        cap = max(64, 4 * (max_regions or 0))
        comps = merge_overlapping(comps[:cap], merge_overlap, zoom, min_side) + comps[cap:]
        comps.sort(key=key)
    if max_regions is not None and max_regions >= 0:
        comps = comps[:max_regions]
    n_kept_labels = sum(len(c.labels) for c in comps)
    if n_kept_labels < n_found:
        # Zero dropped labels so region_mask(None) is exactly "everything being fixed".
        kept = np.zeros(n, np.int32)
        for c in comps:
            for lab in c.labels:
                kept[lab] = lab
        label_map = kept[label_map]
    return ComponentSet(label_map, comps, n_found, n_found - n_kept_labels, (rx, ry))
