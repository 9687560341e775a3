"""Checkpoint import (mmseg .pth, mmdeploy TorchScript, our safetensors) and the Detector API,
checked against the numbers real mmsegmentation/mmdeploy produced (tests/fixtures)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_pal.models import load_detector
from comfyui_pal.models.checkpoint import (
    CheckpointError,
    build_from_checkpoint,
    convert,
    infer_config,
    load_checkpoint,
    save_safetensors,
)

TINY = ["tiny_swin_upernet_w7", "tiny_swin_upernet_w12", "tiny_convnext_upernet"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def inputs(fixtures_dir):
    return np.load(fixtures_dir / "inputs.npz")


def _expected(fixtures_dir, name):
    return np.load(fixtures_dir / f"{name}.expected.npz")


def _assert_mask(mask, exp_mask, logits):
    gap = np.abs(logits[:, 1] - logits[:, 0])
    ok = gap > 1e-3  # the documented near-tie pixels may legitimately flip
    assert (mask == exp_mask)[ok].all()
    assert ok.mean() > 0.99


# Which mmseg array each case's full-size logits are checked against. Every case is checked:
# the w12 fixture stores no B_logits (fixtures README), so there the reference is mmseg's own
# decode-head logits resized like mmseg's predict (bilinear, align_corners=False).
REFERENCE = {
    ("tiny_swin_upernet_w7", "A"): "A_logits", ("tiny_swin_upernet_w7", "B"): "B_logits",
    ("tiny_swin_upernet_w12", "A"): "A_logits", ("tiny_swin_upernet_w12", "B"): "B_decode_logits>resize",
    ("tiny_convnext_upernet", "A"): "A_logits", ("tiny_convnext_upernet", "B"): "B_slide_logits",
}


def _reference_logits(exp, key: str, size) -> np.ndarray:
    if key.endswith(">resize"):
        dec = torch.from_numpy(exp[key.split(">")[0]])
        return torch.nn.functional.interpolate(dec, size=size, mode="bilinear", align_corners=False).numpy()
    return exp[key]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("dtype", [None, "fp32"])
def test_pth_matches_mmseg_logits_and_masks(fixtures_dir, inputs, name, dtype):
    det = load_detector(fixtures_dir / f"{name}.pth", device="cpu", input_size=None, dtype=dtype)
    assert det.dtype == torch.float32
    exp = _expected(fixtures_dir, name)
    for case in "AB":
        logits = det.logits(torch.from_numpy(inputs[f"{case}_input"])).numpy()
        ref = _reference_logits(exp, REFERENCE[(name, case)], logits.shape[-2:])
        np.testing.assert_allclose(logits, ref, atol=ATOL, rtol=0)
        mask_key = f"{case}_slide_mask" if f"{case}_slide_mask" in exp.files else f"{case}_mask"
        _assert_mask(logits.argmax(1), exp[mask_key], logits)


def test_reference_table_covers_every_stored_logits_array(fixtures_dir):
    for name in TINY:
        exp = _expected(fixtures_dir, name)
        stored = {k for k in exp.files if k.endswith("_logits") and not k.endswith(("decode_logits", "aux_logits"))
                  and "seg_logits" not in k}
        used = {REFERENCE[(name, c)] for c in "AB"}
        assert stored <= used, (name, stored - used)  # nothing stored is left unchecked
        assert all(k.split(">")[0] in exp.files for k in used), name


@pytest.mark.parametrize("name", TINY)
def test_safetensors_roundtrip_same_numbers(fixtures_dir, inputs, tmp_path, name):
    dst = convert(fixtures_dir / f"{name}.pth", tmp_path / f"{name}.safetensors")
    a = load_detector(fixtures_dir / f"{name}.pth", device="cpu", input_size=None)
    b = load_detector(dst, device="cpu", input_size=None)
    x = torch.from_numpy(inputs["B_input"])
    assert torch.equal(a.logits(x), b.logits(x))
    assert b.config["backbone"] == a.config["backbone"]
    assert b.provenance["source_format"] == "mmseg-pth"
    assert len(b.provenance["source_sha256"]) == 64


def test_convert_drops_aux_unless_asked_and_fp16_halves(fixtures_dir, tmp_path):
    from safetensors import safe_open

    src = fixtures_dir / "tiny_swin_upernet_w7.pth"
    plain = convert(src, tmp_path / "a.safetensors")
    aux = convert(src, tmp_path / "b.safetensors", include_aux=True)
    half = convert(src, tmp_path / "c.safetensors", fp16=True)
    with safe_open(str(plain), "pt") as f:
        assert not any(k.startswith("auxiliary_head.") for k in f.keys())
        meta = f.metadata()
    with safe_open(str(aux), "pt") as f:
        assert any(k.startswith("auxiliary_head.") for k in f.keys())
    with safe_open(str(half), "pt") as f:
        assert f.get_tensor("decode_head.conv_seg.weight").dtype == torch.float16
    assert meta["format"] == "comfyui-pal/1" and json.loads(meta["config"])["backbone"]["window_size"] == 7
    assert half.stat().st_size < 0.75 * plain.stat().st_size
    # the fp16 file still loads and agrees closely
    x = torch.from_numpy(np.load(fixtures_dir / "inputs.npz")["A_input"])
    l32 = load_detector(plain, device="cpu", input_size=None).logits(x)
    l16 = load_detector(half, device="cpu", input_size=None).logits(x)
    assert (l32 - l16).abs().max() < 0.05


def test_convert_refuses_to_overwrite(fixtures_dir, tmp_path):
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"user data")
    with pytest.raises(CheckpointError, match="already exists"):
        convert(fixtures_dir / "tiny_swin_upernet_w7.pth", dst)
    assert dst.read_bytes() == b"user data"
    with pytest.raises(CheckpointError, match=".safetensors"):
        convert(fixtures_dir / "tiny_swin_upernet_w7.pth", tmp_path / "m.pth")


def test_torchscript_needs_explicit_trust(fixtures_dir):
    with pytest.raises(CheckpointError, match="trust-torchscript"):
        load_detector(fixtures_dir / "tiny_swin_upernet_w7.end2end.pt")


def test_torchscript_weights_give_mmdeploy_output(fixtures_dir, inputs, tmp_path):
    ts = fixtures_dir / "tiny_swin_upernet_w7.end2end.pt"
    exp = np.load(fixtures_dir / "tiny_swin_upernet_w7.end2end.expected.npz")
    det = load_detector(ts, device="cpu", trust_torchscript=True, input_size=None)
    logits = det.logits(torch.from_numpy(inputs["A_input"])).numpy()
    _assert_mask(logits.argmax(1), exp["A_ts_output"][:, 0], logits)
    # .pth, end2end.pt and the converted safetensors are the same numbers
    pth = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", input_size=None)
    st = convert(ts, tmp_path / "ts.safetensors", trust_torchscript=True)
    x = torch.from_numpy(inputs["A_input"])
    assert torch.equal(det.logits(x), pth.logits(x))
    assert torch.equal(load_detector(st, device="cpu", input_size=None).logits(x), pth.logits(x))


def test_readme_flow_preprocessing_matches_official_scripts(fixtures_dir, inputs):
    """PIL bicubic resize + normalisation = the PAL4VST README's `prepare_input` (A_readme_input)."""
    exp = np.load(fixtures_dir / "tiny_swin_upernet_w7.end2end.expected.npz")
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", input_size=(256, 256))
    work = det._resize_uint8(inputs["A_source_rgb"]).copy()
    x = det.normalize(torch.from_numpy(work).permute(2, 0, 1)[None])
    np.testing.assert_allclose(x.numpy(), exp["A_readme_input"], atol=1e-5, rtol=0)
    d = det.detect(inputs["A_source_rgb"])
    # the official TorchScript mask on the README input, at the working size
    logits = det.logits(torch.from_numpy(exp["A_readme_input"])).numpy()
    _assert_mask(d.mask_work()[None].astype(np.int64), exp["A_readme_ts_output"][:, 0], logits)
    assert d.par == pytest.approx(float(exp["A_readme_ts_output"].mean()), abs=2e-3)


def test_mmseg_test_pipeline_resize_back_to_source(fixtures_dir, inputs):
    """resize='bilinear' reproduces mmseg's cv2 resize and postprocess_result at the source size."""
    exp = _expected(fixtures_dir, "tiny_swin_upernet_w7")
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", resize="bilinear",
                        input_size=(256, 256))
    assert np.array_equal(det._resize_uint8(inputs["A_source_rgb"]), inputs["A_resized_rgb"])
    d = det.detect(inputs["A_source_rgb"])
    assert d.prob.shape == (256, 192) and d.prob_work.shape == (256, 256)
    lo = exp["A_seg_logits_ori"]
    np.testing.assert_allclose(d.prob, torch.softmax(torch.from_numpy(lo), 1)[0, 1].numpy(), atol=ATOL)
    _assert_mask(d.mask()[None].astype(np.uint8), exp["A_pred_ori"], lo)


def test_detect_inputs_batch_and_par(fixtures_dir, inputs):
    # 256x256: the size at which the fixture's random weights give a balanced mask
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", input_size=(256, 256))
    a, b = inputs["A_source_rgb"], inputs["B_rgb"]
    single = det.detect(a)
    batch = det.detect([a, Image.fromarray(b), fixtures_dir / "input_B.png"])
    assert isinstance(batch, list) and len(batch) == 3
    # batched convolutions may round differently from single-image ones
    np.testing.assert_allclose(batch[0].prob, single.prob, atol=1e-5)
    np.testing.assert_allclose(batch[1].prob, batch[2].prob, atol=1e-5)
    assert batch[2].source.endswith("input_B.png")
    assert batch[1].prob.shape == b.shape[:2]
    assert 0.0 < single.par < 1.0
    assert single.par == pytest.approx(single.mask_work().mean())
    assert single.par_at(0.0) >= single.par >= single.par_at(0.99)
    # ComfyUI IMAGE layout: float [B,H,W,C] in 0..1
    t = torch.from_numpy(np.stack([b, b])).float() / 255.0
    dets = det.detect(t)
    assert len(dets) == 2
    np.testing.assert_allclose(dets[0].prob, batch[1].prob, atol=1e-5)
    probs = det.prob_maps(t)
    assert probs.shape == (2, *b.shape[:2])
    # torch resize path agrees with the PIL path except for interpolation rounding
    agree = ((probs[0].numpy() > 0.5) == batch[1].mask()).mean()
    assert agree > 0.97


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_detect_converts_image_modes(fixtures_dir, tmp_path, mode):
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", input_size=(64, 64))
    base = Image.open(fixtures_dir / "input_B.png")
    im = base.convert("L").convert("I;16") if mode == "I;16" else base.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    d = det.detect(path)
    assert d.prob.shape == (198, 302) and np.isfinite(d.prob).all()


def test_corrupt_and_bomb_images_get_clear_errors(fixtures_dir, tmp_path, monkeypatch):
    from comfyui_pal.core import imageio

    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", input_size=(64, 64))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(imageio.ImageLoadError, match="broken.png.*re-export"):
        det.detect(bad)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1000)
    with pytest.raises(imageio.ImageLoadError, match="too large"):
        det.detect(fixtures_dir / "input_B.png")


def test_pth_with_numpy_meta_loads_but_arbitrary_pickles_are_refused(fixtures_dir, tmp_path):
    ck = torch.load(fixtures_dir / "tiny_swin_upernet_w7.pth", weights_only=True)
    ck["meta"]["hook_msgs"] = {"best_score": np.float64(0.71), "best_ckpt": "best_mIoU_iter_7200.pth"}
    official_like = tmp_path / "best_mIoU_iter_7200.pth"
    torch.save(ck, official_like)
    sd, cfg, _ = load_checkpoint(official_like)
    assert cfg["backbone"]["window_size"] == 7 and len(sd) == 215

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": ck["state_dict"], "meta": {"x": Image.new("L", (1, 1))}}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(evil)


def test_unfit_checkpoint_lists_first_mismatches(fixtures_dir):
    sd, cfg, _ = load_checkpoint(fixtures_dir / "tiny_swin_upernet_w7.pth")
    sd = dict(sd)
    sd["decode_head.fpn_bottleneck.conv.weight"] = torch.zeros(16, 63, 3, 3)
    del sd["decode_head.bottleneck.conv.weight"]
    with pytest.raises(CheckpointError) as e:
        build_from_checkpoint(sd, cfg)
    msg = str(e.value)
    assert "missing decode_head.bottleneck.conv.weight" in msg and "fpn_bottleneck" in msg
    with pytest.raises(CheckpointError, match="unsupported backbone"):
        infer_config({"backbone.conv1.weight": torch.zeros(1), "decode_head.conv_seg.weight": torch.zeros(2, 1)})


def test_safetensors_without_config_is_inferred(fixtures_dir, tmp_path):
    from safetensors.torch import save_file

    sd, _, _ = load_checkpoint(fixtures_dir / "tiny_swin_upernet_w12.pth")
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(bare))
    det = load_detector(bare, device="cpu", input_size=(64, 64))
    assert det.config["backbone"]["window_size"] == 12


def test_save_safetensors_is_atomic_and_records_provenance(fixtures_dir, tmp_path):
    sd, cfg, _ = load_checkpoint(fixtures_dir / "tiny_convnext_upernet.pth")
    out = save_safetensors(sd, cfg, tmp_path / "m.safetensors", provenance={"data": "unit test"})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    det = load_detector(out, device="cpu")
    assert det.provenance == {"data": "unit test"} and det.input_size == (512, 512)


def test_dtype_auto_knows_the_cpu_and_the_architecture(fixtures_dir, monkeypatch):
    from comfyui_pal.models import detector as dmod

    swin = {"backbone": {"type": "SwinTransformer"}}
    starter = {"backbone": {"type": "timm", "model_name": "regnetx_002"}}
    monkeypatch.setattr(dmod, "cpu_has_native_bf16", lambda: True)
    # both measured architectures missed the |dPAR| <= 0.002 target: auto stays fp32 for them
    assert dmod.resolve_dtype("auto", "cpu", swin) == torch.float32
    assert dmod.resolve_dtype("auto", "cpu", starter) == torch.float32
    monkeypatch.setattr(dmod, "BF16_CPU_ARCHS", frozenset({"SwinTransformer"}))  # one that would pass
    assert dmod.resolve_dtype("auto", "cpu", swin) == torch.bfloat16
    assert dmod.resolve_dtype("auto", "cpu", starter) == torch.float32
    for exact in (None, "fp32", torch.float32):
        assert dmod.resolve_dtype(exact, "cpu", swin) == torch.float32
    assert dmod.resolve_dtype("bf16", "cpu", starter) == torch.bfloat16  # explicit wins
    monkeypatch.setattr(dmod, "cpu_has_native_bf16", lambda: False)
    assert dmod.resolve_dtype("auto", "cpu", swin) == torch.float32  # emulated bf16 is slow
    assert dmod.resolve_dtype("AUTO", "mps", swin) == torch.float32
    with pytest.raises(ValueError, match="auto, fp32, fp16, bf16"):
        dmod.resolve_dtype("int8", "cpu", swin)
    monkeypatch.setattr(dmod, "cpu_has_native_bf16", lambda: True)
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w12.pth", device="cpu", dtype="auto", input_size=None)
    assert det.dtype == torch.bfloat16 and next(det.segmenter.parameters()).dtype == torch.bfloat16
    det.to(dtype="fp32")
    assert det.dtype == torch.float32 and next(det.segmenter.parameters()).dtype == torch.float32


def test_cpu_bf16_check_uses_torch_then_cpuinfo(monkeypatch):
    from comfyui_pal.models import detector as dmod

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dmod.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not dmod.cpu_has_native_bf16()


def test_warmup_once_per_shape_and_bf16_close_to_fp32(fixtures_dir, inputs):
    det = load_detector(fixtures_dir / "tiny_swin_upernet_w7.pth", device="cpu", dtype="bf16", input_size=(64, 64))
    assert det.warmup() > 0
    assert det.warmup() == 0.0  # same shape, device and dtype: nothing to do
    assert det.warmup(batch_size=2) > 0
    x = torch.from_numpy(inputs["A_input"])
    low = det.logits(x)
    ref = det.to(dtype="fp32").logits(x)
    assert low.dtype == torch.float32
    decided = (ref[:, 1] - ref[:, 0]).abs() >= 0.05
    assert (low.argmax(1) == ref.argmax(1))[decided].float().mean() > 0.99


def test_score_batch_size_gives_the_same_pars(fixtures_dir, tmp_path, capsys):
    from comfyui_pal.cli import main as pal

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 60), (64, 64), (50, 30)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = {}
    for bs in ("1", "2"):
        rc = pal(["score", str(tmp_path), "--batch-size", bs, "--dtype", "fp32",
                  "--model", str(fixtures_dir / "tiny_swin_upernet_w7.pth")])
        assert rc == 1  # the broken file is reported, the others are scored
        recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        out[bs] = {r["image"]: r.get("par", "error") for r in recs}
    assert out["1"].keys() == out["2"].keys() and sum(v == "error" for v in out["1"].values()) == 1
    for k, v in out["1"].items():  # batched kernels may round differently: a pixel or two at most
        assert v == out["2"][k] if v == "error" else abs(v - out["2"][k]) <= 1e-4
    assert pal(["score", str(tmp_path), "--batch-size", "0", "--model", str(fixtures_dir / "tiny_swin_upernet_w7.pth")]) == 2


def test_fp16_export_keeps_tensors_fp16_cannot_hold(tmp_path):
    """A BatchNorm running_var past 65504 stays float32 in an fp16 file (was inf: a dead channel)."""
    from comfyui_pal.models.checkpoint import load_checkpoint, save_safetensors
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    model = create_model({"backbone": {"type": "timm", "model_name": "resnet10t", "out_indices": [1, 2, 3, 4],
                                       "kwargs": {"channels": [8, 16, 24, 32]}},
                          "decode_head": {"type": "UPerHead", "channels": 16}}, aux_head=False)
    sd = model.state_dict()
    sd["decode_head.bottleneck.bn.running_var"] = torch.full_like(sd["decode_head.bottleneck.bn.running_var"], 1.7e5)
    path = save_safetensors(sd, model.config, tmp_path / "m.safetensors", dtype=torch.float16)
    got, _, _ = load_checkpoint(path)
    rv = got["decode_head.bottleneck.bn.running_var"]
    assert rv.dtype == torch.float32 and torch.all(rv == 1.7e5)
    assert got["decode_head.conv_seg.weight"].dtype == torch.float16  # the rest is fp16
