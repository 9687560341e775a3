"""PAL_MODEL: a loaded detector plus ComfyUI-style device handling (load on use, offload when idle)."""

from __future__ import annotations

import contextlib
import logging

from . import host

log = logging.getLogger("comfyui_pal")

DEVICE_CHOICES = ["auto", "cpu"]
DTYPE_CHOICES = ["auto", "fp32", "fp16", "bf16"]



def model_dirs() -> list[str]:
    """ComfyUI's `models/pal` folders (first = where downloads go); empty outside ComfyUI."""
    dirs = list(host.register_model_folder()) if host.in_comfy() else []
    first = host.download_dir()
    if first and first not in dirs:
        dirs.insert(0, first)
    return dirs


def available_models() -> list[str]:
    """Files in models/pal, then every registered model (file-system checks only, no network).
    A broken registry is an error here, so the dropdown never hides it behind a fallback."""
    from ..models import list_models

    names = list(host.list_local_models())
    for row in list_models(model_dirs=model_dirs()):
        if row["name"] not in names:
            names.append(row["name"])
    return names


def resolve_model(name: str, progress=None) -> str:
    """A models/pal file name, a path or a registry name -> a checkpoint path (downloads at
    execution time only: this is called from the loader's FUNCTION, never from INPUT_TYPES)."""
    from ..models import resolve

    local = host.local_model_path(name)
    if local:
        return local
    return str(resolve(name, model_dirs=model_dirs(), download=True, progress=progress))


def _move(det, device) -> None:
    if hasattr(det, "to") and callable(det.to):
        det.to(device)
    else:
        det.segmenter.to(device)
        det.device = device


class PalModel:
    """What flows through PAL_MODEL links. Never mutated by the consuming nodes."""

    def __init__(self, detector, name: str, path: str, device, dtype, offload: bool = True):
        self.detector = detector
        self.name, self.path = name, path
        self.device, self.dtype = device, dtype
        self.offload = offload
        self._pinned = 0  # >0 inside session(): stay on the compute device between calls

    def __repr__(self):
        return f"PalModel({self.name!r}, device={self.device}, dtype={self.dtype})"

    @property
    def input_size(self):
        return tuple(getattr(self.detector, "input_size", (512, 512)))

    def _bytes(self) -> int:
        seg = self.detector.segmenter
        return sum(p.numel() * p.element_size() for p in seg.parameters())

    def prob_maps(self, images, progress=None, chunk: int = 4):
        """IMAGE [B,H,W,3] -> artifact probability [B,H,W] (float32, intermediate device)."""
        return self.prob_and_pars(images, None, progress=progress, chunk=chunk)[0]

    def prob_and_pars(self, images, threshold, progress=None, chunk: int = 4):
        """IMAGE [B,H,W,3] -> (probability [B,H,W], PAR per image or None if threshold is None).

        PAR is the CLI's (`Detection.par`): prob > threshold on the 512x512 working map.
        The network is moved to the compute device for the call and back afterwards (offload when
        idle); chunks keep peak memory bounded and give interruption points.
        """
        import torch

        target = self.device
        if not self._pinned:
            host.free_memory_for(self._bytes() * 3 + images[:chunk].numel() * 4 * 64, target)
        _move(self.detector, target)
        outs, pars = [], []
        try:
            for s in range(0, images.shape[0], chunk):
                host.check_interrupt()
                with torch.inference_mode():
                    p, work = self.detector.prob_maps(images[s:s + chunk].to(target), return_work=True)
                outs.append(p.float().to(host.intermediate_device()))
                if threshold is not None:
                    pars += [float((w > threshold).float().mean().item()) for w in work]
                if progress is not None:
                    progress.update(min(chunk, images.shape[0] - s))
        finally:
            if not self._pinned:
                self._offload()
        return torch.cat(outs, 0), (pars if threshold is not None else None)

    def _offload(self):
        if self.offload:
            off = host.offload_device()
            if str(off) != str(self.device):
                _move(self.detector, off)
                host.soft_empty_cache()

    @contextlib.contextmanager
    def session(self):
        """Keep the network on the compute device for several calls (e.g. PALAutoFix's rounds)."""
        self._pinned += 1
        try:
            yield self
        finally:
            self._pinned -= 1
            if not self._pinned:
                self._offload()


def load(name: str, device_choice: str = "auto", dtype_choice: str = "auto",
         offload: bool = True) -> PalModel:
    from ..models import load_cached

    path = resolve_model(name)
    device = host.torch_device(device_choice)
    dtype = host.pick_dtype(dtype_choice, device)
    # Load on the offload device; prob_maps moves it to `device` only while running.
    load_dev = host.offload_device() if offload else device
    det = load_cached(path, device=load_dev, dtype=dtype)
    return PalModel(det, name, path, device, dtype, offload=offload)
