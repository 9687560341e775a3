"""Training state on disk: atomic save, `weights_only` load, RNG capture/restore.

A state (`latest.pt`, `best.pt`, `iter_N.pt`) is a plain dict of tensors, numbers, strings and
the numpy RNG arrays; `load_state` refuses anything else, so a `.pt` handed to `--init`,
`--resume` or `pal eval` cannot run code.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

LATEST = "latest.pt"
BEST = "best.pt"


def load_state(path) -> dict:
    """Read a `pal train` state (latest.pt/best.pt) with `weights_only=True`.

    Only the plain types such a state holds are allowed (numpy arrays of the RNG state, torch's
    version string), so a malicious `.pt` passed to --init or --resume cannot run code.
    """
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64)),
               type(np.dtype(np.int64)), torch.torch_version.TorchVersion]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to memory, then one atomic replace: a killed run never leaves a torn file."""
    from ..core.imageio import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Mapping) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def unwrap(model):
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def rotate_iter_checkpoints(work: Path, state: dict, it: int, keep: int) -> None:
    """Also write iter_<it>.pt and keep only the newest `keep` of them."""
    atomic_torch_save(state, work / f"iter_{it}.pt")
    olds = sorted(work.glob("iter_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    for old in olds[:-keep]:
        old.unlink(missing_ok=True)


def last_good(work: Path) -> str:
    """Where a diverged run can resume from, for the error message."""
    p = work / LATEST
    if p.is_file():
        return f"{p} (iteration {load_state(p)['iter']})"
    return "none written yet"
