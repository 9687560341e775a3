"""Calibrate a trained starter on held-out clean pictures and export it with its operating point.

    python -m comfyui_pal.training.make_starter --state runs/starter/best.pt \\
        --clean /data/clean/calib --val /data/synth --out models/weights/pal-starter.safetensors

0. with --bn-data: `precise_bn.precise_bn_` recomputes the head's BatchNorm statistics on
   --precise-bn training pictures at the working size (states trained before `pal train` did so);
1. `evaluate.calibrate_operating_point`: the artifact-logit bias with the best val artifact IoU
   among those keeping the clean calibration pictures (full pictures of `--clean` plus the
   artifact-free images of the val split, unless --no-val-clean) at median PAR <= --max-median
   and p95 <= --max-p95;
2. `export.export_from_state(..., calibration=...)`: fp16 `.safetensors` whose metadata holds
   the operating point (`load_detector` applies it), plus the model card;
3. prints the calibration record as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .backbone_weights import SOURCE as BACKBONE_SOURCE

STARTER_NOTE = (
    "**A default that does little harm, trained on synthetic data.** `pal-starter` is a MobileNetV2 "
    "(ImageNet weights from torchvision, BSD-3-Clause) + 64-channel UPerHead (linear bottleneck) segmenter "
    "trained with `pal train` on `pal synth` images: clean pictures (Debian desktop wallpapers, OpenCV, "
    "scikit-image, scikit-learn and matplotlib sample photos, procedural images), about 45 % of them left "
    "clean (label 0 everywhere) and a third given a clean depth-of-field blur (photographic blur is not an "
    "artifact), the rest with injected artifacts (melted or deformed parts, duplicated parts, smeared texture "
    "inside objects, incoherent small fragments, warps, blotches, fills, seams) and exact masks. Its "
    "operating point is calibrated on clean pictures it never trained on so that clean images score PAR ~ 0. "
    "It is good for: working offline out of the box (detect, score, fix in every host) and as a starting "
    "point for fine-tuning (`pal finetune --init pal-starter`; add clean images to the fine-tuning set, see "
    "below). It has never seen a real generated image: **the official PAL4VST weights (`pal models download "
    "pal4vst-unified`) are the real detector on generated images.**"
)


def _clean_pictures(folders: list[str] | None, val_data: str | None, split: str) -> list[np.ndarray]:
    from ..core.imageio import iter_image_paths, load_image
    from .data import discover, load_sample

    imgs = [load_image(p) for p in sorted(iter_image_paths(list(folders)))] if folders else []
    if val_data:
        for s in discover(val_data, split).samples:
            img, label = load_sample(s)
            if label is not None and not (label == 1).any():
                imgs.append(img)
    return imgs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True, help="pal train state (best.pt / latest.pt)")
    ap.add_argument("--clean", action="append", default=None,
                    help="folder of clean pictures not used in training (repeatable)")
    ap.add_argument("--val", default=None, help="pal synth data set whose val split scores artifact IoU")
    ap.add_argument("--split", default="val")
    ap.add_argument("--val-clean", action=argparse.BooleanOptionalAction, default=True,
                    help="also calibrate on the val split's artifact-free images (--no-val-clean: only on "
                         "--clean; val images come from the training sources, so they make p95 look easy)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-median", type=float, default=0.002)
    ap.add_argument("--max-p95", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shifts", default=None, help="candidate biases START:STOP:STEP (default -8:2:0.25)")
    ap.add_argument("--metrics", default=None, help="JSON file of extra metrics for the model card")
    ap.add_argument("--bn-data", default=None, help="pal synth data set: recompute BatchNorm statistics on its train split")
    ap.add_argument("--precise-bn", type=int, default=128, help="pictures for --bn-data")
    a = ap.parse_args(argv)
    from .data import DataError

    try:
        return _run(a)
    except (OSError, DataError, ValueError) as e:  # a missing state/folder: say which, write nothing
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a) -> int:
    import torch

    from ..models.checkpoint import build_from_checkpoint
    from .data import discover
    from .evaluate import calibrate_operating_point
    from .export import export_from_state
    from .state import load_state

    if not a.clean and not a.val_clean:
        raise ValueError("--no-val-clean leaves no clean picture to calibrate on; give --clean FOLDER")
    torch.set_num_threads(a.threads)
    state = load_state(a.state)
    model_state = None
    if a.bn_data:
        from .loop import select_few
        from .precise_bn import precise_bn_

        full = build_from_checkpoint(state["model"], state["model_config"], with_aux=True)
        full.train()
        full.backbone.eval()  # the starter's backbone statistics are ImageNet's, frozen in training
        pool = [s for s in discover(a.bn_data, "train").samples if s.label is not None]
        n = precise_bn_(full, select_few(pool, min(a.precise_bn, len(pool)), 0), batch_size=4)
        print(json.dumps({"precise_bn_images": n, "data": a.bn_data}), file=sys.stderr)
        model_state = dict(full.state_dict())
    model = build_from_checkpoint(model_state or state["model"], state["model_config"], with_aux=False)
    clean = _clean_pictures(a.clean, a.val if a.val_clean else None, a.split)
    val = [s for s in discover(a.val, a.split).samples if s.label is not None] if a.val else []
    shifts = None
    if a.shifts:
        lo, hi, step = (float(v) for v in a.shifts.split(":"))
        shifts = np.round(np.arange(lo, hi + step / 2, step), 4)
    op = calibrate_operating_point(model, clean, val, shifts=shifts, max_median=a.max_median, max_p95=a.max_p95)
    table = op.pop("table")
    calibration = {"artifact_logit_bias": op["artifact_logit_bias"],
                   "fit": {k: v for k, v in op.items() if k != "artifact_logit_bias"},
                   "fit_on": {"clean": a.clean, "val": a.val, "split": a.split,
                              "val_clean": a.val_clean}}
    metrics = json.loads(Path(a.metrics).read_text()) if a.metrics else None
    out = export_from_state(a.state, a.out, model_state=model_state, metrics=metrics, description=STARTER_NOTE, calibration=calibration,
                            extra_provenance={"backbone_source": BACKBONE_SOURCE},
                            license="MIT (project); backbone initialised from torchvision weights, BSD-3-Clause")
    print(json.dumps({"out": str(out), "calibration": calibration, "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
