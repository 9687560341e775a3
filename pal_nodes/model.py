"""PAL_MODEL: a loaded detector plus ComfyUI-style device handling (load on use, offload when idle)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from . import host

log = logging.getLogger("comfyui_pal")

DEVICE_CHOICES = ["auto", "cpu"]
DTYPE_CHOICES = ["auto", "fp32", "fp16", "bf16"]

# (path, mtime, size, device, dtype) -> Detector. Small: each entry holds a whole network.
_CACHE: dict[tuple, object] = {}
_CACHE_MAX = 2
_LOCK = threading.Lock()


def available_models() -> list[str]:
    """Files in models/pal (ComfyUI) followed by registry names that are not already files."""
    names = list(host.list_local_models())
    try:
        from ..models import hub

        registry = list(hub.get_registry())  # names only: no file-system probing per /object_info
    except Exception as e:  # a broken registry must not hide local files
        log.warning("PAL: could not read the model registry: %s", e)
        registry = []
    for r in registry:
        r = r if isinstance(r, str) else getattr(r, "name", None) or r.get("name")
        if r and r not in names:
            names.append(r)
    return names or ["pal-starter"]


def resolve_model(name: str) -> str:
    """A models/pal file name, an absolute path or a registry name -> a checkpoint path."""
    local = host.local_model_path(name)
    if local:
        return local
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    from ..models import hub

    return str(hub.resolve(name, download=True, models_dir=host.download_dir()))


def _load_detector(path: str, device, dtype):
    from ..models.detector import load_detector

    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, str(device), str(dtype))
    with _LOCK:
        det = _CACHE.get(key)
        if det is None:
            det = load_detector(path, device=device, dtype=dtype)
            while len(_CACHE) >= _CACHE_MAX:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = det
    return det


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
    path = resolve_model(name)
    device = host.torch_device(device_choice)
    dtype = host.pick_dtype(dtype_choice, device)
    # Load on the offload device; prob_maps moves it to `device` only while running.
    load_dev = host.offload_device() if offload else device
    det = _load_detector(path, load_dev, dtype)
    return PalModel(det, name, path, device, dtype, offload=offload)
