"""The one detector cache: `load_cached(ref, ...)` = `models.resolve(ref)` + a small LRU of loaded
Detectors keyed on the resolved file (path, mtime, size), device, dtype and the trust flag.
ComfyUI, A1111 and the Python API share it, so one network is loaded once per process."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from .detector import DEFAULT_MODEL, _as_dtype, auto_device, load_detector
from .hub import ProgressArg, resolve

__all__ = ["clear_cache", "load_cached"]

# ------------------------------------------------------------------------------ detector cache
# (real path, mtime, size, device, dtype, trust) -> Detector. Small: each entry holds a whole network.
_DETECTORS: OrderedDict[tuple, Any] = OrderedDict()
_DETECTORS_MAX = 2
_DETECTORS_LOCK = threading.Lock()


def load_cached(
    ref: str | os.PathLike | None,
    *,
    device=None,
    dtype=None,
    model_dirs: str | os.PathLike | list | tuple | None = None,
    download: bool = False,
    trust_torchscript: bool = False,
    progress: ProgressArg = None,
):
    """`resolve(ref)` then a Detector from a small process-wide LRU keyed on the resolved file
    (path, mtime, size) + device + dtype + trust flag: hosts share one loaded network per key.
    `ref=None` is the bundled default model."""
    path = resolve(DEFAULT_MODEL if ref is None else ref, model_dirs=model_dirs, download=download,
                   progress=progress)
    real = os.path.realpath(path)
    st = os.stat(real)
    dev = str(device) if device is not None else str(auto_device())
    key = (real, st.st_mtime_ns, st.st_size, dev, str(_as_dtype(dtype)), bool(trust_torchscript))
    with _DETECTORS_LOCK:
        det = _DETECTORS.get(key)
        if det is not None:
            _DETECTORS.move_to_end(key)
            return det
        while len(_DETECTORS) >= _DETECTORS_MAX:  # free the least recently used network first
            _DETECTORS.popitem(last=False)
        det = load_detector(path, device=dev, dtype=dtype, trust_torchscript=trust_torchscript)
        _DETECTORS[key] = det
        return det


def clear_cache() -> None:
    """Drop every cached Detector (e.g. when a host unloads models)."""
    with _DETECTORS_LOCK:
        _DETECTORS.clear()
