"""Validation and small tensor helpers for ComfyUI layouts (IMAGE [B,H,W,C], MASK [B,H,W]).

Imported lazily by the nodes (it imports torch). Nothing here modifies its inputs.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("comfyui_pal")


def check_image(image, name: str = "image") -> torch.Tensor:
    """Return a float32 [B,H,W,3] view/copy; accepts [H,W,C] and RGBA (alpha dropped)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected an IMAGE tensor [B,H,W,C], got {type(image).__name__}")
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name}: expected an IMAGE [batch, height, width, channels] with 3 channels, got shape "
            f"{tuple(image.shape)}; a MASK goes into a MASK input (or convert it with MaskToImage)"
        )
    if image.shape[0] == 0:
        raise ValueError(f"{name}: empty image batch (0 images, shape {tuple(image.shape)}); the node "
                         "upstream produced nothing: check its filter settings or connect an image")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: images of size {image.shape[2]}x{image.shape[1]} have no pixels; "
                         "connect a real image")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return image.float()


MIN_SIDE = 8  # smaller images cannot hold a region plus context, and 1xN breaks the resizers


def check_pixels(image: torch.Tensor, name: str = "image", min_side: int = MIN_SIDE) -> torch.Tensor:
    """check_image + the checks detection/cropping need: at least min_side px each way, finite values."""
    img = check_image(image, name)
    b, h, w = img.shape[:3]
    if h < min_side or w < min_side:
        raise ValueError(f"{name}: {w}x{h} is too small (PAL needs at least {min_side}x{min_side} pixels); "
                         "connect the full image, not a 1-pixel strip or a mask turned into an image")
    if not bool(torch.isfinite(img).all()):
        bad = [i for i in range(b) if not bool(torch.isfinite(img[i]).all())]
        raise ValueError(f"{name}: image(s) {bad[:8]} contain NaN or infinite pixel values (often a VAE decode "
                         "that overflowed in fp16); decode in fp32 (--fp32-vae) or fix the node that made them")
    return img


def check_working_size(size: int, height: int, width: int, name: str = "size") -> None:
    """A working size larger than the whole image only upsamples the image itself: refuse it."""
    if size > max(height, width):
        fit = max(8, (max(height, width) // 8) * 8)
        raise ValueError(f"{name} = {size} is larger than the image ({width}x{height}): every crop would be "
                         f"blown up beyond the whole picture; set {name} to at most {fit} or to 0 (auto), or "
                         "upscale the image first")


def check_masks(mask, batch: int, height: int, width: int, name: str = "mask",
                notes: list[str] | None = None) -> torch.Tensor:
    """Any MASK ([H,W], [B,H,W], [B,1,H,W]) -> float32 [batch,H,W] matching the image.

    * 1 mask for B images is broadcast; B masks for B images pair up; anything else is refused.
    * A different size is resized (bilinear) with a note. LoadImage without alpha gives a 64x64
      all-zero mask whatever the image size: that is resized to an empty mask at the image size.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a MASK tensor [B,H,W], got {type(mask).__name__}")
    m = mask
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif m.ndim == 4 and m.shape[-1] in (1, 3, 4):
        raise ValueError(
            f"{name}: got an IMAGE-shaped tensor {tuple(mask.shape)} where a MASK [B,H,W] is needed; "
            "convert it with the core ImageToMask node"
        )
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or m.shape[-1] == 0 or m.shape[-2] == 0:
        raise ValueError(f"{name}: expected a MASK [batch, height, width], got shape {tuple(mask.shape)}")
    if m.shape[0] not in (1, batch):
        raise ValueError(
            f"{name}: {m.shape[0]} masks for {batch} images; give one mask per image or a single mask "
            "for all of them"
        )
    m = m.float()
    if tuple(m.shape[-2:]) != (height, width):
        empty = not bool((m > 0).any())
        msg = (f"{name}: {m.shape[-1]}x{m.shape[-2]} resized to the image size {width}x{height}"
               + (" (empty mask, e.g. LoadImage of a file without alpha)" if empty else ""))
        if notes is not None:
            notes.append(msg)
        log.info("PAL: %s", msg)
        if empty:
            m = torch.zeros((m.shape[0], height, width), dtype=torch.float32, device=m.device)
        else:
            m = F.interpolate(m.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if m.shape[0] != batch:
        m = m.expand(batch, -1, -1)
    return m.clamp(0.0, 1.0)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Square max-filter of a [B,H,W] mask; negative pixels erode."""
    if pixels == 0:
        return mask
    k = 2 * abs(int(pixels)) + 1
    x = mask.unsqueeze(1)
    if pixels > 0:
        x = F.max_pool2d(x, k, stride=1, padding=k // 2)
    else:
        x = -F.max_pool2d(-x, k, stride=1, padding=k // 2)
    return x[:, 0]


def to_u8(image_hwc: torch.Tensor) -> np.ndarray:
    from ..core.imageio import to_uint8

    return to_uint8(image_hwc)


def from_u8(arr: np.ndarray, device=None) -> torch.Tensor:
    from ..core.imageio import to_float01

    t = torch.from_numpy(to_float01(arr))
    return t.to(device) if device is not None else t


def overlay_u8(image_hwc: torch.Tensor, mask_hw: torch.Tensor) -> np.ndarray:
    """Official PAL overlay (0.7*img + 0.3*magenta on artifact pixels) as uint8 for previews."""
    from ..core.par import overlay

    return overlay(to_u8(image_hwc), mask_hw.detach().cpu().numpy() > 0.5)  # strict, see core/par.py


def mask_par(mask_hw: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of pixels > threshold (PAR of a given mask, at its own resolution; strict, see core/par.py)."""
    return float((mask_hw > threshold).float().mean().item())


def split_images(images) -> list[torch.Tensor]:
    """A list of IMAGE tensors (INPUT_IS_LIST) or one batch -> list of single [H,W,3] images."""
    items = images if isinstance(images, (list, tuple)) else [images]
    out = []
    for k, t in enumerate(items):
        t = check_image(t, f"images[{k}]")
        out.extend(t[i] for i in range(t.shape[0]))
    return out


def stack_or_list(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Same-size images -> [one batch]; mixed sizes -> one [1,H,W,3] tensor per image (order kept)."""
    if not images:
        return []
    if all(t.shape == images[0].shape for t in images):
        return [torch.stack(images, 0)]
    return [t.unsqueeze(0) for t in images]
