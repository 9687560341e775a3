"""Generic backbone: any timm model with ``features_only=True`` (for light starter models).

Weights are never downloaded: the model is built with ``pretrained=False`` unless a local
``pretrained_path`` is given, in which case timm loads that file (and only that file).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["TimmBackbone"]

_RESERVED_KWARGS = {"pretrained", "features_only", "out_indices", "pretrained_cfg_overlay"}


class TimmBackbone(nn.Module):
    """Wraps ``timm.create_model(model_name, features_only=True)``; returns NCHW feature maps.

    State-dict keys are the timm feature model's keys under ``body.``.
    """

    def __init__(self, model_name: str, out_indices=None, kwargs: dict | None = None,
                 pretrained_path: str | None = None):
        super().__init__()
        import timm  # local import: keep ``import comfyui_pal`` light

        kwargs = dict(kwargs or {})
        bad = sorted(_RESERVED_KWARGS & set(kwargs))
        if bad:
            raise ValueError(f"timm backbone kwargs may not set {bad}; use the config keys "
                             "'out_indices' / 'pretrained_path' instead")
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models() for valid names")
        extra = {}
        if pretrained_path:
            path = Path(pretrained_path).expanduser()
            if not path.is_file():
                raise ValueError(f"timm backbone pretrained_path {str(path)!r} does not exist; give a local "
                                 "weights file (.safetensors/.pth/.bin) or remove 'pretrained_path'")
            # source="timm" + file: timm's resolver loads this file and never touches the hub.
            extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path), "source": "timm"}}
        if out_indices is not None:
            extra["out_indices"] = tuple(int(i) for i in out_indices)
        try:
            body = timm.create_model(model_name, features_only=True, **extra, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            raise ValueError(f"cannot build timm backbone {model_name!r} with features_only=True "
                             f"(out_indices={out_indices}, kwargs={kwargs}): {e}") from e
        info = body.feature_info
        indices = list(info.out_indices)
        channels = list(info.channels())
        # Default: the last four levels (strides 4..32 for most CNNs), which UPerHead expects.
        self.select = list(range(len(indices)))
        if out_indices is None and len(indices) > 4:
            self.select = self.select[-4:]
        self.body = body
        self.out_indices = [indices[i] for i in self.select]
        self.out_channels = [channels[i] for i in self.select]
        self.reductions = [info.reduction()[i] for i in self.select]
        self.nhwc = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        feats = [feats[i] for i in self.select]
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats
