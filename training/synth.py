"""Synthetic perceptual-artifact data: inject artifacts with exact masks into clean images.

No labelled artifact data set is reachable offline (see the project docs), so training,
tests and the bundled starter model use images corrupted here. Every artifact is applied
through a soft alpha map; the label is 1 where alpha >= 0.5 and the pixels visibly changed
(blurred |difference| >= 3 grey levels), 255 (ignore) on the feathered rim (0.15 <= alpha < 0.5)
and on unchanged pixels inside the support, 0 elsewhere.
Output is the PAL4VST `ArtifactsDataset` layout, so `pal train` reads it like the real data.

Everything is deterministic given the seed: each image gets its own
`numpy.random.default_rng([seed, split_id, index])`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ARTIFACT_TYPES = ("warp", "duplicate", "smear", "checkerboard", "blotch", "fill", "seam",
                  "melt", "deform", "incoherent", "part_smear")

# Bundled scikit-image pictures that load without a download (checked for skimage 0.26):
# photographs/textures whose licences are public domain or CC0 per skimage.data's docs.
SKIMAGE_TRAIN = (
    "astronaut", "camera", "chelsea", "coins", "brick", "grass", "gravel",
    "immunohistochemistry", "hubble_deep_field", "moon", "clock", "page",
)
# Held out of the default training bases so the benchmark's test set has unseen pictures.
SKIMAGE_HELDOUT = ("coffee", "rocket")

IGNORE = 255
_ALPHA_LABEL = 0.5
_ALPHA_IGNORE = 0.15
_VISIBLE_LEVEL = 3.0  # grey levels of (blurred) change that count as a visible corruption
_VISIBLE_SIGMA = 2.0


# --------------------------------------------------------------------------- base images


def dead_leaves(rng: np.random.Generator, size: int = 512, n_min: int = 150, n_max: int = 600) -> np.ndarray:
    """Procedural 'dead leaves' image: occluding discs/ellipses with power-law radii.

    Its statistics (edges at all scales, flat regions, occlusions) resemble natural images
    and it gives the model many sharp, *clean* edges, so seams are not learnt as 'any edge'.
    """
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    n = int(rng.integers(n_min, n_max))
    rmin, rmax = size / 120.0, size / 4.0
    # radii ~ r^-3 (scale-invariant dead leaves), sampled by inverse CDF
    u = rng.random(n)
    radii = (rmin ** -2 + u * (rmax ** -2 - rmin ** -2)) ** -0.5
    radii = np.sort(radii)[::-1]  # large leaves first: small ones end up on top
    for r in radii:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        ax = max(1, int(r * rng.uniform(0.5, 1.5)))
        ay = max(1, int(r * rng.uniform(0.5, 1.5)))
        cv2.ellipse(img, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, c, -1, cv2.LINE_AA)
    if rng.random() < 0.5:
        # a little shading/texture so flat leaves are not perfectly flat
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), size / 64)
        noise *= 12.0 / (noise.std() + 1e-6)
        img = np.clip(img.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)
    return img


def _vivid(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour (float32), as digital art and macro photos are full of."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(110, 255), rng.uniform(110, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _linear_ramp(rng: np.random.Generator, size: int, spread: float | None = None) -> np.ndarray:
    """A 0-1 linear ramp across the picture at a random angle, HxWx1; `spread` (default: random
    0.8-2, drawn after the angle) steepens it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * np.pi)
    spread = rng.uniform(0.8, 2.0) if spread is None else spread
    t = (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) * spread + 0.5
    return np.clip(t, 0, 1)[..., None]


def procedural_clean(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, str]:
    """A clean synthetic picture that is not dead leaves: sky-like gradients, smooth noise
    textures, or sharp geometric shapes on a plain ground. Clean negatives for the detector:
    flat areas, smooth gradients and hard edges are not artifacts."""
    kind = int(rng.integers(3))
    if kind == 0:  # gradient (sky, studio backdrop) with faint grain
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = _linear_ramp(rng, size, spread=1.0)
        img = c0 * (1 - t) + c1 * t + rng.normal(0, rng.uniform(0.5, 3), (size, size, 1))
        return np.clip(img, 0, 255).astype(np.uint8), "procedural:gradient"
    if kind == 1:  # multi-scale smooth noise texture (clouds, stone, fabric)
        img = np.zeros((size, size, 3), np.float32)
        for octave in range(4):
            sig = size / (8 * 2 ** octave)
            img += smooth_noise(rng, (size, size, 3), sig) * (40.0 / (octave + 1))
        img = img.mean(axis=2, keepdims=True) * rng.uniform(0.3, 1.0) + img * rng.uniform(0, 0.7)
        img += rng.uniform(60, 200, 3)
        return np.clip(img, 0, 255).astype(np.uint8), "procedural:texture"
    img = np.empty((size, size, 3), np.uint8)  # geometric shapes, hard anti-aliased edges
    img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    for _ in range(int(rng.integers(3, 15))):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p = rng.integers(0, size, (int(rng.integers(3, 7)), 2)).astype(np.int32)
        if rng.random() < 0.5:
            cv2.fillPoly(img, [cv2.convexHull(p)], c, cv2.LINE_AA)
        else:
            cv2.line(img, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), c,
                     int(rng.integers(1, 12)), cv2.LINE_AA)
    return img, "procedural:shapes"


def vector_art(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, str]:
    """A clean picture of smooth, vivid, sharp-edged shapes: swooshes, petals, glows on a
    gradient ground (modern wallpapers, icons, macro flowers).

    Why: the starter marked exactly such regions of held-out clean pictures (glossy petals, a
    magenta swoosh, a goldfish): smooth colour inside a sharp outline resembles its `fill`,
    `melt` and `part_smear` artifacts, and the training pictures held too few of them. Measured
    (README, stage 4), a quarter of such bases did not lower those marks.
    """
    ramp = _linear_ramp(rng, size)
    img = _vivid(rng) * (1 - ramp) + _vivid(rng) * ramp
    glow = np.zeros_like(img)
    kind = int(rng.integers(3))
    n = int(rng.integers(2, 7))
    cy, cx = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    for i in range(n):
        if kind == 0:  # swooshes: wide curved bands
            a0, a1 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            mid = (a0 + a1) / 2 + rng.normal(0, size / 4, 2)
            t = np.linspace(0, 1, 64)[:, None]
            pts = ((1 - t) ** 2 * a0 + 2 * (1 - t) * t * mid + t ** 2 * a1).astype(np.int32)
            mask = np.zeros((size, size), np.uint8)
            cv2.polylines(mask, [pts], False, 255, int(rng.integers(size // 24, size // 6)), cv2.LINE_AA)
        elif kind == 1:  # petals round a centre
            mask = np.zeros((size, size), np.uint8)
            ang = 360.0 * i / n + rng.uniform(-10, 10)
            length, width = rng.uniform(0.15, 0.4) * size, rng.uniform(0.04, 0.12) * size
            ox = int(cx + np.cos(np.radians(ang)) * length * 0.6)
            oy = int(cy + np.sin(np.radians(ang)) * length * 0.6)
            cv2.ellipse(mask, (ox, oy), (int(length * 0.6), int(width)), ang, 0, 360, 255, -1, cv2.LINE_AA)
        else:  # blobs (a fish, a pebble, a cushion)
            alpha, _ = blob_alpha(rng, size, 0.08, 0.3, feather=rng.uniform(0.01, 0.04))
            mask = (alpha * 255).astype(np.uint8)
        a = mask.astype(np.float32)[..., None] / 255.0
        shade = _linear_ramp(rng, size)
        fill = _vivid(rng) * (1 - shade) + _vivid(rng) * shade
        fill = fill * (1.0 + 0.06 * smooth_noise(rng, (size, size), size / 10)[..., None])
        img = img * (1 - a) + fill * a
        if rng.random() < 0.4:
            glow += cv2.GaussianBlur(a * fill, (0, 0), rng.uniform(4, 20)) * rng.uniform(0.2, 0.6)
    img = img + glow + rng.normal(0, rng.uniform(0.0, 2.0), (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8), f"vector_art:{('swoosh', 'petals', 'blobs')[kind]}"


def load_skimage(name: str) -> np.ndarray:
    import skimage.data

    arr = getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) * (255.0 if arr.max() <= 1 else 1.0)).clip(0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


@dataclass
class BasePool:
    """Where clean base images come from: skimage names, dead leaves, user images."""

    skimage_names: Sequence[str] = SKIMAGE_TRAIN
    dead_leaves_ratio: float = 0.35
    folders: Sequence[str] = ()
    procedural_ratio: float = 0.0  # share of procedural_clean() pictures (gradients, textures, shapes)
    vector_ratio: float = 0.0  # share of vector_art() pictures (smooth vivid shapes)
    _cache: dict = field(default_factory=dict, repr=False)
    _files: list | None = field(default=None, repr=False)

    def files(self) -> list[Path]:
        if self._files is None:
            from ..core.imageio import iter_image_paths

            self._files = sorted(iter_image_paths(list(self.folders), recursive=True)) if self.folders else []
        return self._files

    def _image(self, key) -> np.ndarray:
        if key not in self._cache:
            if isinstance(key, Path):
                from ..core.imageio import load_image

                self._cache[key] = load_image(key)
            else:
                self._cache[key] = load_skimage(key)
        return self._cache[key]

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
        """A clean size x size RGB picture: a random rescaled crop of a base image."""
        pool: list = list(self.skimage_names) + self.files()
        if not pool or rng.random() < self.dead_leaves_ratio:
            return dead_leaves(rng, size), "dead_leaves"
        if self.procedural_ratio and rng.random() < self.procedural_ratio:
            return procedural_clean(rng, size)
        if self.vector_ratio and rng.random() < self.vector_ratio:  # no draw at 0: older sets unchanged
            return vector_art(rng, size)
        key = pool[int(rng.integers(len(pool)))]
        img = self._image(key)
        h, w = img.shape[:2]
        # random crop of 40-100 % of the short side, resized to size x size
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        side = max(side, 16)
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = img[y:y + side, x:x + side]
        interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        out = cv2.resize(crop, (size, size), interpolation=interp)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        name = key.name if isinstance(key, Path) else f"skimage:{key}"
        return np.ascontiguousarray(out), name


# --------------------------------------------------------------------------- region shapes


def smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    n = rng.normal(0, 1, shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / (n.std() + 1e-8)


def blob_alpha(rng: np.random.Generator, size: int, rmin: float, rmax: float,
               feather: float | None = None, img: np.ndarray | None = None,
               center: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Irregular blob with a soft edge. Returns (alpha HxW float32, (cy, cx, radius)).
    With `img`, the centre is drawn where the picture has structure (`textured_center`)."""
    r = rng.uniform(rmin, rmax) * size
    if center is not None:
        cy, cx = center
    elif img is not None:
        cy, cx = textured_center(img, rng, int(r * 0.5))
    else:
        cy, cx = (int(v) for v in rng.integers(int(r * 0.5), size - int(r * 0.5), 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    sy, sx = rng.uniform(0.6, 1.4, 2)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(ang) + dy * np.sin(ang)) / (r * sx)
    v = (-dx * np.sin(ang) + dy * np.cos(ang)) / (r * sy)
    d = np.sqrt(u * u + v * v)
    # irregular boundary: perturb the distance field with low-frequency noise
    d = d + 0.35 * smooth_noise(rng, (size, size), max(2.0, r / 3))
    if feather is None:
        feather = rng.uniform(0.05, 0.25)
    alpha = np.clip((1.0 - d) / feather + 0.5, 0.0, 1.0).astype(np.float32)
    return alpha, (cy, cx, int(r))


def textured_center(img: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """A centre drawn with probability ~ local structure (gradient energy): artifacts inside
    objects (edges, texture), where generators break things, rather than in flat sky."""
    size = img.shape[0]
    g = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA)
    e = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1))
    e = cv2.GaussianBlur(e, (0, 0), 2.0) + 1e-3 * (e.mean() + 1.0)
    m = max(1, int(np.ceil(margin * 64 / size)))
    e[:m], e[-m:], e[:, :m], e[:, -m:] = 0, 0, 0, 0
    if e.sum() <= 0:
        return (int(v) for v in rng.integers(margin, max(margin + 1, size - margin), 2))
    k = int(rng.choice(e.size, p=(e / e.sum()).ravel()))
    cy, cx = divmod(k, 64)
    jitter = rng.uniform(0, size / 64, 2)
    return int(cy * size / 64 + jitter[0]), int(cx * size / 64 + jitter[1])


def rect_alpha(size: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    a = np.zeros((size, size), np.float32)
    a[max(y0, 0):max(y0 + h, 0), max(x0, 0):max(x0 + w, 0)] = 1.0
    return a


def _blend(img: np.ndarray, corrupted: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1.0 - a) + corrupted * a


# --------------------------------------------------------------------------- artifact types
# Each takes (img float32 HxWx3 in 0..255, rng, base_pool, size) and returns
# (new image, alpha) where alpha in [0,1] is the artifact's support.


def art_warp(img, rng, pool, size):
    """Local 'melting': smooth random displacement inside a blob."""
    alpha, (_, _, r) = blob_alpha(rng, size, 0.06, 0.2, feather=rng.uniform(0.15, 0.35))
    amp = rng.uniform(0.15, 0.45) * r + 4.0
    sigma = max(3.0, r * rng.uniform(0.15, 0.4))
    dx = smooth_noise(rng, (size, size), sigma) * amp * alpha
    dy = smooth_noise(rng, (size, size), sigma) * amp * alpha
    if rng.random() < 0.5:  # 'melting': a downward drip component
        dy -= np.abs(smooth_noise(rng, (size, size), sigma * 2)) * amp * alpha
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = cv2.remap(img, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out, alpha


def art_duplicate(img, rng, pool, size):
    """A part duplicated next to itself, slightly misaligned (double edges, extra parts)."""
    alpha, (_, _, r) = blob_alpha(rng, size, 0.06, 0.18, feather=rng.uniform(0.05, 0.2), img=img)
    shift = rng.uniform(0.3, 1.2) * r
    ang = rng.uniform(0, 2 * np.pi)
    sx, sy = shift * np.cos(ang), shift * np.sin(ang)
    scale = rng.uniform(0.85, 1.15)
    rot = rng.uniform(-20, 20)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rot, scale)
    m[:, 2] += (sx, sy)
    src = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mix = rng.uniform(0.55, 1.0)  # ghosted (semi-transparent) or solid duplicate
    return img * (1.0 - mix) + src * mix, alpha


def art_smear(img, rng, pool, size):
    """Texture smearing: directional (motion) blur or texture-destroying smoothing."""
    alpha, (_, _, r) = blob_alpha(rng, size, 0.06, 0.2)
    length = int(rng.uniform(0.3, 0.9) * r) | 1
    length = max(length, 9)
    if rng.random() < 0.7:
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        k = cv2.warpAffine(k, rot, (length, length))
        k /= k.sum() + 1e-8
        out = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
    else:
        out = cv2.bilateralFilter(img, d=min(length, 15), sigmaColor=60, sigmaSpace=length)
        out = cv2.GaussianBlur(out, (0, 0), length / 6)
    return out, alpha


def art_checkerboard(img, rng, pool, size):
    """Up-sampling artifacts: blocky nearest upsampling plus a periodic checkerboard."""
    alpha, _ = blob_alpha(rng, size, 0.07, 0.22)
    f = int(rng.choice([2, 4, 8]))
    period = int(rng.choice([2, 4, 8]))
    small = cv2.resize(img, (size // f, size // f), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST) if f > 2 else img.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (((yy // (period // 2 or 1)) + (xx // (period // 2 or 1))) % 2).astype(np.float32) * 2 - 1
    amp = rng.uniform(8, 28)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    out = out + checker[..., None] * amp * tint
    return out, alpha


def art_blotch(img, rng, pool, size, palette_p: float = 0.0):
    """Colour blotch: a smooth stain that flattens the texture under it (colour bleeding).

    With `palette_p`, that share of stains takes a colour from elsewhere in the same picture
    (`pal synth --blotch-palette`), so that saturation alone is not the cue: the starter marked
    clean red petals and magenta swooshes. Measured, it did not lower those marks; at 0 there is
    no extra random draw, so older data sets regenerate unchanged.
    """
    alpha, _ = blob_alpha(rng, size, 0.05, 0.2, feather=rng.uniform(0.1, 0.4))
    if palette_p and rng.random() < palette_p:
        palette = cv2.resize(np.ascontiguousarray(img, np.float32), (16, 16), interpolation=cv2.INTER_AREA)
        colour = palette[int(rng.integers(16)), int(rng.integers(16))].astype(np.float32)
    else:
        colour = rng.integers(0, 256, 3).astype(np.float32)
    strength = rng.uniform(0.45, 0.85)
    tex = 1.0 + 0.15 * smooth_noise(rng, (size, size), 6)[..., None]
    out = img * (1 - strength) + colour * strength * tex
    return out, alpha


def art_fill(img, rng, pool, size):
    """Smooth, texture-free inpainting-like fill (classical inpainting of the blob)."""
    alpha, _ = blob_alpha(rng, size, 0.05, 0.16, feather=rng.uniform(0.05, 0.15))
    hole = (alpha > 0.05).astype(np.uint8)
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    out = cv2.inpaint(u8, hole, 5, method).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(1.0, 4.0))
    return out, alpha


def art_seam(img, rng, pool, size):
    """Visible seams of a pasted patch (from elsewhere or another picture), hard-edged.

    The label is the band along the patch border, where the discontinuity is; a mismatched
    colour/brightness of the whole patch is labelled too when it is strong.
    """
    ph = int(rng.uniform(0.2, 0.55) * size)
    pw = int(rng.uniform(0.2, 0.55) * size)
    y0 = int(rng.integers(0, size - ph))
    x0 = int(rng.integers(0, size - pw))
    if rng.random() < 0.5:
        other, _ = pool.sample(rng, size)
        other = other.astype(np.float32)
    else:
        other = img
    sy = int(rng.integers(0, size - ph))
    sx = int(rng.integers(0, size - pw))
    patch = other[sy:sy + ph, sx:sx + pw].copy()
    gain = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    patch = patch * gain + rng.uniform(-20, 20)
    out = img.copy()
    out[y0:y0 + ph, x0:x0 + pw] = patch
    inside = rect_alpha(size, y0, x0, ph, pw)
    band = int(rng.integers(4, 10))
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    dil = cv2.dilate(inside.astype(np.uint8), kernel)
    ero = cv2.erode(inside.astype(np.uint8), kernel)
    alpha = (dil - ero).astype(np.float32)
    if rng.random() < 0.4:  # sometimes only some sides of the patch show a seam
        keep = np.ones((size, size), np.float32)
        if rng.random() < 0.5:
            keep[:, : x0 + pw // 2] = 0
        else:
            keep[: y0 + ph // 2] = 0
        alpha *= keep
    # the composite changed the whole rectangle: a feather-free corruption, label the band
    out = out * inside[..., None] + img * (1 - inside[..., None])
    return out, alpha


def art_melt(img, rng, pool, size):
    """Melted structure: an object part sags and drips (downward displacement growing towards
    the bottom of the region, horizontal wobble) and loses its fine detail."""
    alpha, (cy, cx, r) = blob_alpha(rng, size, 0.07, 0.2, feather=rng.uniform(0.1, 0.25), img=img)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.clip((yy - (cy - r)) / (2.0 * r + 1e-6), 0, 1)  # 0 at the top of the region, 1 at the bottom
    amp = rng.uniform(0.3, 0.7) * r
    drip = 1.0 + 0.8 * np.abs(smooth_noise(rng, (size, size), max(2.0, r / 5)))
    dy = -amp * t * drip * alpha
    dx = smooth_noise(rng, (size, size), max(2.0, r / 4)) * rng.uniform(0.05, 0.2) * r * alpha
    out = cv2.remap(img, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 2.0))
    return out, alpha


def art_deform(img, rng, pool, size):
    """Deformed part: a swirl or pinch/bulge of a structured region (bent limbs, twisted
    faces, warped letters)."""
    alpha, (cy, cx, r) = blob_alpha(rng, size, 0.06, 0.18, feather=rng.uniform(0.1, 0.3), img=img)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    rho = np.sqrt(dx * dx + dy * dy) + 1e-6
    fall = np.exp(-(rho / (r + 1e-6)) ** 2)
    if rng.random() < 0.5:  # swirl
        theta = rng.choice([-1, 1]) * rng.uniform(1.5, 4.0) * fall
        c, s_ = np.cos(theta), np.sin(theta)
        mx, my = cx + c * dx - s_ * dy, cy + s_ * dx + c * dy
    else:  # pinch (k > 0) or bulge (k < 0)
        k = rng.choice([-1, 1]) * rng.uniform(0.4, 0.8)
        scale = 1.0 + k * fall
        mx, my = cx + dx * scale, cy + dy * scale
    out = cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    return out, alpha


def art_incoherent(img, rng, pool, size):
    """Incoherent small objects: a cluster of small fragments (from elsewhere in the picture or
    another one), rotated and rescaled, that make no sense where they are."""
    other = pool.sample(rng, size)[0].astype(np.float32) if rng.random() < 0.5 else img
    cy, cx = textured_center(img, rng, int(0.1 * size))
    spread = rng.uniform(0.05, 0.14) * size
    out = img.copy()
    alpha = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        r = int(rng.uniform(0.012, 0.04) * size) + 2
        py = int(np.clip(cy + rng.normal(0, spread), r, size - r - 1))
        px = int(np.clip(cx + rng.normal(0, spread), r, size - r - 1))
        sy, sx = (int(v) for v in rng.integers(2 * r, size - 2 * r, 2))
        m = cv2.getRotationMatrix2D((float(sx), float(sy)), float(rng.uniform(0, 360)), float(rng.uniform(0.6, 1.6)))
        m[:, 2] += (px - sx, py - sy)
        frag = cv2.warpAffine(other, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        a, _ = blob_alpha(rng, size, r / size, r / size, feather=0.2, center=(py, px))
        out = out * (1 - a[..., None]) + frag * a[..., None]
        alpha = np.maximum(alpha, a)
    return out, alpha


def art_part_smear(img, rng, pool, size):
    """Smeared texture inside an otherwise sharp object: strong edge-preserving smoothing
    (painterly, waxy) placed where the picture has detail."""
    alpha, (_, _, r) = blob_alpha(rng, size, 0.05, 0.16, img=img)
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = cv2.edgePreservingFilter(u8, flags=cv2.RECURS_FILTER, sigma_s=float(rng.uniform(20, 60)),
                                       sigma_r=float(rng.uniform(0.3, 0.8))).astype(np.float32)
    else:
        out = u8
        for _ in range(int(rng.integers(2, 4))):
            out = cv2.bilateralFilter(out, d=9, sigmaColor=float(rng.uniform(40, 90)), sigmaSpace=9)
        out = cv2.medianBlur(out, int(rng.choice([5, 7]))).astype(np.float32)
    return out, alpha


ARTIFACTS: dict[str, Callable] = {
    "warp": art_warp,
    "duplicate": art_duplicate,
    "smear": art_smear,
    "checkerboard": art_checkerboard,
    "blotch": art_blotch,
    "fill": art_fill,
    "seam": art_seam,
    "melt": art_melt,
    "deform": art_deform,
    "incoherent": art_incoherent,
    "part_smear": art_part_smear,
}
assert tuple(ARTIFACTS) == ARTIFACT_TYPES


# --------------------------------------------------------------------------- injection


def depth_of_field(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A photographic effect that is *not* an artifact: defocus blur over a large, smoothly bounded
    region (shallow depth of field: an in-focus ellipse, a tilt-shift band, a smooth random
    field, or the whole frame). Applied to the base before any artifact, so its pixels stay 0.

    Why: macro and portrait photos with bokeh were the starter's worst false positives (whole
    blurred backgrounds marked as smear), and no training picture had much of it."""
    h, w = img.shape[:2]
    sigma = float(rng.uniform(2.5, 10.0)) * max(h, w) / 512
    blurred = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma)
    mode = rng.choice(["ellipse", "band", "field", "all"], p=[0.4, 0.2, 0.3, 0.1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if mode == "ellipse":  # in focus around a point, defocused outside
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ry, rx = rng.uniform(0.15, 0.4) * h, rng.uniform(0.15, 0.4) * w
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        alpha = np.clip((d - 1.0) / rng.uniform(0.3, 1.0), 0, 1)
    elif mode == "band":  # tilt-shift: a sharp band across the frame
        ang = rng.uniform(0, np.pi)
        t = (yy - h / 2) * np.cos(ang) + (xx - w / 2) * np.sin(ang)
        half = rng.uniform(0.08, 0.25) * max(h, w)
        alpha = np.clip((np.abs(t - rng.uniform(-0.2, 0.2) * max(h, w)) - half) / (0.2 * max(h, w)), 0, 1)
    elif mode == "field":
        f = smooth_noise(rng, (h, w), max(h, w) / 8)
        alpha = np.clip((f - rng.uniform(-0.5, 0.5)) / 1.5 + 0.5, 0, 1)
    else:
        alpha = np.ones((h, w), np.float32)
    out = img * (1 - alpha[..., None]) + blurred * alpha[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), f"dof:{mode}:{sigma:.1f}"


def inject(img: np.ndarray, rng: np.random.Generator, types: Sequence[str], n_artifacts: int,
           pool: BasePool | None = None, min_visible: float = 6.0, tries: int = 4, label_rule: str = "visible",
           type_options: Mapping[str, Mapping] | None = None):
    """Apply `n_artifacts` artifacts drawn from `types` to a uint8 image.

    Returns (uint8 image, uint8 label with 0/1/255, list of applied type names). A candidate
    artifact whose mean absolute change inside its label region is below `min_visible`
    (grey levels) is re-drawn elsewhere, so labels mark corruptions one can see.
    `label_rule="support"` labels the whole support (alpha >= 0.5) even where nothing changed
    (the first revision's rule, kept to regenerate the starter's stage-1 data).
    `type_options` passes keyword options to one type's function, e.g.
    ``{"blotch": {"palette_p": 0.8}}``.
    """
    if label_rule not in ("visible", "support"):
        raise ValueError(f"label_rule {label_rule!r}: choose 'visible' or 'support'")
    pool = pool or BasePool()
    opts = type_options or {}
    size = img.shape[0]
    cur = img.astype(np.float32)
    label = np.zeros(img.shape[:2], np.uint8)
    applied: list[str] = []
    for _ in range(n_artifacts):
        name = str(types[int(rng.integers(len(types)))])
        for _t in range(tries):
            out, alpha = ARTIFACTS[name](cur, rng, pool, size, **opts.get(name, {}))
            new = _blend(cur, out, alpha) if name != "seam" else out
            new = np.clip(new, 0, 255)
            core = alpha >= _ALPHA_LABEL
            if core.sum() < 16:
                continue
            vis = float(np.abs(new - cur).mean(axis=2)[core].mean())
            if vis >= min_visible:
                break
        else:
            continue
        # Only pixels that visibly changed are artifacts: inside the support, an unchanged pixel
        # (a warp over a flat area, a fill that matches) is 'ignore', not a label the network
        # cannot possibly learn. Blurring the difference keeps thin structures connected.
        change = cv2.GaussianBlur(np.abs(new - cur).mean(axis=2), (0, 0), _VISIBLE_SIGMA)
        visible = change >= _VISIBLE_LEVEL if label_rule == "visible" else np.ones_like(core)
        cur = new
        rim = ((alpha >= _ALPHA_IGNORE) & ~core) | (core & ~visible)
        # a later artifact may overlap an earlier one: artifact beats ignore beats clean
        label[rim & (label != 1)] = IGNORE
        label[core & visible] = 1
        applied.append(name)
    return np.clip(np.rint(cur), 0, 255).astype(np.uint8), label, applied


@dataclass
class SynthConfig:
    out: str
    n_train: int = 800
    n_val: int = 80
    n_test: int = 0
    seed: int = 0
    size: int = 512
    types: Sequence[str] = ARTIFACT_TYPES
    exclude: Sequence[str] = ()
    artifacts_per_image: tuple[int, int] = (1, 3)
    clean_ratio: float = 0.1  # images left clean: negatives teach the model not to fire
    skimage_names: Sequence[str] = SKIMAGE_TRAIN
    dead_leaves_ratio: float = 0.35
    folders: Sequence[str] = ()
    procedural_ratio: float = 0.0  # share of procedural clean bases (gradients, textures, shapes)
    vector_ratio: float = 0.0  # share of vector_art bases (smooth vivid shapes: wallpapers, petals)
    blotch_palette: float = 0.0  # share of blotches coloured from the picture itself (art_blotch)
    dof_ratio: float = 0.0  # share of bases given a clean depth-of-field blur first (depth_of_field)
    by_type: bool = False  # one artifact type per image, written to <split>/<type>/ (per-task metrics)
    jpeg_quality: tuple[int, int] = (85, 97)
    # share written losslessly (PNG): hosts hand the detector PNG renders, never JPEG, so an all-JPEG
    # training set teaches it that a picture without compression noise is unusual
    png_ratio: float = 0.0
    label_rule: str = "visible"  # or "support" (see inject)

    def check_shares(self) -> None:
        for name in ("clean_ratio", "dead_leaves_ratio", "procedural_ratio", "vector_ratio", "dof_ratio",
                     "blotch_palette", "png_ratio"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} {v}: a share, give a value from 0 to 1")

    def active_types(self) -> list[str]:
        bad = [t for t in list(self.types) + list(self.exclude) if t not in ARTIFACT_TYPES]
        if bad:
            raise ValueError(f"unknown artifact type(s) {bad}; choose from {', '.join(ARTIFACT_TYPES)}")
        types = [t for t in self.types if t not in set(self.exclude)]
        if not types:
            raise ValueError("every artifact type is excluded: nothing to inject")
        return types


_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def make_sample(cfg: SynthConfig, pool: BasePool, split: str, index: int, types: Sequence[str]):
    """One (image, label, meta) triple; a pure function of (seed, split, index)."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_ID.get(split, 3), index])
    base, source = pool.sample(rng, cfg.size)
    effect = None
    if cfg.dof_ratio > 0 and rng.random() < cfg.dof_ratio:  # no draw at 0: older data sets unchanged
        base, effect = depth_of_field(base, rng)
    if cfg.by_type:
        types = [types[index % len(types)]]
    lo, hi = cfg.artifacts_per_image
    n = 0 if rng.random() < cfg.clean_ratio else int(rng.integers(lo, hi + 1))
    img, label, applied = inject(base, rng, types, n, pool, label_rule=cfg.label_rule,
                                 type_options={"blotch": {"palette_p": cfg.blotch_palette}})
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    info = {"source": source, "artifacts": applied, "jpeg_quality": q, "task": types[0] if cfg.by_type else None}
    if cfg.png_ratio > 0 and rng.random() < cfg.png_ratio:  # no draw at 0: older data sets unchanged
        info["jpeg_quality"], info["format"] = None, "png"
    if effect:
        info["clean_effect"] = effect
    return img, label, info


def _write_jpg(path: Path, img: np.ndarray, quality: int) -> None:
    from ..core.imageio import atomic_write_bytes

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def _write_png(path: Path, label: np.ndarray) -> None:
    from ..core.imageio import atomic_write_bytes

    ok, buf = cv2.imencode(".png", label)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def generate(cfg: SynthConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Write the data set to cfg.out in the PAL4VST layout; returns a summary dict.

    `images/<split>[/<type>]/<split>_<index>.jpg` (`.png` for the `png_ratio` share), `labels/...png` (0/1/255) and
    `synth_meta.json` (config, per-image sources and artifact types).
    """
    from ..core.imageio import atomic_write_text, save_image_atomic

    cfg.check_shares()
    types = cfg.active_types()
    pool = BasePool(cfg.skimage_names, cfg.dead_leaves_ratio, cfg.folders, cfg.procedural_ratio,
                    cfg.vector_ratio)
    root = Path(cfg.out)
    meta: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                  "types": types, "images": {}}
    counts: dict[str, int] = {}
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        for i in range(n):
            img, label, info = make_sample(cfg, pool, split, i, types)
            sub = f"{split}/{info['task']}" if cfg.by_type else split
            stem = f"{split}_{i:05d}"
            if info.get("format") == "png":
                save_image_atomic(img, root / "images" / sub / f"{stem}.png")
            else:
                _write_jpg(root / "images" / sub / f"{stem}.jpg", img, info["jpeg_quality"])
            _write_png(root / "labels" / sub / f"{stem}.png", label)
            meta["images"][f"{sub}/{stem}"] = info
            counts[split] = counts.get(split, 0) + 1
            if progress and (i + 1) % 50 == 0:
                progress(f"synth: {split} {i + 1}/{n}")
    atomic_write_text(root / "synth_meta.json", json.dumps(meta, indent=1, sort_keys=True))
    return {"out": os.fspath(root), "counts": counts, "types": types}


def parse_types(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return []
    if isinstance(text, str):
        text = [t for t in text.replace(" ", "").split(",") if t]
    return list(text)
