"""Build segmenters from data configs: ``create_model``, ``PRESETS``, ``config_from_mmseg``.

A config is a JSON-able dict (stored with the weights)::

    {"backbone": {"type": "SwinTransformer" | "ConvNeXt" | "timm", ...},
     "decode_head": {"type": "UPerHead", ...},
     "auxiliary_head": {"type": "FCNHead", ...} | None,
     "preprocess": {...}, "classes": [...], "test_cfg": {...}}

Missing keys get defaults (``resolve_config``); unknown types or keys raise ``ValueError``.
The resolved config is stored on the model as ``model.config``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping

from .preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "PRESETS", "BACKBONES", "HEADS", "create_model", "list_presets", "resolve_config",
    "config_from_mmseg", "register_backbone",
]

_MEAN, _STD = list(IMAGENET_MEAN), list(IMAGENET_STD)
_CLASSES = ["background", "bad_region"]

# ---------------------------------------------------------------------------------------------
# Schemas: per type, every allowed key with its default (None = required or derived).

_SWIN_DEFAULTS = {  # mmseg SwinTransformer defaults (Swin-T w7)
    "embed_dims": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
    "mlp_ratio": 4, "patch_size": 4, "in_channels": 3, "strides": [4, 2, 2, 2], "out_indices": [0, 1, 2, 3],
    "qkv_bias": True, "qk_scale": None, "patch_norm": True, "drop_rate": 0.0, "attn_drop_rate": 0.0,
    "drop_path_rate": 0.1, "pretrain_img_size": 224, "with_cp": False,
}
_CONVNEXT_DEFAULTS = {  # mmpretrain ConvNeXt defaults (arch tiny)
    "depths": None, "channels": None, "arch": "tiny", "in_channels": 3, "stem_patch_size": 4,
    "out_indices": [0, 1, 2, 3], "drop_path_rate": 0.0, "layer_scale_init_value": 1e-6, "with_cp": False,
}
_TIMM_DEFAULTS = {"model_name": None, "out_indices": None, "kwargs": {}, "pretrained_path": None}
_UPER_DEFAULTS = {
    "in_channels": None, "channels": 512, "pool_scales": [1, 2, 3, 6], "num_classes": 2, "dropout_ratio": 0.1,
    "linear_bottleneck": False,
    "in_index": None, "align_corners": False,
}
_FCN_DEFAULTS = {
    "in_channels": None, "in_index": 2, "channels": None, "num_convs": 1, "kernel_size": 3,
    "concat_input": False, "num_classes": 2, "dropout_ratio": 0.1,
}
_TOP_KEYS = {"backbone", "decode_head", "auxiliary_head", "preprocess", "classes", "test_cfg", "name", "meta"}
_PREPROCESS_DEFAULTS = {"size": [512, 512], "resize": "bicubic", "mean": _MEAN, "std": _STD}

_TYPE_ALIASES = {
    "swintransformer": "SwinTransformer", "swin": "SwinTransformer",
    "convnext": "ConvNeXt", "mmpretrain.convnext": "ConvNeXt", "mmcls.convnext": "ConvNeXt",
    "timm": "timm", "timmbackbone": "timm",
    "uperhead": "UPerHead", "fcnhead": "FCNHead",
}


def _canonical_type(t, where: str, allowed) -> str:
    name = _TYPE_ALIASES.get(str(t).lower()) if isinstance(t, str) else None
    if name not in allowed:
        raise ValueError(f"{where}: unknown type {t!r}; supported: {sorted(allowed)}")
    return name


def _fill(section: Mapping, defaults: Mapping, where: str) -> dict:
    unknown = sorted(set(section) - set(defaults) - {"type"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(defaults)}")
    out = copy.deepcopy(dict(defaults))
    out.update(copy.deepcopy({k: v for k, v in section.items() if k != "type"}))
    return out


def _int_list(v, where: str, n: int | None = None) -> list[int]:
    try:
        out = [int(x) for x in v]
    except TypeError as e:
        raise ValueError(f"{where} must be a list of integers, got {v!r}") from e
    if n is not None and len(out) != n:
        raise ValueError(f"{where} must have {n} entries, got {out}")
    return out


# ---------------------------------------------------------------------------------------------
# Backbone registry: type -> (resolve(section) -> resolved section, channels(resolved) | None, build)


def _resolve_swin(sec: Mapping) -> dict:
    c = _fill(sec, _SWIN_DEFAULTS, "backbone (SwinTransformer)")
    c["depths"] = _int_list(c["depths"], "backbone.depths")
    n = len(c["depths"])
    c["num_heads"] = _int_list(c["num_heads"], "backbone.num_heads", n)
    c["strides"] = _int_list(c["strides"], "backbone.strides", n)
    c["out_indices"] = _int_list(c["out_indices"], "backbone.out_indices")
    for k in ("embed_dims", "window_size", "patch_size", "in_channels"):
        c[k] = int(c[k])
    for i, h in enumerate(c["num_heads"]):
        if (c["embed_dims"] * 2**i) % h:
            raise ValueError(f"backbone: stage {i} width {c['embed_dims'] * 2**i} is not divisible by "
                             f"num_heads[{i}]={h}")
    if any(not 0 <= i < n for i in c["out_indices"]):
        raise ValueError(f"backbone.out_indices {c['out_indices']} out of range for {n} stages")
    return c


def _swin_channels(c: Mapping) -> list[int]:
    return [c["embed_dims"] * 2**i for i in c["out_indices"]]


def _build_swin(c: Mapping):
    from .swin import SwinTransformer

    return SwinTransformer(**{k: v for k, v in c.items() if k != "pretrain_img_size"})


def _resolve_convnext(sec: Mapping) -> dict:
    from .convnext import CONVNEXT_ARCHS

    c = _fill(sec, _CONVNEXT_DEFAULTS, "backbone (ConvNeXt)")
    arch = c.pop("arch")
    if isinstance(arch, Mapping):  # mmpretrain allows arch={"depths": ..., "channels": ...}
        arch_dc = {"depths": arch.get("depths"), "channels": arch.get("channels")}
    elif arch in CONVNEXT_ARCHS:
        arch_dc = CONVNEXT_ARCHS[arch]
    elif arch is None:
        arch_dc = {"depths": None, "channels": None}
    else:
        raise ValueError(f"backbone (ConvNeXt): unknown arch {arch!r}; known: {sorted(CONVNEXT_ARCHS)}")
    for k in ("depths", "channels"):  # explicit depths/channels override the arch name
        if c[k] is None:
            c[k] = arch_dc[k]
        if c[k] is None:
            raise ValueError(f"backbone (ConvNeXt): give 'arch' or both 'depths' and 'channels' (missing {k})")
    c["depths"] = _int_list(c["depths"], "backbone.depths")
    c["channels"] = _int_list(c["channels"], "backbone.channels", len(c["depths"]))
    c["out_indices"] = _int_list(c["out_indices"], "backbone.out_indices")
    if any(not 0 <= i < len(c["depths"]) for i in c["out_indices"]):
        raise ValueError(f"backbone.out_indices {c['out_indices']} out of range for {len(c['depths'])} stages")
    return c


def _convnext_channels(c: Mapping) -> list[int]:
    return [c["channels"][i] for i in c["out_indices"]]


def _build_convnext(c: Mapping):
    from .convnext import ConvNeXt

    return ConvNeXt(**c)


def _resolve_timm(sec: Mapping) -> dict:
    c = _fill(sec, _TIMM_DEFAULTS, "backbone (timm)")
    if not isinstance(c["model_name"], str) or not c["model_name"]:
        raise ValueError("backbone (timm): 'model_name' is required, e.g. 'resnet18'")
    if c["out_indices"] is not None:
        c["out_indices"] = _int_list(c["out_indices"], "backbone.out_indices")
    if not isinstance(c["kwargs"], Mapping):
        raise ValueError(f"backbone (timm): 'kwargs' must be a dict, got {c['kwargs']!r}")
    return c


def _build_timm(c: Mapping):
    from .timm_backbone import TimmBackbone

    return TimmBackbone(**c)


BACKBONES: dict[str, tuple[Callable, Callable | None, Callable]] = {
    "SwinTransformer": (_resolve_swin, _swin_channels, _build_swin),
    "ConvNeXt": (_resolve_convnext, _convnext_channels, _build_convnext),
    # channels of a timm model are only known once it is built (feature_info.channels()).
    "timm": (_resolve_timm, None, _build_timm),
}
HEADS = {"UPerHead": _UPER_DEFAULTS, "FCNHead": _FCN_DEFAULTS}


def register_backbone(type_name: str, resolve: Callable, channels: Callable | None, build: Callable) -> None:
    """Add a backbone type: ``resolve(section)->dict``, ``channels(resolved)->list|None``, ``build``."""
    BACKBONES[type_name] = (resolve, channels, build)
    _TYPE_ALIASES[type_name.lower()] = type_name


# ---------------------------------------------------------------------------------------------
# Presets (data). The official "swin-large" PAL4VST model is Swin-B window 12.

def _pal_preset(backbone: dict, in_channels: list[int], test_cfg: dict) -> dict:
    return {
        "backbone": backbone,
        "decode_head": {"type": "UPerHead", "in_channels": in_channels, "channels": 512,
                        "pool_scales": [1, 2, 3, 6], "num_classes": 2, "dropout_ratio": 0.1},
        "auxiliary_head": {"type": "FCNHead", "in_channels": in_channels[2], "in_index": 2, "channels": 256,
                           "num_convs": 1, "num_classes": 2, "dropout_ratio": 0.1, "concat_input": False},
        "preprocess": copy.deepcopy(_PREPROCESS_DEFAULTS),
        "classes": list(_CLASSES),
        "test_cfg": test_cfg,
    }


PRESETS: dict[str, dict] = {
    "pal4vst-swin-b-w12": _pal_preset(
        {"type": "SwinTransformer", "embed_dims": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32],
         "window_size": 12, "mlp_ratio": 4, "patch_size": 4, "qkv_bias": True, "drop_path_rate": 0.3,
         "pretrain_img_size": 384},
        [128, 256, 512, 1024], {"mode": "whole"}),
    "pal4vst-convnext-tiny": _pal_preset(
        {"type": "ConvNeXt", "depths": [3, 3, 9, 3], "channels": [96, 192, 384, 768], "drop_path_rate": 0.4,
         "layer_scale_init_value": 1.0},
        [96, 192, 384, 768], {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}),
    "pal4vst-convnext-large": _pal_preset(
        {"type": "ConvNeXt", "depths": [3, 3, 27, 3], "channels": [192, 384, 768, 1536], "drop_path_rate": 0.4,
         "layer_scale_init_value": 1.0},
        [192, 384, 768, 1536], {"mode": "slide", "crop_size": [512, 512], "stride": [426, 426]}),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


# ---------------------------------------------------------------------------------------------


def _resolve_head(sec, where: str, allowed) -> dict:
    if not isinstance(sec, Mapping):
        raise ValueError(f"{where} must be a dict with a 'type', got {sec!r}")
    t = _canonical_type(sec.get("type"), where, allowed)
    c = _fill(sec, HEADS[t], f"{where} ({t})")
    return {"type": t, **c}


def _check_in_channels(cfg: dict, channels: list[int]) -> None:
    """Fill or check the heads' in_channels against the backbone's output channels."""
    dh = cfg["decode_head"]
    idx = dh["in_index"] if dh["in_index"] is not None else list(range(len(channels)))
    dh["in_index"] = _int_list(idx, "decode_head.in_index")
    if any(not 0 <= i < len(channels) for i in dh["in_index"]):
        raise ValueError(f"decode_head.in_index {dh['in_index']} out of range for {len(channels)} backbone outputs")
    want = [channels[i] for i in dh["in_index"]]
    if dh["in_channels"] is None:
        dh["in_channels"] = want
    elif list(dh["in_channels"]) != want:
        raise ValueError(f"decode_head.in_channels {list(dh['in_channels'])} do not match the backbone "
                         f"output channels {want}; remove the key to use the backbone's")
    aux = cfg.get("auxiliary_head")
    if aux:
        i = int(aux["in_index"])
        if not -len(channels) <= i < len(channels):
            raise ValueError(f"auxiliary_head.in_index {i} out of range for {len(channels)} backbone outputs")
        if aux["in_channels"] is None:
            aux["in_channels"] = channels[i]
        elif int(aux["in_channels"]) != channels[i]:
            raise ValueError(f"auxiliary_head.in_channels {aux['in_channels']} does not match backbone "
                             f"output {i} ({channels[i]} channels)")


def resolve_config(config: Mapping) -> dict:
    """Validate ``config`` and fill every default (no model is built; timm widths stay None)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"model config must be a dict or a preset name, got {type(config).__name__}")
    unknown = sorted(set(config) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"model config: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    if "backbone" not in config or not isinstance(config["backbone"], Mapping):
        raise ValueError("model config needs a 'backbone' dict with a 'type' "
                         f"(one of {sorted(BACKBONES)}), or use a preset: {list_presets()}")
    cfg: dict = {}
    bb = config["backbone"]
    t = _canonical_type(bb.get("type"), "backbone", BACKBONES)
    resolve, channels_fn, _ = BACKBONES[t]
    cfg["backbone"] = {"type": t, **resolve(bb)}
    cfg["decode_head"] = _resolve_head(config.get("decode_head", {"type": "UPerHead"}), "decode_head", {"UPerHead"})
    aux = config.get("auxiliary_head", {"type": "FCNHead"})
    cfg["auxiliary_head"] = _resolve_head(aux, "auxiliary_head", {"FCNHead"}) if aux else None
    nc = int(cfg["decode_head"]["num_classes"])
    if cfg["auxiliary_head"]:
        if cfg["auxiliary_head"]["channels"] is None:
            cfg["auxiliary_head"]["channels"] = max(int(cfg["decode_head"]["channels"]) // 2, 1)
        if int(cfg["auxiliary_head"]["num_classes"]) != nc:
            raise ValueError(f"auxiliary_head.num_classes {cfg['auxiliary_head']['num_classes']} != "
                             f"decode_head.num_classes {nc}")
    pre = config.get("preprocess") or {}
    if not isinstance(pre, Mapping):
        raise ValueError(f"preprocess must be a dict, got {pre!r}")
    cfg["preprocess"] = _fill(pre, _PREPROCESS_DEFAULTS, "preprocess")
    if cfg["preprocess"]["resize"] not in ("bicubic", "bilinear"):
        raise ValueError(f"preprocess.resize must be 'bicubic' or 'bilinear', got {cfg['preprocess']['resize']!r}")
    classes = config.get("classes")
    if classes is None:
        classes = list(_CLASSES) if nc == 2 else [f"class{i}" for i in range(nc)]
    if len(classes) != nc:
        raise ValueError(f"classes {list(classes)} do not match decode_head.num_classes {nc}")
    cfg["classes"] = list(classes)
    test_cfg = dict(config.get("test_cfg") or {"mode": "whole"})
    if test_cfg.get("mode") not in ("whole", "slide") or (
            test_cfg["mode"] == "slide" and not {"crop_size", "stride"} <= set(test_cfg)):
        raise ValueError(f"test_cfg must be {{'mode': 'whole'}} or {{'mode': 'slide', 'crop_size': [h, w], "
                         f"'stride': [h, w]}}, got {test_cfg!r}")
    cfg["test_cfg"] = test_cfg
    for k in ("name", "meta"):
        if k in config:
            cfg[k] = copy.deepcopy(config[k])
    if channels_fn is not None:
        _check_in_channels(cfg, channels_fn(cfg["backbone"]))
    return cfg


def create_model(preset_name_or_config="pal4vst-swin-b-w12", aux_head: bool = True):
    """Build an ``EncoderDecoder`` from a preset name or a config dict (random init, no downloads).

    ``model.config`` holds the full resolved config; with ``aux_head=False`` its
    ``auxiliary_head`` is None, so the config always describes exactly the built modules.
    A timm ``pretrained_path`` is applied at build time and not kept in ``model.config``.
    """
    from .fcn_head import FCNHead
    from .segmentor import EncoderDecoder
    from .uper_head import UPerHead

    if isinstance(preset_name_or_config, str):
        if preset_name_or_config not in PRESETS:
            raise ValueError(f"unknown model preset {preset_name_or_config!r}; available: {list_presets()}")
        config = copy.deepcopy(PRESETS[preset_name_or_config])
        config["name"] = preset_name_or_config
    else:
        config = preset_name_or_config
    cfg = resolve_config(config)
    if not aux_head:
        cfg["auxiliary_head"] = None
    backbone = BACKBONES[cfg["backbone"]["type"]][2]({k: v for k, v in cfg["backbone"].items() if k != "type"})
    _check_in_channels(cfg, list(backbone.out_channels))
    if cfg["backbone"]["type"] == "timm":
        cfg["backbone"]["out_indices"] = list(backbone.out_indices)
        cfg["backbone"]["pretrained_path"] = None
    dh = {k: v for k, v in cfg["decode_head"].items() if k != "type"}
    decode_head = UPerHead(**dh)
    aux = None
    if cfg["auxiliary_head"]:
        aux = FCNHead(**{k: v for k, v in cfg["auxiliary_head"].items() if k != "type"})
    model = EncoderDecoder(backbone, decode_head, aux, config=cfg)
    model.align_corners = bool(cfg["decode_head"]["align_corners"])
    return model


# ---------------------------------------------------------------------------------------------
# mmseg config (as data, e.g. the fixtures' *.config.json or a checkpoint's parsed meta) -> ours.

_MMSEG_SWIN_IGNORED = {"type", "act_cfg", "norm_cfg", "use_abs_pos_embed", "init_cfg", "pretrained",
                       "frozen_stages", "convert_weights"}
_MMSEG_CONVNEXT_IGNORED = {"type", "arch", "gap_before_final_norm", "linear_pw_conv", "use_grn", "norm_cfg",
                           "act_cfg", "frozen_stages", "init_cfg", "with_cp"}
_MMSEG_HEAD_IGNORED = {"type", "norm_cfg", "act_cfg", "conv_cfg", "loss_decode", "init_cfg", "sampler",
                       "ignore_index", "input_transform", "threshold", "out_channels", "align_corners"}


def _pick(sec: Mapping, keys, ignored, where: str) -> dict:
    unknown = sorted(set(sec) - set(keys) - set(ignored))
    if unknown:
        raise ValueError(f"{where}: mmseg key(s) {unknown} are not supported by this implementation")
    return {k: copy.deepcopy(sec[k]) for k in keys if k in sec}


def config_from_mmseg(cfg_dict: Mapping) -> dict:
    """Translate an mmseg model config (dict data, never executed code) to our resolved config.

    Accepts a full config dict with a ``model`` key (like ``tests/fixtures/*.config.json``) or the
    model dict itself (``backbone``/``decode_head``/``auxiliary_head``/``test_cfg``).
    """
    if isinstance(cfg_dict, (str, bytes)):
        cfg_dict = json.loads(cfg_dict)
    full = dict(cfg_dict)
    model = full.get("model", full)
    if not isinstance(model, Mapping) or "backbone" not in model:
        raise ValueError("mmseg config has no model.backbone; expected the dict form of an mmseg config")
    bb = model["backbone"]
    btype = str(bb.get("type", "")).split(".")[-1]
    if btype == "SwinTransformer":
        if bb.get("use_abs_pos_embed"):
            raise ValueError("mmseg SwinTransformer with use_abs_pos_embed=True is not supported")
        act = (bb.get("act_cfg") or {"type": "GELU"}).get("type")
        norm = (bb.get("norm_cfg") or {"type": "LN"}).get("type")
        if act != "GELU" or norm != "LN":
            raise ValueError(f"mmseg SwinTransformer act_cfg {act!r} / norm_cfg {norm!r} not supported (GELU/LN only)")
        keys = [k for k in _SWIN_DEFAULTS if k != "with_cp"]
        backbone = {"type": "SwinTransformer", **_pick(bb, keys, _MMSEG_SWIN_IGNORED | {"with_cp"},
                                                        "backbone (SwinTransformer)")}
    elif btype == "ConvNeXt":
        if bb.get("gap_before_final_norm", True):
            raise ValueError("mmpretrain ConvNeXt with gap_before_final_norm=True gives pooled vectors, not "
                             "feature maps; segmentation configs set it to False")
        if not bb.get("linear_pw_conv", True) or bb.get("use_grn", False):
            raise ValueError("mmpretrain ConvNeXt with linear_pw_conv=False or use_grn=True is not supported")
        eps = (bb.get("norm_cfg") or {}).get("eps", 1e-6)
        if eps != 1e-6:
            raise ValueError(f"mmpretrain ConvNeXt norm eps {eps} not supported (1e-6 only)")
        backbone = {"type": "ConvNeXt", "arch": bb.get("arch", "tiny"),
                    **_pick(bb, ["in_channels", "stem_patch_size", "out_indices", "drop_path_rate",
                                 "layer_scale_init_value"], _MMSEG_CONVNEXT_IGNORED, "backbone (ConvNeXt)")}
        if isinstance(backbone["arch"], Mapping):
            arch = backbone.pop("arch")
            backbone["depths"], backbone["channels"] = list(arch["depths"]), list(arch["channels"])
    else:
        raise ValueError(f"mmseg backbone type {bb.get('type')!r} is not supported "
                         "(SwinTransformer, mmpretrain.ConvNeXt)")

    def head(sec, t, where):
        if sec.get("type") != t:
            raise ValueError(f"mmseg {where} type {sec.get('type')!r} is not supported ({t} only)")
        if sec.get("align_corners", False):
            raise ValueError(f"mmseg {where} with align_corners=True is not supported")
        if "out_channels" in sec and sec["out_channels"] != sec.get("num_classes", 2):
            raise ValueError(f"mmseg {where}: out_channels != num_classes (sigmoid heads) is not supported")
        for k, want in (("act_cfg", "ReLU"), ("norm_cfg", ("BN", "SyncBN"))):
            got = (sec.get(k) or {}).get("type", want if isinstance(want, str) else want[0])
            if got not in ((want,) if isinstance(want, str) else want):
                raise ValueError(f"mmseg {where} {k} type {got!r} is not supported")
        if sec.get("dilation", 1) != 1:
            raise ValueError(f"mmseg {where} with dilation != 1 is not supported")
        keys = [k for k in HEADS[t] if k != "align_corners"]
        return {"type": t, **_pick(sec, keys, _MMSEG_HEAD_IGNORED | {"dilation"}, where)}

    out: dict = {"backbone": backbone, "decode_head": head(model["decode_head"], "UPerHead", "decode_head")}
    aux = model.get("auxiliary_head")
    if isinstance(aux, (list, tuple)):
        if len(aux) != 1:
            raise ValueError(f"mmseg config has {len(aux)} auxiliary heads; only one FCNHead is supported")
        aux = aux[0]
    out["auxiliary_head"] = head(aux, "FCNHead", "auxiliary_head") if aux else None
    test_cfg = dict(model.get("test_cfg") or {"mode": "whole"})
    out["test_cfg"] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in test_cfg.items()
                       if k in ("mode", "crop_size", "stride")}
    dp = model.get("data_preprocessor") or full.get("data_preprocessor") or {}
    pre = {"mean": list(dp.get("mean", _MEAN)), "std": list(dp.get("std", _STD))}
    size = None
    for step in full.get("test_pipeline") or []:
        if isinstance(step, Mapping) and step.get("type") == "Resize" and step.get("scale"):
            w, h = step["scale"]  # mmcv scale is (w, h)
            size = [int(h), int(w)]
    if size is None and dp.get("size"):
        size = [int(s) for s in dp["size"]]
    if size is not None:
        pre["size"] = size
    out["preprocess"] = pre
    classes = full.get("classes") or (full.get("meta") or {}).get("CLASSES")
    if classes is not None:
        out["classes"] = list(classes)
    return resolve_config(out)
