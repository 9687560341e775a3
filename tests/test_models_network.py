"""Network tests: the plain-torch PAL4VST models against mmseg's own outputs (tiny fixtures),
official state-dict layouts (key manifests), config handling and the generic timm path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfyui_pal.models.factory import (
    PRESETS,
    config_from_mmseg,
    create_model,
    list_presets,
    resolve_config,
)

torch.set_num_threads(min(2, torch.get_num_threads()))

FIX = Path(__file__).parent / "fixtures"
TINY = ["tiny_swin_upernet_w7", "tiny_swin_upernet_w12", "tiny_convnext_upernet"]
MANIFESTS = {
    "pal4vst-swin-b-w12": "swin-large_upernet_unified_512x512.keys.json",
    "pal4vst-convnext-tiny": "convnext-tiny_upernet_unified_512x512.keys.json",
    "pal4vst-convnext-large": "convnext-large_upernet_unified_512x512.keys.json",
}
ATOL = 1e-4
NEAR_TIE = 1e-3


@pytest.fixture(scope="module")
def inputs():
    return np.load(FIX / "inputs.npz")


def _tiny_model(name: str):
    cfg = config_from_mmseg(json.loads((FIX / f"{name}.config.json").read_text()))
    model = create_model(cfg)
    sd = torch.load(FIX / f"{name}.pth", map_location="cpu", weights_only=True)["state_dict"]
    # Freshly built buffers (used when training from scratch) equal mmseg's.
    fresh = model.state_dict()
    for k in sd:
        if k.endswith("relative_position_index"):
            assert torch.equal(fresh[k], sd[k]), k
    model.load_state_dict(sd, strict=True)
    return model.eval(), cfg


def _run_case(model, cfg, x: torch.Tensor, case: str, exp) -> dict[str, torch.Tensor]:
    """Every array that mmseg stored for this case, computed with our model."""
    with torch.inference_mode():
        feats = model.extract_feat(x)
        out = {f"{case}_backbone_out{i}": f for i, f in enumerate(feats)}
        train = model.forward_train(x)
        out[f"{case}_decode_logits"] = train["out"]
        out[f"{case}_aux_logits"] = train["aux"]
        logits = model(x)
        out[f"{case}_logits"] = logits
        out[f"{case}_mask"] = logits
        if f"{case}_seg_logits_ori" in exp.files or f"{case}_pred_ori" in exp.files:
            # mmseg postprocess_result: bilinear resize of the logits to the source size, then argmax.
            src = exp[f"{case}_pred_ori"].shape[-2:]
            ori = F.interpolate(logits, size=src, mode="bilinear", align_corners=False)
            out[f"{case}_seg_logits_ori"] = ori
            out[f"{case}_pred_ori"] = ori
        if f"{case}_slide_logits" in exp.files:
            tc = cfg["test_cfg"]
            slide = model.slide_inference(x, tc["crop_size"], tc["stride"])
            out[f"{case}_slide_logits"] = slide
            out[f"{case}_slide_mask"] = slide
    return out


@pytest.mark.parametrize("name", TINY)
def test_tiny_fixture_matches_mmseg(name, inputs):
    model, cfg = _tiny_model(name)
    exp = np.load(FIX / f"{name}.expected.npz")
    checked = set()
    for case in "AB":
        mine = _run_case(model, cfg, torch.from_numpy(inputs[f"{case}_input"]), case, exp)
        for key in exp.files:
            if not key.startswith(case):
                continue
            assert key in mine, f"{name}: expected array {key} is not produced"
            ref, got = exp[key], mine[key]
            if ref.dtype == np.float32:
                err = float((got - torch.from_numpy(ref)).abs().max())
                assert got.shape == ref.shape, (key, tuple(got.shape), ref.shape)
                assert err <= ATOL, f"{name} {key}: max|diff| {err:.3g} > {ATOL}"
            else:  # a mask: argmax of the logits stored under `got`; ignore near-tie pixels
                assert got.shape[-2:] == ref.shape[-2:], key
                top2 = got.topk(2, dim=1).values
                decided = (top2[:, 0] - top2[:, 1]) > NEAR_TIE
                pred = got.argmax(1).numpy().astype(ref.dtype)
                assert (pred == ref)[decided.numpy()].all(), f"{name} {key}: mask differs off near-ties"
                assert decided.float().mean() > 0.99, key
            checked.add(key)
    assert len(checked) == len(exp.files)


def test_fused_attention_option_matches(inputs):
    model, _ = _tiny_model("tiny_swin_upernet_w12")
    exp = np.load(FIX / "tiny_swin_upernet_w12.expected.npz")
    model.backbone.set_fused_attn(True)
    with torch.inference_mode():
        dec = model.forward_train(torch.from_numpy(inputs["B_input"]))["out"]
    assert float((dec - torch.from_numpy(exp["B_decode_logits"])).abs().max()) <= ATOL


def test_tiny_batch_and_train_mode_shapes():
    model, _ = _tiny_model("tiny_swin_upernet_w7")
    x = torch.randn(2, 3, 38, 50)
    with torch.inference_mode():
        one = model(x[:1])
        both = model(x)
    assert both.shape == (2, 2, 38, 50)
    assert torch.allclose(both[:1], one, atol=1e-5)
    model.train()
    out = model.forward_train(x)
    assert out["out"].shape == (2, 2, 10, 13) and out["aux"].shape == (2, 2, 3, 4)
    (out["out"].mean() + out["aux"].mean()).backward()
    assert model.backbone.patch_embed.projection.weight.grad is not None
    assert model.backbone.stages[0].blocks[0].attn.w_msa.relative_position_bias_table.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", sorted(MANIFESTS))
def test_preset_matches_official_key_manifest(preset):
    man = json.loads((FIX / MANIFESTS[preset]).read_text())
    ref = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in man["keys"]}
    # Built on the meta device: exact keys/shapes/dtypes without allocating or initialising ~1 GB.
    with torch.device("meta"):
        model = create_model(preset)
    sd = model.state_dict()
    mine = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}
    assert len(mine) == man["num_keys"]
    assert mine == ref
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters"]
    zeros = {k: torch.zeros(s, dtype=getattr(torch, d)) for k, (s, d) in ref.items()}
    result = model.load_state_dict(zeros, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.config["name"] == preset and model.config["decode_head"]["channels"] == 512


def test_swin_b_w12_preset_numbers():
    bb = PRESETS["pal4vst-swin-b-w12"]["backbone"]
    assert (bb["embed_dims"], bb["depths"], bb["num_heads"], bb["window_size"]) == (128, [2, 2, 18, 2], [4, 8, 16, 32], 12)
    assert PRESETS["pal4vst-swin-b-w12"]["auxiliary_head"]["in_channels"] == 512
    assert set(list_presets()) == set(MANIFESTS)


def test_config_from_mmseg_matches_official_manifest_config():
    man = json.loads((FIX / MANIFESTS["pal4vst-swin-b-w12"]).read_text())
    cfg = config_from_mmseg(man["model_cfg"])
    ref = resolve_config(PRESETS["pal4vst-swin-b-w12"])
    for part in ("backbone", "decode_head", "auxiliary_head", "test_cfg"):
        assert cfg[part] == ref[part], part
    cfg = config_from_mmseg(json.loads((FIX / MANIFESTS["pal4vst-convnext-large"]).read_text())["model_cfg"])
    assert cfg["backbone"] == resolve_config(PRESETS["pal4vst-convnext-large"])["backbone"]


def test_partial_config_and_aux_flag():
    cfg = {"backbone": {"type": "SwinTransformer", "embed_dims": 12, "depths": [1, 1, 1, 1],
                        "num_heads": [1, 2, 4, 8], "window_size": 7},
           "decode_head": {"channels": 8, "type": "UPerHead"}}
    model = create_model(cfg, aux_head=False)
    assert model.auxiliary_head is None and model.config["auxiliary_head"] is None
    assert model.config["decode_head"]["in_channels"] == [12, 24, 48, 96]
    assert model.config["preprocess"]["size"] == [512, 512]
    with_aux = create_model(cfg)
    assert with_aux.config["auxiliary_head"]["in_channels"] == 48
    # The stored config rebuilds the same architecture.
    again = create_model(with_aux.config)
    assert again.state_dict().keys() == with_aux.state_dict().keys()
    json.dumps(with_aux.config)


@pytest.mark.parametrize("bad, match", [
    ("no-such-preset", "unknown model preset"),
    ({"backbone": {"type": "ResNet"}}, "unknown type"),
    ({"backbone": {"type": "SwinTransformer", "embed_dim": 96}}, "unknown key"),
    ({"backbone": {"type": "ConvNeXt"}, "decode_head": {"type": "UPerHead", "in_channels": [1, 2, 3, 4]}},
     "do not match the backbone"),
    ({"backbone": {"type": "ConvNeXt", "arch": "gigantic"}}, "unknown arch"),
    ({"backbone": {"type": "timm"}}, "model_name"),
    ({"backbone": {"type": "timm", "model_name": "no_such_net"}}, "unknown timm model"),
    ({"backbone": {"type": "timm", "model_name": "resnet18", "pretrained_path": "/nonexistent.pth"}}, "does not exist"),
    ({"backbone": {"type": "timm", "model_name": "resnet18", "kwargs": {"pretrained": True}}}, "may not set"),
    ({"backbone": {"type": "ConvNeXt"}, "extra": 1}, "unknown key"),
    ({"backbone": {"type": "ConvNeXt"}, "classes": ["a", "b", "c"]}, "num_classes"),
])
def test_bad_configs_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        create_model(bad)


_SMALL_SWIN = {"img_size": 64, "window_size": 2, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


@pytest.mark.parametrize("model_name, size, kwargs", [
    ("resnet18", 64, {}),
    ("mobilenetv3_large_100", 32, {}),
    ("efficientnet_b0", 32, {}),
    ("convnext_atto", 64, {}),
    ("swin_tiny_patch4_window7_224", 64, _SMALL_SWIN),  # timm gives NHWC features here
])
def test_timm_backbone_generic_path(model_name, size, kwargs):
    torch.manual_seed(0)
    cfg = {"backbone": {"type": "timm", "model_name": model_name, "kwargs": kwargs},
           "decode_head": {"type": "UPerHead", "channels": 16}}
    model = create_model(cfg)
    bb = model.config["backbone"]
    assert len(bb["out_indices"]) == 4
    assert model.backbone.nhwc == model_name.startswith("swin")
    assert model.config["decode_head"]["in_channels"] == model.backbone.out_channels
    x = torch.randn(2, 3, size, size)
    feats = model.extract_feat(x)
    assert [f.shape[1] for f in feats] == model.backbone.out_channels
    assert [f.shape[-1] for f in feats] == [size // r for r in model.backbone.reductions]
    model.train()
    out = model.forward_train(x)
    assert out["out"].shape == (2, 2, size // 4, size // 4)
    loss = F.cross_entropy(F.interpolate(out["out"], size=(size, size), mode="bilinear"),
                           torch.randint(0, 2, (2, size, size))) + out["aux"].mean()
    loss.backward()
    first = next(p for p in model.backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.inference_mode():
        assert model(x).shape == (2, 2, size, size)
    # The stored config rebuilds it, and the state dict round-trips strictly.
    create_model(model.config).load_state_dict(model.state_dict(), strict=True)


def test_timm_pretrained_path_loads_local_file(tmp_path):
    src = create_model({"backbone": {"type": "timm", "model_name": "resnet18"}}, aux_head=False)
    import timm

    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    model = create_model({"backbone": {"type": "timm", "model_name": "resnet18", "pretrained_path": str(path)}})
    assert torch.equal(model.backbone.body.conv1.weight, full.conv1.weight)
    assert not torch.equal(src.backbone.body.conv1.weight, full.conv1.weight)
    assert model.config["backbone"]["pretrained_path"] is None


@pytest.mark.parametrize("hw, size, align", [((8, 10), (16, 20), False), ((8, 10), (64, 80), False),
                                              ((25, 38), (50, 76), False), ((7, 10), (50, 76), False),
                                              ((1, 1), (5, 7), False), ((7, 10), (50, 76), True)])
def test_conv3x3_of_upsampled_equals_resize_then_conv(hw, size, align):
    from comfyui_pal.models.uper_head import conv3x3_of_upsampled

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 16, *hw, generator=g), torch.randn(8, 16, 3, 3, generator=g)
    ref = F.conv2d(F.interpolate(x, size=size, mode="bilinear", align_corners=align), w, padding=1)
    got = conv3x3_of_upsampled(x, w, size, align)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_lowres_fuse_equals_mmseg_op_order(inputs):
    model, _ = _tiny_model("tiny_swin_upernet_w12")
    exp = np.load(FIX / "tiny_swin_upernet_w12.expected.npz")
    assert model.decode_head.lowres_fuse  # the inference default
    with torch.inference_mode():
        for case in "AB":
            x = torch.from_numpy(inputs[f"{case}_input"])
            fast = model(x)
            model.decode_head.set_lowres_fuse(False)
            literal = model(x)
            model.decode_head.set_lowres_fuse(True)
            assert float((fast - literal).abs().max()) <= 1e-5
            dec = model.decode_head(model.extract_feat(x))
            assert float((dec - torch.from_numpy(exp[f"{case}_decode_logits"])).abs().max()) <= ATOL
    model.train()  # training keeps mmseg's literal order (and its autograd graph)
    calls = []
    model.decode_head._fuse_lowres = lambda outs: calls.append(1)
    model.forward_train(torch.from_numpy(inputs["A_input"]).repeat(2, 1, 1, 1))
    assert not calls


def test_channels_last_head_only_for_cpu_bf16_and_same_values(inputs):
    """Detector puts the UPerHead in NHWC for bf16 on CPU only; NHWC gives the NCHW values (fp32,
    tiny model: rounding only) and switching back to fp32 restores NCHW weights."""
    from comfyui_pal.models.detector import Detector

    model, cfg = _tiny_model("tiny_swin_upernet_w12")
    head = model.decode_head
    x = torch.from_numpy(inputs["A_input"])
    with torch.inference_mode():
        ref = model(x)
        head.set_channels_last(True)
        assert head.fpn_bottleneck.conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert float((model(x) - ref).abs().max()) <= 1e-5
        head.set_channels_last(False)
        assert head.fpn_bottleneck.conv.weight.is_contiguous()
        assert torch.equal(model(x), ref)
    det = Detector(model, cfg, device="cpu", dtype="bf16")
    assert head.channels_last and head.fpn_convs[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    det.to(dtype="fp32")
    assert not head.channels_last and head.fpn_convs[0].conv.weight.is_contiguous()


def test_one_slide_implementation(inputs):
    from comfyui_pal.models import detector, segmentor

    assert detector.slide_logits is segmentor.slide_logits
    model, cfg = _tiny_model("tiny_convnext_upernet")
    x = torch.from_numpy(inputs["B_input"])
    with torch.inference_mode():
        whole = model(x[:, :, :64, :64])
        one_window = model.slide_inference(x[:, :, :64, :64], (64, 64), (40, 40))
    assert torch.allclose(whole, one_window, atol=1e-6)


def test_checkpoint_meta_config_goes_through_the_one_translator(monkeypatch):
    from comfyui_pal.models import checkpoint, factory

    obj = torch.load(FIX / "tiny_convnext_upernet.pth", map_location="cpu", weights_only=True)
    seen = []
    real = factory.config_from_mmseg
    monkeypatch.setattr(factory, "config_from_mmseg", lambda c: seen.append(c) or real(c))
    cfg = checkpoint.infer_config(obj["state_dict"], obj["meta"]["config"])
    assert len(seen) == 1
    want = config_from_mmseg(json.loads((FIX / "tiny_convnext_upernet.config.json").read_text()))
    assert cfg["test_cfg"] == want["test_cfg"] and cfg["test_cfg"]["mode"] == "slide"
    assert cfg["backbone"]["drop_path_rate"] == want["backbone"]["drop_path_rate"]
    # no meta, or meta that does not translate: tensor shapes and defaults still decide
    for text in (None, "model = dict(backbone=dict(type='ResNetV1c'))"):
        assert checkpoint.infer_config(obj["state_dict"], text)["backbone"]["type"] == "ConvNeXt"


@pytest.mark.parametrize("h, w, ws, s", [(13, 19, 7, 3), (7, 10, 12, 6), (16, 16, 8, 4), (13, 19, 7, 0)])
def test_window_gather_equals_mmseg_pad_roll_partition(h, w, ws, s):
    from comfyui_pal.models.swin import _window_index

    x = torch.randn(2, h * w, 3)
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    lit = F.pad(x.view(2, h, w, 3), (0, 0, 0, wp - w, 0, hp - h))
    lit = torch.roll(lit, shifts=(-s, -s), dims=(1, 2)) if s else lit
    lit = lit.view(2, hp // ws, ws, wp // ws, ws, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, -1, 3)
    fwd, inv, pad = _window_index(h, w, ws, s, x.device)
    got = x.index_select(1, fwd)
    if pad is not None:
        got.index_fill_(1, pad, 0.0)
    assert torch.equal(got, lit)
    back = lit.view(2, hp // ws, wp // ws, ws, ws, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, hp, wp, 3)
    back = torch.roll(back, shifts=(s, s), dims=(1, 2)) if s else back
    assert torch.equal(lit.index_select(1, inv), back[:, :h, :w].reshape(2, h * w, 3))


def test_bn_folding_in_inference_only_and_state_dict_unchanged():
    from comfyui_pal.models.uper_head import ConvModule

    torch.manual_seed(0)
    m = ConvModule(8, 6, 3, padding=1)
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.normal_()
    m.eval()
    keys = set(m.state_dict())
    x = torch.randn(2, 8, 9, 11)
    ref = m.activate(m.bn(m.conv(x)))  # grad enabled: the literal conv -> bn path
    with torch.inference_mode():
        folded = m(x)
        m.bn.running_mean.add_(1.0)  # a changed statistic invalidates the cached fold
        moved = m(x)
    assert float((folded - ref).abs().max()) <= 1e-5
    assert float((moved - folded).abs().max()) > 1e-3
    assert set(m.state_dict()) == keys and not any(k.startswith("_folded") for k in m.state_dict())


def test_linear_bottleneck_option_keeps_negative_features_and_round_trips(tmp_path):
    """decode_head.linear_bottleneck: no ReLU before the classifier, in train, eval (BN folded,
    low-resolution fuse) and after a save/load; the default stays mmseg's ReLU."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_models import TINY as TINY_CFG

    from comfyui_pal.models.checkpoint import build_from_checkpoint, load_checkpoint, save_safetensors

    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["decode_head"]["linear_bottleneck"] = True
    torch.manual_seed(0)
    model = create_model(cfg, aux_head=False)
    feats = {}
    model.decode_head.fpn_bottleneck.register_forward_hook(lambda m, i, o: feats.__setitem__("x", o))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    model(x)
    assert feats["x"].min() < 0  # linear features
    model.eval()
    with torch.no_grad():
        out = model(x)
        model.decode_head.set_lowres_fuse(False)  # eval, mmseg's op order: the same linear features
        assert torch.allclose(model(x), out, atol=1e-5)
    path = save_safetensors(model.state_dict(), model.config, tmp_path / "lin.safetensors")
    sd, config, _ = load_checkpoint(path)
    again = build_from_checkpoint(sd, config, with_aux=False).eval()
    assert isinstance(again.decode_head.fpn_bottleneck.activate, torch.nn.Identity)
    with torch.no_grad():
        assert torch.allclose(again(x), out, atol=1e-5)
    default = create_model(dict(TINY_CFG), aux_head=False)
    assert isinstance(default.decode_head.fpn_bottleneck.activate, torch.nn.ReLU)
