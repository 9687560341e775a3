"""Robust image reading, the one float<->uint8 conversion, file hashing and atomic writing.

Shared by the CLI, training, the models and the hosts (core/ imports none of them).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

# Same order of magnitude as PIL's own default (~89 Mpx) but explicit, so the message is ours.
MAX_PIXELS = 178_956_970


class ImageLoadError(ValueError):
    """An input image could not be read; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def to_numpy(x) -> np.ndarray:
    """numpy array, torch tensor (any device; duck-typed, no torch import) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        try:
            x = x.numpy()
        except TypeError:  # bfloat16 & co. have no numpy dtype
            x = x.float().numpy()
    return np.asarray(x)


def to_float01(img) -> np.ndarray:
    """uint8 (/255), uint16 (/65535), bool or float (clipped to 0..1) -> float32 in 0..1, same shape."""
    a = to_numpy(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def from_float01(x, dtype=np.uint8) -> np.ndarray:
    """Float 0..1 -> ``dtype``: uint8/uint16 scaled, clipped and rounded half to even; a float dtype is a cast.

    Computed in the input's precision (float16 in float32), so float64 inputs keep float64 rounding.
    """
    a = to_numpy(x)
    dtype = np.dtype(dtype)
    if dtype == np.uint8 or dtype == np.uint16:
        if not np.issubdtype(a.dtype, np.floating) or a.dtype == np.float16:
            a = a.astype(np.float32)
        hi = 255.0 if dtype == np.uint8 else 65535.0
        return np.rint(np.clip(a, 0.0, 1.0) * hi).astype(dtype)
    return a.astype(dtype)


def to_uint8(img) -> np.ndarray:
    """Any image array or tensor -> uint8, same shape: uint8 as is, uint16 / 257, bool 0/255, float 0..1 x 255.

    A torch tensor is converted on its own device (float32, like ComfyUI's IMAGE) and only the
    uint8 result is copied to the host.
    """
    if hasattr(img, "detach"):  # torch, duck-typed: clamp/round on the device, ship 1 byte per value
        return img.detach().float().clamp(0, 1).mul(255.0).round().byte().cpu().numpy()
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257.0).round().astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(a.dtype, np.floating):
        return from_float01(a, np.uint8)
    raise ValueError(f"image dtype {a.dtype}: expected uint8, uint16, bool or float in 0..1")


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, 1) to RGB uint8 HxWx3.

    Alpha is composited on white so transparent regions do not turn into black "artifacts".
    16-bit and float images are scaled to 8 bits instead of being clipped.
    """
    img = ImageOps.exif_transpose(img) if hasattr(img, "getexif") else img
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        elif mode == "I":
            hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = arr / hi * 255.0
        else:
            arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3, raising ImageLoadError with a readable reason."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file not found; check the path")
    if p.is_dir():
        raise ImageLoadError(p, "is a folder, expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageLoadError(
                        p, f"{w}x{h} is too large ({w * h} px > {MAX_PIXELS}); downscale it first"
                    )
                im.load()
                return to_rgb_uint8(im)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(p, f"refused as a possible decompression bomb ({e}); downscale it first") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(
            p, f"not a readable image ({type(e).__name__}: {e}); re-export it as PNG or JPEG"
        ) from e


def iter_image_paths(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[Path]:
    """Expand files and folders (sorted, like the official curate script) into image paths.

    Files are yielded as given, even with an unknown extension, so that the caller reports them
    as unreadable instead of silently skipping them.
    """
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(p.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    yield f
        else:
            yield p


_HASH_MEMO: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file; memoised per (real path, inode, size, mtime, ctime), so loading the
    same 250 MB checkpoint twice in one process hashes it once, and any rewrite re-hashes."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes via a temp file in the same folder + os.replace, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should look like normal files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_image_atomic(arr: np.ndarray | Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Save an image (uint8 HxW or HxWxC array, or PIL image) atomically; the format follows the suffix."""
    import io

    path = Path(path)
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(np.ascontiguousarray(arr))
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)
