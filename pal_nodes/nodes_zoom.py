"""PALZoomCrop, PALComposite, PALAutoFix, PALToSEGS: thin adapters over core/crop.py, core/composite.py,
core/fix.py. Every option input is generated from the one schema, core/options.py.

Zero components: PALZoomCrop emits ONE placeholder crop (a downscaled corner of image 0 with an
all-zero mask) flagged `skip` in the plan. Samplers/VAEs downstream get a normal 1-image batch
(an empty batch would crash them; an ExecutionBlocker would also block PALComposite and the
Save node), and PALComposite ignores skipped crops, so the images come through unchanged.

New inputs are appended at the end of each node's inputs: saved UI workflows store widget values by
position, so older workflows keep loading with the same values.
"""

from __future__ import annotations

import logging

from ..core import options as O
from . import host

log = logging.getLogger("comfyui_pal")
CATEGORY = "PAL/zoom"

# Region/crop options shared by the zoom nodes, in widget order (schema names).
CROP_OPTIONS = ("zoom", "size", "min_area", "max_regions", "dilation", "feather")
EXTRA_REGION_OPTIONS = ("order", "merge_overlap")
AUTO_SIZE = 512  # what size 0 (auto) means without a diffusion model (Zoom Crop, PAL to SEGS)


class PalStitch:
    """What flows through PAL_STITCH links: the crop plan (core.crop.CropPlan) plus notes."""

    def __init__(self, plan, notes=None):
        self.plan = plan
        self.notes = list(notes or [])

    @property
    def placeholder(self) -> bool:
        return self.plan.n_active == 0

    def __repr__(self):
        p = self.plan
        return (f"PalStitch({len(p.image_sizes)} images, {len(p.crops)} crops, {p.n_active} active, "
                f"size {p.size})")


def resolve_size(size: int, height: int, width: int, auto: int, notes: list | None = None) -> int:
    """Schema size (0 = auto) -> the working size. Auto never exceeds the image; an explicit size that
    does is refused (tensors.check_working_size)."""
    from . import tensors as T

    size = int(size)
    if size:
        T.check_working_size(size, height, width)
        return size
    cap = max(8, (max(height, width) // 8) * 8)
    if cap < auto and notes is not None:
        notes.append(f"size auto: {cap} (the image is smaller than {auto})")
    return min(auto, cap)


def plan_options(values: dict, size: int):
    """Schema values -> core FixOptions (the one mapping of the -1/0 'auto' sentinels, FixOptions.from_schema)."""
    from ..core.fix import FixOptions

    return FixOptions.from_schema({k: v for k, v in values.items() if k != "size"}, size=size)


def make_plan(image, mask=None, zoom=1.5, size=0, min_area=16, max_regions=8, dilation=-1, feather=-1,
              threshold=0.5, segs=None, order="area", merge_overlap=0.0):
    """IMAGE + MASK (or SEGS) -> (crops [N,S,S,3], masks [N,S,S], PalStitch); never an empty batch."""
    import torch

    from ..core.crop import extract_crops, plan_crops
    from . import tensors as T

    img = T.check_pixels(image)
    b, h, w = img.shape[:3]
    notes: list[str] = []
    vals = O.validate(dict(zoom=zoom, min_area=min_area, max_regions=max_regions, dilation=dilation,
                           feather=feather, threshold=threshold, order=order, merge_overlap=merge_overlap),
                      "comfy", fill=False)
    opts = plan_options(vals, resolve_size(size, h, w, AUTO_SIZE, notes))
    if segs is not None:
        from .segs import segs_to_components

        cs = segs_to_components(segs, h, w, min_area=opts.min_area, max_regions=opts.max_regions or 0)
        masks = [cs] * b
        notes.append(f"{len(cs.components)} regions from SEGS (their masks as given; dilation not applied)")
        if mask is not None:
            notes.append("mask ignored: segs given")
    elif mask is not None:
        masks = list(T.check_masks(mask, b, h, w, notes=notes).cpu().numpy())
    else:
        raise ValueError("PAL Zoom Crop: connect a mask (e.g. PAL Detect's mask) or segs (a SEGS detector)")
    plan = plan_crops([(h, w)] * b, masks, **opts.plan_kwargs(), placeholder_if_empty=True)
    if plan.n_active == 0:
        notes.append("no artifact regions: one placeholder crop (flagged skip) passes through")
    crops, cmasks = extract_crops(img.detach().cpu().numpy(), plan)
    dev = host.intermediate_device()
    return torch.from_numpy(crops).to(dev), torch.from_numpy(cmasks).to(dev), PalStitch(plan, notes)


def _summary(stitch: PalStitch) -> str:
    p = stitch.plan
    per = [sum(1 for c in p.crops if c.image_index == i and not c.skip) for i in range(len(p.image_sizes))]
    lines = [f"{p.n_active} crops at {p.size}x{p.size} from {len(p.image_sizes)} image(s): {per}"]
    return "\n".join(lines + stitch.notes)


class PALZoomCrop:
    DESCRIPTION = ("Splits the artifact mask (or any detector's SEGS) into regions and cuts one square crop per "
                   "region (zoomed in, resized to the working size) from every image of the batch, for any "
                   "inpainting chain (VAEEncode + SetLatentNoiseMask, or InpaintModelConditioning for "
                   "inpainting checkpoints, + KSampler + VAEDecode). With no regions it emits one placeholder "
                   "crop that PAL Composite ignores.")
    CATEGORY = CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "MASK", "PAL_STITCH")
    RETURN_NAMES = ("crops", "crop_masks", "stitch")
    OUTPUT_TOOLTIPS = (
        "All crops of all images as one batch [N,size,size,3].",
        "The inpaint mask of each crop [N,size,size] (its region plus other regions inside it).",
        "The crop plan; give it to PAL Composite with the inpainted crops.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to fix (a batch is fine)."}),
                **O.comfy_inputs(CROP_OPTIONS),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Artifact mask, e.g. PAL Detect's mask: one per image or one "
                                             "for all; resized if its size differs. Needed unless segs are given."}),
                "threshold": O.comfy_input("threshold", tooltip="Mask values above this are artifact (for soft "
                                                                "masks such as the heatmap)."),
                "segs": ("SEGS", {"tooltip": "Regions from any SEGS detector (Impact-Pack's, PAL to SEGS) instead "
                                             "of a mask: one crop per SEG, its mask used as given."}),
                **O.comfy_inputs(EXTRA_REGION_OPTIONS),
            },
        }

    def crop(self, image, mask=None, zoom=1.5, size=0, min_area=16, max_regions=8, dilation=-1, feather=-1,
             threshold=0.5, segs=None, order="area", merge_overlap=0.0):
        crops, cmasks, stitch = make_plan(image, mask, zoom, size, min_area, max_regions, dilation, feather,
                                          threshold, segs, order, merge_overlap)
        return {"ui": {"text": [_summary(stitch)]}, "result": (crops, cmasks, stitch)}


def composite_images(image, inpainted, stitch: PalStitch, feather=-1, color_match=False, include=None):
    """Originals + inpainted crops + plan -> (IMAGE [B,H,W,3], blend MASK [B,H,W]); validates first."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..core.composite import composite
    from . import tensors as T

    if not isinstance(stitch, PalStitch):
        raise TypeError(f"PAL Composite: stitch must come from PAL Zoom Crop, got {type(stitch).__name__}")
    plan = stitch.plan
    img = T.check_pixels(image, "image")
    crops = T.check_image(inpainted, "inpainted")
    b, h, w = img.shape[:3]
    if b != len(plan.image_sizes):
        raise ValueError(f"PAL Composite: {b} images but the stitch plan was made for {len(plan.image_sizes)}; "
                         "connect the same images that went into PAL Zoom Crop")
    for i, (ph, pw) in enumerate(plan.image_sizes):
        if (ph, pw) != (h, w):
            raise ValueError(f"PAL Composite: image {i} is {w}x{h} but the plan was made for {pw}x{ph}; "
                             "connect the same images that went into PAL Zoom Crop")
    n = len(plan.crops)
    if crops.shape[0] != n:
        raise ValueError(
            f"PAL Composite: inpainted has {crops.shape[0]} crops but PAL Zoom Crop made {n} "
            f"({plan.n_active} regions{'; 1 placeholder' if stitch.placeholder else ''}); pass the whole crop "
            "batch from PAL Zoom Crop through the inpainting chain without adding or dropping images "
            "(no batch-size change in the sampler / latent nodes)")
    ch, cw = crops.shape[1:3]
    if (ch, cw) != (plan.size, plan.size):
        if ch != cw:
            raise ValueError(f"PAL Composite: inpainted crops are {cw}x{ch} but PAL Zoom Crop made square "
                             f"{plan.size}x{plan.size} crops; keep the crops square between the two nodes "
                             "(no crop/pad node in between; a square upscale is fine)")
        log.info("PAL Composite: resizing inpainted crops %dx%d -> %dx%d", cw, ch, plan.size, plan.size)
        crops = F.interpolate(crops.movedim(-1, 1), size=(plan.size, plan.size), mode="bicubic",
                              align_corners=False, antialias=True).movedim(1, -1).clamp(0, 1)
    if not bool(torch.isfinite(crops).all()):
        raise ValueError("PAL Composite: inpainted contains NaN or infinite pixel values (often a VAE decode "
                         "that overflowed in fp16); decode in fp32 (--fp32-vae) or fix the sampler chain")
    fe = None if int(feather) < 0 else int(feather)
    outs, alphas = composite(img.detach().cpu().numpy(), plan, crops.detach().cpu().numpy(), feather=fe,
                             color_match=bool(color_match), include=include, return_alpha=True)
    dev = host.intermediate_device()
    return (torch.from_numpy(np.stack(outs)).to(dev), torch.from_numpy(np.stack(alphas)).to(dev))


def _preview_ui(overlay_u8) -> list:
    from .previews import MAX_NODE_PREVIEWS

    return host.save_previews(list(overlay_u8[:MAX_NODE_PREVIEWS]))


class PALComposite:
    DESCRIPTION = ("Pastes inpainted crops back into the original images using the plan from PAL Zoom Crop: "
                   "feathered blend, optional colour matching; pixels outside the blend stay bit-identical. "
                   "Also returns a before|after overlay with the crop boxes.")
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    OUTPUT_NODE = False
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("image", "blend_mask", "overlay")
    OUTPUT_TOOLTIPS = ("The fixed images [B,H,W,3].", "Where the crops were blended in (alpha 0..1) [B,H,W].",
                       "Per image: before (artifact regions magenta, crop boxes green) | after; at most "
                       "1024 px wide.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The original images that went into PAL Zoom Crop."}),
                "inpainted": ("IMAGE", {"tooltip": "The crops after inpainting (same count and order)."}),
                "stitch": ("PAL_STITCH", {"tooltip": "The plan from PAL Zoom Crop."}),
                "feather": O.comfy_input("feather", tooltip="Blend fade width in image pixels; -1 = the plan's "
                                                            "(~ crop side / 16)."),
                "color_match": O.comfy_input("color_match"),
            },
            "optional": {"preview": O.comfy_input("preview")},
        }

    def paste(self, image, inpainted, stitch, feather=-1, color_match=False, preview=True):
        import torch

        from . import previews as P

        out, alpha = composite_images(image, inpainted, stitch, feather, color_match)
        plan = stitch.plan
        crops = [[{"box": c.box, "kept": True} for _, c in plan.crops_for(i) if not c.skip]
                 for i in range(len(plan.image_sizes))]
        masks = [P.plan_mask(plan, i) for i in range(len(plan.image_sizes))]
        ov = P.overlays(image, out, masks, crops)
        ui = {"images": _preview_ui(ov) if preview else []}
        overlay = torch.from_numpy(ov).float().div(255.0).to(host.intermediate_device())
        return {"ui": ui, "result": (out, alpha, overlay)}


class PALAutoFix:
    DESCRIPTION = ("Detect -> zoom crops -> your model's sampler inpaints every crop -> composite, in one "
                   "node (like FaceDetailer). inpaint_mode auto uses inpaint-model conditioning for inpainting "
                   "checkpoints and a noise mask on the real crop otherwise, so any checkpoint works at any "
                   "denoise. With par_guard a crop is kept only if its artifacts went down; rounds repeats on "
                   "what is left. Shows the before/after overlay (kept crops green, rejected red).")
    CATEGORY = CATEGORY
    FUNCTION = "fix"
    OUTPUT_NODE = True  # the preview and PAR show even when only the image output is used
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT", "FLOAT", "STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "mask", "par_before", "par_after", "report", "crops_preview", "overlay")
    OUTPUT_IS_LIST = (False, False, True, True, False, False, False)
    OUTPUT_TOOLTIPS = (
        "The fixed images [B,H,W,3].",
        "The artifact mask detected before fixing [B,H,W] (binary).",
        "PAR per image before fixing (list).",
        "PAR per image after the last round (list).",
        "What happened per round and image.",
        "Every crop before | after (framed green = kept, red = rejected by the PAR guard); at most 32 crops, "
        "256 px per side.",
        "Per image: before (artifacts magenta, crop boxes) | after; at most 1024 px wide.",
    )
    SAMPLER_OPTIONS = ("seed", "steps", "cfg")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to fix."}),
                "pal_model": ("PAL_MODEL", {"tooltip": "A PAL detector from PAL Model Loader."}),
                "model": ("MODEL", {"tooltip": "The diffusion model that inpaints the crops."}),
                "vae": ("VAE", {"tooltip": "The VAE of that model."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt conditioning used for every crop."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning used for every crop."}),
                "seed": O.comfy_input("seed", control_after_generate=True),
                "steps": O.comfy_input("steps"),
                "cfg": O.comfy_input("cfg", round=0.01),
                "sampler_name": (host.sampler_names(), {"tooltip": "Sampling algorithm."}),
                "scheduler": (host.scheduler_names(), {"tooltip": "Noise schedule."}),
                "denoise": O.comfy_input("denoise"),
                "threshold": O.comfy_input("threshold"),
                **O.comfy_inputs(CROP_OPTIONS),
                "rounds": O.comfy_input("rounds"),
                "par_guard": O.comfy_input("par_guard"),
            },
            "optional": {
                "crop_batch": O.comfy_input("crop_batch"),
                "grow_mask_by": O.comfy_input("grow_mask_by"),
                "color_match": O.comfy_input("color_match"),
                "inpaint_mode": O.comfy_input("inpaint_mode"),
                "noise_mask_feather": O.comfy_input("noise_mask_feather"),
                **O.comfy_inputs(EXTRA_REGION_OPTIONS),
                "preview": O.comfy_input("preview"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def fix(self, image, pal_model, model, vae, positive, negative, seed=0, steps=20, cfg=7.0,
            sampler_name="euler", scheduler="normal", denoise=0.5, threshold=0.5, zoom=1.5, size=0,
            min_area=16, max_regions=8, dilation=-1, feather=-1, rounds=1, par_guard=False, crop_batch=4,
            grow_mask_by=6, color_match=False, inpaint_mode="auto", noise_mask_feather=0, order="area",
            merge_overlap=0.0, preview=True, unique_id=None, sampler=None):
        """`sampler(crops, masks, seed_offset)` overrides the host sampler (used by tests/scripts).

        The loop itself is core.fix.fix_images (the CLI's); this node supplies the detector and
        wraps the host's VAE + KSampler (host.ComfySampler, conditioning by inpaint_mode) as its inpainter.
        Seeds: round r, crop chunk k (crop_batch crops each) samples with seed + 1000 * r + k.
        """
        import numpy as np
        import torch

        from ..core.fix import fix_images
        from ..core.inpainters import CallableInpainter
        from . import previews as P
        from . import tensors as T

        img = T.check_pixels(image)
        b, h, w = img.shape[:3]
        vals = O.validate(dict(threshold=threshold, zoom=zoom, min_area=min_area, max_regions=max_regions,
                               dilation=dilation, feather=feather, rounds=rounds, par_guard=par_guard,
                               color_match=color_match, order=order, merge_overlap=merge_overlap,
                               inpaint_mode=inpaint_mode, denoise=denoise, crop_batch=crop_batch),
                          "comfy", fill=False)
        notes: list[str] = []
        work = resolve_size(size, h, w, host.native_size(model) if model is not None else AUTO_SIZE, notes)
        opts = plan_options({k: v for k, v in vals.items() if k not in ("inpaint_mode", "denoise", "crop_batch")},
                            work)
        chunk = int(vals["crop_batch"])
        if sampler is None:
            sampler = host.ComfySampler(model, vae, positive, negative, int(seed), int(steps), float(cfg),
                                        sampler_name, scheduler, float(vals["denoise"]), int(grow_mask_by),
                                        mode=vals["inpaint_mode"], noise_mask_feather=int(noise_mask_feather))
        notes += list(getattr(sampler, "notes", []))
        rounds_seen: list[tuple[np.ndarray, np.ndarray]] = []  # (crops, inpainted) per round, for previews
        pbar = host.progress_bar(int(vals["rounds"]), unique_id)
        dev = host.intermediate_device()

        def inpaint(crops, masks):
            # crops: float32 [N,S,S,3] numpy; sampled in chunks (memory, interruption points).
            c, m = torch.from_numpy(crops).to(dev), torch.from_numpy(masks).to(dev)
            out = torch.empty_like(c)
            r = len(rounds_seen)
            for k, s in enumerate(range(0, c.shape[0], chunk)):
                host.check_interrupt()
                o = sampler(c[s:s + chunk], m[s:s + chunk], seed_offset=1000 * r + k)[..., :3].to(dev, torch.float32)
                if tuple(o.shape[1:3]) != tuple(c.shape[1:3]):  # a VAE rounded the size down
                    o = torch.nn.functional.interpolate(o.movedim(-1, 1), size=c.shape[1:3], mode="bicubic",
                                                        align_corners=False).movedim(1, -1)
                if not bool(torch.isfinite(o).all()):
                    raise ValueError("PAL Auto Fix: the sampler returned NaN/inf pixels (often an fp16 VAE "
                                     "overflow); run the VAE in fp32 (--fp32-vae) or lower cfg")
                out[s:s + o.shape[0]] = o.clamp(0, 1)
            rounds_seen.append((crops, out.cpu().numpy()))
            pbar.update(1)
            return rounds_seen[-1][1]

        with pal_model.session():
            results = fix_images(
                list(img.detach().cpu().numpy()), _FixDetector(pal_model, opts.threshold),
                CallableInpainter(inpaint, "comfyui-sampler"), opts,
            )
        fixed = np.stack([r.image for r in results]).astype(np.float32)
        out = torch.from_numpy(fixed).to(dev)
        mask = torch.from_numpy(np.stack([r.mask for r in results]).astype(np.float32)).to(dev)
        before = [float(r.report["par_before"]) for r in results]
        after = [float(r.report["par_after"]) for r in results]
        lines = [f"image {i}: {r.report['status']}, PAR {pb:.4f} -> {pa:.4f}, crops kept "
                 f"{r.report['n_kept']}/{r.report['n_crops']}, rounds {r.report['rounds_run']}"
                 for i, (r, pb, pa) in enumerate(zip(results, before, after))]
        lines.append(f"working size {work}" + (f", inpaint mode {sampler.mode}" if hasattr(sampler, "mode") else ""))
        text = "\n".join(lines + notes)
        # previews: crops of every round with the guard's verdict, and the whole-image overlay
        plans = results[0].plans if results else []
        kept_all, b_all, a_all = [], [], []
        for r_idx, ((cr, inp), plan) in enumerate(zip(rounds_seen, plans)):
            verdict = {i: iter([c["kept"] for c in res.report["crops"] if c["round"] == r_idx])
                       for i, res in enumerate(results)}
            kept_all += [next(verdict[c.image_index], True) for c in plan.crops]
            b_all.append(cr)
            a_all.append(inp)
        if b_all:
            strips, left_out = P.crop_strips(np.concatenate(b_all), np.concatenate(a_all), kept_all)
            if left_out:
                text += f"\npreview shows the first {len(strips)} crops ({left_out} more not shown)"
        else:
            strips, _ = P.crop_strips(np.zeros((0, 8, 8, 3), np.float32), np.zeros((0, 8, 8, 3), np.float32))
        ov = P.overlays(img, fixed, [r.mask for r in results], [r.report["crops"] for r in results])
        ui = {"pal_par": after, "text": [text], "images": _preview_ui(ov) if preview else []}
        to_t = lambda a: torch.from_numpy(a).float().div(255.0).to(dev)  # noqa: E731
        return {"ui": ui, "result": (out, mask, before, after, text, to_t(strips), to_t(ov))}


class _FixDetector:
    """core.fix's detector interface (detect(u8) -> .prob/.par) over a PalModel (ComfyUI devices)."""

    class _Det:
        def __init__(self, prob, par):
            self.prob, self.par = prob, par

    def __init__(self, pal_model, threshold):
        self.pm, self.threshold = pal_model, float(threshold)

    def detect(self, image_u8):
        import torch

        host.check_interrupt()
        t = torch.from_numpy(image_u8).float().div(255.0)[None]
        prob, pars = self.pm.prob_and_pars(t, self.threshold)
        return self._Det(prob[0].cpu().numpy(), pars[0])


class PALToSEGS:
    DESCRIPTION = ("PAL's artifact regions as Impact-Pack SEGS, for Detailer (SEGS) / DetailerForEach and any "
                   "SEGS node. crop_region is PAL's square crop: zoom x the region's longest side (Impact's "
                   "crop_factor); confidence is the region's mean artifact probability. One image at a time, "
                   "like Impact's detailers.")
    CATEGORY = CATEGORY
    FUNCTION = "to_segs"
    RETURN_TYPES = ("SEGS", "MASK")
    RETURN_NAMES = ("segs", "mask")
    OUTPUT_TOOLTIPS = ("((height, width), [SEG, ...]) with label 'artifact', one SEG per region.",
                       "The artifact mask the regions were cut from [1,H,W].")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "One image (SEGS describe a single image)."}),
                "threshold": O.comfy_input("threshold"),
                "zoom": O.comfy_input("zoom", tooltip="Crop side = zoom x the region's longest side; the same as "
                                                      "Impact's crop_factor."),
                **O.comfy_inputs(("min_area", "max_regions", "dilation")),
            },
            "optional": {
                "pal_model": ("PAL_MODEL", {"tooltip": "Detect with this PAL model (gives the confidence)."}),
                "mask": ("MASK", {"tooltip": "Or use this artifact mask/heatmap (e.g. PAL Detect's heatmap)."}),
                **O.comfy_inputs(EXTRA_REGION_OPTIONS),
            },
        }

    def to_segs(self, image, threshold=0.5, zoom=1.5, min_area=16, max_regions=8, dilation=-1, pal_model=None,
                mask=None, order="area", merge_overlap=0.0):

        from ..core.crop import plan_crops
        from . import tensors as T
        from .segs import plan_to_segs

        img = T.check_pixels(image)
        b, h, w = img.shape[:3]
        if b != 1:
            raise ValueError(f"PAL to SEGS: image has {b} images but SEGS describe one image (Impact's detailers "
                             "refuse batches too); pick one with ImageFromBatch or split the batch")
        vals = O.validate(dict(threshold=threshold, zoom=zoom, min_area=min_area, max_regions=max_regions,
                               dilation=dilation, order=order, merge_overlap=merge_overlap), "comfy", fill=False)
        opts = plan_options(vals, AUTO_SIZE)
        if pal_model is not None:
            prob = pal_model.prob_maps(img)[0].float().cpu()
        elif mask is not None:
            prob = T.check_masks(mask, 1, h, w)[0].cpu()
        else:
            raise ValueError("PAL to SEGS: connect a pal_model or a mask (neither is connected)")
        plan = plan_crops([(h, w)], [prob.numpy()], **opts.plan_kwargs())
        segs = plan_to_segs(img.cpu(), plan, prob)
        m = (prob > opts.threshold).float()[None].to(host.intermediate_device())
        text = f"{len(segs[1])} SEGS (label 'artifact', crop_factor = zoom {opts.zoom:g})"
        return {"ui": {"text": [text]}, "result": (segs, m)}
