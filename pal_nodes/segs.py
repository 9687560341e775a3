"""SEGS interop with Impact-Pack's detailers, without importing Impact-Pack.

Impact-Pack's SEGS (``modules/impact/core.py``) is ``((height, width), [SEG, ...])`` with
``SEG = namedtuple("SEG", [cropped_image, cropped_mask, confidence, crop_region, bbox, label,
control_net_wrapper], defaults=[None])``. Impact's nodes only read SEGs by field name, so our own
namedtuple with the same fields in the same order is interchangeable with theirs, and we read
theirs (or anyone's) by attribute, duck-typed.

Coordinates: ``crop_region`` and ``bbox`` are ``[x1, y1, x2, y2]`` image pixels, x2/y2 exclusive;
``cropped_mask`` is float32 at the crop_region's size; ``cropped_image`` a [1, h, w, 3] IMAGE.
Impact's ``crop_factor`` scales the bbox; PAL's crop is the square of ``zoom`` x the region's longest
side, so our crop_region is that square (the part inside the image) and crop_factor == zoom.
"""

from __future__ import annotations

from collections import namedtuple

SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)
SEG_FIELDS = SEG._fields
LABEL = "artifact"


def plan_to_segs(image, plan, prob=None, label: str = LABEL):
    """One image's crop plan (core.crop.CropPlan, image 0) -> SEGS.

    ``image``: IMAGE [1,H,W,3] (or [H,W,3]); ``prob``: artifact probability [H,W] (numpy/torch) for the
    confidence = mean probability over the region's pixels; without it confidence is 1.0.
    """
    import numpy as np

    img = image if image.ndim == 4 else image[None]
    h, w = int(img.shape[1]), int(img.shape[2])
    p = None
    if prob is not None:
        p = prob.detach().cpu().numpy() if hasattr(prob, "detach") else np.asarray(prob)
    segs = []
    for c in plan.crops:
        if c.skip or c.mask is None:
            continue
        x0, y0, x1, y1 = (int(v) for v in c.box)
        left, top = c.padding[0], c.padding[1]
        own = c.mask[top:top + (y1 - y0), left:left + (x1 - x0)]
        if not own.any():
            continue
        conf = float(p[y0:y1, x0:x1][own].mean()) if p is not None else 1.0
        segs.append(SEG(
            cropped_image=img[:, y0:y1, x0:x1, :].clone() if hasattr(img, "clone") else img[:, y0:y1, x0:x1],
            cropped_mask=own.astype(np.float32),
            confidence=np.float32(conf),
            crop_region=[x0, y0, x1, y1],
            bbox=[int(v) for v in c.component_bbox],
            label=label,
            control_net_wrapper=None,
        ))
    return ((h, w), segs)


def check_segs(segs, name: str = "segs"):
    """Validate a SEGS value's structure -> ((h, w), list_of_segs); clear errors, no deep tracebacks."""
    if not (isinstance(segs, (tuple, list)) and len(segs) == 2 and isinstance(segs[1], (list, tuple))):
        raise ValueError(f"{name}: expected SEGS ((height, width), [SEG, ...]) from a SEGS detector, got "
                         f"{type(segs).__name__}; connect a SEGS output (e.g. Impact's detectors or PAL to SEGS)")
    shape, items = segs
    try:
        h, w = int(shape[0]), int(shape[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{name}: the SEGS size {shape!r} is not (height, width)") from None
    for k, s in enumerate(items):
        for f in ("cropped_mask", "crop_region", "bbox"):
            if not hasattr(s, f):
                raise ValueError(f"{name}: item {k} has no field {f!r}; SEGS items must be SEG namedtuples")
    return (h, w), list(items)


def segs_to_components(segs, height: int, width: int, min_area: int = 0, max_regions: int = 0,
                       name: str = "segs"):
    """SEGS -> core.components.ComponentSet at (height, width): one region per SEG (masks used as given).

    Refuses SEGS made for another image size (their coordinates would land in the wrong place).
    Overlapping SEG masks: a pixel belongs to the first SEG that covers it.
    """
    import numpy as np

    from ..core.components import Component, ComponentSet

    (sh, sw), items = check_segs(segs, name)
    if (sh, sw) != (height, width):
        raise ValueError(f"{name}: SEGS were made for a {sw}x{sh} image but the image is {width}x{height}; "
                         "run the SEGS detector on this same image (or scale the SEGS with Impact's "
                         "SEGS scale node first)")
    label_map = np.zeros((height, width), np.int32)
    comps = []
    for k, s in enumerate(items):
        m = s.cropped_mask
        m = m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)
        m = np.squeeze(m)
        x0, y0, x1, y1 = (int(v) for v in s.crop_region)
        if m.ndim != 2 or m.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"{name}: item {k} has a {tuple(m.shape)} mask for a crop_region "
                             f"{[x0, y0, x1, y1]} of {x1 - x0}x{y1 - y0}; the SEGS are inconsistent")
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        sub = m[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] > 0.5
        region = label_map[cy0:cy1, cx0:cx1]
        mine = sub & (region == 0)
        area = int(mine.sum())
        if area == 0 or area < min_area:
            continue
        region[mine] = k + 1
        ys, xs = np.nonzero(mine)
        bbox = [cx0 + int(xs.min()), cy0 + int(ys.min()), cx0 + int(xs.max()) + 1, cy0 + int(ys.max()) + 1]
        comps.append(Component(labels=[k + 1], bbox=bbox, area=area, score=area / float(height * width)))
    n_found = len(comps)
    comps.sort(key=lambda c: -c.area)
    if max_regions and len(comps) > max_regions:
        for c in comps[max_regions:]:
            label_map[label_map == c.labels[0]] = 0
        comps = comps[:max_regions]
    return ComponentSet(label_map, comps, n_found=n_found, n_dropped=len(items) - len(comps))
