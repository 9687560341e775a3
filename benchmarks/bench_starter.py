"""Numbers for the bundled starter model (prints JSON lines; not a test).

1. artifact IoU / mIoU on a held-out synthetic test set (other seed, held-out base pictures);
2. latency at 512x512 on this CPU (median of N `Detector.detect` calls and of the bare network);
3. few-shot: fine-tune on 10 images of the artifact type the starter never saw, and report
   that type's IoU on held-out images before and after (plus the other types, for forgetting).

    python benchmarks/bench_starter.py latency
    python benchmarks/bench_starter.py heldout --data /work/data/synth-heldout
    python benchmarks/bench_starter.py oracle --model M --data D --type checkerboard   # best-threshold IoU
    python benchmarks/bench_starter.py fewshot --data /work/data/synth-fewshot \
        --test /work/data/synth-heldout --type checkerboard --iters 300 --work-dir /tmp/fewshot

    python benchmarks/bench_starter.py clean --data /data/clean/heldout   # PAR on clean pictures
    python benchmarks/bench_starter.py targets --data HELDOUT_SYNTH --clean /data/clean/heldout
    python benchmarks/bench_starter.py bf16-curve --data D --model-config C --iters 200   # bf16 vs fp32 loss
    python benchmarks/bench_starter.py real --pal4vst PAL4VST_SRC   # real generated images vs the official model
    python benchmarks/bench_starter.py tradeoff --data HELDOUT_SYNTH --clean /data/clean/heldout --shifts=-1:1:0.5

`real` reads a checkout of github.com/owenzlz/PAL4VST (not shipped here): the mask2image demo image
against the official model's mask (`demo_results/000000483531_pal.png`, IoU and PAR), and the ten
StyleGAN2 faces against the official PAR ranking (`demo_results/stylegan2_ffhq_rank/NN_<name>`,
Spearman rho; ties are ranked by their average).

Data sets come from `pal synth` (see models/weights/pal-starter.command.sh for the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def _short(res: dict) -> dict:
    return {"mIoU": res.get("mIoU"), "aIoU": res.get("aIoU"), "n": res.get("n"),
            "per_task_aIoU": {k: v.get("aIoU") for k, v in res.get("per_task", {}).items()}}


def latency(model: str | None, runs: int, threads: int, dtype: str = "fp32") -> dict:
    from comfyui_pal.models import load_detector

    torch.set_num_threads(threads)
    det = load_detector(model, device="cpu", dtype=dtype)
    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    det.detect(img)  # warm-up
    t_detect = []
    for _ in range(runs):
        t = time.perf_counter()
        det.detect(img)
        t_detect.append(time.perf_counter() - t)
    x = det.normalize(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    t_net = []
    with torch.inference_mode():
        det.logits(x)  # the network in the detector's dtype (as every host runs it)
        for _ in range(runs):
            t = time.perf_counter()
            det.logits(x)
            t_net.append(time.perf_counter() - t)
    params = sum(p.numel() for p in det.segmenter.parameters())
    return {"bench": "latency_512", "model": str(model or "pal-starter"), "threads": threads, "dtype": dtype,
            "detect_median_s": statistics.median(t_detect), "detect_min_s": min(t_detect),
            "network_median_s": statistics.median(t_net), "network_min_s": min(t_net), "params": params,
            "load_1min": _load()}


def _load() -> float | None:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return None


def clean_par(model: str | None, folder: str, threads: int, calibration: bool = True) -> dict:
    """PAR (the official definition, at the checkpoint's operating point) on pictures with no
    artifact at all: a detector that does no harm scores them ~0."""
    from comfyui_pal.core.imageio import iter_image_paths
    from comfyui_pal.models import load_detector

    torch.set_num_threads(threads)
    det = load_detector(model, device="cpu", calibration=calibration)
    files = sorted(iter_image_paths([folder]))
    pars = {p.name: det.detect(p).par for p in files}
    v = np.array(list(pars.values()))
    return {"bench": "clean_par", "model": str(model or "pal-starter"), "folder": folder, "n": len(v),
            "calibration": det.calibration or None, "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "max": float(v.max()), "mean": float(v.mean()),
            "n_zero": int((v == 0).sum()), "per_image": {k: round(x, 5) for k, x in pars.items()}}


def heldout(model: str | None, data: str, split: str, threads: int) -> dict:
    from comfyui_pal.training.evaluate import run_eval

    res = run_eval(model, data, split=split, n_overlays=0, threads=threads)
    return {"bench": "heldout_iou", "model": str(model or "pal-starter"), "data": data, **_short(res)}


def oracle_threshold(model: str | None, data: str, task: str | None, split: str = "test") -> dict:
    """Artifact IoU at the best logit offset chosen *on these same images* (an upper bound that
    shows whether the network separates artifacts at all, independent of calibration)."""
    from comfyui_pal.training.data import discover
    from comfyui_pal.training.evaluate import calibrate_bias, load_eval_model

    samples = [s for s in discover(data, split).samples if s.label is not None and (task is None or s.task == task)]
    net, _ = load_eval_model(model)
    delta, table = calibrate_bias(net, samples)
    return {"task": task, "best_shift": delta, "aIoU_at_best": table[delta], "aIoU_at_0": table.get(0.0)}


def tradeoff(model: str | None, data: str, clean: str, split: str, shifts: str, threads: int) -> dict:
    """Held-out clean PAR (median, p95) and held-out synthetic artifact IoU at several artifact-logit
    biases: how the two #11 targets trade against each other. A diagnostic: it reads the held-out
    sets, so nothing is chosen from it. Biases are absolute (the stored one + each shift)."""
    from comfyui_pal.core.imageio import iter_image_paths, load_image
    from comfyui_pal.models import load_detector
    from comfyui_pal.training.data import discover
    from comfyui_pal.training.evaluate import calibrate_operating_point, load_eval_model

    torch.set_num_threads(threads)
    stored = float(load_detector(model, device="cpu").artifact_logit_bias)
    net, _ = load_eval_model(model)  # at the stored operating point: shift 0 = the stored bias
    lo, hi, step = (float(v) for v in shifts.split(":"))
    grid = np.round(np.arange(lo, hi + step / 2, step), 3)
    clean_imgs = [load_image(p) for p in sorted(iter_image_paths([clean]))]
    samples = [s for s in discover(data, split).samples if s.label is not None]
    res = calibrate_operating_point(net, clean_imgs, samples, shifts=grid)
    rows = {f"{stored + float(d):.2f}": {"clean_median": round(r["clean_median"], 5), "clean_p95": round(r["clean_p95"], 4),
                                         "aIoU": round(r["val_aIoU"], 2)} for d, r in res["table"].items()}
    return {"bench": "tradeoff", "model": str(model or "pal-starter"), "stored_bias": stored,
            "n_clean": len(clean_imgs), "n_synthetic": len(samples), "by_bias": rows}


def fewshot(model: str | None, data: str, test: str, type_: str, iters: int, work_dir: str, threads: int,
            lr: float, batch: int, crop: int, extra: list[str] = ()) -> dict:
    from comfyui_pal.cli import main as pal
    from comfyui_pal.training.evaluate import run_eval

    before = run_eval(model, test, split="test", n_overlays=0, threads=threads)
    out = f"{work_dir}/fewshot.safetensors"
    from comfyui_pal.models.detector import resolve_source

    args = ["finetune", "--init", str(resolve_source(model)), "--data", data, "--work-dir", work_dir,
            "--max-iters", str(iters), "--batch-size", str(batch), "--crop-size", str(crop),
            "--ratio-range", "0.75,1.5", "--lr", str(lr), "--head-lr-mult", "1", "--warmup-iters",
            str(max(iters // 20, 1)), "--val-interval", "0", "--checkpoint-interval", str(iters),
            "--workers", "0", "--threads", str(threads), "--num-images", "10", "--export", out, *extra]
    t = time.time()
    rc = pal(args)
    if rc != 0:
        raise SystemExit(f"finetune failed ({rc})")
    secs = time.time() - t
    after = run_eval(out, test, split="test", n_overlays=0, threads=threads)
    b, a = before["per_task"].get(type_, {}), after["per_task"].get(type_, {})
    return {"bench": "fewshot", "type": type_, "iters": iters, "lr": lr, "batch": batch, "crop": crop,
            "train_seconds": round(secs, 1), "command": "pal " + " ".join(args),
            "before": {"aIoU_type": b.get("aIoU"), **_short(before)},
            "after": {"aIoU_type": a.get("aIoU"), **_short(after)}}


def targets(model: str | None, data: str, clean: str, split: str, threads: int, runs: int) -> dict:
    """Issue #11's targets, each measured here (few-shot is its own command: it trains)."""
    import os

    from comfyui_pal.models.detector import resolve_source

    path = resolve_source(model)
    c = clean_par(model, clean, threads)
    print(json.dumps(c), flush=True)  # partial results as they come: each part takes minutes
    h = heldout(model, data, split, threads)
    print(json.dumps(h, default=str), flush=True)
    lat = {dt: latency(model, runs, threads, dt) for dt in ("fp32", "bf16")}
    size_mb = os.path.getsize(path) / 1e6
    checks = {"clean_median<=0.01": c["median"] <= 0.01, "clean_p95<=0.03": c["p95"] <= 0.03,
              "heldout_aIoU>=60": (h["aIoU"] or 0) >= 60, "size<=20MB": size_mb <= 20,
              "latency_fp32<=0.2s": lat["fp32"]["detect_median_s"] <= 0.2,
              "latency_bf16<=0.2s": lat["bf16"]["detect_median_s"] <= 0.2}
    return {"bench": "targets", "model": str(path), "size_mb": round(size_mb, 2),
            "clean": {k: c[k] for k in ("n", "median", "p95", "max", "n_zero", "calibration")},
            "heldout": h, "latency": {k: {x: v[x] for x in ("detect_median_s", "network_median_s", "load_1min")}
                                      for k, v in lat.items()}, "checks": checks}


def _rank(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v), dtype=float)
    for x in np.unique(v):  # ties share their mean rank
        r[v == x] = r[v == x].mean()
    return r


def real(model: str | None, src: str, threads: int) -> dict:
    """The bundled model on PAL4VST's own demo images, against what the official model gave."""
    from pathlib import Path

    from PIL import Image

    from comfyui_pal.models import load_detector

    torch.set_num_threads(threads)
    det = load_detector(model, device="cpu")
    root = Path(src)
    official = np.asarray(Image.open(root / "demo_results/000000483531_pal.png").convert("L")) > 127
    r = det.detect(root / "demo_test_data/mask2image/images/000000483531.jpg")
    ours = r.prob_work > 0.5
    if ours.shape != official.shape:
        ours = np.asarray(Image.fromarray(ours.astype(np.uint8) * 255).resize(official.shape[::-1], Image.NEAREST)) > 127
    inter, union = int((ours & official).sum()), int((ours | official).sum())
    ranked = sorted((root / "demo_results/stylegan2_ffhq_rank").glob("*.jpg"))
    names = [p.name.split("_", 1)[1] for p in ranked]  # NN_seedXXXX.jpg, NN = official rank, 01 = best
    pars = np.array([det.detect(root / "demo_test_data/stylegan2_ffhq/images" / n).par for n in names])
    official_rank = np.arange(len(names), dtype=float)
    rho = float(np.corrcoef(_rank(pars), official_rank)[0, 1]) if len(set(pars.tolist())) > 1 else float("nan")
    return {"bench": "real_generated", "model": str(model or "pal-starter"), "calibration": det.calibration or None,
            "mask2image_iou_vs_official": round(inter / max(union, 1), 4), "mask2image_par": round(r.par, 4),
            "mask2image_official_par": round(float(official.mean()), 4),
            "stylegan2_spearman_vs_official": None if np.isnan(rho) else round(rho, 3),
            "stylegan2_pars_in_official_order": [round(float(x), 4) for x in pars]}


def bf16_curve(data: str, model_config: str, iters: int, work_dir: str, threads: int, crop: int, batch: int,
               backbone_weights: str | None, split: str) -> dict:
    """Train the same model from the same init on the same batches with --amp off and bf16;
    report both loss curves (means over 10-iteration windows) and their largest relative gap."""
    from comfyui_pal.training.loop import TrainConfig, train

    curves, secs = {}, {}
    for amp in ("off", "bf16"):
        cfg = TrainConfig(data=data, work_dir=f"{work_dir}/{amp}", model=model_config, max_iters=iters,
                          batch_size=batch, crop_size=crop, scale=crop * 2, ratio_range=(0.5, 1.0), lr=4e-4,
                          head_lr_mult=5, warmup_iters=20, poly_end=iters, class_weight=(1.0, 2.0),
                          amp=amp, num_workers=0, val_interval=0, checkpoint_interval=iters, log_interval=10,
                          threads=threads, cache_images=True, train_split=split, freeze="backbone_bn",
                          backbone_weights=backbone_weights)
        t = time.time()
        res = train(cfg, log=lambda m: None)
        secs[amp] = round(time.time() - t, 1)
        log = [json.loads(line) for line in open(f"{work_dir}/{amp}/log.jsonl")]
        curves[amp] = [round(r["loss"], 4) for r in log if "loss" in r][-(iters // 10):]
        del res
    gap = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(curves["off"], curves["bf16"]))
    return {"bench": "bf16_vs_fp32_loss", "iters": iters, "crop": crop, "batch": batch, "threads": threads,
            "loss_fp32": curves["off"], "loss_bf16": curves["bf16"], "max_rel_gap": round(gap, 4),
            "train_seconds": secs, "load_1min": _load()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("latency", "heldout", "fewshot", "oracle", "bf16-curve", "clean", "targets", "real",
                                      "tradeoff"))
    p.add_argument("--pal4vst", default=None, help="a PAL4VST checkout (real)")
    p.add_argument("--clean", default=None, help="folder of clean pictures (targets)")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--finetune-args", default="", help="extra `pal finetune` flags (fewshot), e.g. '--amp bf16'")
    p.add_argument("--raw", action="store_true", help="ignore the checkpoint's calibration (clean)")
    p.add_argument("--model-config", default="models/weights/pal-starter.config.json")
    p.add_argument("--backbone-weights", default=None)
    p.add_argument("--model", default=None, help="default: the bundled pal-starter")
    p.add_argument("--data", default=None)
    p.add_argument("--test", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--type", default="checkerboard")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--work-dir", default="/tmp/pal-fewshot")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shifts", default="-1:1:0.5", help="tradeoff: START:STOP:STEP around the stored bias")
    a = p.parse_args(argv)
    if a.what == "latency":
        res = latency(a.model, a.runs, a.threads, a.dtype)
    elif a.what == "clean":
        res = clean_par(a.model, a.data, a.threads, calibration=not a.raw)
    elif a.what == "targets":
        res = targets(a.model, a.data, a.clean, a.split, a.threads, a.runs)
    elif a.what == "real":
        res = real(a.model, a.pal4vst, a.threads)
    elif a.what == "tradeoff":
        res = tradeoff(a.model, a.data, a.clean, a.split, a.shifts, a.threads)
    elif a.what == "heldout":
        res = heldout(a.model, a.data, a.split, a.threads)
    elif a.what == "oracle":
        res = {"bench": "oracle_threshold", "model": a.model,
               **oracle_threshold(a.model, a.data, None if a.type == "all" else a.type, a.split)}
    elif a.what == "bf16-curve":
        res = bf16_curve(a.data, a.model_config, a.iters, a.work_dir, a.threads, a.crop, a.batch,
                         a.backbone_weights, a.split)
    else:
        res = fewshot(a.model, a.data, a.test, a.type, a.iters, a.work_dir, a.threads, a.lr, a.batch, a.crop,
                      a.finetune_args.split())
    print(json.dumps(res, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
