"""Agreement of every reduced-precision path with fp32, per architecture (prints JSON lines).

    python benchmarks/bench_precision.py [--models starter swin-b] [--images 6] [--threads 2] [--folder DIR]

`--folder DIR` takes the images from a folder instead (recursively, sorted, the first --images), e.g.
a `pal synth` test split, where a trained detector has artifact boundaries to get right.

Paths: bf16 on the CPU (the one dtype="auto" may pick there), and fp16 / bf16 on CUDA when a GPU
is present. For each model and path, on the same images at 512x512:

* agreement: share of pixels where the reduced-precision argmax equals fp32's, counted only
  where fp32's logit gap |l1 - l0| >= 0.05 (nearer ties may flip under any rounding);
* |dPAR|: the largest PAR difference over the images (PAR = argmax share on the 512x512 map);
* max |logit diff| and the share of pixels that count.

Target (issue 14): agreement >= 99.5 % and |dPAR| <= 0.002; `verdict` says whether the
architecture meets it. models/detector.py BF16_CPU_ARCHS lists the ones that do.

Models: `starter` = the bundled pal-starter checkpoint; `swin-b` = the PAL4VST Swin-B-w12
UperNet with seeded random weights scaled like a trained network (unit-variance activations,
random BatchNorm statistics, classes balanced on the first image), `convnext-t` likewise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _random_weights import balance_classes_, randomize_  # noqa: E402

GAP = 0.05
TARGET_AGREE, TARGET_DPAR = 0.995, 0.002
ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"swin-b": "pal4vst-swin-b-w12", "convnext-t": "pal4vst-convnext-tiny"}


def images(n: int, folder: str | None = None) -> list[np.ndarray]:
    """Public-domain pictures: the example workflow inputs, then scikit-image's samples."""
    from PIL import Image

    if folder:
        from comfyui_pal.core.imageio import iter_image_paths, load_image

        return [load_image(p) for p in sorted(iter_image_paths([folder], recursive=True))[:n]]

    out = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((ROOT / "example_workflows/api").glob("*.png"))]
    try:
        from skimage import data

        for name in ("rocket", "coffee", "chelsea", "astronaut", "immunohistochemistry", "retina"):
            out.append(np.ascontiguousarray(getattr(data, name)()[..., :3]))
    except ImportError:
        pass
    return out[:n]


def detectors(which: str, imgs) -> tuple[str, object]:
    from comfyui_pal.models import Detector, create_model, load_detector

    if which == "starter":
        det = load_detector(None, device="cpu", dtype="fp32")
        return det.config["backbone"].get("model_name", "starter"), det
    torch.manual_seed(0)
    model = create_model(PRESETS[which], aux_head=False)
    det = Detector(model, model.config, device="cpu", dtype="fp32")
    x0 = det.normalize(torch.from_numpy(det._resize_uint8(imgs[0])).permute(2, 0, 1)[None].float())
    randomize_(det.segmenter)
    with torch.inference_mode():
        balance_classes_(det.segmenter.decode_head, det.segmenter(x0))
    return PRESETS[which], det


def work_batch(det, imgs) -> torch.Tensor:
    work = np.stack([det._resize_uint8(im) for im in imgs])
    return det.normalize(torch.from_numpy(work).permute(0, 3, 1, 2).float())


def compare(ref: torch.Tensor, low: torch.Tensor) -> dict:
    gap = ref[:, 1] - ref[:, 0]
    decided = gap.abs() >= GAP
    same = (ref.argmax(1) == low.argmax(1))
    par_ref = (ref.argmax(1) == 1).float().mean((1, 2))
    par_low = (low.argmax(1) == 1).float().mean((1, 2))
    per_image = [float(same[i][decided[i]].float().mean()) if decided[i].any() else 1.0 for i in range(len(ref))]
    return {"agreement": float(same[decided].float().mean()), "agreement_min_image": min(per_image),
            "max_abs_dpar": float((par_ref - par_low).abs().max()), "max_abs_logit_diff": float((ref - low).abs().max()),
            "decided_share": float(decided.float().mean()), "par_fp32": [round(float(p), 4) for p in par_ref],
            "dpar_per_image": [round(float(d), 4) for d in par_low - par_ref]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["starter", "swin-b"], choices=["starter", *PRESETS])
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folder", default=None, help="images from this folder instead of the built-in six")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from comfyui_pal.models.detector import cpu_has_native_bf16

    imgs = images(a.images, a.folder)
    paths = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        paths += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    print(json.dumps({"bench": "precision_setup", "images": len(imgs), "cpu_native_bf16": cpu_has_native_bf16(),
                      "cuda": torch.cuda.is_available(), "torch": torch.__version__}), flush=True)
    for which in a.models:
        arch, det = detectors(which, imgs)
        for dev, dt in paths:
            refs, lows = [], []
            for im in imgs:  # one image a forward: bounded memory for the big models
                x = work_batch(det, [im])
                det.to(dev, torch.float32)
                refs.append(det.logits(x).cpu())
                det.to(dev, dt)
                lows.append(det.logits(x).cpu())
            det.to("cpu", torch.float32)
            res = compare(torch.cat(refs), torch.cat(lows))
            ok = res["agreement"] >= TARGET_AGREE and res["max_abs_dpar"] <= TARGET_DPAR
            print(json.dumps({"bench": "precision", "model": which, "arch": arch, "device": dev,
                              "dtype": str(dt).removeprefix("torch."), **res,
                              "verdict": "meets target" if ok else "misses target (auto keeps fp32)"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
