"""PALModelLoader, PALDetect, PALScore, PALSortByPAR.

No torch/ComfyUI import at module level: ComfyUI imports this while listing nodes, tests import
it without ComfyUI. Heavy modules are imported inside the node functions.
"""

from __future__ import annotations

from ..core import options as O
from . import host

CATEGORY = "PAL"
_PAR_TIP = "PAR (Perceptual Artifacts Ratio): share of the image flagged as artifact, 0..1, lower is better."
_MODEL_TIP = "A PAL artifact detector from 'PAL Model Loader'."


def _threshold():
    return O.comfy_input("threshold")  # the one schema (core/options.py)


def _fmt_pars(pars, prefix="PAR") -> str:
    return "\n".join(f"{prefix}[{i}] = {p:.4f}" for i, p in enumerate(pars))


class PALModelLoader:
    DESCRIPTION = ("Loads a PAL4VST artifact detector from models/pal (any .safetensors/.pth/.pt), by "
                   "registry name (pal4vst-unified = the official weights, downloaded into models/pal on first "
                   "use) or from a Hugging Face repo (hub_id). Cached between runs; the network sits on the "
                   "offload device until a PAL node needs it.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("PAL_MODEL",)
    RETURN_NAMES = ("pal_model",)
    OUTPUT_TOOLTIPS = ("The loaded detector, for PAL Detect / Score / Sort / Auto Fix.",)

    @classmethod
    def INPUT_TYPES(cls):
        from .model import DEVICE_CHOICES, DTYPE_CHOICES, HUB_ID_TOOLTIP, LOADER_TOOLTIP, available_models

        names = available_models()
        opts = {"tooltip": LOADER_TOOLTIP}
        if "pal-starter" in names:
            opts["default"] = "pal-starter"
        return {
            "required": {
                "model_name": (names, opts),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip": "auto = ComfyUI's compute device "
                                            "(honours --cpu); cpu forces the CPU."}),
                "precision": (DTYPE_CHOICES, {"default": "auto", "tooltip": "auto = fp16 where ComfyUI "
                                              "considers the GPU fast at it, else fp32; on the CPU fp32, "
                                              "except bf16 on CPUs with native bf16 (AMX/AVX512-BF16) for "
                                              "architectures measured to agree with fp32 (README, "
                                              "Performance). fp32 = exact mmseg numbers."}),
            },
            "optional": {
                "hub_id": ("STRING", {"default": "", "multiline": False, "tooltip": HUB_ID_TOOLTIP}),
            },
        }

    def __init__(self):
        self._last = None  # (args, PalModel): one node instance per node id in ComfyUI

    def load(self, model_name, device="auto", precision="auto", hub_id=""):
        from .model import load

        args = (model_name, device, precision, hub_id)
        if self._last is not None and self._last[0] == args:
            return (self._last[1],)
        pm = load(model_name, device, precision, hub_id=hub_id)
        self._last = (args, pm)
        return (pm,)


class PALDetect:
    DESCRIPTION = ("Finds perceptual artifacts: a binary MASK (thresholded, optionally grown), the "
                   "probability heatmap and the PAR of every image, with an overlay preview.")
    CATEGORY = CATEGORY
    FUNCTION = "detect"
    OUTPUT_NODE = True  # shows the overlay/PAR even when nothing consumes the outputs
    RETURN_TYPES = ("MASK", "MASK", "FLOAT")
    RETURN_NAMES = ("mask", "heatmap", "par")
    OUTPUT_IS_LIST = (False, False, True)
    OUTPUT_TOOLTIPS = (
        "Binary artifact mask [B,H,W] at the image size (after dilation).",
        "Artifact probability [B,H,W] in 0..1 at the image size.",
        "PAR per image (a list, one value per image). " + _PAR_TIP,
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pal_model": ("PAL_MODEL", {"tooltip": _MODEL_TIP}),
                "image": ("IMAGE", {"tooltip": "Image batch to check."}),
                "threshold": _threshold(),
                "dilation": ("INT", {"default": 0, "min": -64, "max": 256, "step": 1,
                                     "tooltip": "Grow (positive) or shrink (negative) the mask by this many "
                                                "pixels. PAR is measured before this."}),
            },
            "optional": {
                "preview": O.comfy_input("preview", tooltip="Show the magenta overlay on the node."),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def detect(self, pal_model, image, threshold=0.5, dilation=0, preview=True, unique_id=None):
        from . import tensors as T

        img = T.check_pixels(image)
        pbar = host.progress_bar(img.shape[0], unique_id)
        prob, pars = pal_model.prob_and_pars(img, threshold, progress=pbar)
        mask = T.dilate((prob > threshold).float(), int(dilation))
        ui = {"pal_par": pars, "text": [_fmt_pars(pars)], "images": []}
        if preview:
            ui["images"] = host.save_previews([T.overlay_u8(img[i], mask[i]) for i in range(img.shape[0])])
        return {"ui": ui, "result": (mask, prob, pars)}


class PALScore:
    DESCRIPTION = ("PAR per image and a text report. With a MASK, PAR is the mask's share at the image size; "
                   "without one, the PAL model scores the image (like the CLI).")
    CATEGORY = CATEGORY
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("par", "report")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("PAR per image (a list). " + _PAR_TIP, "One line per image: index, size and PAR.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Image batch to score."}),
                "threshold": _threshold(),
            },
            "optional": {
                "pal_model": ("PAL_MODEL", {"tooltip": _MODEL_TIP + " Needed unless a mask is given."}),
                "mask": ("MASK", {"tooltip": "Precomputed artifact mask (e.g. from PAL Detect); used instead "
                                             "of running the model."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def score(self, image, threshold=0.5, pal_model=None, mask=None, unique_id=None):
        from . import tensors as T

        img = T.check_image(image) if mask is not None else T.check_pixels(image)
        b, h, w = img.shape[:3]
        notes: list[str] = []
        if mask is not None:
            m = T.check_masks(mask, b, h, w, notes=notes)
            pars = [T.mask_par(m[i], threshold) for i in range(b)]
            source = "mask"
        elif pal_model is not None:
            _, pars = pal_model.prob_and_pars(img, threshold, progress=host.progress_bar(b, unique_id))
            source = f"model {pal_model.name}"
        else:
            raise ValueError("PAL Score: connect either a pal_model or a mask (neither is connected)")
        lines = [f"image {i}: {w}x{h} PAR {p:.4f}" for i, p in enumerate(pars)]
        report = "\n".join([f"PAR from {source}, threshold {threshold:g}", *lines, *notes])
        return {"ui": {"pal_par": pars, "text": [report]}, "result": (pars, report)}


ORDERS = ["ascending (fewest artifacts first)", "descending (most artifacts first)"]


class PALSortByPAR:
    DESCRIPTION = ("Sorts images by PAR, keeps the best top_k with PAR <= max_par, and returns the rest as "
                   "'rejected' (nothing is dropped silently). Accepts a batch or a list of differently "
                   "sized images; same-size results come out as one batch, mixed sizes as a list.")
    CATEGORY = CATEGORY
    FUNCTION = "sort"
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "pars", "indices", "rejected", "report")
    OUTPUT_IS_LIST = (True, True, True, True, False)
    OUTPUT_TOOLTIPS = (
        "Kept images in sorted order: one batch if they share a size, else one image per list item.",
        "PAR of each kept image (list, same order).",
        "Original index (0-based, over all input images) of each kept image (list).",
        "Images filtered out by top_k / max_par, in sorted order (blocked if there are none).",
        "Every input's index, PAR and whether it was kept.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "A batch, or a list of images of any sizes."}),
                "order": (ORDERS, {"default": ORDERS[0], "tooltip": "Sort direction."}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 4096,
                                  "tooltip": "Keep at most this many images after sorting (0 = all)."}),
                "max_par": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                      "tooltip": "Reject images whose PAR is above this (1 = no filter)."}),
                "threshold": _threshold(),
            },
            "optional": {
                "pal_model": ("PAL_MODEL", {"tooltip": _MODEL_TIP + " Needed unless pars are given."}),
                "pars": ("FLOAT", {"forceInput": True,
                                   "tooltip": "Precomputed PARs, one per image (e.g. from PAL Score)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sort(self, images, order, top_k, max_par, threshold, pal_model=None, pars=None, unique_id=None):
        from . import tensors as T

        # INPUT_IS_LIST: every argument is a list; widgets are 1-element lists.
        order, top_k, max_par, threshold = order[0], int(top_k[0]), float(max_par[0]), float(threshold[0])
        uid = unique_id[0] if isinstance(unique_id, list) and unique_id else unique_id
        singles = T.split_images(images)
        n = len(singles)
        if pars is not None and len(pars) > 0:
            scores = [float(p) for p in pars]
            if len(scores) != n:
                raise ValueError(f"PAL Sort By PAR: {len(scores)} pars for {n} images; they must pair up")
        elif pal_model:
            pm = pal_model[0]
            pbar = host.progress_bar(n, uid)
            scores = []
            for k, t in enumerate(images):  # one detector call per input tensor (a batch shares its size)
                t = T.check_pixels(t, f"images[{k}]")
                scores.extend(pm.prob_and_pars(t, threshold, progress=pbar)[1])
        else:
            raise ValueError("PAL Sort By PAR: connect either a pal_model or pars (neither is connected)")
        from ..core.par import rank_by_par

        descending = order.startswith("descending")
        kept, rejected = rank_by_par(scores, descending=descending, top_k=top_k, max_par=max_par)
        ranked = sorted(range(n), key=lambda i: -scores[i] if descending else scores[i])  # report order
        kept_set = set(kept)
        lines = [f"#{i}: PAR {scores[i]:.4f} {'kept' if i in kept_set else 'rejected'}" for i in ranked]
        report = f"{len(kept)} kept, {len(rejected)} rejected of {n}\n" + "\n".join(lines)

        def out_images(idx):
            return T.stack_or_list([singles[i] for i in idx]) if idx else host.execution_blocker(None)

        def out_values(values):
            return values if values else host.execution_blocker(None)

        result = (
            out_images(kept),
            out_values([scores[i] for i in kept]),
            out_values(list(kept)),
            out_images(rejected),
            report,
        )
        return {"ui": {"pal_par": [scores[i] for i in kept], "text": [report]}, "result": result}
