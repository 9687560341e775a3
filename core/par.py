"""PAR (Perceptual Artifacts Ratio) and the official overlays."""

from __future__ import annotations

import numpy as np

MAGENTA = np.array([255, 0, 255], dtype=np.float32)


def par(mask: np.ndarray) -> float:
    """Artifact area / image area of a binary (or thresholded at 0.5) mask of any size.

    The official `curate_images.py` computes this on the 512x512 label map; `Detector` does
    the same by default, so this function is just the ratio.
    """
    m = np.asarray(mask)
    if m.size == 0:
        raise ValueError("PAR of an empty mask is undefined (0 pixels)")
    if m.dtype == bool:
        return float(m.mean())
    if np.issubdtype(m.dtype, np.integer):
        return float((m > (127 if m.max(initial=0) > 1 else 0)).mean())
    return float((m >= 0.5).mean())


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.3, color=MAGENTA) -> np.ndarray:
    """Official user-script overlay: artifact pixels become (1-alpha)*img + alpha*magenta.

    `image` is uint8 HxWx3, `mask` a boolean HxW of the same size. Returns uint8.
    """
    img = np.asarray(image)
    m = np.asarray(mask).astype(bool)
    if m.shape != img.shape[:2]:
        raise ValueError(f"overlay: mask {m.shape} does not match image {img.shape[:2]}")
    out = img.astype(np.float32)
    out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
