"""Export trained weights to the project's `.safetensors` (config + provenance) plus a model card."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

SYNTHETIC_NOTE = (
    "**Trained on synthetic data only.** This model was trained from scratch with `pal train` on "
    "images made by `pal synth`: public-domain scikit-image pictures and procedural dead-leaves "
    "images into which artifacts (local warps, duplicated parts, smearing, checkerboard patterns, "
    "colour blotches, smooth fills, pasted-patch seams) were injected with exact masks. It has never "
    "seen a real generated image, so its masks on real text-to-image or inpainting outputs are only "
    "a rough hint. For real use, download the official PAL4VST weights (`pal models download`) or "
    "fine-tune on ~10 labelled images of your generator (`pal finetune`)."
)


def export_safetensors(state_dict: Mapping, config: dict, path: str | os.PathLike, provenance: dict | None = None,
                       fp16: bool = True, metrics: Mapping | None = None, card: str | os.PathLike | None = "auto",
                       description: str | None = None, license: str | None = None,
                       calibration: dict | None = None) -> Path:
    """Write `path` (.safetensors, inference weights only) via `save_safetensors`, then a model
    card: `card="auto"` writes `<stem>.md` next to it; a path writes there; None skips it.
    `calibration` = the default operating point, stored in the file's metadata."""
    import torch

    from ..models.checkpoint import save_safetensors

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the export must end in .safetensors")
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("auxiliary_head.")}
    config = json.loads(json.dumps(config))
    config.get("backbone", {}).pop("pretrained_path", None)
    config["auxiliary_head"] = None  # the file holds no aux tensors: keep config and tensors in step
    prov = dict(provenance or {})
    if metrics:
        prov.setdefault("metrics", metrics)
    if license:
        prov.setdefault("license", license)
    save_safetensors(state_dict, config, path, provenance=prov, dtype=torch.float16 if fp16 else None,
                     calibration=calibration)
    if card:
        card_path = path.with_suffix(".md") if card == "auto" else Path(card)
        write_model_card(path, card_path, metrics=metrics, description=description, license=license)
    return path


def write_model_card(ckpt: Path, card_path: Path, metrics: Mapping | None = None, description: str | None = None,
                     license: str | None = None) -> Path:
    from ..core.imageio import atomic_write_text
    from ..models.publish import make_model_card

    text = make_model_card(ckpt, description=description, metrics=_flat_metrics(metrics), license=license)
    atomic_write_text(card_path, text)
    return card_path


def _flat_metrics(metrics: Mapping | None) -> dict | None:
    """{split: {metric: value}} with per-task rows flattened to 'aIoU/<task>'."""
    if not metrics:
        return None
    out: dict = {}
    for split, m in metrics.items():
        if not isinstance(m, Mapping):
            out[split] = m
            continue
        row = {k: v for k, v in m.items() if not isinstance(v, Mapping) and v is not None}
        for task, tm in (m.get("per_task") or {}).items():
            if isinstance(tm, Mapping) and tm.get("aIoU") is not None:
                row[f"aIoU/{task}"] = tm["aIoU"]
        out[split] = row
    return out


def export_from_state(state_path: str | os.PathLike, out: str | os.PathLike, metrics: Mapping | None = None,
                      fp16: bool = True, description: str | None = None, extra_provenance: dict | None = None,
                      bias_shift: float = 0.0, calibration: dict | None = None, license: str | None = None,
                      model_state: Mapping | None = None) -> Path:
    """Export a `pal train` state (best.pt / latest.pt) with extra metrics (e.g. held-out IoU).

    `bias_shift` raises the artifact logit in the weights themselves (see
    `evaluate.calibrate_bias`); it is recorded in the provenance as `artifact_logit_shift`.
    `calibration` is stored as metadata instead (see `models.checkpoint.save_safetensors`).
    `model_state` replaces the state's weights (e.g. after recomputing BatchNorm statistics).
    """
    from .evaluate import apply_bias_shift
    from .state import load_state

    state = load_state(state_path)
    if model_state is not None:
        state["model"] = dict(model_state)
    if bias_shift:
        state["model"] = apply_bias_shift(state["model"], bias_shift)
        extra_provenance = dict(extra_provenance or {}, artifact_logit_shift=bias_shift)
    prov = dict(state.get("provenance") or {})
    if not prov:  # best.pt holds weights only; the run's provenance lives in latest.pt
        latest = Path(state_path).with_name("latest.pt")
        if latest.is_file():
            prov = dict(load_state(latest).get("provenance") or {})
    prov.update(extra_provenance or {}, exported_from=Path(state_path).name, iteration=state.get("iter"))
    if description is None and "training_data" in prov:
        description = SYNTHETIC_NOTE
    return export_safetensors(state["model"], state["model_config"], out, provenance=prov, fp16=fp16,
                              metrics=metrics, description=description, calibration=calibration,
                              license=license)
