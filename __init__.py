"""comfyui-pal: PAL4VST perceptual-artifact localization, PAR scoring and zoom-in inpainting.

This folder is at once a ComfyUI custom-node pack (NODE_CLASS_MAPPINGS, WEB_DIRECTORY below),
an AUTOMATIC1111 extension (scripts/) and the Python package `comfyui_pal`.
Importing it needs neither ComfyUI nor A1111, and does not import torch.
"""

__version__ = "0.1.0"

from .pal_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "__version__"]
