"""Training loop: loss goes down, export loads, resume after kill -9, torchrun/gloo, NaN stop, eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tiny_models import TINY  # noqa: E402

from comfyui_pal.training import evaluate as E  # noqa: E402
from comfyui_pal.training import loop as L  # noqa: E402
from comfyui_pal.training.synth import SynthConfig, generate  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth64")
    generate(SynthConfig(out=str(root / "data"), n_train=8, n_val=3, n_test=4, seed=0, size=64,
                         skimage_names=("camera", "astronaut"), clean_ratio=0.0, by_type=False))
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root


def _args(data, work, model, iters, extra=()):
    return ["--data", str(data), "--work-dir", str(work), "--model", str(model), "--max-iters", str(iters),
            "--batch-size", "2", "--crop-size", "64", "--scale", "64", "--lr", "3e-3", "--warmup-iters", "2",
            "--poly-end", str(iters), "--workers", "0", "--threads", "1", "--log-interval", "1", *extra]


def _cfg(tiny_data, work, iters, **kw):
    base = dict(data=str(tiny_data / "data"), work_dir=str(work), model=dict(TINY), max_iters=iters, batch_size=2,
                crop_size=64, scale=64, lr=3e-3, warmup_iters=2, poly_end=iters, num_workers=0, threads=1,
                log_interval=1, val_interval=0)
    base.update(kw)
    return L.TrainConfig(**base)


def test_few_iterations_lower_loss_and_export_loads(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path / "w", 40, val_interval=20, checkpoint_interval=20,
               export=str(tmp_path / "m.safetensors"))
    res = L.train(cfg, log=lambda m: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "w" / "log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 * 0.8, losses
    assert res["best"]["value"] is not None and (tmp_path / "w" / "best.pt").is_file()
    from comfyui_pal.models import load_detector

    det = load_detector(res["export"])
    assert det.config["backbone"]["model_name"] == "resnet10t"
    d = det.detect(torch.rand(40, 50, 3).numpy().__mul__(255).astype("uint8"))
    assert d.prob.shape == (40, 50)
    from safetensors import safe_open

    with safe_open(res["export"], framework="pt") as f:
        prov = json.loads(f.metadata()["provenance"])
        assert not any(k.startswith("auxiliary_head.") for k in f.keys())
    assert prov["train_config"]["max_iters"] == 40
    assert Path(res["export"]).with_suffix(".md").is_file()


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "comfyui_pal.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _ckpt_iter(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["iter"])
    except Exception:  # noqa: BLE001 - not written yet
        return -1


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(tiny_data, tmp_path):
    iters = 60
    model = tiny_data / "tiny.json"
    extra = ("--checkpoint-interval", "5", "--val-interval", "0")
    full = _run(_args(tiny_data / "data", tmp_path / "full", model, iters, extra))
    # the run to interrupt: kill -9 once a mid-run checkpoint exists
    victim = _run(_args(tiny_data / "data", tmp_path / "cut", model, iters, extra))
    latest = tmp_path / "cut" / "latest.pt"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None and _ckpt_iter(latest) < 10:
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed: " + victim.stderr.read()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = _ckpt_iter(latest)
    assert 10 <= killed_at < iters
    resumed = _run(_args(tiny_data / "data", tmp_path / "cut", model, iters, (*extra, "--resume")))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resume: {latest} at iteration {killed_at}" in err
    out_full, err_full = full.communicate(timeout=600)
    assert full.returncode == 0, err_full
    a = torch.load(tmp_path / "full" / "latest.pt", map_location="cpu", weights_only=False)
    b = torch.load(latest, map_location="cpu", weights_only=False)
    assert a["iter"] == b["iter"] == iters
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, b["optimizer"]["state"][pid][name]), (pid, name)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_gloo(tiny_data, tmp_path):
    args = _args(tiny_data / "data", tmp_path / "ddp", tiny_data / "tiny.json", 4,
                 ("--checkpoint-interval", "2", "--val-interval", "0", "--export", str(tmp_path / "ddp.safetensors")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "comfyui_pal.cli", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 process(es)" in p.stderr
    state = torch.load(tmp_path / "ddp" / "latest.pt", map_location="cpu", weights_only=False)
    assert state["iter"] == 4 and len(state["rng"]) == 2
    assert state["provenance"]["world_size"] == 2
    # the two ranks drew different augmentation/dropout streams
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    from comfyui_pal.models import load_detector

    assert load_detector(tmp_path / "ddp.safetensors").config["decode_head"]["channels"] == 16


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    real = L.seg_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        if calls["n"] > 7:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(L, "seg_loss", poisoned)
    cfg = _cfg(tiny_data, tmp_path / "w", 20, checkpoint_interval=3)
    with pytest.raises(L.TrainingDiverged) as ei:
        L.train(cfg, log=lambda m: None)
    msg = str(ei.value)
    assert "nan" in msg and "iteration 7" in msg and "latest.pt (iteration 6)" in msg
    state = torch.load(tmp_path / "w" / "latest.pt", map_location="cpu", weights_only=False)
    assert state["iter"] == 6
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_finetune_freeze_and_eval_cli(tiny_data, tmp_path):
    from comfyui_pal.cli import main

    init = tmp_path / "init.safetensors"
    L.train(_cfg(tiny_data, tmp_path / "pre", 4, export=str(init)), log=lambda m: None)
    rc = main(["finetune", "--init", str(init), "--data", str(tiny_data / "data"), "--work-dir",
               str(tmp_path / "ft"), "--max-iters", "4", "--batch-size", "2", "--crop-size", "64", "--scale", "64",
               "--num-images", "3", "--freeze", "backbone", "--workers", "0", "--val-interval", "2",
               "--export", str(tmp_path / "ft.safetensors"), "--export-fp32"])
    assert rc == 0
    from comfyui_pal.models.checkpoint import load_checkpoint

    sd0, _, _ = load_checkpoint(init)
    sd1, _, prov = load_checkpoint(tmp_path / "ft.safetensors")
    assert prov["train_images"] == 3 and prov["init"]["file"] == "init.safetensors"
    bb = [k for k in sd0 if k.startswith("backbone.")]
    assert bb and all(torch.equal(sd0[k].float(), sd1[k].float()) for k in bb)  # frozen, incl. BN stats
    assert not all(torch.equal(sd0[k].float(), sd1[k].float()) for k in sd0 if k.startswith("decode_head."))

    rc = main(["eval", "--model", str(tmp_path / "ft.safetensors"), "--data", str(tiny_data / "data"),
               "--split", "test", "--out", str(tmp_path / "ev"), "--overlays", "2"])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert res["n"] == 4 and "default" in res["per_task"]
    assert 0 <= res["mIoU"] <= 100 and "par_pred_mean" in res
    assert len(list((tmp_path / "ev" / "overlays").glob("*.jpg"))) == 2
    # a training state (.pt) evaluates too, and exports with extra metrics and the synthetic-data note
    assert main(["eval", "--model", str(tmp_path / "ft" / "latest.pt"), "--data", str(tiny_data / "data"),
                 "--split", "test", "--overlays", "0"]) == 0
    from comfyui_pal.models import load_detector
    from comfyui_pal.training.export import export_from_state

    out = export_from_state(tmp_path / "ft" / "best.pt", tmp_path / "st.safetensors", metrics={"test": {"mIoU": 1.0}})
    assert load_detector(out).config["auxiliary_head"] is None
    card = out.with_suffix(".md").read_text()
    assert "synthetic data only" in card and "mIoU" in card
    _, _, prov = load_checkpoint(out)
    assert prov["training_data"]["kind"].startswith("synthetic") and prov["training_command"].startswith("pal finetune --data ")
    assert "--freeze backbone" in prov["training_command"]


def test_data_check_cli_exit_codes(tiny_data, tmp_path, capsys):
    from comfyui_pal.cli import main

    assert main(["data", "check", str(tiny_data / "data")]) == 0
    assert main(["data", "check", str(tmp_path)]) == 1


def test_calibrate_bias_moves_the_threshold(tiny_data):
    from comfyui_pal.models.factory import create_model
    from comfyui_pal.training.data import discover

    torch.manual_seed(0)
    model = create_model(TINY, aux_head=False)
    samples = discover(tiny_data / "data", "test").samples
    delta, table = E.calibrate_bias(model, samples, shifts=[-50.0, 0.0, 50.0])
    gt_ratio_iou = table[50.0]  # everything predicted as artifact: IoU = artifact share of valid pixels
    assert table[-50.0] == 0.0 and 0 < gt_ratio_iou < 100
    assert delta in (-50.0, 0.0, 50.0) and table[delta] == max(table.values())
    sd = model.state_dict()
    shifted = E.apply_bias_shift(sd, 2.5)
    assert torch.allclose(shifted["decode_head.conv_seg.bias"] - sd["decode_head.conv_seg.bias"],
                          torch.tensor([0.0, 2.5]))
    assert sd["decode_head.conv_seg.bias"] is not shifted["decode_head.conv_seg.bias"]


def test_finetune_keeps_the_operating_point_of_its_init(tiny_data, tmp_path):
    """pal finetune --init <calibrated checkpoint>: the export runs at the same artifact-logit bias."""
    from comfyui_pal.models import load_detector
    from comfyui_pal.models.checkpoint import load_checkpoint, save_safetensors
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    m = create_model(dict(TINY))
    init = save_safetensors(m.state_dict(), m.config, tmp_path / "cal.safetensors",
                            calibration={"artifact_logit_bias": -1.25})
    res = L.train(_cfg(tiny_data, tmp_path / "ft", 2, init=str(init), model=None, export=str(tmp_path / "ft.safetensors")),
                  log=lambda m: None)
    _, _, prov = load_checkpoint(res["export"])
    assert prov["calibration"] == {"artifact_logit_bias": -1.25, "inherited_from": "cal.safetensors"}
    assert load_detector(res["export"]).artifact_logit_bias == -1.25
    plain = L.train(_cfg(tiny_data, tmp_path / "p", 2, export=str(tmp_path / "p.safetensors")), log=lambda m: None)
    assert "calibration" not in load_checkpoint(plain["export"])[2]


def test_clean_replay_adds_clean_pictures_deterministically(tiny_data, tmp_path):
    """--clean-replay N: N label-0 pictures join the few-shot images; same pictures on a rerun."""
    import numpy as np
    from PIL import Image

    from comfyui_pal.training.data import DataError, read_label

    tr = L.Trainer(_cfg(tiny_data, tmp_path / "a", 1, num_images=3, clean_replay=4), log=lambda m: None).setup()
    assert len(tr.samples) == 7 and tr.n_replay == 4
    replay = [s for s in tr.samples if "clean_replay" in str(s.image)]
    assert len(replay) == 4 and all(not read_label(s.label).any() for s in replay)
    assert tr.provenance["train_images"] == 3 and tr.provenance["clean_replay_images"] == 4
    again = L.Trainer(_cfg(tiny_data, tmp_path / "b", 1, num_images=3, clean_replay=4), log=lambda m: None).setup()
    a = [np.asarray(Image.open(s.image)) for s in replay]
    b = [np.asarray(Image.open(s.image)) for s in again.samples if "clean_replay" in str(s.image)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert L.Trainer(_cfg(tiny_data, tmp_path / "c", 1, num_images=3), log=lambda m: None).setup().n_replay == 0
    # the same work dir rerun with a smaller N uses only N pictures (the earlier extra ones stay unused)
    fewer = L.Trainer(_cfg(tiny_data, tmp_path / "a", 1, num_images=3, clean_replay=2), log=lambda m: None).setup()
    assert fewer.n_replay == 2 and len(fewer.samples) == 5
    with pytest.raises(ValueError, match="--dice-weight -1"):
        L.Trainer(_cfg(tiny_data, tmp_path / "f", 1, dice_weight=-1.0), log=lambda m: None).setup()
    with pytest.raises(ValueError, match="--clean-replay -1"):
        L.Trainer(_cfg(tiny_data, tmp_path / "d", 1, clean_replay=-1), log=lambda m: None).setup()
    with pytest.raises(DataError, match="--clean-replay-folder"):
        L.Trainer(_cfg(tiny_data, tmp_path / "e", 1, clean_replay=2, clean_replay_folders=(str(tmp_path / "nope"),)),
                  log=lambda m: None).setup()
