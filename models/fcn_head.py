"""FCNHead (the auxiliary head, used in training only) with mmseg's module names."""

from __future__ import annotations

import torch
from torch import nn

from .uper_head import ConvModule

__all__ = ["FCNHead"]


class FCNHead(nn.Module):
    """mmseg ``FCNHead``: ``convs.i`` ConvModules on feature ``in_index``, then ``conv_seg``."""

    def __init__(self, in_channels: int, channels: int = 256, in_index: int = 2, num_convs: int = 1,
                 kernel_size: int = 3, concat_input: bool = False, num_classes: int = 2,
                 dropout_ratio: float = 0.1):
        super().__init__()
        self.in_index = in_index
        self.concat_input = concat_input
        pad = kernel_size // 2
        if num_convs == 0:
            if in_channels != channels:
                raise ValueError(f"FCNHead with num_convs=0 needs in_channels == channels ({in_channels} != {channels})")
            self.convs = nn.Identity()
        else:
            self.convs = nn.Sequential(*[
                ConvModule(in_channels if i == 0 else channels, channels, kernel_size, padding=pad)
                for i in range(num_convs)])
        if concat_input:
            self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, padding=pad)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats) -> torch.Tensor:
        x = feats[self.in_index]
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)
