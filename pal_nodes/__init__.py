"""ComfyUI nodes (V1 API) for PAL artifact detection, PAR scoring and zoom-in inpainting.

Importing this package imports neither torch nor ComfyUI: node functions import what they need,
and `host.py` is the only module that talks to ComfyUI (looked up lazily).
"""

from __future__ import annotations

from . import host
from .nodes_detect import PALDetect, PALModelLoader, PALScore, PALSortByPAR
from .nodes_zoom import PALAutoFix, PALComposite, PALToSEGS, PALZoomCrop

# Inside ComfyUI folder_paths is already loaded: register models/pal before the loader lists it.
host.register_model_folder()

NODE_CLASS_MAPPINGS = {
    "PALModelLoader": PALModelLoader,
    "PALDetect": PALDetect,
    "PALScore": PALScore,
    "PALSortByPAR": PALSortByPAR,
    "PALZoomCrop": PALZoomCrop,
    "PALComposite": PALComposite,
    "PALAutoFix": PALAutoFix,
    "PALToSEGS": PALToSEGS,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PALModelLoader": "PAL Model Loader",
    "PALDetect": "PAL Detect Artifacts",
    "PALScore": "PAL Score (PAR)",
    "PALSortByPAR": "PAL Sort By PAR",
    "PALZoomCrop": "PAL Zoom Crop",
    "PALComposite": "PAL Composite",
    "PALAutoFix": "PAL Auto Fix",
    "PALToSEGS": "PAL to SEGS",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
