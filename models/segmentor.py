"""``EncoderDecoder``: backbone + decode head (+ auxiliary head), mmseg's segmentor layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EncoderDecoder", "slide_logits"]


class EncoderDecoder(nn.Module):
    """``forward(x)`` = mmseg whole-mode ``predict`` logits: decode logits resized to the input size.

    ``x`` is a normalised NCHW float batch (RGB, ImageNet mean/std on the 0..255 scale).
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, auxiliary_head: nn.Module | None = None,
                 config: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.config = config or {}
        self.align_corners = False

    def extract_feat(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def encode_decode(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.extract_feat(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_decode(x)

    def forward_train(self, x: torch.Tensor) -> dict:
        """Decode (and aux) logits at feature resolution (1/4 and 1/16 for the PAL configs)."""
        feats = self.extract_feat(x)
        out = self.decode_head(feats)
        aux = self.auxiliary_head(feats) if self.auxiliary_head is not None else None
        return {"out": out, "aux": aux}

    @torch.no_grad()
    def slide_inference(self, x: torch.Tensor, crop_size, stride) -> torch.Tensor:
        """mmseg ``slide_inference`` (see ``slide_logits``)."""
        return slide_logits(self, x, crop_size, stride)


def slide_logits(segmenter, x: torch.Tensor, crop_size, stride) -> torch.Tensor:
    """mmseg ``slide_inference``: overlapping crops, logits summed in float32 and divided by the visit count.

    The official ConvNeXt configs name this test mode (crop 512, stride 341/426); at the official
    512x512 input it is a single window, i.e. equal to ``segmenter(x)``.
    """
    (h_crop, w_crop), (h_stride, w_stride) = crop_size, stride
    b, _, h, w = x.shape
    h_grids = max(h - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = count = None
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * h_stride, wi * w_stride
            y2, x2 = min(y1 + h_crop, h), min(x1 + w_crop, w)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            out = segmenter(x[:, :, y1:y2, x1:x2]).float()
            if preds is None:
                preds = x.new_zeros((b, out.shape[1], h, w), dtype=torch.float32)
                count = x.new_zeros((b, 1, h, w), dtype=torch.float32)
            preds[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count
