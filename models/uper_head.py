"""UPerHead (PSP pooling + FPN) with mmseg's module names.

``ConvModule`` = conv (no bias) -> ``bn`` -> ReLU, named ``conv``/``bn``/``activate`` like mmcv.
All resizes are bilinear with ``align_corners=False``.

Inference shortcut (``UPerHead.lowres_fuse``, on by default, eval mode only): the FPN
bottleneck is a 3x3 conv over ``cat([p0, up(p1), up(p2), up(p3)])``. Convolution is linear and
bilinear upsampling is a fixed linear map per axis, so each upsampled part's channel mixing is
done at its own low resolution and only then upsampled (``conv3x3_of_upsampled``). Same maths as
mmseg, different float rounding (~1e-6 on the fixtures); it removes about two thirds of the
head's largest convolution. ``set_lowres_fuse(False)`` restores the literal mmseg order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvModule", "UPerHead", "conv3x3_of_upsampled"]


class ConvModule(nn.Module):
    fold_bn = True  # inference: BatchNorm folded into the conv (see folded()); False = conv -> bn

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or not self.fold_bn:
            return self.activate(self.bn(self.conv(x)))
        w, b = self.folded()
        return self.activate(F.conv2d(x, w, b, padding=self.conv.padding))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval BatchNorm folded into the conv: (weight * g/sqrt(var+eps), beta - mean * g/sqrt(var+eps)).

        Inference only (training and grad-enabled calls run conv -> bn as mmseg). Cached until any
        of the tensors changes; the module and its state dict stay as they are.
        """
        bn, wt = self.bn, self.conv.weight
        tensors = (wt, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        # Inference tensors (a model built under torch.inference_mode(), as in ComfyUI) have no version
        # counter, so an in-place weight update could not be seen: fold them on every call (a few
        # small ops) instead of caching.
        cacheable = not any(t.is_inference() for t in tensors)
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors) if cacheable else None
        cached = getattr(self, "_folded", None)
        if cached is None or key is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # normal tensors, never tracked
                scale = (bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps))
                w = (wt.float() * scale.view(-1, 1, 1, 1)).to(wt.dtype)
                b = (bn.bias.float() - bn.running_mean.float() * scale).to(wt.dtype)
            cached = (key, (w, b))
            if cacheable:
                self._folded = cached
        return cached[1]


def resize(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _interp_taps(n_in: int, n_out: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """[3, n_out, n_in]: row Y of tap k is row Y+k-1 of the 1-D bilinear resize matrix (the weights
    F.interpolate uses on that axis), or zero where the 3x3 conv's zero padding lies."""
    eye = torch.eye(n_in, dtype=torch.float64, device=like.device)[None]
    u = F.interpolate(eye, size=n_out, mode="linear", align_corners=align_corners)[0].T  # [n_out, n_in]
    z = u.new_zeros(1, n_in)
    return torch.stack([torch.cat([z, u[:-1]]), u, torch.cat([u[1:], z])]).to(like.dtype)


def conv3x3_of_upsampled(x: torch.Tensor, weight: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """``F.conv2d(resize(x, size), weight, padding=1)`` without convolving at the large size.

    out[o,Y,X] = sum_{ky,kx,c} w[o,c,ky,kx] * sum_{j,i} Ay[ky][Y,j] Ax[kx][X,i] x[c,j,i]: the
    channel mixing (the expensive part) runs at x's resolution, then two small matmuls apply
    the resize and the taps. Any sizes (not only integer factors). Returns a [B,O,H,W] view.
    """
    b, c, h, w = x.shape
    o = weight.shape[0]
    big_h, big_w = int(size[0]), int(size[1])
    ay = _interp_taps(h, big_h, align_corners, x).permute(1, 2, 0).reshape(big_h, h * 3)  # [Y, (j, ky)]
    ax = _interp_taps(w, big_w, align_corners, x).permute(0, 2, 1).reshape(3 * w, big_w)  # [(kx, i), X]
    w1 = weight.permute(2, 0, 3, 1).reshape(3 * o * 3, c)  # rows (ky, o, kx)
    # One [9o, c] @ [c, (b, j, i)] product. (A batched matmul over (b, j) made torch expand w1 to
    # b*h copies first: 300 MB of copying at 64x64 in bf16, ~11 % of a bf16 Swin-B forward.)
    z = (w1 @ x.transpose(0, 1).reshape(c, b * h * w)).view(3 * o * 3, b * h, w).transpose(0, 1)  # [(b, j), (ky, o, kx), i]
    t = (z.reshape(b * h * 3 * o, 3 * w) @ ax).view(b, h * 3, o * big_w)  # [b, (j, ky), (o, X)]
    return torch.matmul(ay, t).view(b, big_h, o, big_w).permute(0, 2, 1, 3)


class UPerHead(nn.Module):
    """mmseg ``UPerHead``: returns class logits at the resolution of the first feature (1/4)."""

    lowres_fuse = True  # eval-mode shortcut for the FPN bottleneck (see the module docstring)
    channels_last = False  # eval mode: features and conv weights NHWC (set_channels_last)

    def __init__(self, in_channels, channels: int = 512, pool_scales=(1, 2, 3, 6), num_classes: int = 2,
                 dropout_ratio: float = 0.1, in_index=None, align_corners: bool = False,
                 linear_bottleneck: bool = False):
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
        if linear_bottleneck:
            # No ReLU before the classifier (not in mmseg; the project's small starter head). With
            # ReLU features a narrow head can learn "artifact = every feature off", which caps the
            # artifact margin at the classifier's bias: all artifact pixels tie, and no threshold
            # separates weak from strong evidence. Linear features keep the margin graded.
            self.fpn_bottleneck.activate = nn.Identity()
        self.linear_bottleneck = bool(linear_bottleneck)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [resize(m(x), x.shape[2:], self.align_corners) for m in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, feats) -> torch.Tensor:
        feats = [feats[i] for i in self.in_index]
        if self.channels_last and not self.training:
            feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(feats[-1]))
        n = len(laterals)
        for i in range(n - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)]
        outs.append(laterals[-1])
        if self.lowres_fuse and not self.training:
            x = self._fuse_lowres(outs)
        else:
            for i in range(n - 1, 0, -1):
                outs[i] = resize(outs[i], outs[0].shape[2:], self.align_corners)
            x = self.fpn_bottleneck(torch.cat(outs, dim=1))
        if self.dropout is not None:
            x = self.dropout(x)
        # The classifier may be kept in fp32 under bf16/fp16 (Detector does): logits of a few
        # units rounded to bf16 move by ~0.02, enough to flip near-tie pixels one way.
        return self.conv_seg(x.to(self.conv_seg.weight.dtype))

    def _fuse_lowres(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """fpn_bottleneck(cat([outs[0], resize(outs[1]), ...])) with each resized part's conv at low resolution."""
        m = self.fpn_bottleneck
        folded = m.fold_bn and not torch.is_grad_enabled()
        wt, bias = m.folded() if folded else (m.conv.weight, None)
        c, size = outs[0].shape[1], outs[0].shape[2:]
        y = F.conv2d(outs[0], wt[:, :c], bias, padding=1)
        for i in range(1, len(outs)):
            part = wt[:, i * c:(i + 1) * c]
            if tuple(outs[i].shape[2:]) == tuple(size):
                y = y + F.conv2d(outs[i], part, padding=1)
            else:
                y = y + conv3x3_of_upsampled(outs[i], part, size, self.align_corners)
        return m.activate(y if folded else m.bn(y))

    def set_channels_last(self, enable: bool = True) -> UPerHead:
        """NHWC convolutions (weights converted in place, inputs on the way in), eval mode only.

        Detector turns it on for bf16 on CPU, where the NCHW head made a Swin-B forward 1.05x
        slower (`benchmarks/bench_speed.py bf16`); fp32 gained nothing measurable, so it stays
        NCHW and bit-identical to mmseg. Values differ from NCHW by bf16 rounding only.
        """
        self.channels_last = bool(enable)
        fmt = torch.channels_last if enable else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=fmt)
        return self

    def set_lowres_fuse(self, enable: bool = True) -> UPerHead:
        """Off = mmseg's literal op order (resize, concatenate, convolve); same values up to rounding."""
        self.lowres_fuse = bool(enable)
        return self
