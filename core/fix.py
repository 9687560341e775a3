"""Zoom-in fix: detect -> components -> crops -> inpaint -> composite, optionally PAR-guarded, in rounds.

Host-free. ``fix_image`` / ``fix_images`` drive any detector with the contract's interface
(``detect(img)`` -> object with ``.prob`` HxW float at the original size and ``.par``) and any
``Inpainter``. Hosts that run their own sampler use ``plan_crops`` / ``extract_crops`` /
``composite`` directly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import options as _schema
from .components import to_float_mask
from .composite import composite
from .crop import CropPlan, as_image_list, extract_crops, plan_crops
from .imageio import to_numpy, to_uint8
from .inpainters import Inpainter, make_inpainter
from .par import par as par_of_mask


def _d(name: str):
    """The schema's default (core/options.py is the one definition), as the core spells it."""
    o = _schema.get(name, "cli") if name in _schema.names("cli") else _schema.get(name)
    return o.default


@dataclass
class FixOptions:
    """Core fix options. Defaults come from the option schema; ``from_schema`` maps host values
    (``-1``/``0`` = auto sentinels) onto these fields."""

    zoom: float = _d("zoom")  # crop side = zoom * longest component side
    size: int = 512  # working size of every crop (multiple of 8; 1024 for SDXL); schema's 0 = auto -> 512
    min_side: int = _d("min_side")  # smallest crop side in original pixels
    overflow: str = _d("overflow")  # crop larger than the image: "fit" (shrink) or "pad" (reflect-pad)
    dilate: int | str = "auto"  # "auto" = official 5x5 kernel x5 at 512 scale; pixels; 0 = off
    threshold: float = _d("threshold")  # probability threshold for the artifact mask
    min_area: int = _d("min_area")  # drop components with fewer artifact pixels (before dilation)
    max_regions: int | None = _d("max_regions")  # keep at most this many components per image per round
    order: str = _d("order")  # "area" (largest first) or "score" (PAR contribution)
    merge_overlap: float | None = None  # merge components whose crops overlap this much
    feather: int | str = "auto"  # blend fade in original pixels; "auto" ~ crop side / 16
    color_match: bool = _d("color_match")  # match the patch's Lab mean/std to the ring around the mask
    guard: bool = _d("par_guard")  # re-detect and keep a crop only if its artifact ratio went down
    rounds: int = _d("rounds")  # repeat detect -> fix (needs a detector beyond round 1)

    @classmethod
    def from_schema(cls, values, *, size: int | None = None) -> FixOptions:
        """Host values by schema name (``core/options.py``: ``-1``/``0`` = auto sentinels) -> FixOptions.

        ``size`` resolves ``size = 0`` (auto): the host passes what auto means to it; 512 if it passes nothing.
        """
        v = dict(values)
        kw: dict = {}
        if "size" in v:
            kw["size"] = int(v["size"]) or int(size or 512)
        elif size:
            kw["size"] = int(size)
        if "dilation" in v:
            kw["dilate"] = "auto" if int(v["dilation"]) < 0 else int(v["dilation"])
        if "feather" in v:
            kw["feather"] = "auto" if int(v["feather"]) < 0 else int(v["feather"])
        if "merge_overlap" in v:
            kw["merge_overlap"] = float(v["merge_overlap"]) or None
        if "par_guard" in v:
            kw["guard"] = bool(v["par_guard"])
        if "max_regions" in v:
            kw["max_regions"] = int(v["max_regions"]) or None  # schema: 0 = all
        for k in ("zoom", "min_side", "overflow", "threshold", "min_area", "order", "color_match", "rounds"):
            if k in v:
                kw[k] = v[k]
        return cls(**kw)

    def plan_kwargs(self) -> dict:
        return dict(
            zoom=self.zoom, size=self.size, min_side=self.min_side, overflow=self.overflow,
            dilate=self.dilate, threshold=self.threshold, min_area=self.min_area,
            max_regions=self.max_regions, order=self.order, merge_overlap=self.merge_overlap,
            feather=self.feather,
        )

    @classmethod
    def from_any(cls, options=None, **overrides) -> FixOptions:
        base = options if isinstance(options, FixOptions) else cls(**(options or {}))
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown fix option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**{**asdict(base), **overrides})


@dataclass
class FixResult:
    image: np.ndarray  # fixed image, same dtype/shape as the input
    report: dict  # JSON-able: par_before/par_after, status, crops (original-pixel boxes)
    mask: np.ndarray  # bool HxW artifact mask the first round worked from
    changed: np.ndarray  # float32 HxW, max blend alpha applied (0 = pixel untouched)
    plans: list[CropPlan] = field(default_factory=list)  # one per round run


def _is_detector(x) -> bool:
    return hasattr(x, "detect") and callable(x.detect)


def _check_detector(x, arg: str):
    # The core never loads models (core/ does not import models/): hosts and the CLI resolve them.
    if _is_detector(x):
        return x
    if x is None:
        raise TypeError(f"{arg}: no detector and no masks; pass masks, or a detector loaded with "
                        "comfyui_pal.models.load_detector() (the bundled default) or load_detector(name_or_path)")
    if isinstance(x, (str, os.PathLike)):
        raise TypeError(f"{arg}={str(x)!r} is a model name or path, not a detector; load it first: "
                        f"comfyui_pal.models.load_detector({str(x)!r})")
    raise TypeError(f"{arg}: a {type(x).__name__} has no .detect(); pass a detector or masks")


def _detect(detector, images: list[np.ndarray]) -> list:
    return [detector.detect(to_uint8(im)) for im in images]


def _artifact_ratio(prob: np.ndarray, box, threshold: float) -> float:
    x0, y0, x1, y1 = box
    sub = prob[y0:y1, x0:x1]
    return float((sub > threshold).mean()) if sub.size else 0.0


def fix_images(images, detector_or_masks=None, inpainter: Inpainter | str = "opencv", options=None,
               *, detector=None, **overrides) -> list[FixResult]:
    """Fix a batch; all crops of all images go to the inpainter together, once per round.

    ``detector_or_masks``: a loaded detector (has ``.detect``, e.g. from
    ``comfyui_pal.models.load_detector``), or masks (one per image, or one for all; any size;
    bool/uint8/float). With masks, an optional ``detector=`` measures PAR, enables ``guard`` and
    drives rounds after the first. Names and paths are not loaded here: the caller resolves them.
    """
    opts = FixOptions.from_any(options, **overrides)
    ims = as_image_list(images)
    inp = make_inpainter(inpainter)
    if detector_or_masks is None and detector is not None:
        detector_or_masks, detector = detector, None
    if _is_detector(detector_or_masks) or detector_or_masks is None or isinstance(
        detector_or_masks, (str, os.PathLike)
    ):
        det = _check_detector(detector_or_masks, "detector_or_masks")
        user_masks = None
    else:
        det = _check_detector(detector, "detector") if detector is not None else None
        ms = detector_or_masks
        if hasattr(ms, "detach") or isinstance(ms, np.ndarray):
            ms = to_numpy(ms)
            batch = ms.ndim == 4 or (
                ms.ndim == 3 and ms.shape[0] == len(ims) and (len(ims) > 1 or ms.shape[-1] not in (1, 3, 4))
            )
            ms = list(ms) if batch else [ms]
        elif not isinstance(ms, (list, tuple)):
            ms = [np.asarray(ms)]  # e.g. a PIL image
        ms = list(ms) * len(ims) if len(ms) == 1 else list(ms)
        if len(ms) != len(ims):
            raise ValueError(f"got {len(ms)} masks for {len(ims)} images")
        user_masks = [to_float_mask(m, im.shape[:2]) for m, im in zip(ms, ims)]
    if opts.guard and det is None:
        raise ValueError("guard=True needs a detector to re-measure the artifacts; pass detector=...")
    if opts.rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {opts.rounds}")

    n = len(ims)
    cur = [im.copy() for im in ims]
    dets = _detect(det, cur) if det is not None else None
    first_masks = (
        [m > opts.threshold for m in user_masks] if user_masks is not None
        else [np.asarray(d.prob) > opts.threshold for d in dets]
    )
    par_before = [float(d.par) for d in dets] if dets is not None else [par_of_mask(m) for m in first_masks]
    changed = [np.zeros(im.shape[:2], np.float32) for im in ims]
    crops_report: list[list[dict]] = [[] for _ in range(n)]
    infos: list[list[dict]] = [[] for _ in range(n)]
    plans: list[CropPlan] = []
    max_rounds = opts.rounds if det is not None else 1  # without a detector there is nothing to re-find
    for rnd in range(max_rounds):
        if rnd == 0 and user_masks is not None:
            masks = user_masks
        else:
            masks = [np.asarray(d.prob, dtype=np.float32) for d in dets]
        plan = plan_crops(cur, masks, **opts.plan_kwargs())
        for i, info in enumerate(plan.images):
            infos[i].append({"round": rnd, **info})
        if plan.n_active == 0:
            break
        plans.append(plan)
        crops, cmasks = extract_crops(cur, plan)
        patches = inp.inpaint(crops, cmasks)
        cand, alphas = composite(cur, plan, patches, color_match=opts.color_match, return_alpha=True)
        kept = [True] * len(plan.crops)
        ratios: list[tuple[float, float] | None] = [None] * len(plan.crops)
        if opts.guard:
            new_dets = _detect(det, cand)
            for ci, c in enumerate(plan.crops):
                b = _artifact_ratio(np.asarray(dets[c.image_index].prob), c.box, opts.threshold)
                a = _artifact_ratio(np.asarray(new_dets[c.image_index].prob), c.box, opts.threshold)
                ratios[ci] = (b, a)
                kept[ci] = a < b
            if all(kept):
                cur, dets = cand, new_dets
            else:
                include = [ci for ci, k in enumerate(kept) if k]
                cand2, alphas = composite(cur, plan, patches, color_match=opts.color_match,
                                          include=include, return_alpha=True)
                redo = []
                for i in range(n):
                    mine = [ci for ci, c in enumerate(plan.crops) if c.image_index == i]
                    if all(kept[ci] for ci in mine):
                        cur[i], dets[i] = cand[i], new_dets[i]
                    elif any(kept[ci] for ci in mine):
                        cur[i] = cand2[i]
                        redo.append(i)
                    # none kept: image and detection stay as they were
                for i, d in zip(redo, _detect(det, [cur[i] for i in redo])):
                    dets[i] = d
        else:
            cur = cand
            if det is not None:
                dets = _detect(det, cur)
        for i in range(n):
            np.maximum(changed[i], alphas[i], out=changed[i])
        for ci, c in enumerate(plan.crops):
            entry = {
                "round": rnd, "box": list(c.box), "component_bbox": list(c.component_bbox),
                "padding": list(c.padding), "side": c.side, "rule_side": c.rule_side, "capped": c.capped,
                "scale": round(c.scale, 6),
                "area": c.area, "score": round(c.score, 8), "feather": c.feather, "kept": kept[ci],
            }
            if ratios[ci] is not None:
                entry["artifact_ratio_before"] = round(ratios[ci][0], 6)
                entry["artifact_ratio_after"] = round(ratios[ci][1], 6)
            crops_report[c.image_index].append(entry)
        if not any(kept):
            break  # the guard rejected everything; another round would retry the same crops

    results = []
    for i in range(n):
        h, w = ims[i].shape[:2]
        crs = crops_report[i]
        n_kept = sum(c["kept"] for c in crs)
        status = "no_artifacts" if not crs else ("fixed" if n_kept else "rejected")
        report = {
            "width": w, "height": h, "status": status,
            "par_before": round(par_before[i], 6),
            "par_after": round(float(dets[i].par), 6) if dets is not None else None,
            "par_source": "detector" if det is not None else "mask",
            "inpainter": getattr(inp, "name", type(inp).__name__),
            "rounds_run": len({c["round"] for c in crs}),
            "n_crops": len(crs), "n_kept": n_kept,
            "components": infos[i],
            "crops": crs,
            "options": asdict(opts),
        }
        results.append(FixResult(cur[i], report, first_masks[i], changed[i], plans))
    return results


def fix_image(image, detector_or_mask=None, inpainter: Inpainter | str = "opencv", options=None,
              *, detector=None, **overrides) -> FixResult:
    """Fix one image (HxWx3 uint8/float array, torch tensor, PIL image or path). See ``fix_images``."""
    if isinstance(image, (str, os.PathLike)):
        from .imageio import load_image

        image = load_image(image)
    elif hasattr(image, "convert") and not isinstance(image, np.ndarray):  # PIL
        from .imageio import to_rgb_uint8

        image = to_rgb_uint8(image)
    dm = detector_or_mask
    if not (dm is None or _is_detector(dm) or isinstance(dm, (str, os.PathLike))):
        dm = [dm]
    return fix_images([image], dm, inpainter, options, detector=detector, **overrides)[0]
