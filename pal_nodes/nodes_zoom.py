"""PALZoomCrop, PALComposite, PALAutoFix: thin adapters over core/crop.py, core/composite.py.

Zero components: PALZoomCrop emits ONE placeholder crop (a downscaled corner of image 0 with an
all-zero mask) flagged `skip` in the plan. Samplers/VAEs downstream get a normal 1-image batch
(an empty batch would crash them; an ExecutionBlocker would also block PALComposite and the
Save node), and PALComposite ignores skipped crops, so the images come through unchanged.
"""

from __future__ import annotations

import logging

from . import host

log = logging.getLogger("comfyui_pal")
CATEGORY = "PAL/zoom"


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


def _crop_inputs(defaults=True):
    return {
        "zoom": ("FLOAT", {"default": 1.5, "min": 1.0, "max": 8.0, "step": 0.05,
                           "tooltip": "Crop side = zoom x the region's longest side (1.5 = official)."}),
        "size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                         "tooltip": "Working size: every crop is resized to size x size for the sampler."}),
        "min_area": ("INT", {"default": 16, "min": 0, "max": 1 << 20,
                             "tooltip": "Ignore regions with fewer artifact pixels than this."}),
        "max_regions": ("INT", {"default": 8, "min": 1, "max": 256,
                                "tooltip": "At most this many regions per image (largest first)."}),
        "dilation": ("INT", {"default": -1, "min": -1, "max": 512,
                             "tooltip": "Grow the mask by this many pixels before splitting it into regions; "
                                        "-1 = auto (the official 5x5x5 dilation, scaled to the image)."}),
        "feather": ("INT", {"default": -1, "min": -1, "max": 512,
                            "tooltip": "Blend fade width in original pixels; -1 = auto (~crop side / 16)."}),
    }


def _dilate_arg(d: int):
    return "auto" if int(d) < 0 else int(d)


def _feather_arg(f: int):
    return "auto" if int(f) < 0 else int(f)


def make_plan(image, mask, zoom=1.5, size=512, min_area=16, max_regions=8, dilation=-1, feather=-1,
              threshold=0.5):
    """IMAGE + MASK -> (crops [N,S,S,3], masks [N,S,S], PalStitch); never an empty batch."""
    import torch

    from ..core.crop import extract_crops, plan_crops
    from . import tensors as T

    img = T.check_image(image)
    b, h, w = img.shape[:3]
    notes: list[str] = []
    m = T.check_masks(mask, b, h, w, notes=notes)
    plan = plan_crops(
        [(h, w)] * b, list(m.cpu().numpy()), zoom=float(zoom), size=int(size), dilate=_dilate_arg(dilation),
        threshold=float(threshold), min_area=int(min_area), max_regions=int(max_regions),
        feather=_feather_arg(feather), placeholder_if_empty=True,
    )
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
    DESCRIPTION = ("Splits the artifact mask into regions and cuts one square crop per region (zoomed in, "
                   "resized to the working size) from every image of the batch, for any inpainting chain "
                   "(VAEEncodeForInpaint / InpaintModelConditioning + KSampler + VAEDecode). With no "
                   "regions it emits one placeholder crop that PAL Composite ignores.")
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
                "mask": ("MASK", {"tooltip": "Artifact mask, e.g. PAL Detect's mask: one per image or one "
                                             "for all; resized if its size differs."}),
                **_crop_inputs(),
            },
            "optional": {
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 0.99, "step": 0.01,
                                        "tooltip": "Mask values at or above this are artifact (for soft "
                                                   "masks such as the heatmap)."}),
            },
        }

    def crop(self, image, mask, zoom=1.5, size=512, min_area=16, max_regions=8, dilation=-1, feather=-1,
             threshold=0.5):
        crops, cmasks, stitch = make_plan(image, mask, zoom, size, min_area, max_regions, dilation, feather,
                                          threshold)
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
    img = T.check_image(image, "image")
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
            f"PAL Composite: got {crops.shape[0]} inpainted crops but the plan has {n} "
            f"({plan.n_active} regions{'; 1 placeholder' if stitch.placeholder else ''}); pass the whole crop "
            "batch from PAL Zoom Crop through the inpainting chain without adding or dropping images")
    ch, cw = crops.shape[1:3]
    if (ch, cw) != (plan.size, plan.size):
        if ch != cw:
            raise ValueError(f"PAL Composite: inpainted crops are {cw}x{ch}, the plan expects square "
                             f"{plan.size}x{plan.size} crops")
        log.info("PAL Composite: resizing inpainted crops %dx%d -> %dx%d", cw, ch, plan.size, plan.size)
        crops = F.interpolate(crops.movedim(-1, 1), size=(plan.size, plan.size), mode="bicubic",
                              align_corners=False, antialias=True).movedim(1, -1).clamp(0, 1)
    fe = None if int(feather) < 0 else int(feather)
    outs, alphas = composite(img.detach().cpu().numpy(), plan, crops.detach().cpu().numpy(), feather=fe,
                             color_match=bool(color_match), include=include, return_alpha=True)
    dev = host.intermediate_device()
    return (torch.from_numpy(np.stack(outs)).to(dev), torch.from_numpy(np.stack(alphas)).to(dev))


class PALComposite:
    DESCRIPTION = ("Pastes inpainted crops back into the original images using the plan from PAL Zoom Crop: "
                   "feathered blend, optional colour matching; pixels outside the blend stay bit-identical.")
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "blend_mask")
    OUTPUT_TOOLTIPS = ("The fixed images [B,H,W,3].", "Where the crops were blended in (alpha 0..1) [B,H,W].")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The original images that went into PAL Zoom Crop."}),
                "inpainted": ("IMAGE", {"tooltip": "The crops after inpainting (same count and order)."}),
                "stitch": ("PAL_STITCH", {"tooltip": "The plan from PAL Zoom Crop."}),
                "feather": ("INT", {"default": -1, "min": -1, "max": 512,
                                    "tooltip": "Blend fade width in original pixels; -1 = the plan's."}),
                "color_match": ("BOOLEAN", {"default": False,
                                            "tooltip": "Match each patch's colour (Lab mean/std) to the "
                                                       "ring around it, against tone shifts."}),
            }
        }

    def paste(self, image, inpainted, stitch, feather=-1, color_match=False):
        out, alpha = composite_images(image, inpainted, stitch, feather, color_match)
        return (out, alpha)


class PALAutoFix:
    DESCRIPTION = ("Detect -> zoom crops -> your model's sampler inpaints every crop -> composite, in one "
                   "node (like FaceDetailer). With par_guard a round's result is kept only for images whose "
                   "PAR went down; rounds repeats on what is left.")
    CATEGORY = CATEGORY
    FUNCTION = "fix"
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("image", "mask", "par_before", "par_after", "report")
    OUTPUT_IS_LIST = (False, False, True, True, False)
    OUTPUT_TOOLTIPS = (
        "The fixed images [B,H,W,3].",
        "The artifact mask detected before fixing [B,H,W] (binary).",
        "PAR per image before fixing (list).",
        "PAR per image after the last round (list).",
        "What happened per round and image.",
    )

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
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed (each round adds its index)."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampler steps."}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale."}),
                "sampler_name": (host.sampler_names(), {"tooltip": "Sampling algorithm."}),
                "scheduler": (host.scheduler_names(), {"tooltip": "Noise schedule."}),
                "denoise": ("FLOAT", {"default": 0.75, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "How much of each crop's masked area is re-generated."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 0.99, "step": 0.01,
                                        "tooltip": "Artifact probability threshold."}),
                **_crop_inputs(),
                "rounds": ("INT", {"default": 1, "min": 1, "max": 8,
                                   "tooltip": "Detect-and-fix passes (each on the previous result)."}),
                "par_guard": ("BOOLEAN", {"default": True,
                                          "tooltip": "Keep a round's result only for images whose PAR dropped."}),
            },
            "optional": {
                "crop_batch": ("INT", {"default": 4, "min": 1, "max": 64,
                                       "tooltip": "Crops sampled together (lower = less memory)."}),
                "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64,
                                         "tooltip": "VAEEncodeForInpaint's latent mask growth."}),
                "color_match": ("BOOLEAN", {"default": False, "tooltip": "Colour-match patches when pasting."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def fix(self, image, pal_model, model, vae, positive, negative, seed=0, steps=20, cfg=7.0,
            sampler_name="euler", scheduler="normal", denoise=0.75, threshold=0.5, zoom=1.5, size=512,
            min_area=16, max_regions=8, dilation=-1, feather=-1, rounds=1, par_guard=True, crop_batch=4,
            grow_mask_by=6, color_match=False, unique_id=None, sampler=None):
        """`sampler(crops, masks, seed_offset)` overrides the host sampler (used by tests/scripts).

        The loop itself is core.fix.fix_images (the CLI's); this node supplies the detector and
        wraps the host's VAE + KSampler as its inpainter.
        """
        import numpy as np
        import torch

        from ..core.fix import fix_images
        from ..core.inpainters import CallableInpainter
        from . import tensors as T

        img = T.check_image(image)
        if sampler is None:
            sampler = host.ComfySampler(model, vae, positive, negative, int(seed), int(steps), float(cfg),
                                        sampler_name, scheduler, float(denoise), int(grow_mask_by))
        n_calls = [0]
        pbar = host.progress_bar(int(rounds), unique_id)
        dev = host.intermediate_device()

        def inpaint(crops, masks):
            # crops: float32 [N,S,S,3] numpy; sampled in chunks (memory, interruption points).
            c, m = torch.from_numpy(crops).to(dev), torch.from_numpy(masks).to(dev)
            out = torch.empty_like(c)
            for s in range(0, c.shape[0], int(crop_batch)):
                host.check_interrupt()
                o = sampler(c[s:s + int(crop_batch)], m[s:s + int(crop_batch)],
                            seed_offset=n_calls[0] * 1000 + s)[..., :3].to(dev, torch.float32)
                if tuple(o.shape[1:3]) != tuple(c.shape[1:3]):  # a VAE rounded the size down
                    o = torch.nn.functional.interpolate(o.movedim(-1, 1), size=c.shape[1:3], mode="bicubic",
                                                        align_corners=False).movedim(1, -1)
                out[s:s + o.shape[0]] = o.clamp(0, 1)
            n_calls[0] += 1
            pbar.update(1)
            return out.cpu().numpy()

        with pal_model.session():
            results = fix_images(
                list(img.detach().cpu().numpy()), _FixDetector(pal_model, threshold),
                CallableInpainter(inpaint, "comfyui-sampler"),
                zoom=float(zoom), size=int(size), dilate=_dilate_arg(dilation), threshold=float(threshold),
                min_area=int(min_area), max_regions=int(max_regions), feather=_feather_arg(feather),
                color_match=bool(color_match), guard=bool(par_guard), rounds=int(rounds),
            )
        out = torch.from_numpy(np.stack([r.image for r in results]).astype(np.float32)).to(dev)
        mask = torch.from_numpy(np.stack([r.mask for r in results]).astype(np.float32)).to(dev)
        before = [float(r.report["par_before"]) for r in results]
        after = [float(r.report["par_after"]) for r in results]
        lines = [f"image {i}: {r.report['status']}, PAR {b:.4f} -> {a:.4f}, crops kept "
                 f"{r.report['n_kept']}/{r.report['n_crops']}, rounds {r.report['rounds_run']}"
                 for i, (r, b, a) in enumerate(zip(results, before, after))]
        text = "\n".join(lines)
        return {"ui": {"pal_par": after, "text": [text]}, "result": (out, mask, before, after, text)}


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
