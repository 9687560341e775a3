"""Swin Transformer backbone with mmseg's module names and numerics.

Module names equal mmseg 0.x/1.x ``SwinTransformer`` so an official PAL4VST state dict loads
with ``strict=True`` and no renaming. The numerics follow mmseg, not timm/Microsoft:

* PatchEmbed zero-pads the image bottom/right to a multiple of the patch size ("corner").
* Window attention pads the token map to a multiple of the window *first*, then rolls, and
  builds the -100 shift mask on the padded grid; padded tokens are not masked in non-shifted
  windows and the window is never shrunk to the feature size.
* PatchMerging concatenates 2x2 neighbours in ``nn.Unfold`` order (channel ``4*c + 2*dh + dw``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["SwinTransformer", "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth per sample (training only), as mmcv/timm ``DropPath``."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Conv patchify + LayerNorm; ``projection``/``norm`` as in mmseg ``PatchEmbed``."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, stride: int, norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=stride)
        self.norm = nn.LayerNorm(embed_dims) if norm else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        # mmseg AdaptivePadding(padding="corner"): pad so every output position has a full kernel.
        pad_h = max((-(-h // self.stride) - 1) * self.stride + self.patch_size - h, 0)
        pad_w = max((-(-w // self.stride) - 1) * self.stride + self.patch_size - w, 0)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


class PatchMerging(nn.Module):
    """2x2 neighbour merge in ``nn.Unfold`` channel order, then LayerNorm(4C) and Linear(4C->2C)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if stride != 2:
            raise ValueError(f"Swin PatchMerging stride {stride} is not supported (only 2)")
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:  # mmseg pads odd sizes bottom/right ("corner")
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # Same values as nn.Unfold(2, stride=2): (C, kh, kw) flattening -> index 4*c + 2*dh + dw.
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, (h // 2) * (w // 2), 4 * c)
        x = self.reduction(self.norm(x))
        return x, (h // 2, w // 2)


def _relative_position_index(window: int) -> torch.Tensor:
    """mmseg ``WindowMSA`` index (equal to the Microsoft/timm construction)."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


class WindowMSA(nn.Module):
    """Window multi-head self-attention with relative position bias (mmseg ``WindowMSA``).

    ``fused_attn``: ``F.scaled_dot_product_attention`` (same maths, ~1e-7 rounding difference) or
    the explicit softmax path, bit-identical to mmseg (the default: on the 2-thread CPU SDPA
    measured no faster, benchmarks/bench_speed.py; None = SDPA in eval mode only).
    """

    fused_attn: bool | None = False

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        head_dims = embed_dims // num_heads
        self.scale = qk_scale or head_dims**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent, as in mmseg: official checkpoints carry it and strict loading expects it.
        self.register_buffer("relative_position_index", _relative_position_index(window_size))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _position_bias(self, n: int) -> torch.Tensor:
        """[heads, N, N] from the table; cached while the table is unchanged and no grad is needed."""
        t = self.relative_position_bias_table
        if torch.is_grad_enabled() or t.is_inference():
            # Inference tensors (built under torch.inference_mode(), as in ComfyUI) have no version
            # counter to key a cache on: gather every call (cheap).
            return t[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        key = (t.data_ptr(), t._version, t.dtype, t.device)
        cached = getattr(self, "_bias_cache", None)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # a normal tensor, usable outside inference mode too
                bias = t[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
            self._bias_cache = cached = (key, bias)
        return cached[1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B*nW, N, C]; mask: [nW, N, N] of 0/-100 or None.
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self._position_bias(n)
        if self.fused_attn or (self.fused_attn is None and not self.training):
            # SDPA: same maths, different rounding (~1e-7 on the fixtures).
            if mask is not None:
                nw = mask.shape[0]
                bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(bw // nw, 1, 1, 1)
            else:
                bias = bias.unsqueeze(0).expand(bw, -1, -1, -1)
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop, scale=self.scale)
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(bw, n, c)))
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        # In place (same op order and values as mmseg's out-of-place adds; matmul's backward does
        # not need its output): two fewer [B*nW, heads, N, N] tensors, ~7 % of a bf16 Swin-B forward.
        attn.add_(bias.unsqueeze(0))
        if mask is not None:
            nw = mask.shape[0]
            attn.view(bw // nw, nw, self.num_heads, n, n).add_(mask.unsqueeze(1).unsqueeze(0))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


def _shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """SW-MSA mask on the padded grid: 0 within a region, -100 across regions ([nW, N, N])."""

    def ids(size: int) -> torch.Tensor:
        r = torch.arange(size, device=device)
        # Regions [0, size-window), [size-window, size-shift), [size-shift, size) as mmseg's slices.
        return (r >= size - window).long() + (r >= size - shift).long()

    region = ids(hp)[:, None] * 3 + ids(wp)[None, :]
    win = region.view(hp // window, window, wp // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.zeros(diff.shape, device=device).masked_fill(diff != 0, -100.0)


_WINDOW_INDEX: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}


def _window_index(h: int, w: int, ws: int, s: int, device: torch.device):
    """Token gathers equal to mmseg's pad -> roll(-s) -> window partition and its inverse.

    ``fwd`` [nW*ws*ws] indexes the h*w tokens in window order (padded cells point at token 0 and
    are listed in ``pad`` to be zeroed); ``inv`` [h*w] indexes the window-ordered tokens back in
    image order (reverse partition -> roll(+s) -> crop). One copy each way instead of three.
    """
    key = (h, w, ws, s, str(device))
    hit = _WINDOW_INDEX.get(key)
    if hit is not None:
        return hit
    with torch.inference_mode(False):  # cached: must also serve autograd (training) calls
        hit = _build_window_index(h, w, ws, s, device)
    if len(_WINDOW_INDEX) > 64:  # a few shapes per stage in practice; bound it anyway
        _WINDOW_INDEX.clear()
    _WINDOW_INDEX[key] = hit
    return hit


def _build_window_index(h: int, w: int, ws: int, s: int, device: torch.device):
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    ry, rx = torch.arange(hp), torch.arange(wp)
    src_y, src_x = (ry + s) % hp, (rx + s) % wp  # rolled[y, x] = padded[(y + s) % hp, (x + s) % wp]
    # window order: (win_row, win_col, i, j) over the rolled grid
    wy = ry.view(hp // ws, ws)[:, None, :, None].expand(hp // ws, wp // ws, ws, ws)
    wx = rx.view(wp // ws, ws)[None, :, None, :].expand(hp // ws, wp // ws, ws, ws)
    py, px = src_y[wy].reshape(-1), src_x[wx].reshape(-1)
    valid = (py < h) & (px < w)
    fwd = torch.where(valid, py * w + px, torch.zeros_like(py))
    pad = None if bool(valid.all()) else (~valid).nonzero().view(-1).to(device)
    inv = torch.empty(h * w, dtype=torch.long)
    inv[fwd[valid]] = valid.nonzero().view(-1)
    return fwd.to(device), inv.to(device), pad


class ShiftWindowMSA(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int, qkv_bias: bool,
                 qk_scale: float | None, attn_drop: float, proj_drop: float, drop_path: float):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, qk_scale, attn_drop, proj_drop)
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        ws, s = self.window_size, self.shift_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        if s > 0:
            if mask is None:
                mask = _shift_mask(hp, wp, ws, s, x.device).to(x.dtype)
        else:
            mask = None
        # mmseg: pad (zeros) -> roll(-s) -> partition; here one gather, padded cells zeroed.
        fwd, inv, pad = _window_index(h, w, ws, s, x.device)
        xw = x.index_select(1, fwd)
        if pad is not None:
            xw.index_fill_(1, pad, 0.0)
        xw = self.w_msa(xw.view(-1, ws * ws, c), mask)
        # reverse partition -> roll(+s) -> crop, as one gather
        return self.drop(xw.view(b, -1, c).index_select(1, inv))


class FFN(nn.Module):
    """mmcv ``FFN`` layout: ``layers.0.0`` fc1, ``layers.0.1`` GELU, ``layers.1`` fc2."""

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float, drop_path: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden_dims), nn.GELU(), nn.Dropout(drop)),
            nn.Linear(hidden_dims, embed_dims),
            nn.Dropout(drop),
        )
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, hidden_dims: int, window_size: int, shift: bool,
                 qkv_bias: bool, qk_scale: float | None, drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, window_size // 2 if shift else 0,
                                   qkv_bias, qk_scale, attn_drop, drop, drop_path)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, hidden_dims, drop, drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw, mask)
        return self.ffn(self.norm2(x), identity=x)


class SwinBlockSequence(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, hidden_dims: int, depth: int, window_size: int,
                 qkv_bias: bool, qk_scale: float | None, drop: float, attn_drop: float,
                 drop_paths: list[float], downsample: PatchMerging | None, with_cp: bool = False):
        super().__init__()
        self.window_size = window_size
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dims, num_heads, hidden_dims, window_size, i % 2 == 1, qkv_bias, qk_scale,
                      drop, attn_drop, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        ws = self.window_size
        # One shift mask per stage: it depends only on the padded grid, shared by all shifted blocks.
        mask = None
        if len(self.blocks) > 1:
            mask = _shift_mask(-(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws, ws, ws // 2, x.device).to(x.dtype)
        for i, block in enumerate(self.blocks):
            m = mask if i % 2 == 1 else None
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(block, x, hw, m, use_reentrant=False)
            else:
                x = block(x, hw, m)
        if self.downsample is not None:
            x_down, hw_down = self.downsample(x, hw)
            return x_down, hw_down, x, hw
        return x, hw, x, hw


class SwinTransformer(nn.Module):
    """mmseg ``SwinTransformer`` (no absolute position embedding), returning NCHW features."""

    def __init__(self, embed_dims: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4, patch_size: int = 4, in_channels: int = 3, strides=(4, 2, 2, 2),
                 out_indices=(0, 1, 2, 3), qkv_bias: bool = True, qk_scale: float | None = None,
                 patch_norm: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, with_cp: bool = False):
        super().__init__()
        num_layers = len(depths)
        if len(num_heads) != num_layers or len(strides) != num_layers:
            raise ValueError(f"Swin depths {list(depths)}, num_heads {list(num_heads)} and strides "
                             f"{list(strides)} must have the same length")
        if strides[0] != patch_size:
            raise ValueError(f"Swin strides[0] ({strides[0]}) must equal patch_size ({patch_size})")
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, strides[0], patch_norm)
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        c = embed_dims
        self.num_features = []
        for i in range(num_layers):
            down = PatchMerging(c, 2 * c, strides[i + 1]) if i < num_layers - 1 else None
            start = sum(depths[:i])
            self.stages.append(SwinBlockSequence(
                c, num_heads[i], int(mlp_ratio * c), depths[i], window_size, qkv_bias, qk_scale, drop_rate,
                attn_drop_rate, dpr[start:start + depths[i]], down, with_cp))
            self.num_features.append(c)
            if down is not None:
                c *= 2
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.out_channels = [self.num_features[i] for i in self.out_indices]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def set_fused_attn(self, enable: bool | None = True) -> SwinTransformer:
        """SDPA window attention on (True), off (False, the default: mmseg's explicit softmax,
        bit-identical) or None (SDPA in eval mode only)."""
        for m in self.modules():
            if isinstance(m, WindowMSA):
                m.fused_attn = None if enable is None else bool(enable)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, hw = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_next, out, out_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(-1, out_hw[0], out_hw[1], self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            hw = hw_next
        return outs
