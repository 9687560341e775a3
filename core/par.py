"""PAR (Perceptual Artifacts Ratio) and the official overlays.

The threshold rule, one for the whole package: a pixel is an artifact when its probability is
**strictly greater** than the threshold (``prob > threshold``). At 0.5 this is exactly the official
argmax over the two logits: argmax picks class 1 only when l1 > l0 (a tie goes to class 0, the
first index), and softmax's p1 = sigmoid(l1 - l0) > 0.5 exactly when l1 > l0. ``>=`` would count
ties (p1 == 0.5) as artifacts, which argmax does not.
"""

from __future__ import annotations

import numpy as np

MAGENTA = np.array([255, 0, 255], dtype=np.float32)


def par(mask: np.ndarray) -> float:
    """Artifact area / image area of a binary (or, for floats, ``> 0.5``) mask of any size.

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
    return float((m > 0.5).mean())  # strict: the argmax rule above


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


def rank_by_par(pars, descending: bool = False, top_k: int = 0,
                max_par: float | None = None) -> tuple[list[int], list[int]]:
    """Rank images by PAR; return (kept, rejected) index lists, both in ranked order.

    The sort is stable, so ties keep input order (like `curate_images.py`). An image is kept
    while `top_k` (0 = no limit) is not reached and its PAR is at most `max_par` (None = no
    limit); nothing is dropped silently, the rest is returned as `rejected`.
    """
    scores = [float(p) for p in pars]
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i] if descending else scores[i])
    kept, rejected = [], []
    for i in ranked:
        # 1e-12: a PAR equal to max_par up to float rounding counts as within the limit
        if (max_par is None or scores[i] <= max_par + 1e-12) and (top_k <= 0 or len(kept) < top_k):
            kept.append(i)
        else:
            rejected.append(i)
    return kept, rejected


def fix_vis(before: np.ndarray, after: np.ndarray, mask: np.ndarray, crops: list[dict]) -> np.ndarray:
    """Before (mask overlay + crop boxes) | after (crop boxes), side by side, at most 4096 px wide.

    Crop boxes: green = kept, red = rejected by the PAR guard. The one picture of a fix: `pal fix`'s
    ``_fix_vis.png``, the ComfyUI previews and the A1111 before/after preview.
    """
    import cv2

    h, w = before.shape[:2]
    left = overlay(before, mask)
    right = after.copy()
    t = max(1, int(round(min(h, w) / 300)))
    for c in crops:
        x0, y0, x1, y1 = c["box"]
        color = (0, 200, 0) if c.get("kept", True) else (230, 30, 30)
        for im in (left, right):
            cv2.rectangle(im, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, t)
    gap = np.full((h, max(2, w // 100), 3), 255, np.uint8)
    vis = np.concatenate([left, gap, right], axis=1)
    if vis.shape[1] > 4096:
        s = 4096 / vis.shape[1]
        vis = cv2.resize(vis, (4096, max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    return vis
