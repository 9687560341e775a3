"""`pal eval`: load any checkpoint, compute per-task artifact IoU / mIoU and PAR statistics."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from .data import DataError, discover


def load_eval_model(source, trust_torchscript: bool = False):
    """EncoderDecoder (no aux head) from a .safetensors/.pth/end2end.pt, a registry name, or a
    training state (`latest.pt`/`best.pt` written by `pal train`)."""
    from ..models.checkpoint import build_from_checkpoint, load_checkpoint
    from ..models.detector import resolve_source
    from .loop import load_state

    path = resolve_source(source)
    if path.suffix == ".pt":
        try:
            obj = load_state(path)
        except Exception:  # noqa: BLE001 - TorchScript archives are not torch.load-able dicts
            obj = None
        if isinstance(obj, dict) and "model_config" in obj and "model" in obj:
            return build_from_checkpoint(obj["model"], obj["model_config"], with_aux=False), path
    sd, config, _ = load_checkpoint(path, trust_torchscript=trust_torchscript)
    return build_from_checkpoint(sd, config, with_aux=False), path


def run_eval(model_source, data: str, split: str = "test", out_dir: str | None = None, n_overlays: int = 8,
             device: str | None = None, resize: str | None = None, trust_torchscript: bool = False,
             threads: int | None = None) -> dict:
    from .loop import evaluate_model

    if threads:
        torch.set_num_threads(threads)
    disc = discover(data, split)
    samples = [s for s in disc.samples if s.label is not None]
    if not samples:
        raise DataError(f"{data}: no labelled images in split '{split}' (run `pal data check {data}`)")
    model, path = load_eval_model(model_source, trust_torchscript)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev)
    res = evaluate_model(model, samples, dev, resize=resize,
                         overlay_dir=os.fspath(Path(out_dir) / "overlays") if out_dir and n_overlays else None,
                         n_overlays=n_overlays, log=lambda m: print(m, file=sys.stderr, flush=True))
    res = {"model": os.fspath(path), "data": data, "split": split, **res}
    if out_dir:
        from ..core.imageio import atomic_write_text

        atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(res, indent=1, default=str))
    return res
