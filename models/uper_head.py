"""UPerHead (PSP pooling + FPN) with mmseg's module names.

``ConvModule`` = conv (no bias) -> ``bn`` -> ReLU, named ``conv``/``bn``/``activate`` like mmcv.
All resizes are bilinear with ``align_corners=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvModule", "UPerHead"]


class ConvModule(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def resize(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class UPerHead(nn.Module):
    """mmseg ``UPerHead``: returns class logits at the resolution of the first feature (1/4)."""

    def __init__(self, in_channels, channels: int = 512, pool_scales=(1, 2, 3, 6), num_classes: int = 2,
                 dropout_ratio: float = 0.1, in_index=None, align_corners: bool = False):
        super().__init__()
        self.in_channels = list(in_channels)
        self.in_index = list(in_index) if in_index is not None else list(range(len(self.in_channels)))
        if len(self.in_index) != len(self.in_channels):
            raise ValueError(f"UPerHead in_index {self.in_index} and in_channels {self.in_channels} differ in length")
        self.channels = channels
        self.align_corners = align_corners
        top = self.in_channels[-1]
        # psp_modules.k = Sequential(AdaptiveAvgPool2d(scale), ConvModule): keys psp_modules.k.1.*
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(top, channels, 1)) for s in pool_scales)
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in self.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in self.in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(self.in_channels) * channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [resize(m(x), x.shape[2:], self.align_corners) for m in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, feats) -> torch.Tensor:
        feats = [feats[i] for i in self.in_index]
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(feats[-1]))
        n = len(laterals)
        for i in range(n - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)]
        outs.append(laterals[-1])
        for i in range(n - 1, 0, -1):
            outs[i] = resize(outs[i], outs[0].shape[2:], self.align_corners)
        x = self.fpn_bottleneck(torch.cat(outs, dim=1))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(x)
