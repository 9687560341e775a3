"""Inpainting backends behind one small protocol.

``inpaint(crops [N,S,S,3] float32 0..1, masks [N,S,S] float 0/1, 1 = fill) -> [N,S,S,3] float32 0..1``

Classical backends (OpenCV Telea/NS, scikit-image biharmonic) are deterministic, offline and
CPU-only: the CLI default and the CI stand-ins. The diffusers backend imports diffusers/torch
only when constructed. Hosts (ComfyUI, A1111) either wrap their own sampler in this protocol
(``CallableInpainter``) or use the split plan/extract/composite API directly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from .imageio import to_float01, to_uint8


@runtime_checkable
class Inpainter(Protocol):
    name: str

    def inpaint(self, crops: np.ndarray, masks: np.ndarray) -> np.ndarray: ...


def _check(crops, masks) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(crops, dtype=np.float32)
    m = np.asarray(masks, dtype=np.float32)
    if c.ndim != 4 or c.shape[-1] != 3:
        raise ValueError(f"crops must be [N,S,S,3], got {c.shape}")
    if m.shape != c.shape[:3]:
        raise ValueError(f"masks must be [N,S,S] matching crops {c.shape[:3]}, got {m.shape}")
    return c, m


def _masked(masks: np.ndarray):
    """(index, bool mask) of each crop that has something to fill (mask > 0.5); the others stay as they are."""
    for i in range(masks.shape[0]):
        mk = masks[i] > 0.5
        if mk.any():
            yield i, mk


class IdentityInpainter:
    """Returns the crops unchanged (tests, dry runs)."""

    name = "identity"

    def inpaint(self, crops, masks):
        c, _ = _check(crops, masks)
        return c.copy()


class CallableInpainter:
    """Wrap any ``fn(crops, masks) -> crops`` (e.g. a host's sampler) as an Inpainter."""

    def __init__(self, fn, name: str = "callable"):
        self.fn = fn
        self.name = name

    def inpaint(self, crops, masks):
        c, m = _check(crops, masks)
        return np.asarray(self.fn(c, m), dtype=np.float32)


class OpenCVInpainter:
    """cv2.inpaint (Telea or Navier-Stokes) on uint8; pixels outside the mask are returned unchanged."""

    def __init__(self, method: str = "telea", radius: int = 3):
        if method not in ("telea", "ns"):
            raise ValueError(f"OpenCV inpainting method must be 'telea' or 'ns', got {method!r}")
        self.method = method
        self.radius = int(radius)
        self.name = "opencv" if method == "telea" else "opencv-ns"

    def inpaint(self, crops, masks):
        c, m = _check(crops, masks)
        flag = cv2.INPAINT_TELEA if self.method == "telea" else cv2.INPAINT_NS
        out = c.copy()
        for i, mk in _masked(m):
            filled = to_float01(cv2.inpaint(to_uint8(c[i]), mk.astype(np.uint8), self.radius, flag))
            out[i][mk] = filled[mk]
        return out


class BiharmonicInpainter:
    """skimage biharmonic inpainting (1-2 dB better than OpenCV, 15-50x slower), on the mask's bbox + margin."""

    name = "biharmonic"

    def __init__(self, margin: int = 16):
        self.margin = int(margin)

    def inpaint(self, crops, masks):
        from skimage.restoration import inpaint_biharmonic

        c, m = _check(crops, masks)
        out = c.copy()
        for i, mk in _masked(m):
            if mk.all():  # nothing to interpolate from; leave unchanged rather than fail
                continue
            ys, xs = np.nonzero(mk)
            s = mk.shape[0]
            y0, y1 = max(0, ys.min() - self.margin), min(s, ys.max() + 1 + self.margin)
            x0, x1 = max(0, xs.min() - self.margin), min(s, xs.max() + 1 + self.margin)
            sub_m = mk[y0:y1, x0:x1]
            if sub_m.all():  # the margin hit the crop edges; use the whole crop for context
                y0, y1, x0, x1 = 0, s, 0, s
                sub_m = mk
            filled = inpaint_biharmonic(c[i, y0:y1, x0:x1], sub_m, channel_axis=-1).astype(np.float32)
            out[i, y0:y1, x0:x1][sub_m] = np.clip(filled[sub_m], 0.0, 1.0)
        return out


def dtype_kwarg(diffusers_version: str) -> str:
    """Loader keyword for the dtype: diffusers 0.40.0 renamed ``torch_dtype`` to ``dtype`` (the old name
    warns there, and is all that older releases know). Decided from the public version string."""
    from packaging.version import Version  # a dependency of diffusers

    return "dtype" if Version(diffusers_version) >= Version("0.40.0") else "torch_dtype"


class DiffusersInpainter:
    """diffusers inpainting pipeline (SD 1.x/2.x, SDXL, or anything AutoPipelineForInpainting knows).

    ``model``: a local folder (``model_index.json``), a single ``.safetensors``/``.ckpt`` file, or
    a Hub id; or pass a ready ``pipe``. Hub ids download only if the files are not cached and
    ``local_files_only`` is False. Crop i uses seed ``seed + i`` so results do not depend on the
    batch split.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        pipe=None,
        prompt: str = "",
        negative_prompt: str = "",
        strength: float = 0.99,
        steps: int = 30,
        guidance: float = 7.5,
        seed: int = 0,
        device: str | None = None,
        dtype=None,
        pipeline: str = "auto",
        batch_size: int = 4,
        local_files_only: bool | None = None,
    ):
        if pipe is None and model is None:
            raise ValueError("DiffusersInpainter needs a model folder/file/Hub id or a ready pipe")
        self.model = None if model is None else str(model)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.strength = float(strength)
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        self.name = f"diffusers:{self.model or type(pipe).__name__}"
        self._device = device
        self._dtype = dtype
        self._pipeline = pipeline
        self._local_only = local_files_only
        self.pipe = pipe

    # -- loading -------------------------------------------------------------------------------
    def _load(self):
        try:
            import diffusers
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "the diffusers inpainter needs the optional extras: pip install 'comfyui-pal[diffusers]' "
                "(diffusers, transformers, accelerate)"
            ) from e
        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self._dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        path = Path(self.model)
        kind = self._pipeline
        local = path.exists()
        if kind == "auto" and "xl" in path.name.lower():
            kind = "sdxl"
        classes = {
            "sd": diffusers.StableDiffusionInpaintPipeline,
            "sdxl": diffusers.StableDiffusionXLInpaintPipeline,
            "auto": diffusers.AutoPipelineForInpainting,
        }
        if kind not in classes:
            raise ValueError(f"pipeline must be one of {sorted(classes)}, got {kind!r}")
        common = {dtype_kwarg(diffusers.__version__): dtype}
        if local and path.is_file():
            cls = classes["sdxl" if kind == "sdxl" else "sd"]
            pipe = cls.from_single_file(str(path), **common)
        else:
            local_only = self._local_only if self._local_only is not None else local
            # AutoPipelineForInpainting also maps text-to-image folders to their inpaint pipeline.
            pipe = classes[kind].from_pretrained(str(path) if local else self.model,
                                                 local_files_only=local_only, **common)
        if hasattr(pipe, "safety_checker") and getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # it blanks whole crops on false positives
        pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe

    # -- protocol ------------------------------------------------------------------------------
    def inpaint(self, crops, masks):
        import torch
        from PIL import Image

        c, m = _check(crops, masks)
        if self.pipe is None:
            self._load()
        pipe = self.pipe
        dev = getattr(pipe, "device", torch.device("cpu"))
        s = c.shape[1]
        out = c.copy()
        todo = [i for i, _ in _masked(m)]
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            imgs = [Image.fromarray(to_uint8(c[i])) for i in idx]
            mks = [Image.fromarray(((m[i] > 0.5) * 255).astype(np.uint8), mode="L") for i in idx]
            gen_dev = "cpu" if str(dev).startswith("mps") else dev
            gens = [torch.Generator(device=gen_dev).manual_seed(self.seed + i) for i in idx]
            kwargs = dict(
                prompt=[self.prompt] * len(idx),
                image=imgs,
                mask_image=mks,
                height=s,
                width=s,
                strength=self.strength,
                # diffusers runs int(steps * strength) steps and refuses 0: keep at least one
                num_inference_steps=max(self.steps, math.ceil(1.0 / max(self.strength, 1e-3) - 1e-9)),
                guidance_scale=self.guidance,
                generator=gens,
                output_type="np",
            )
            if self.guidance > 1.0:
                kwargs["negative_prompt"] = [self.negative_prompt] * len(idx)
            with torch.inference_mode():
                res = pipe(**kwargs).images
            res = np.asarray(res, dtype=np.float32)
            if res.shape[1:3] != (s, s):  # some pipelines round sizes; bring them back
                res = np.stack([cv2.resize(r, (s, s), interpolation=cv2.INTER_CUBIC) for r in res])
            for j, i in enumerate(idx):
                out[i] = np.clip(res[j], 0.0, 1.0)
        return out


# Options each named backend takes; anything else is an error, never silently dropped.
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "opencv": ("radius",),
    "opencv-ns": ("radius",),
    "biharmonic": ("margin",),
    "identity": (),
    "diffusers": ("prompt", "negative_prompt", "strength", "steps", "guidance", "seed", "device", "dtype",
                  "pipeline", "batch_size", "local_files_only", "pipe"),
}
_ALIASES = {"telea": "opencv", "opencv-telea": "opencv", "ns": "opencv-ns", "none": "identity"}


def make_inpainter(spec: str | Inpainter = "opencv", **opts) -> Inpainter:
    """``"opencv"`` (Telea), ``"opencv-ns"``, ``"biharmonic"``, ``"identity"``, ``"diffusers:<folder|file|hub id>"``.

    ``opts`` go to the backend: radius (OpenCV), margin (biharmonic), prompt, negative_prompt,
    strength, steps, guidance, seed, device, dtype, pipeline, batch_size, local_files_only, pipe
    (diffusers); see ``BACKEND_OPTIONS``. An option the chosen backend does not take raises
    TypeError naming it (a value of None counts as not given), so a typo or a diffusers option
    passed to OpenCV is never silently ignored.
    """
    given = {k: v for k, v in opts.items() if v is not None}
    if not isinstance(spec, str):
        if given:
            raise TypeError(f"options {sorted(given)} cannot be applied to a ready inpainter "
                            f"({type(spec).__name__}); configure it when you construct it")
        return spec
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in BACKEND_OPTIONS:
        raise ValueError(
            f"unknown inpainter {spec!r}; use opencv, opencv-ns, biharmonic, identity or diffusers:<model>"
        )
    allowed = BACKEND_OPTIONS[name]
    extra = sorted(set(given) - set(allowed))
    if extra:
        others = sorted({b for b, keys in BACKEND_OPTIONS.items() for k in extra if k in keys})
        hint = f" ({', '.join(others)} option{'s' if len(extra) > 1 else ''})" if others else ""
        raise TypeError(f"inpainter {name!r} does not take {', '.join(extra)}{hint}; "
                        f"it takes: {', '.join(allowed) or 'no options'}")
    if name in ("opencv", "opencv-ns"):
        return OpenCVInpainter("telea" if name == "opencv" else "ns", **given)
    if name == "biharmonic":
        return BiharmonicInpainter(**given)
    if name == "identity":
        return IdentityInpainter()
    if not arg:
        raise ValueError("diffusers inpainter needs a model: 'diffusers:<local folder, .safetensors or hub id>'")
    return DiffusersInpainter(arg, **given)
