"""The only place that touches ComfyUI modules.

Every function looks ComfyUI up lazily and falls back to a plain stand-in when it is not
loaded, so the node classes can be imported and called in tests (and scripts) without
ComfyUI. "Loaded" means already in `sys.modules`: ComfyUI imports these modules before any
custom node runs, and importing them ourselves outside ComfyUI has side effects (CUDA probing,
creating an input/ folder), which tests must not trigger.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

log = logging.getLogger("comfyui_pal")

FOLDER_KEY = "pal"
# folder_paths.supported_pt_extensions at v0.3.64; used when folder_paths is not loaded.
_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def _loaded(name: str):
    return sys.modules.get(name)


def in_comfy() -> bool:
    return _loaded("comfy.model_management") is not None


# --------------------------------------------------------------------------- model folder
def register_model_folder() -> list[str]:
    """Register `models/pal` with checkpoint extensions; returns the folder list (may be empty).

    Robust to a user's extra_model_paths.yaml that already created `pal` with an empty
    extension set (which would otherwise list every file, e.g. README.txt).
    """
    fp = _loaded("folder_paths")
    if fp is None:
        return []
    default = os.path.join(fp.models_dir, FOLDER_KEY)
    exts = set(getattr(fp, "supported_pt_extensions", _PT_EXTENSIONS))
    entry = fp.folder_names_and_paths.get(FOLDER_KEY)
    if entry is None:
        fp.folder_names_and_paths[FOLDER_KEY] = ([default], exts)
    else:
        paths, ext_set = entry
        if default not in paths:
            paths.append(default)
        if isinstance(ext_set, set):
            ext_set.update(exts)
        else:  # defensive: some forks store a list/tuple
            fp.folder_names_and_paths[FOLDER_KEY] = (paths, set(ext_set) | exts)
    return list(fp.folder_names_and_paths[FOLDER_KEY][0])


def list_local_models() -> list[str]:
    fp = _loaded("folder_paths")
    if fp is None:
        return []
    try:
        return list(fp.get_filename_list(FOLDER_KEY))
    except KeyError:
        register_model_folder()
        return list(fp.get_filename_list(FOLDER_KEY))


def local_model_path(name: str) -> str | None:
    fp = _loaded("folder_paths")
    if fp is None:
        return None
    try:
        return fp.get_full_path(FOLDER_KEY, name)
    except KeyError:
        return None


def download_dir() -> str | None:
    """Where the hub should put downloads: the first `models/pal` folder."""
    fp = _loaded("folder_paths")
    if fp is None:
        return None
    try:
        return fp.get_folder_paths(FOLDER_KEY)[0]
    except (KeyError, IndexError):
        return os.path.join(fp.models_dir, FOLDER_KEY)


# --------------------------------------------------------------------------- devices
def torch_device(choice: str = "auto"):
    import torch

    if choice == "cpu":
        return torch.device("cpu")
    mm = _loaded("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device():
    import torch

    mm = _loaded("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device():
    import torch

    mm = _loaded("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def pick_dtype(choice: str, device):
    """'auto' -> fp16 where ComfyUI says the GPU does fp16 well, else fp32; on the CPU None: the
    detector's own rule decides (models.detector.resolve_dtype: bf16 only on native-bf16 CPUs for
    architectures measured to agree with fp32)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if choice in table:
        return table[choice]
    if getattr(device, "type", "cpu") == "cpu":
        return None
    mm = _loaded("comfy.model_management")
    if mm is not None:
        try:
            if mm.should_use_fp16(device=device):
                return torch.float16
        except Exception:  # older/newer signature: fp32 is always correct
            pass
    return torch.float32


def free_memory_for(num_bytes: int, device) -> None:
    mm = _loaded("comfy.model_management")
    if mm is not None and getattr(device, "type", "cpu") != "cpu":
        mm.free_memory(num_bytes, device)


def soft_empty_cache() -> None:
    mm = _loaded("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()


# --------------------------------------------------------------------------- progress / interrupt
class _NullProgress:
    def __init__(self, total, node_id=None):
        self.total, self.current = total, 0

    def update_absolute(self, value, total=None, preview=None):
        self.total = total if total is not None else self.total
        self.current = min(value, self.total)

    def update(self, value):
        self.update_absolute(self.current + value)


def progress_bar(total: int, node_id=None):
    """comfy.utils.ProgressBar (its server hook also raises on interrupt) or a no-op."""
    utils = _loaded("comfy.utils")
    cls = getattr(utils, "ProgressBar", None) if utils is not None else None
    return (cls or _NullProgress)(max(int(total), 1), node_id=node_id)


def check_interrupt() -> None:
    mm = _loaded("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


# --------------------------------------------------------------------------- graph control
class Blocked:
    """Stand-in for ComfyUI's ExecutionBlocker when ComfyUI is not loaded."""

    def __init__(self, message=None):
        self.message = message

    def __repr__(self):
        return f"Blocked({self.message!r})"


def execution_blocker(message=None):
    """Stops the downstream branch silently (message None) instead of passing an empty list,
    which would make ComfyUI call the next node with no arguments."""
    gu = _loaded("comfy_execution.graph_utils")
    cls = getattr(gu, "ExecutionBlocker", None) if gu is not None else None
    return (cls or Blocked)(message)


def is_blocked(value) -> bool:
    return type(value).__name__ in ("ExecutionBlocker", "Blocked")


# --------------------------------------------------------------------------- UI previews
def save_previews(images_u8, prefix: str = "pal_overlay") -> list[dict]:
    """Write uint8 HxWx3 arrays as PNGs into ComfyUI's temp dir (PreviewImage pattern).

    Outside ComfyUI there is nowhere to show them, so nothing is written.
    """
    fp = _loaded("folder_paths")
    if fp is None:
        return []
    from PIL import Image

    tmp = fp.get_temp_directory()
    os.makedirs(tmp, exist_ok=True)
    out = []
    tag = uuid.uuid4().hex[:8]
    for i, arr in enumerate(images_u8):
        name = f"{prefix}_{tag}_{i:04d}.png"
        Image.fromarray(arr).save(os.path.join(tmp, name), compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out


# --------------------------------------------------------------------------- sampling
def sampler_names() -> list[str]:
    samplers = _loaded("comfy.samplers")
    if samplers is not None:
        return list(samplers.KSampler.SAMPLERS)
    return ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc"]


def scheduler_names() -> list[str]:
    samplers = _loaded("comfy.samplers")
    if samplers is not None:
        return list(samplers.KSampler.SCHEDULERS)
    return ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"]


def _core_nodes():
    nodes = _loaded("nodes")
    if nodes is None or not hasattr(nodes, "common_ksampler"):
        raise RuntimeError(
            "PALAutoFix needs ComfyUI's sampler (nodes.common_ksampler); it is only available inside "
            "ComfyUI. Outside ComfyUI pass `sampler=` to PALAutoFix.fix or use the `pal fix` CLI."
        )
    return nodes


def _first(out):
    """First output of a V1 node call (a tuple) or a V3 one (io.NodeOutput)."""
    if hasattr(out, "result") and not isinstance(out, (tuple, list)):
        out = out.result
    return out[0]


# --------------------------------------------------------------------------- model facts
def _base_model(model):
    return getattr(model, "model", model)  # ModelPatcher -> BaseModel


def is_inpaint_model(model) -> bool:
    """True for inpainting / Fill-type models: those ComfyUI feeds a mask + masked image as extra input.

    ComfyUI decides this when it loads the checkpoint: UNet inpainting models (more input channels than
    the latent, e.g. 9 for SD1.5-inpainting) get the concat keys "mask"/"masked_image" (some video models
    "mask_inverted"); Flux-style models take the extra input when the model has more than twice as many
    input as output channels (Flux Fill: latent + masked image + mask; twice = image-only control models
    such as Canny/Depth, which are not inpainting models). That is what we read.
    """
    bm = _base_model(model)
    keys = getattr(bm, "concat_keys", None) or ()
    if any(k in ("mask", "masked_image", "mask_inverted") for k in keys):
        return True
    cfg = getattr(bm, "model_config", None)
    try:
        unet = cfg.unet_config
        latent_ch = int(getattr(cfg.latent_format, "latent_channels", 4))
    except AttributeError:
        return False
    in_ch = int(unet.get("in_channels", latent_ch))
    out_ch = int(unet.get("out_channels", latent_ch))
    if not keys and in_ch > latent_ch and "out_channels" not in unet:
        return True  # a UNet config that only states in_channels (9 vs a 4-channel latent)
    return in_ch > 2 * out_ch


def native_size(model) -> int:
    """The resolution a model was trained at, as PAL's 'auto' working size: 512 for SD1.x/2.x latents
    (SD15 latent format), 1024 for SDXL-class and newer models."""
    bm = _base_model(model)
    fmt = getattr(bm, "latent_format", None)
    if fmt is None:
        cfg = getattr(bm, "model_config", None)
        fmt = getattr(cfg, "latent_format", None)
    name = type(fmt).__name__ if fmt is not None and not isinstance(fmt, type) else getattr(fmt, "__name__", "")
    return 512 if name in ("", "SD15") else 1024


def resolve_inpaint_mode(mode: str, model) -> str:
    if mode == "auto":
        return "inpaint model conditioning" if is_inpaint_model(model) else "noise mask"
    return mode


def differential_diffusion(model, strength: float = 1.0):
    """ComfyUI's DifferentialDiffusion patch applied to `model`, or None where ComfyUI has no such node."""
    nodes = _loaded("nodes")
    cls = getattr(nodes, "NODE_CLASS_MAPPINGS", {}).get("DifferentialDiffusion") if nodes is not None else None
    if cls is None:
        return None
    if hasattr(cls, "execute") and not hasattr(cls, "FUNCTION"):  # V3 node (comfy_api io.ComfyNode)
        return _first(cls.execute(model, strength=strength))
    fn = getattr(cls(), cls.FUNCTION)
    try:
        return _first(fn(model, strength=strength))
    except TypeError:  # older V1 node without the strength input
        return _first(fn(model))


def _cond_set(conditioning, values: dict):
    """node_helpers.conditioning_set_values (ComfyUI's own) where loaded; the same copy-and-set otherwise."""
    helpers = _loaded("node_helpers")
    if helpers is not None and hasattr(helpers, "conditioning_set_values"):
        return helpers.conditioning_set_values(conditioning, values)
    return [[t, {**d, **values}] for t, d in conditioning]


def soft_mask(masks, feather: int):
    """Binary [N,H,W] mask -> soft mask for Differential Diffusion: 1 on the mask, fading to 0 over
    `feather` working pixels outside it (the artifact itself is always fully re-generated)."""
    import torch
    import torch.nn.functional as F

    if feather <= 0:
        return masks
    k = 2 * int(feather) + 1
    x = masks.unsqueeze(1).float()
    grown = F.max_pool2d(x, k, stride=1, padding=k // 2)
    blur = F.avg_pool2d(grown, k, stride=1, padding=k // 2, count_include_pad=False)
    return torch.maximum(blur, x)[:, 0].clamp(0, 1)


class ComfySampler:
    """Inpaints a crop batch with the host's own nodes: conditioning by `mode`, KSampler, VAE decode.

    Modes (core/options.py INPAINT_MODES):
      * noise mask: VAEEncode of the real crop + SetLatentNoiseMask (any checkpoint, any denoise);
      * inpaint model conditioning: InpaintModelConditioning (inpainting / Fill models), noise mask kept;
      * VAEEncodeForInpaint: legacy; greys the mask before encoding (inpainting checkpoints at denoise 1);
        below denoise 1 the latent the sampler starts from is replaced by the real crop's encoding,
        so it never starts from grey (an inpainting model still sees the greyed crop as its masked image);
      * auto: inpaint model conditioning for inpainting models, else noise mask.
    `noise_mask_feather` > 0 uses a soft noise mask with Differential Diffusion where ComfyUI has it.
    """

    def __init__(self, model, vae, positive, negative, seed, steps, cfg, sampler_name, scheduler,
                 denoise, grow_mask_by=6, mode="auto", noise_mask_feather=0):
        self.vae = vae
        self.positive, self.negative = positive, negative
        self.seed, self.steps, self.cfg = seed, steps, cfg
        self.sampler_name, self.scheduler, self.denoise = sampler_name, scheduler, denoise
        self.grow_mask_by = grow_mask_by
        self.requested_mode = mode
        self.mode = resolve_inpaint_mode(mode, model)
        self.notes: list[str] = []
        if mode == "auto":
            self.notes.append(f"inpaint mode auto -> {self.mode}"
                              + (" (inpainting model)" if self.mode != "noise mask" else ""))
        if self.mode == "VAEEncodeForInpaint" and denoise < 1.0:
            self.notes.append(f"VAEEncodeForInpaint at denoise {denoise:g}: sampling starts from the real crop "
                              "(the legacy node alone would start from grey)")
        self.feather = int(noise_mask_feather)
        self.model = model
        if self.feather > 0:
            if self.mode == "VAEEncodeForInpaint":
                self.notes.append("noise_mask_feather ignored: VAEEncodeForInpaint needs a hard mask")
                self.feather = 0
            else:
                patched = differential_diffusion(model)
                if patched is None:
                    self.notes.append("no DifferentialDiffusion node in this ComfyUI: hard noise mask used")
                    self.feather = 0
                else:
                    self.model = patched
                    self.notes.append(f"soft noise mask ({self.feather} px) with Differential Diffusion")

    def condition(self, crops, masks):
        """-> (positive, negative, latent dict) for one crop chunk; the ComfyUI nodes do the work."""
        nodes = _core_nodes()
        pos, neg = self.positive, self.negative
        noise_mask = soft_mask(masks, self.feather) if self.feather > 0 else masks
        if self.mode == "noise mask":
            (latent,) = nodes.VAEEncode().encode(self.vae, crops)
            (latent,) = nodes.SetLatentNoiseMask().set_mask(latent, noise_mask)
        elif self.mode == "inpaint model conditioning":
            pos, neg, latent = nodes.InpaintModelConditioning().encode(pos, neg, crops, self.vae, masks, True)
            if self.feather > 0:
                (latent,) = nodes.SetLatentNoiseMask().set_mask(latent, noise_mask)
        elif self.mode == "VAEEncodeForInpaint":
            (latent,) = nodes.VAEEncodeForInpaint().encode(self.vae, crops, masks, self.grow_mask_by)
            if self.denoise < 1.0:
                grey = latent["samples"]
                (real,) = nodes.VAEEncode().encode(self.vae, crops)
                latent = {**latent, "samples": real["samples"]}
                if is_inpaint_model(self.model):
                    vals = {"concat_latent_image": grey, "concat_mask": latent["noise_mask"]}
                    pos, neg = _cond_set(pos, vals), _cond_set(neg, vals)
        else:
            raise ValueError(f"inpaint_mode {self.requested_mode!r} is not one of auto, noise mask, "
                             "inpaint model conditioning, VAEEncodeForInpaint")
        return pos, neg, latent

    def __call__(self, crops, masks, seed_offset: int = 0):
        """crops [N,H,W,3] 0..1, masks [N,H,W] -> inpainted [N,H,W,3] (same size)."""
        nodes = _core_nodes()
        pos, neg, latent = self.condition(crops, masks)
        (latent,) = nodes.common_ksampler(
            self.model, (self.seed + seed_offset) % (1 << 64), self.steps, self.cfg, self.sampler_name, self.scheduler,
            pos, neg, latent, denoise=self.denoise,
        )
        out = self.vae.decode(latent["samples"])
        if out.ndim == 5:  # video VAEs return [B,T,H,W,C]
            out = out.reshape(-1, *out.shape[-3:])
        return out
