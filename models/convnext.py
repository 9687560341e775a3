"""ConvNeXt backbone with mmpretrain's module names (the PAL4VST ConvNeXt configs).

Keys: ``downsample_layers.0.{0: conv4x4, 1: LN2d}`` (stem), ``downsample_layers.i.{0: LN2d,
1: conv2x2}``, ``stages.i.j.{depthwise_conv, norm, pointwise_conv1, pointwise_conv2, gamma}`` and
the per-output ``norm{i}`` (LN2d, eps 1e-6). The stem floors odd sizes (no padding), like mmpretrain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .swin import DropPath

__all__ = ["ConvNeXt", "CONVNEXT_ARCHS"]

# mmpretrain ConvNeXt.arch_settings
CONVNEXT_ARCHS = {
    "atto": {"depths": [2, 2, 6, 2], "channels": [40, 80, 160, 320]},
    "femto": {"depths": [2, 2, 6, 2], "channels": [48, 96, 192, 384]},
    "pico": {"depths": [2, 2, 6, 2], "channels": [64, 128, 256, 512]},
    "nano": {"depths": [2, 2, 8, 2], "channels": [80, 160, 320, 640]},
    "tiny": {"depths": [3, 3, 9, 3], "channels": [96, 192, 384, 768]},
    "small": {"depths": [3, 3, 27, 3], "channels": [96, 192, 384, 768]},
    "base": {"depths": [3, 3, 27, 3], "channels": [128, 256, 512, 1024]},
    "large": {"depths": [3, 3, 27, 3], "channels": [192, 384, 768, 1536]},
    "xlarge": {"depths": [3, 3, 27, 3], "channels": [256, 512, 1024, 2048]},
    "huge": {"depths": [3, 3, 27, 3], "channels": [352, 704, 1408, 2816]},
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (mmpretrain ``LayerNorm2d``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if channels_last:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels: int, drop_path: float, layer_scale_init_value: float, mlp_ratio: float = 4.0):
        super().__init__()
        self.depthwise_conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels)
        mid = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, mid)  # linear_pw_conv=True (the PAL configs)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(mid, channels)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(channels))
        else:
            self.gamma = None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)
        x = self.norm(x, channels_last=True)
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(x)))
        x = x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.view(1, -1, 1, 1))
        return shortcut + self.drop_path(x)


class ConvNeXt(nn.Module):
    """mmpretrain ``ConvNeXt`` (``gap_before_final_norm=False``), returning NCHW features."""

    def __init__(self, depths=(3, 3, 9, 3), channels=(96, 192, 384, 768), in_channels: int = 3,
                 stem_patch_size: int = 4, out_indices=(0, 1, 2, 3), drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, with_cp: bool = False):
        super().__init__()
        if len(depths) != len(channels):
            raise ValueError(f"ConvNeXt depths {list(depths)} and channels {list(channels)} differ in length")
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, channels[0], stem_patch_size, stride=stem_patch_size),
            LayerNorm2d(channels[0]),
        )])
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        idx = 0
        for i, (depth, ch) in enumerate(zip(depths, channels)):
            if i >= 1:
                self.downsample_layers.append(nn.Sequential(
                    LayerNorm2d(channels[i - 1]), nn.Conv2d(channels[i - 1], ch, 2, stride=2)))
            self.stages.append(nn.Sequential(
                *[ConvNeXtBlock(ch, dpr[idx + j], layer_scale_init_value) for j in range(depth)]))
            idx += depth
        for i in self.out_indices:
            self.add_module(f"norm{i}", LayerNorm2d(channels[i]))
        self.out_channels = [channels[i] for i in self.out_indices]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.downsample_layers[i](x)
            if self.with_cp and self.training and x.requires_grad:
                for block in stage:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return outs
