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
    """Files in models/pal, then every registered model and every Hub model already downloaded
    (file-system checks only, no network). A broken built-in registry raises; a broken user
    registry file is logged and skipped here (the loader reports it when it runs)."""
    from ..models import list_models
    from ..models.registry import RegistryError

    # Hub downloads live under models/pal/hf/...; they are listed once, as their hf: reference.
    names = [n for n in host.list_local_models() if not n.replace("\\", "/").startswith("hf/")]
    try:
        rows = list_models(model_dirs=model_dirs())
    except RegistryError as e:
        log.warning("PAL: %s (listing the built-in models only)", e)
        rows = list_models(model_dirs=model_dirs(), include_user_registry=False)
    for row in rows:
        if row["name"] not in names:
            names.append(row["name"])
    return names


def _progress_callback():
    """Bytes downloaded -> a ComfyUI progress bar (created on the first report, when the total is known)."""
    state = {}

    def update(done, total):
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = host.progress_bar(total or max(done, 1))
        bar.update_absolute(done, total)

    return update


def resolve_model(name: str, hub_id: str = "") -> str:
    """A models/pal file name, a path, a registry name or a Hub reference -> a checkpoint path.
    Downloads happen here, at execution (the loader's FUNCTION), never in INPUT_TYPES."""
    from ..models import resolve

    ref = (hub_id or "").strip()
    if ref:  # a Hub input: "owner/repo" means hf:owner/repo
        ref = ref if ref.startswith(("hf:", "hf-hub:")) else "hf:" + ref
        return str(resolve(ref, model_dirs=model_dirs(), download=True, progress=_progress_callback()))
    local = host.local_model_path(name)
    if local:
        return local
    return str(resolve(name, model_dirs=model_dirs(), download=True, progress=_progress_callback()))


LOADER_TOOLTIP = (
    "Checkpoint in models/pal, or a registered model. 'pal4vst-unified' is the official PAL4VST detector: "
    "selecting it downloads the authors' file from Google Drive once at run time (about 0.5 GB), verifies "
    "it, converts it to models/pal/pal4vst-unified-swin-b-w12.safetensors and uses it from then on. "
    "Licence: research weights by the PAL4VST authors, no licence given: check with them before commercial "
    "use. 'pal-starter' is bundled (small, offline, much weaker).")
HUB_ID_TOOLTIP = (
    "Optional Hugging Face model, used instead of the dropdown when filled: hf:owner/repo[@revision]"
    "[/file.safetensors] (or owner/repo). Downloaded into models/pal at run time, pinned to a commit and "
    "sha256-verified; safetensors only.")


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
         offload: bool = True, hub_id: str = "") -> PalModel:
    from ..models import load_cached

    path = resolve_model(name, hub_id)
    name = (hub_id or "").strip() or name
    device = host.torch_device(device_choice)
    dtype = host.pick_dtype(dtype_choice, device)
    # Load on the offload device; prob_maps moves it to `device` only while running.
    load_dev = host.offload_device() if offload else device
    det = load_cached(path, device=load_dev, dtype="auto" if dtype is None else dtype)
    dtype = det.dtype if dtype is None else dtype
    return PalModel(det, name, path, device, dtype, offload=offload)
