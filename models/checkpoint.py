"""Checkpoint import/export: mmseg `.pth`, mmdeploy TorchScript `end2end.pt`, and our `.safetensors`.

The architecture of a foreign checkpoint is inferred from its tensor shapes (and, for details
shapes cannot tell such as pool scales, from the mmseg config text in `meta`, parsed as data
with `ast`, never executed). Our own format stores the config and provenance as safetensors
metadata, so a file is self-describing.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.imageio import atomic_write_bytes
from .preprocess import IMAGENET_MEAN, IMAGENET_STD
from .registry import is_torchscript_file

FORMAT = "comfyui-pal/1"
_PREFIXES = ("backbone.", "decode_head.", "auxiliary_head.")
DEFAULT_PREPROCESS = {
    "size": [512, 512],
    "resize": "bicubic",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit a supported architecture."""


# --------------------------------------------------------------------------------------- reading
from ..core.imageio import file_sha256  # noqa: E402,F401 - the one implementation, re-exported


def _numpy_safe_globals() -> list:
    """The numpy types an official mmseg 0.x `meta` may hold (e.g. hook_msgs['best_score'])."""
    import numpy as np

    out: list = [np.dtype]
    try:
        out.append((np._core.multiarray.scalar, "numpy.core.multiarray.scalar"))
        out.append(np._core.multiarray.scalar)
    except AttributeError:  # numpy < 2
        out.append(np.core.multiarray.scalar)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        t = getattr(getattr(np, "dtypes", None), name, None)
        if t is not None:
            out.append(t)
    return out


def _load_pth(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - retry once with the numpy allowlist below
        if "Unsupported global" not in str(first) and "weights_only" not in str(first):
            raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({first})") from first
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{path}: refused by the safe loader (weights_only=True): {e}. "
                "Only tensors and plain metadata are accepted; if you trust the file, convert it "
                "with the tool that made it to a plain state dict or safetensors."
            ) from e


def _load_torchscript(path: Path) -> dict[str, torch.Tensor]:
    # torch.jit.load deserialises the module; we only read its parameters and never call forward.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        module = torch.jit.load(str(path), map_location="cpu")
    return {k: v for k, v in module.state_dict().items() if k.startswith(_PREFIXES)}


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


def load_checkpoint(
    path: str | Path, trust_torchscript: bool = False
) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read any supported checkpoint -> (state_dict with mmseg names, config, provenance)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    provenance: dict = {"source_file": path.name}
    meta_config_text = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        config = json.loads(meta["config"]) if "config" in meta else None
        provenance = json.loads(meta.get("provenance", "{}")) or provenance
        if "calibration" in meta:  # the default operating point (see save_safetensors)
            provenance["calibration"] = json.loads(meta["calibration"])
        if config is None:
            config = infer_config(sd)
        return sd, _complete(config), provenance
    if is_torchscript_file(path):
        if not trust_torchscript:
            raise CheckpointError(
                f"{path}: is a TorchScript archive, which contains code. Loading it is off by default; "
                "pass --trust-torchscript (CLI) or trust_torchscript=True if you trust its source, "
                "ideally once, to convert it: `pal convert end2end.pt model.safetensors --trust-torchscript`."
            )
        sd = _load_torchscript(path)
        provenance["source_format"] = "mmdeploy-torchscript"
    else:
        obj = _load_pth(path)
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            meta = obj.get("meta") or {}
            meta_config_text = meta.get("config") if isinstance(meta, Mapping) else None
            sd = dict(obj["state_dict"])
            provenance["source_format"] = "mmseg-pth"
            if isinstance(meta, Mapping):
                for k in ("mmseg_version", "exp_name", "iter", "epoch", "time"):
                    if k in meta:
                        provenance[f"mmseg_{k}" if not k.startswith("mmseg") else k] = str(meta[k])
        elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            sd = dict(obj)
            provenance["source_format"] = "state-dict-pth"
        else:
            raise CheckpointError(
                f"{path}: not an mmseg checkpoint (expected a dict with 'state_dict', got {type(obj).__name__})"
            )
    sd = {k: v for k, v in _strip_prefix(sd).items() if k.startswith(_PREFIXES)}
    if not sd:
        raise CheckpointError(f"{path}: holds no backbone./decode_head. tensors; is it a segmentation model?")
    config = infer_config(sd, meta_config_text)
    return sd, config, provenance


# ------------------------------------------------------------------------ config inference
def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _parse_config_text(text: str | None) -> dict:
    """Evaluate `name = dict(...)` assignments of an mmseg config text as pure data (no execution)."""
    if not text:
        return {}

    def value(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            return {kw.arg: value(kw.value) for kw in node.keywords if kw.arg}
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = value(node.operand)
            return -v if isinstance(v, (int, float)) else None
        if isinstance(node, ast.Constant):
            return node.value
        return None  # names, arithmetic, anything else: ignored, never evaluated

    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = value(stmt.value)
    return out


def _mmseg_hints(parsed: dict) -> dict:
    """The checkpoint's own mmseg config through the one translator (`factory.config_from_mmseg`);
    {} when there is none or it does not translate (then tensor shapes and defaults decide)."""
    if not isinstance(parsed.get("model"), Mapping):
        return {}
    from .factory import config_from_mmseg

    try:
        return config_from_mmseg(parsed)
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def infer_config(sd: Mapping[str, torch.Tensor], meta_config_text: str | None = None) -> dict:
    """Infer our architecture config from mmseg-named tensor shapes (Swin or ConvNeXt + UPerHead)."""
    mm = _mmseg_hints(_parse_config_text(meta_config_text))
    mm_bb, mm_dh, mm_aux = (mm.get(k) or {} for k in ("backbone", "decode_head", "auxiliary_head"))
    shape = {k: tuple(v.shape) for k, v in sd.items()}

    if "backbone.patch_embed.projection.weight" in shape:
        c, _, p, _ = shape["backbone.patch_embed.projection.weight"]
        n_stages = _count(sd, r"backbone\.stages\.(\d+)\.")
        depths = [_count(sd, rf"backbone\.stages\.{i}\.blocks\.(\d+)\.") for i in range(n_stages)]
        tables = [shape[f"backbone.stages.{i}.blocks.0.attn.w_msa.relative_position_bias_table"] for i in range(n_stages)]
        window = int(round((tables[0][0] ** 0.5 + 1) / 2))
        hidden = shape["backbone.stages.0.blocks.0.ffn.layers.0.0.weight"][0]
        backbone = {
            "type": "SwinTransformer",
            "embed_dims": c,
            "depths": depths,
            "num_heads": [t[1] for t in tables],
            "window_size": window,
            "mlp_ratio": hidden / c if hidden % c else hidden // c,
            "patch_size": p,
            "qkv_bias": "backbone.stages.0.blocks.0.attn.w_msa.qkv.bias" in shape,
            "drop_path_rate": mm_bb.get("drop_path_rate", 0.3),
            "pretrain_img_size": mm_bb.get("pretrain_img_size", 384),
        }
        feat_channels = [c * 2**i for i in range(n_stages)]
    elif "backbone.downsample_layers.0.0.weight" in shape:
        n_stages = _count(sd, r"backbone\.stages\.(\d+)\.")
        depths = [_count(sd, rf"backbone\.stages\.{i}\.(\d+)\.") for i in range(n_stages)]
        channels = [shape[f"backbone.stages.{i}.0.depthwise_conv.weight"][0] for i in range(n_stages)]
        backbone = {
            "type": "ConvNeXt",
            "depths": depths,
            "channels": channels,
            "drop_path_rate": mm_bb.get("drop_path_rate", 0.4),
            "layer_scale_init_value": mm_bb.get("layer_scale_init_value", 1.0),
        }
        feat_channels = channels
    else:
        sample = ", ".join(sorted(shape)[:5])
        raise CheckpointError(
            "unsupported backbone: expected mmseg Swin (backbone.patch_embed.projection.*) or "
            f"mmpretrain ConvNeXt (backbone.downsample_layers.*) keys; first keys are: {sample}"
        )

    if "decode_head.fpn_bottleneck.conv.weight" not in shape:
        raise CheckpointError("unsupported decode head: expected an mmseg UPerHead (decode_head.fpn_bottleneck.*)")
    n_psp = _count(sd, r"decode_head\.psp_modules\.(\d+)\.")
    pool_scales = mm_dh.get("pool_scales") or ([1, 2, 3, 6] if n_psp == 4 else list(range(1, n_psp + 1)))
    decode_head = {
        "type": "UPerHead",
        "in_channels": [shape[f"decode_head.lateral_convs.{i}.conv.weight"][1] for i in range(len(feat_channels) - 1)]
        + [shape["decode_head.psp_modules.0.1.conv.weight"][1]],
        "channels": shape["decode_head.fpn_bottleneck.conv.weight"][0],
        "pool_scales": list(pool_scales),
        "num_classes": shape["decode_head.conv_seg.weight"][0],
        "dropout_ratio": mm_dh.get("dropout_ratio", 0.1),
    }
    aux = None
    if "auxiliary_head.conv_seg.weight" in shape:
        num_convs = _count(sd, r"auxiliary_head\.convs\.(\d+)\.")
        in_ch = shape["auxiliary_head.convs.0.conv.weight"][1] if num_convs else shape["auxiliary_head.conv_seg.weight"][1]
        default_idx = feat_channels.index(in_ch) if in_ch in feat_channels else 2
        aux = {
            "type": "FCNHead",
            "in_channels": in_ch,
            "in_index": mm_aux.get("in_index", default_idx),
            "channels": shape["auxiliary_head.conv_seg.weight"][1],
            "num_convs": num_convs,
            "kernel_size": shape["auxiliary_head.convs.0.conv.weight"][-1] if num_convs else 3,
            "num_classes": shape["auxiliary_head.conv_seg.weight"][0],
            "dropout_ratio": mm_aux.get("dropout_ratio", 0.1),
            "concat_input": "auxiliary_head.conv_cat.conv.weight" in shape,
        }
    config = {"backbone": backbone, "decode_head": decode_head, "auxiliary_head": aux}
    test_cfg = mm.get("test_cfg") or {}
    if test_cfg.get("mode") == "slide" and test_cfg.get("crop_size") and test_cfg.get("stride"):
        # Only matters when feeding images at their own size; at the 512x512 default one window = whole.
        config["test_cfg"] = {"mode": "slide", "crop_size": list(test_cfg["crop_size"]),
                              "stride": list(test_cfg["stride"])}
    return _complete(config)


def _complete(config: dict) -> dict:
    config = dict(config)
    config.setdefault("preprocess", dict(DEFAULT_PREPROCESS))
    config.setdefault("classes", ["background", "bad_region"])
    return config


# ------------------------------------------------------------------------ building + writing
def build_from_checkpoint(
    sd: Mapping[str, torch.Tensor], config: dict, with_aux: bool | None = None
) -> torch.nn.Module:
    """Create the model for `config` and load `sd` strictly, or explain the first mismatches.

    `with_aux=None` builds the aux head when the checkpoint has one; False drops its tensors.
    """
    from .factory import create_model

    has_aux = any(k.startswith("auxiliary_head.") for k in sd)
    if with_aux is False and has_aux:
        sd = {k: v for k, v in sd.items() if not k.startswith("auxiliary_head.")}
        has_aux = False
    try:
        model = create_model(config, aux_head=has_aux and config.get("auxiliary_head") is not None)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot build the architecture described by the checkpoint: {e}") from e
    expected = model.state_dict()
    problems = []
    for k in expected:
        if k not in sd:
            problems.append(f"missing {k} {tuple(expected[k].shape)}")
        elif tuple(sd[k].shape) != tuple(expected[k].shape):
            problems.append(f"shape of {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}")
    problems += [f"unexpected {k} {tuple(sd[k].shape)}" for k in sd if k not in expected]
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(
            f"checkpoint does not fit a supported architecture ({len(problems)} mismatches):\n  {shown}{more}"
        )
    model.load_state_dict({k: sd[k] for k in expected}, strict=True)
    return model


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    config: dict,
    path: str | Path,
    provenance: dict | None = None,
    dtype: torch.dtype | None = None,
    include_aux: bool = False,
    calibration: dict | None = None,
) -> Path:
    """Write weights + config + provenance as one self-describing safetensors file (atomically).

    `calibration` (e.g. ``{"artifact_logit_bias": -1.5}``) is the default operating point,
    stored as its own metadata entry; `load_checkpoint` returns it as ``provenance["calibration"]``
    and `load_detector` applies it unless told not to."""
    from safetensors.torch import save

    tensors = {}
    for k, v in state_dict.items():
        if not include_aux and k.startswith("auxiliary_head."):
            continue
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            low = v.to(dtype)
            # A value past the narrow dtype's range (e.g. a BatchNorm running_var of 1e5 in fp16)
            # would become inf and silently zero its channel: such a tensor keeps its precision.
            if bool(torch.isfinite(low).all()) or not bool(torch.isfinite(v).all()):
                v = low
        tensors[k] = v.contiguous().clone()  # clone: safetensors refuses shared storage
    meta = {
        "format": FORMAT,
        "config": json.dumps(_complete(config), sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    if calibration:
        meta["calibration"] = json.dumps(dict(calibration), sort_keys=True)
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def convert(
    src: str | Path,
    dst: str | Path,
    fp16: bool = False,
    include_aux: bool = False,
    trust_torchscript: bool = False,
    overwrite: bool = False,
) -> Path:
    """`pal convert`: any supported checkpoint -> our safetensors, verified by a strict load."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the output must end in .safetensors")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: refusing to overwrite the source checkpoint; choose another output name")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst}: already exists; pass --overwrite to replace it")
    sd, config, prov = load_checkpoint(src, trust_torchscript=trust_torchscript)
    build_from_checkpoint(sd, config)  # fail here, not at load time, if the tensors do not fit
    prov = dict(prov, source_sha256=file_sha256(src), converted_by="comfyui-pal pal convert")
    return save_safetensors(sd, config, dst, provenance=prov, dtype=torch.float16 if fp16 else None,
                            include_aux=include_aux)


def expected_state_shapes(config: Mapping) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, dtype) of the full training-layout state dict (aux head included) of a preset
    or config: the manifest a foreign checkpoint must match. Built on the meta device (no memory)."""
    from .factory import create_model

    with torch.device("meta"):
        model = create_model(dict(config) if not isinstance(config, str) else config, aux_head=True)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def verify_and_convert(
    src: str | Path,
    dst: str | Path,
    expected: str | Mapping,
    provenance: Mapping | None = None,
    trust_torchscript: bool = False,
    include_aux: bool = False,
) -> dict:
    """Downloaded foreign checkpoint -> our safetensors, only if it is exactly the expected network.

    1. load with weights_only=True (TorchScript only with `trust_torchscript`, and then only its
       weights); 2. strict key/shape check against the preset's (or config's) manifest;
    3. one forward pass on a fixed input, logits must be finite; 4. write `dst` (atomically) with
    the expected config and `provenance` + the source's sha256. Returns the provenance written.
    """
    from .factory import PRESETS, resolve_config

    src = Path(src)
    config = PRESETS[expected] if isinstance(expected, str) else dict(expected)
    name = expected if isinstance(expected, str) else config.get("name", "the registry's config")
    sd, _inferred, prov = load_checkpoint(src, trust_torchscript=trust_torchscript)
    want = expected_state_shapes(config)
    if not any(k.startswith("auxiliary_head.") for k in sd):  # TorchScript exports keep it; a stripped .pth may not
        want = {k: v for k, v in want.items() if not k.startswith("auxiliary_head.")}
    problems = [f"missing {k} {s}" for k, (s, _) in want.items() if k not in sd]
    problems += [f"shape of {k}: {tuple(sd[k].shape)}, expected {s}" for k, (s, _) in want.items()
                 if k in sd and tuple(sd[k].shape) != s]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in sd.items() if k not in want]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"{src.name}: wrong structure, not the {name} network ({len(problems)} "
                              f"mismatches with its key manifest: {shown})")
    config = _complete(resolve_config(config))
    model = build_from_checkpoint(sd, config, with_aux=False).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=gen)  # small: the check is "finite", not accuracy
    with torch.inference_mode():
        out = model(x)
    out = out["out"] if isinstance(out, Mapping) else out
    if not torch.isfinite(out).all() or out.shape[1] != len(config.get("classes", [0, 0])):
        raise CheckpointError(f"{src.name}: a forward pass on a fixed input gave non-finite or wrongly "
                              f"shaped logits {tuple(out.shape)}; the weights are damaged")
    del model, out  # free the network before serialising: peak memory is ~2 copies, not 3
    prov = dict(prov, **(provenance or {}), source_sha256=file_sha256(src), source_size=src.stat().st_size,
                converted_by="comfyui-pal (verified: weights_only load, key manifest, finite forward)")
    save_safetensors(sd, config, dst, provenance=prov, include_aux=include_aux)
    return prov
