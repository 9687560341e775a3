"""Robust image reading and atomic writing shared by the CLI, training and the hosts."""

from __future__ import annotations

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
