"""Crop plan for zoom-in inpainting: one square crop per artifact component, resized to a working size.

The plan is plain data (dataclasses of ints, floats, lists and bool masks) that round-trips
through JSON, so a host can make it in one node/step and composite in another. Coordinates
are original-image pixels; boxes are ``[x0, y0, x1, y1]`` with x1/y1 exclusive and always
lie inside the image; anything the square needs beyond the image is ``padding`` ``[l, t, r, b]``
filled by reflection. ``box`` grown by ``padding`` is the ``side`` x ``side`` square.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .components import ComponentSet, find_components, zoom_side
from .imageio import to_float01, to_numpy

PLAN_FORMAT = "comfyui-pal/crop-plan/1"


# ----------------------------------------------------------------------------- mask RLE for JSON
def rle_encode(mask: np.ndarray) -> dict:
    """Bool HxW -> {"size": [H, W], "counts": [...]} (row-major runs, starting with a 0-run)."""
    m = np.asarray(mask, dtype=bool)
    flat = m.ravel()
    if flat.size == 0:
        return {"size": list(m.shape), "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(r) for r in runs]}


def rle_decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = rle["counts"]
    vals = np.zeros(len(counts), dtype=bool)
    vals[1::2] = True
    flat = np.repeat(vals, counts) if counts else np.zeros(0, bool)
    if flat.size != h * w:
        raise ValueError(f"mask RLE has {flat.size} pixels, expected {h}x{w}")
    return flat.reshape(h, w)


# ----------------------------------------------------------------------------- plan data
@dataclass
class CropSpec:
    """One crop. ``mask`` / ``inpaint_mask`` are bool side x side (the padded square, original scale)."""

    image_index: int
    box: list[int]  # [x0, y0, x1, y1] inside the image, x1/y1 exclusive
    padding: list[int]  # [l, t, r, b] reflected pixels added around box to make the square
    side: int  # square side in original pixels
    size: int  # working size (the inpainter's S)
    scale: float  # size / side (> 1 = zoomed in)
    component_bbox: list[int]  # dilated component bbox, original pixels
    area: int = 0  # artifact pixels of the component(s) before dilation
    score: float = 0.0  # PAR contribution of the component(s)
    feather: int = 0  # blend fade width in original pixels
    skip: bool = False  # placeholder or rejected crop: composite ignores it
    rule_side: int = 0  # side the zoom rule asked for (0 = not recorded, plans from older versions)
    mask: np.ndarray | None = field(default=None, repr=False)  # this crop's own component(s)
    inpaint_mask: np.ndarray | None = field(default=None, repr=False)  # own + other kept components

    @property
    def capped(self) -> bool:
        """True when ``overflow="fit"`` shrank the square below the zoom rule (the image is too small)."""
        return self.side < self.rule_side

    @property
    def square(self) -> list[int]:
        """The side x side square in image coordinates (may extend outside the image by the padding)."""
        x0, y0, x1, y1 = self.box
        left, top, right, bottom = self.padding
        return [x0 - left, y0 - top, x1 + right, y1 + bottom]

    def to_dict(self, include_masks: bool = True) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("mask", "inpaint_mask")}
        if include_masks:
            for k in ("mask", "inpaint_mask"):
                v = getattr(self, k)
                d[k] = None if v is None else rle_encode(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CropSpec:
        d = dict(d)
        masks = {k: d.pop(k, None) for k in ("mask", "inpaint_mask")}
        spec = cls(**d)
        for k, v in masks.items():
            setattr(spec, k, None if v is None else rle_decode(v))
        return spec


@dataclass
class CropPlan:
    image_sizes: list[list[int]]  # [[H, W], ...] per source image
    size: int
    crops: list[CropSpec]
    options: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)  # per image: n_found, n_dropped, dilate

    def crops_for(self, image_index: int) -> list[tuple[int, CropSpec]]:
        return [(i, c) for i, c in enumerate(self.crops) if c.image_index == image_index]

    @property
    def n_active(self) -> int:
        return sum(not c.skip for c in self.crops)

    def to_dict(self, include_masks: bool = True) -> dict:
        return {
            "format": PLAN_FORMAT,
            "image_sizes": [list(map(int, s)) for s in self.image_sizes],
            "size": int(self.size),
            "options": self.options,
            "images": self.images,
            "crops": [c.to_dict(include_masks) for c in self.crops],
        }

    def to_json(self, include_masks: bool = True) -> str:
        return json.dumps(self.to_dict(include_masks))

    @classmethod
    def from_dict(cls, d: dict) -> CropPlan:
        if d.get("format", PLAN_FORMAT) != PLAN_FORMAT:
            raise ValueError(f"unknown crop plan format {d.get('format')!r}; expected {PLAN_FORMAT}")
        return cls(
            image_sizes=[list(s) for s in d["image_sizes"]],
            size=int(d["size"]),
            crops=[CropSpec.from_dict(c) for c in d["crops"]],
            options=dict(d.get("options", {})),
            images=list(d.get("images", [])),
        )

    @classmethod
    def from_json(cls, text: str) -> CropPlan:
        return cls.from_dict(json.loads(text))


# ----------------------------------------------------------------------------- geometry
def _axis(c0: int, c1: int, side: int, n: int) -> tuple[int, int, int, int]:
    """Place a side-long window around [c0, c1) on an axis of length n -> (lo, hi, pad_lo, pad_hi)."""
    if side <= n:
        lo = (c0 + c1 - side) // 2
        lo = min(max(lo, 0), n - side)  # shift inward at the borders instead of padding
        return lo, lo + side, 0, 0
    extra = side - n  # the whole axis plus padding, component as centred as possible
    pad_lo = int(np.floor(side / 2.0 - (c0 + c1) / 2.0))
    pad_lo = min(max(pad_lo, 0), extra)
    return 0, n, pad_lo, extra - pad_lo


def crop_geometry(
    bbox, height: int, width: int, zoom: float = 1.5, min_side: int = 64, overflow: str = "fit"
) -> tuple[list[int], list[int], int]:
    """(box, padding, side) for one component bbox.

    The rule: side = ``zoom_side`` = max(ceil(zoom * longest side), min_side). When that square
    does not fit in the image, ``overflow="pad"`` keeps it and reflect-pads; ``overflow="fit"``
    shrinks it to the largest square inside the image that still holds the component (side =
    the image's short side; the rule is then *capped*, ``CropSpec.capped``). Where no square
    inside the image holds the component (a component longer than the image's short side, e.g.
    on a 37 px strip), padding is unavoidable, and a padded square always honours the rule.
    """
    if overflow not in ("fit", "pad"):
        raise ValueError(f"overflow must be 'fit' or 'pad', got {overflow!r}")
    x0, y0, x1, y1 = (int(v) for v in bbox)
    longest = max(x1 - x0, y1 - y0, 1)
    side = zoom_side(longest, zoom, min_side)
    short = min(height, width)
    if overflow == "fit" and longest <= short < side:
        side = short  # largest square that fits and contains the component: no padding needed
    bx0, bx1, pl, pr = _axis(x0, x1, side, width)
    by0, by1, pt, pb = _axis(y0, y1, side, height)
    return [bx0, by0, bx1, by1], [pl, pt, pr, pb], side


def default_feather(side: int) -> int:
    """Blend fade width for a crop: ~1/16 of the crop side (32 px for a 512 crop), at least 2 px."""
    return max(2, int(round(side / 16.0)))


def _pad_reflect(arr: np.ndarray, padding) -> np.ndarray:
    left, top, right, bottom = padding
    if not (left or top or right or bottom):
        return arr
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths, mode="reflect")


def _check_size(size: int) -> int:
    size = int(size)
    if size < 8 or size % 8:
        raise ValueError(f"working size must be a positive multiple of 8 (e.g. 512, 1024), got {size}")
    return size


# ----------------------------------------------------------------------------- inputs
def as_image_list(images) -> list[np.ndarray]:
    """[B,H,W,C] array/tensor, one HxWxC image, or a list of them -> list of HxWx3 arrays (dtype kept)."""
    if isinstance(images, (list, tuple)):
        out = [to_numpy(im) for im in images]
    else:
        arr = to_numpy(images)
        out = list(arr) if arr.ndim == 4 else [arr]
    res = []
    for i, im in enumerate(out):
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        if im.ndim != 3 or im.shape[2] not in (3, 4):
            raise ValueError(f"image {i}: expected HxWx3, got shape {im.shape}")
        res.append(im[..., :3])
    return res


def _sizes_of(images_or_sizes) -> list[tuple[int, int]]:
    if isinstance(images_or_sizes, (list, tuple)) and images_or_sizes and all(
        isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, (int, np.integer)) for v in s)
        for s in images_or_sizes
    ):
        return [(int(s[0]), int(s[1])) for s in images_or_sizes]
    return [im.shape[:2] for im in as_image_list(images_or_sizes)]


def _mask_list(masks, n: int) -> list:
    if isinstance(masks, ComponentSet):
        masks = [masks]
    if isinstance(masks, (list, tuple)):
        ms = list(masks)
    else:
        arr = to_numpy(masks)
        # [B,H,W] batch, unless it is one HxWx1/HxWx3 mask
        batch = arr.ndim == 3 and (arr.shape[0] == n or arr.shape[-1] not in (1, 3))
        ms = list(arr) if batch else [arr]
    if len(ms) == 1 and n > 1:
        ms = ms * n  # one mask for every image of the batch
    if len(ms) != n:
        raise ValueError(f"got {len(ms)} masks for {n} images; pass one mask per image (or one for all)")
    return ms


# ----------------------------------------------------------------------------- planning
def plan_crops(
    images_or_sizes,
    masks,
    *,
    zoom: float = 1.5,
    size: int = 512,
    min_side: int = 64,
    overflow: str = "fit",
    dilate="auto",
    threshold: float = 0.5,
    min_area: int = 0,
    max_regions: int | None = 8,
    order: str = "area",
    merge_overlap: float | None = None,
    mask_others: bool = True,
    feather="auto",
    placeholder_if_empty: bool = False,
) -> CropPlan:
    """Make the crop plan for a batch of images and their artifact masks (or ComponentSets).

    ``images_or_sizes``: images ([B,H,W,C], list of HxWxC, numpy or torch) or [(H, W), ...].
    ``masks``: one per image (any size, bool/uint8/float), one for all, or precomputed
    ``ComponentSet``s. ``mask_others``: each crop's inpaint mask also covers other kept
    components inside its square, so the inpainter never copies a neighbouring artifact.
    ``feather``: "auto" (~side/16) or pixels. With ``placeholder_if_empty`` a batch with no
    components yields one crop flagged ``skip`` (hosts that cannot pass an empty batch).
    """
    if zoom < 1.0:
        raise ValueError(f"zoom must be >= 1 (the crop has to contain the component), got {zoom}")
    size = _check_size(size)
    sizes = _sizes_of(images_or_sizes)
    mask_list = _mask_list(masks, len(sizes))
    options = dict(
        zoom=zoom, size=size, min_side=min_side, overflow=overflow, dilate=dilate, threshold=threshold,
        min_area=min_area, max_regions=max_regions, order=order, merge_overlap=merge_overlap,
        mask_others=mask_others, feather=feather,
    )
    crops: list[CropSpec] = []
    infos: list[dict] = []
    for idx, ((h, w), m) in enumerate(zip(sizes, mask_list)):
        if isinstance(m, ComponentSet):
            cs = m
            if cs.label_map.shape != (h, w):
                raise ValueError(f"image {idx}: ComponentSet is {cs.label_map.shape}, image is {(h, w)}")
        else:
            cs = find_components(
                m, (h, w), threshold=threshold, dilate=dilate, min_area=min_area, max_regions=max_regions,
                order=order, merge_overlap=merge_overlap, zoom=zoom, min_side=min_side,
            )
        infos.append({"n_found": cs.n_found, "n_kept": len(cs.components), "n_dropped": cs.n_dropped,
                      "dilate": list(cs.dilate_radius)})
        all_kept = cs.region_mask(None) if mask_others and len(cs.components) > 1 else None
        for comp in cs.components:
            box, pad, side = crop_geometry(comp.bbox, h, w, zoom, min_side, overflow)
            own = _pad_reflect(cs.region_mask(comp, box), pad)
            if all_kept is not None:
                x0, y0, x1, y1 = box
                inp = _pad_reflect(all_kept[y0:y1, x0:x1], pad) | own
            else:
                inp = own.copy()
            fe = default_feather(side) if feather in (None, "auto") else max(0, int(feather))
            bx0, by0, bx1, by1 = comp.bbox
            crops.append(CropSpec(
                image_index=idx, box=box, padding=pad, side=side, size=size, scale=size / side,
                component_bbox=list(comp.bbox), area=comp.area, score=comp.score, feather=fe,
                rule_side=zoom_side(max(bx1 - bx0, by1 - by0), zoom, min_side), mask=own, inpaint_mask=inp,
            ))
    if placeholder_if_empty and not crops and sizes:
        h, w = sizes[0]
        side = max(1, min(h, w))
        empty = np.zeros((side, side), bool)
        crops.append(CropSpec(0, [0, 0, side, side], [0, 0, 0, 0], side, size, size / side,
                              [0, 0, 0, 0], skip=True, mask=empty, inpaint_mask=empty.copy()))
    return CropPlan([list(s) for s in sizes], size, crops, options, infos)


# ----------------------------------------------------------------------------- extraction
def resize_square(arr: np.ndarray, side: int) -> np.ndarray:
    """Resize a float square (HxW or HxWxC) to side x side: area averaging when shrinking (antialias)."""
    if arr.shape[0] == side and arr.shape[1] == side:
        return arr
    interp = cv2.INTER_AREA if side < arr.shape[0] else cv2.INTER_CUBIC
    out = cv2.resize(arr, (side, side), interpolation=interp)
    if arr.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return np.clip(out, 0.0, 1.0) if interp == cv2.INTER_CUBIC else out


def working_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Bool square mask -> float32 0/1 at the working size; conservative (covers every masked pixel)."""
    f = mask.astype(np.float32)
    if f.shape[0] == size:
        return f
    # Any working pixel that overlaps a masked pixel is masked: resizing the patch back then
    # never mixes unmasked (possibly artifact-coloured) working pixels into a masked pixel.
    interp = cv2.INTER_AREA if size < f.shape[0] else cv2.INTER_LINEAR
    return (cv2.resize(f, (size, size), interpolation=interp) > 1e-6).astype(np.float32)


def extract_crops(images, plan: CropPlan) -> tuple[np.ndarray, np.ndarray]:
    """Cut, reflect-pad and resize every crop: -> (crops float32 [N,S,S,3] in 0..1, masks float32 [N,S,S]).

    Crops are cut before resizing, so memory stays proportional to the crops, not the images.
    """
    ims = as_image_list(images)
    if len(ims) != len(plan.image_sizes):
        raise ValueError(f"plan is for {len(plan.image_sizes)} images, got {len(ims)}")
    s = plan.size
    out = np.zeros((len(plan.crops), s, s, 3), np.float32)
    masks = np.zeros((len(plan.crops), s, s), np.float32)
    for i, c in enumerate(plan.crops):
        im = ims[c.image_index]
        if list(im.shape[:2]) != list(plan.image_sizes[c.image_index]):
            raise ValueError(
                f"image {c.image_index} is {im.shape[:2]}, the plan was made for {plan.image_sizes[c.image_index]}"
            )
        x0, y0, x1, y1 = c.box
        sq = _pad_reflect(to_float01(im[y0:y1, x0:x1]), c.padding)
        out[i] = resize_square(sq, s)
        m = c.inpaint_mask if c.inpaint_mask is not None else c.mask
        if m is not None and not c.skip:
            masks[i] = working_mask(m, s)
    return out, masks
