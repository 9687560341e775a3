"""Seeded random weights with the scale of a trained network (shared by the benchmarks).

Plain torch only: the mmseg worker of bench_vs_mmseg.py imports this from the mmseg venv.
Default inits give near-zero logits (every pixel a near-tie), which would make agreement
figures meaningless; these give unit-scale activations and a real spread of logit gaps.
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)

    def rn(shape, std):
        return torch.randn(shape, generator=g) * std

    def ru(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                gain = 3.0 if name.endswith("conv_seg") else 1.0
                m.weight.copy_(rn(m.weight.shape, gain / m.weight[0].numel() ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(rn(m.bias.shape, 0.1))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):  # SyncBN included
                m.weight.copy_(ru(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(rn(m.bias.shape, 0.2))
                m.running_mean.copy_(rn(m.running_mean.shape, 0.5))
                m.running_var.copy_(ru(m.running_var.shape, 0.5, 2.0))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(ru(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(rn(m.bias.shape, 0.2))
        for pname, p in model.named_parameters():
            if pname.endswith("relative_position_bias_table"):
                p.copy_(rn(p.shape, 1.0))
    return model.eval()


def balance_classes_(head: nn.Module, logits: torch.Tensor) -> None:
    """Shift the head's class-1 bias so about half the pixels are class 1 (the hardest case)."""
    with torch.no_grad():
        head.conv_seg.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
