"""PAL4VST segmentation networks, checkpoint I/O and the `Detector` inference API.

Heavy modules (torch, timm) are imported on first use, so `import comfyui_pal` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "create_model": ".factory",
    "PRESETS": ".factory",
    "list_presets": ".factory",
    "EncoderDecoder": ".segmentor",
    "load_checkpoint": ".checkpoint",
    "save_safetensors": ".checkpoint",
    "infer_config": ".checkpoint",
    "CheckpointError": ".checkpoint",
    "load_detector": ".detector",
    "Detector": ".detector",
    "Detection": ".detector",
    "default_model_path": ".detector",
    # the one model resolver and detector cache every host calls
    "resolve": ".hub",
    "load_cached": ".cache",
    "clear_cache": ".cache",
    "list_models": ".hub",
    "ModelNotAvailableError": ".hub",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value
