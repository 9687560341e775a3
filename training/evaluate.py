"""Evaluation and calibration: artifact IoU / mIoU per task, PAR statistics, the operating point.

`pal eval` = `run_eval`: load any checkpoint, compute mmseg's IoU metric per task and PAR.
`calibrate_operating_point` picks the default artifact-logit bias that keeps clean pictures at
PAR ~ 0 (stored in the exported checkpoint's metadata; `load_detector` applies it).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, DataError, Sample, discover, load_sample
from .state import load_state, unwrap
from .transforms import working_input


class IoUAccumulator:
    """mmseg IoUMetric: intersections and unions summed over the whole data set, per task."""

    def __init__(self, num_classes: int = 2):
        self.nc = num_classes
        self.tasks: dict[str, np.ndarray] = {}  # task -> [4, nc]: intersect, union, pred, label areas
        self.par: dict[str, list[tuple[float, float]]] = {}

    def add(self, pred: np.ndarray, label: np.ndarray, task: str = "default",
            pred_par: float | None = None) -> None:
        valid = label != IGNORE_INDEX
        p, t = pred[valid].astype(np.int64), label[valid].astype(np.int64)
        inter = np.bincount(t[p == t], minlength=self.nc)[: self.nc]
        area_p = np.bincount(p, minlength=self.nc)[: self.nc]
        area_t = np.bincount(t, minlength=self.nc)[: self.nc]
        acc = self.tasks.setdefault(task, np.zeros((4, self.nc), np.int64))
        acc += np.stack([inter, area_p + area_t - inter, area_p, area_t])
        gt_par = float((label == 1).mean())
        self.par.setdefault(task, []).append((pred_par if pred_par is not None else float((pred == 1).mean()),
                                              gt_par))

    @staticmethod
    def _scores(acc: np.ndarray) -> dict:
        inter, union = acc[0].astype(np.float64), acc[1].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
        return {"aIoU": None if np.isnan(iou[1]) else float(iou[1] * 100),
                "bIoU": None if np.isnan(iou[0]) else float(iou[0] * 100),
                "mIoU": float(np.nanmean(iou) * 100) if not np.all(np.isnan(iou)) else None,
                "aAcc": float(inter.sum() / max(acc[3].sum(), 1) * 100)}

    def result(self) -> dict:
        out: dict = {"per_task": {}}
        total = np.zeros((4, self.nc), np.int64)
        for task, acc in sorted(self.tasks.items()):
            pars = np.array(self.par[task])
            out["per_task"][task] = dict(self._scores(acc), n=len(pars),
                                         par_pred_mean=float(pars[:, 0].mean()),
                                         par_pred_median=float(np.median(pars[:, 0])),
                                         par_gt_mean=float(pars[:, 1].mean()))
            total += acc
        out.update(self._scores(total))
        tasks = [v for v in out["per_task"].values() if v["aIoU"] is not None]
        out["aIoU_task_mean"] = float(np.mean([v["aIoU"] for v in tasks])) if tasks else None
        all_par = np.concatenate([np.array(v) for v in self.par.values()]) if self.par else np.zeros((0, 2))
        out["n"] = int(len(all_par))
        if len(all_par):
            out["par_pred_mean"] = float(all_par[:, 0].mean())
            out["par_gt_mean"] = float(all_par[:, 1].mean())
        return out


@torch.no_grad()
def evaluate_model(model, samples: Sequence[Sample], device=None, size=None, resize: str | None = None,
                   overlay_dir: str | None = None, n_overlays: int = 0, log=None) -> dict:
    """Artifact IoU / mIoU / PAR of `model` (an EncoderDecoder) on labelled samples.

    Test pipeline: resize to the config's input size (default 512x512, no ratio kept), logits
    bilinearly resized to the label's size, argmax (mmseg). PAR is on the working-size map.
    """
    model = unwrap(model)
    device = device or next(model.parameters()).device
    pre = model.config.get("preprocess", {}) if hasattr(model, "config") else {}
    size = size or tuple(pre.get("size") or (512, 512))
    resize = resize or pre.get("resize", "bicubic")
    was_training = model.training
    model.eval()
    acc = IoUAccumulator()
    written = 0
    try:
        for k, s in enumerate(samples):
            img, label = load_sample(s)
            if label is None:
                raise DataError(f"{s.image}: evaluation needs a label")
            logits = model(working_input(img, pre, size, resize).to(device))
            pred_work = logits.argmax(1)[0]
            pred_par = float((pred_work == 1).float().mean())
            full = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
            pred = full.argmax(1)[0].cpu().numpy().astype(np.uint8)
            acc.add(pred, label, s.task, pred_par)
            if overlay_dir and written < n_overlays:
                _save_overlay(img, pred, label, Path(overlay_dir) / f"{s.task.replace('/', '_')}_{s.name}.jpg")
                written += 1
            if log and (k + 1) % 50 == 0:
                log(f"eval: {k + 1}/{len(samples)}")
    finally:
        model.train(was_training)
    return acc.result()


@torch.no_grad()
def calibrate_bias(model, samples: Sequence[Sample], shifts=None, device=None) -> tuple[float, dict]:
    """Artifact-logit offset that maximises artifact IoU on `samples` (threshold moving).

    Adding `delta` to decode_head.conv_seg.bias[1] - bias[0] makes argmax (threshold 0.5 on
    softmax) equal thresholding the old probability at sigmoid(-delta). Returns (delta, {delta: aIoU}).
    """
    model = unwrap(model)
    device = device or next(model.parameters()).device
    pre = model.config.get("preprocess", {})
    shifts = list(shifts if shifts is not None else np.round(np.arange(-1.0, 3.01, 0.25), 2))
    inter = dict.fromkeys(shifts, 0)
    union = dict.fromkeys(shifts, 0)
    was_training = model.training
    model.eval()
    try:
        for s in samples:
            img, label = load_sample(s)
            logits = model(working_input(img, pre).to(device))
            full = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)[0]
            margin = (full[1] - full[0]).cpu().numpy()
            valid, gt = label != IGNORE_INDEX, label == 1
            for d in shifts:
                pred = (margin + d > 0) & valid
                inter[d] += int((pred & gt).sum())
                union[d] += int(((pred | gt) & valid).sum())
    finally:
        model.train(was_training)
    table = {d: 100.0 * inter[d] / max(union[d], 1) for d in shifts}
    best = max(shifts, key=lambda d: (table[d], -abs(d)))
    return float(best), table


def apply_bias_shift(state_dict: dict, delta: float) -> dict:
    """Copy of `state_dict` with the artifact logit of decode_head.conv_seg raised by `delta`."""
    sd = dict(state_dict)
    b = sd["decode_head.conv_seg.bias"].clone()
    b[1] += delta
    sd["decode_head.conv_seg.bias"] = b
    return sd


def _save_overlay(img: np.ndarray, pred: np.ndarray, label: np.ndarray, path: Path) -> None:
    """Side by side: prediction overlay (official magenta) | ground truth overlay."""
    from ..core.imageio import save_image_atomic
    from ..core.par import overlay

    left = overlay(img, pred == 1)
    right = overlay(img, label == 1)
    right[label == IGNORE_INDEX] = (right[label == IGNORE_INDEX] * 0.5 + np.array([0, 127, 0])).astype(np.uint8)
    save_image_atomic(np.concatenate([left, right], axis=1), path)



def load_eval_model(source, trust_torchscript: bool = False, calibration: bool = True):
    """EncoderDecoder (no aux head) from a .safetensors/.pth/end2end.pt, a registry name, or a
    training state (`latest.pt`/`best.pt` written by `pal train`).

    A checkpoint's stored operating point (``calibration.artifact_logit_bias``) is folded into
    the artifact logit's bias, so the numbers are those every host sees; `calibration=False`
    evaluates the raw network."""
    from ..models.checkpoint import build_from_checkpoint, load_checkpoint
    from ..models.detector import resolve_source

    path = resolve_source(source)
    if path.suffix == ".pt":
        try:
            obj = load_state(path)
        except Exception:  # noqa: BLE001 - TorchScript archives are not torch.load-able dicts
            obj = None
        if isinstance(obj, dict) and "model_config" in obj and "model" in obj:
            return build_from_checkpoint(obj["model"], obj["model_config"], with_aux=False), path
    sd, config, prov = load_checkpoint(path, trust_torchscript=trust_torchscript)
    bias = float((prov.get("calibration") or {}).get("artifact_logit_bias", 0.0)) if calibration else 0.0
    if bias:
        sd = apply_bias_shift(sd, bias)
    return build_from_checkpoint(sd, config, with_aux=False), path


@torch.no_grad()
def margin_maps(model, images: Sequence[np.ndarray], device=None) -> list[np.ndarray]:
    """Artifact-minus-clean logit at the working size (PAR's map) for RGB uint8 pictures."""
    model = unwrap(model)
    device = device or next(model.parameters()).device
    pre = model.config.get("preprocess", {})
    was_training = model.training
    model.eval()
    out = []
    try:
        for img in images:
            logits = model(working_input(img, pre).to(device)).float()[0]
            out.append((logits[1] - logits[0]).cpu().numpy())
    finally:
        model.train(was_training)
    return out


def calibrate_operating_point(model, clean_images: Sequence[np.ndarray], val_samples: Sequence[Sample] = (),
                              shifts=None, max_median: float = 0.002, max_p95: float = 0.01,
                              device=None) -> dict:
    """The default operating point: an artifact-logit bias `b` (probability and PAR are read
    from softmax(logits + [0, b]), i.e. threshold 0.5 = argmax on the shifted logits).

    Among `shifts`, keep those at which held-out *clean* pictures score median PAR <= `max_median`
    and 95th percentile <= `max_p95`; of these, take the one with the best artifact IoU on the
    labelled `val_samples` (no samples: the largest admissible bias). When no shift is
    admissible, the most negative one is returned and `admissible` is False.
    """
    if not len(clean_images):
        raise ValueError("calibration needs clean pictures: give --clean FOLDER (or a val split with clean images)")
    shifts = sorted(float(v) for v in (shifts if shifts is not None else np.round(np.arange(-8.0, 2.01, 0.25), 2)))
    margins = margin_maps(model, clean_images, device)
    clean_par = {d: np.array([float((m + d > 0).mean()) for m in margins]) for d in shifts}
    _, iou = calibrate_bias(model, val_samples, shifts=shifts, device=device) if val_samples else (None, {})
    ok = [d for d in shifts if np.median(clean_par[d]) <= max_median and np.percentile(clean_par[d], 95) <= max_p95]
    if ok:
        best = max(ok, key=lambda d: (iou.get(d, 0.0), d)) if iou else max(ok)
    else:
        best = shifts[0]
    cp = clean_par[best]
    return {"artifact_logit_bias": best, "admissible": bool(ok),
            "clean_par_median": float(np.median(cp)), "clean_par_p95": float(np.percentile(cp, 95)),
            "clean_par_max": float(cp.max()), "n_clean": len(margins), "val_aIoU": iou.get(best),
            "val_aIoU_at_0": iou.get(0.0), "n_val": len(val_samples),
            "rule": f"largest val artifact IoU with clean median PAR <= {max_median} and p95 <= {max_p95}",
            "table": {str(d): {"clean_median": float(np.median(clean_par[d])),
                               "clean_p95": float(np.percentile(clean_par[d], 95)), "val_aIoU": iou.get(d)}
                      for d in shifts}}


def run_eval(model_source, data: str, split: str = "test", out_dir: str | None = None, n_overlays: int = 8,
             device: str | None = None, resize: str | None = None, trust_torchscript: bool = False,
             threads: int | None = None) -> dict:
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
