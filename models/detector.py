"""`load_detector` and `Detector`: image(s) in, per-pixel artifact probability, mask and PAR out.

Preprocessing follows the official PAL4VST user scripts (`utils.prepare_input`): RGB, resize
to 512x512 with PIL bicubic (antialiased), ImageNet mean/std on the 0..255 scale. The mmseg
test pipeline's cv2 bilinear resize is available as `resize="bilinear"`. PAR is computed on
the 512x512 label map like `curate_images.py`; probabilities at the original size come from
resizing the logits bilinearly before the softmax, as mmseg's `postprocess_result` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.imageio import load_image, to_rgb_uint8, to_uint8
from .preprocess import RESIZE_MODES, mean_std, normalize, resize_uint8
from .segmentor import slide_logits

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "pal-starter"


def default_model_path() -> Path:
    """The bundled starter checkpoint (trained on synthetic artifacts; model card models/weights/pal-starter.md)."""
    return _WEIGHTS_DIR / "pal-starter.safetensors"


def auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _as_dtype(dtype) -> torch.dtype | str:
    """A dtype name -> torch.dtype; None -> fp32 (exact); "auto" stays "auto" (see resolve_dtype)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() == "auto":
        return "auto"
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of auto, fp32, fp16, bf16") from None


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 dot products in hardware (AMX-BF16 or AVX512-BF16).

    torch's own checks first; /proc/cpuinfo only if this torch lacks them. (oneDNN runs bf16 on
    any AVX512 CPU, emulated and slow without these units, so "supported" is not enough.)
    """
    checks = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    checks = [c for c in checks if c is not None]
    if checks:
        try:
            return any(bool(c()) for c in checks)
        except Exception:  # noqa: BLE001 - an unusual build: fall through to cpuinfo
            pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


# Architectures whose CPU bf16 outputs meet the agreement target (>= 99.5 % of pixels with an fp32
# logit gap >= 0.05, and |dPAR| <= 0.002; benchmarks/bench_precision.py, numbers in the README).
# Measured: Swin-B (random weights) 99.99 % but |dPAR| 0.013; the trained mobilenetv2_100 starter
# 99.79 % but |dPAR| 0.012 on held-out synthetic images. All miss, so "auto" keeps fp32 on CPUs;
# bf16 stays available explicitly.
BF16_CPU_ARCHS: frozenset[str] = frozenset()


def _arch(config: dict) -> str:
    bb = config.get("backbone") or {}
    return f"timm:{bb.get('model_name')}" if bb.get("type") == "timm" else str(bb.get("type"))


def resolve_dtype(dtype, device, config: dict | None = None) -> torch.dtype:
    """What a detector runs in. "auto": bf16 on a CPU with native bf16 for an architecture in
    BF16_CPU_ARCHS, else fp32; on CUDA bf16 where supported, else fp16; fp32 on MPS/others.
    None or "fp32" is fp32, mmseg-exact (what the fidelity tests use)."""
    dt = _as_dtype(dtype)
    if dt != "auto":
        return dt
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dev.type == "cpu" and cpu_has_native_bf16() and _arch(config or {}) in BF16_CPU_ARCHS:
        return torch.bfloat16
    return torch.float32


@dataclass
class Detection:
    """One image's result. `prob` is at the original size, `prob_work` at the model's input size."""

    prob: np.ndarray
    prob_work: np.ndarray
    threshold: float = 0.5
    source: str | None = field(default=None, repr=False)

    def mask(self, threshold: float | None = None) -> np.ndarray:
        return self.prob > (self.threshold if threshold is None else threshold)

    def mask_work(self, threshold: float | None = None) -> np.ndarray:
        return self.prob_work > (self.threshold if threshold is None else threshold)

    def par_at(self, threshold: float) -> float:
        return float((self.prob_work > threshold).mean())

    @property
    def par(self) -> float:
        """Artifact pixels / pixels on the 512x512 label map (the official definition)."""
        return self.par_at(self.threshold)

    @property
    def size(self) -> tuple[int, int]:
        return self.prob.shape[0], self.prob.shape[1]


ImageLike = np.ndarray | Image.Image | str | os.PathLike | torch.Tensor


class Detector:
    """A loaded PAL segmenter plus the official pre/post-processing."""

    def __init__(self, segmenter: torch.nn.Module, config: dict, device=None, dtype=None,
                 resize: str | None = None, provenance: dict | None = None, source: str | None = None,
                 calibration: dict | None = None):
        self.config = config
        self.provenance = provenance or {}
        # Default operating point from the checkpoint's metadata: a bias added to the artifact
        # logit before the softmax, so probability, mask and PAR (threshold 0.5 = argmax) are all
        # read at the calibrated point. {} = the raw network.
        self.calibration = dict(calibration or {})
        self.artifact_logit_bias = float(self.calibration.get("artifact_logit_bias", 0.0))
        self.source = source
        self.device = torch.device(device) if device is not None else auto_device()
        self.requested_dtype = dtype
        self.dtype = resolve_dtype(dtype, self.device, config)
        self._warm: set[tuple] = set()  # (shape, device, dtype) already run once
        pre = config.get("preprocess", {})
        size = pre.get("size", [512, 512])
        self.input_size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size else None
        self.resize = resize or pre.get("resize", "bicubic")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize={self.resize!r}: use 'bicubic' (official scripts) or 'bilinear' (mmseg test pipeline)")
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in mean_std(pre))
        self.segmenter = segmenter.eval()
        self._place()

    def __repr__(self) -> str:
        return f"Detector(source={self.source!r}, device={self.device}, dtype={self.dtype}, input_size={self.input_size})"

    def to(self, device=None, dtype=None) -> Detector:
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.requested_dtype = dtype
        self.dtype = resolve_dtype(self.requested_dtype, self.device, self.config)
        self._place()
        return self

    def _place(self) -> None:
        self.segmenter.to(self.device, self.dtype)
        head = getattr(self.segmenter, "decode_head", None)
        if self.dtype != torch.float32 and isinstance(getattr(head, "conv_seg", None), torch.nn.Conv2d):
            head.conv_seg.float()  # a 1x1 conv: fp32 logits cost nothing and keep PAR steady
        if hasattr(head, "set_channels_last"):
            # NHWC head convolutions where measured faster: bf16 on CPU (oneDNN); fp32 stays NCHW.
            head.set_channels_last(self.device.type == "cpu" and self.dtype == torch.bfloat16)

    def warmup(self, batch_size: int = 1, size: tuple[int, int] | None = None) -> float:
        """Run one forward per new (batch, size, device, dtype) and return its seconds (0 if done).

        oneDNN builds its kernels for each new shape on the first call (slow, worst for bf16); a
        host's loader calls this so the first image it times is a warm one. Results are discarded.
        """
        import time

        size = size or self.input_size or (512, 512)
        key = ((int(batch_size), 3, int(size[0]), int(size[1])), str(self.device), self.dtype)
        if key in self._warm:
            return 0.0
        t0 = time.perf_counter()
        self.logits(torch.zeros(key[0]))
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ preprocessing
    def _resize_uint8(self, rgb: np.ndarray) -> np.ndarray:
        return resize_uint8(rgb, self.input_size, self.resize)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW RGB on the 0..255 scale -> the segmenter's input (mmseg divides by std)."""
        return normalize(x, mean=self.mean, std=self.std)

    def _to_uint8_list(self, images) -> tuple[list[np.ndarray], list[str | None]]:
        if isinstance(images, torch.Tensor):
            t = images.detach()
            if t.ndim == 3:
                t = t.unsqueeze(0)
            if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
                raise ValueError(f"image tensor of shape {tuple(images.shape)}: expected [H,W,C] or [B,H,W,C] (ComfyUI IMAGE)")
            arr = to_uint8(t[..., :3])
            if arr.shape[-1] == 1:
                arr = np.repeat(arr, 3, axis=-1)
            return list(arr), [None] * arr.shape[0]
        if isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)):
            images = [images]
        out, names = [], []
        for im in images:
            if isinstance(im, (str, os.PathLike)):
                out.append(load_image(im))
                names.append(str(im))
            elif isinstance(im, Image.Image):
                out.append(to_rgb_uint8(im))
                names.append(None)
            elif isinstance(im, torch.Tensor):
                sub, subn = self._to_uint8_list(im)
                out += sub
                names += subn
            else:
                out.append(_ndarray_to_rgb_uint8(np.asarray(im)))
                names.append(None)
        return out, names

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW -> float32 logits at the input size (runs in the detector's dtype).

        Configs with mmseg's slide test mode (the ConvNeXt ones) use sliding windows; at the
        default 512x512 input that is a single window, i.e. the same as whole mode.
        """
        x = x.to(self.device, self.dtype)
        self._warm.add((tuple(x.shape), str(self.device), self.dtype))
        test_cfg = self.config.get("test_cfg") or {}
        if test_cfg.get("mode") == "slide":
            out = slide_logits(self.segmenter, x, test_cfg["crop_size"], test_cfg["stride"]).float()
        else:
            out = self.segmenter(x).float()
        if self.artifact_logit_bias:
            out[:, 1] += self.artifact_logit_bias
        return out

    def detect(self, images, threshold: float = 0.5, batch_size: int = 4):
        """One image -> Detection; a list or a [B,H,W,C] tensor -> list[Detection]."""
        single = isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)) or (
            isinstance(images, torch.Tensor) and images.ndim == 3
        )
        rgbs, names = self._to_uint8_list(images)
        results: list[Detection] = []
        for start in range(0, len(rgbs), batch_size):
            chunk = rgbs[start : start + batch_size]
            sizes = [im.shape[:2] for im in chunk]
            if self.input_size is None and len(set(sizes)) > 1:  # native-size mode cannot stack
                for im in chunk:
                    results += self._detect_group([im], threshold)
                continue
            results += self._detect_group(chunk, threshold)
        for r, n in zip(results, names):
            r.source = n
        return results[0] if single else results

    def _detect_group(self, rgbs: Sequence[np.ndarray], threshold: float) -> list[Detection]:
        work = np.stack([self._resize_uint8(im) for im in rgbs])
        x = torch.from_numpy(work).permute(0, 3, 1, 2).contiguous()
        logits = self.logits(self.normalize(x.to(self.device)))
        prob_work = torch.softmax(logits, dim=1)[:, 1]
        out = []
        for i, im in enumerate(rgbs):
            h, w = im.shape[:2]
            if (h, w) == tuple(logits.shape[-2:]):
                prob = prob_work[i]
            else:  # mmseg postprocess_result: resize logits to the source size, then softmax/argmax
                li = F.interpolate(logits[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
                prob = torch.softmax(li, dim=1)[0, 1]
            out.append(Detection(prob=prob.cpu().numpy().astype(np.float32),
                                 prob_work=prob_work[i].cpu().numpy().astype(np.float32), threshold=threshold))
        return out

    @torch.inference_mode()
    def prob_maps(self, images: torch.Tensor, batch_size: int = 4, return_work: bool = False):
        """Host path: ComfyUI-style IMAGE [B,H,W,C] float 0..1 -> probability [B,H,W] float32, same device.

        Resizing runs in torch (bicubic, antialiased, quantised to 8 bits like a saved image) so
        the tensors never leave the device; it matches the PIL path to within interpolation
        rounding. `return_work=True` also returns the working-size maps [B,512,512], on which
        PAR is defined (`(work > threshold).mean()`), as a tuple (prob, work).
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        b, h, w, _ = images.shape
        outs, works = [], []
        for start in range(0, b, batch_size):
            x = images[start : start + batch_size, ..., :3].to(self.device).float().movedim(-1, 1) * 255.0
            x = x.clamp(0, 255).round()
            if self.input_size is not None and (h, w) != self.input_size:
                mode = "bicubic" if self.resize == "bicubic" else "bilinear"
                x = F.interpolate(x, size=self.input_size, mode=mode, align_corners=False,
                                  antialias=mode == "bicubic").clamp(0, 255).round()
            logits = self.logits(self.normalize(x))
            if return_work:
                works.append(torch.softmax(logits, dim=1)[:, 1])
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            outs.append(torch.softmax(logits, dim=1)[:, 1])
        prob = torch.cat(outs).to(images.device)
        return (prob, torch.cat(works).to(images.device)) if return_work else prob

    def par(self, images, threshold: float = 0.5) -> list[float]:
        dets = self.detect(images, threshold=threshold)
        dets = dets if isinstance(dets, list) else [dets]
        return [d.par for d in dets]


def _ndarray_to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image array of shape {arr.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    out = to_uint8(arr)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out[..., :3])


def resolve_source(source: str | os.PathLike | None, download: bool = True) -> Path:
    """Kept for training/benchmarks: `models.resolve` with None meaning the bundled default."""
    from .hub import resolve

    return resolve(DEFAULT_MODEL if source is None else source, download=download)


def load_detector(source: str | os.PathLike | None = None, device=None, dtype=None,
                  trust_torchscript: bool = False, resize: str | None = None,
                  input_size: Iterable[int] | None | str = "config", download: bool = True,
                  calibration: bool | dict = True) -> Detector:
    """Load a checkpoint (safetensors, mmseg .pth, or TorchScript with `trust_torchscript`) or a
    registry name into a ready-to-use `Detector` on `device` (auto: cuda, mps, cpu).
    A registry name that is not present is downloaded unless `download=False`.
    `calibration`: True = the checkpoint's stored operating point (if any), False = raw network,
    or a dict such as ``{"artifact_logit_bias": 0.0}`` to override it."""
    from .checkpoint import build_from_checkpoint, load_checkpoint
    from .hub import resolve

    path = resolve(DEFAULT_MODEL if source is None else source, download=download)
    sd, config, prov = load_checkpoint(path, trust_torchscript=trust_torchscript)
    if input_size != "config":
        config = dict(config, preprocess=dict(config.get("preprocess", {}),
                                              size=list(input_size) if input_size else None))
    model = build_from_checkpoint(sd, config, with_aux=False)  # the aux head is training-only
    calib = prov.get("calibration") if calibration is True else (calibration or None)
    return Detector(model, config, device=device, dtype=dtype, resize=resize, provenance=prov, source=str(path),
                    calibration=calib)
