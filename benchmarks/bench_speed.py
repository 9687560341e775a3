"""Speed of the detector network on this machine: candidates side by side, batching, the starter.

Every comparison runs its variants alternately (A B C, C B A, ...) in one process after one
warm-up each, and prints every run, the medians and the ratios to the first variant: on a shared
machine only such ratios mean something. Output: JSON lines.

    python benchmarks/bench_speed.py candidates [--runs 7] [--threads 2] [--size 512] [--compile]
    python benchmarks/bench_speed.py batch [--batches 1 4] [--dtype fp32 ...] [--device cpu|cuda] [--model M | --preset P]
        # GPU rows of the README: batch --device cuda --dtype fp32 bf16 fp16 --batches 1 4 16
    python benchmarks/bench_speed.py starter [--model M]       # fp32 and bf16 (CPU) latency, cold and warm
    python benchmarks/bench_speed.py cold [--preset P]          # first call (kernel creation) vs warm, per dtype
    python benchmarks/bench_speed.py bf16 [--runs 5]             # bf16 variants: default (NHWC head), NCHW head, +SDPA

`candidates` (PAL4VST Swin-B-w12 UperNet, random weights, fp32 unless named):
  literal       mmseg's op order (no FPN fuse, no SDPA, no BN folding), the reference
  default       what load_detector runs in fp32 (low-resolution FPN fuse, BatchNorm folded into
                the head's convs, explicit attention softmax)
  +sdpa         default with SDPA window attention (set_fused_attn(True))
  -bnfold       default without folding eval BatchNorm into the head's convs (ConvModule.fold_bn)
  +cl_head      default + channels_last decode head (UPerHead.set_channels_last; fp32 default: off)
  bf16          what Detector runs for dtype="bf16" on a CPU (NHWC head, fp32 classifier)
  compile       torch.compile(default), only with --compile; compile time printed separately
Each line also gives max |logits - literal|.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def alternate(variants: dict, runs: int, sync=None) -> dict[str, list[float]]:
    """Time each callable `runs` times, order reversed every other round, after one warm-up each.
    ``sync``: called before each clock read (torch.cuda.synchronize for GPU work)."""
    sync = sync or (lambda: None)
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for f in variants.values():
            f()
        for i in range(runs):
            items = list(variants.items())
            for name, f in items if i % 2 == 0 else items[::-1]:
                sync()
                t0 = time.perf_counter()
                f()
                sync()
                times[name].append(time.perf_counter() - t0)
            print(json.dumps({"run": i + 1, **{k: round(v[-1], 3) for k, v in times.items()}, "load1": _load()}),
                  flush=True)
    return times


def summary(times: dict[str, list[float]], bench: str, **extra) -> dict:
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = next(iter(med))
    out = {"bench": bench, **extra, "median_s": {k: round(v, 3) for k, v in med.items()},
           "ratio_to_" + ref: {k: round(v / med[ref], 3) for k, v in med.items()}, "runs": len(times[ref]),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "load1": _load()}
    print(json.dumps(out), flush=True)
    return out


def set_fold_bn_(model: torch.nn.Module, enable: bool) -> torch.nn.Module:
    from comfyui_pal.models.uper_head import ConvModule

    for m in model.modules():
        if isinstance(m, ConvModule):
            m.fold_bn = enable
    return model


def _as_detector_runs(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """The network as Detector places it for dtype on this CPU (classifier, head memory format)."""
    from comfyui_pal.models.detector import Detector

    return Detector(model, {"preprocess": {"size": None}}, device="cpu", dtype=dtype).segmenter


def candidates(args) -> None:
    from comfyui_pal.models import create_model

    torch.manual_seed(0)
    base = create_model(args.preset, aux_head=False).eval()
    x = torch.randn(1, 3, args.size, args.size)

    def clone():
        return copy.deepcopy(base)

    literal = clone()
    literal.decode_head.set_lowres_fuse(False)
    literal.backbone.set_fused_attn(False)
    set_fold_bn_(literal, False)
    default = clone()
    bnfold = set_fold_bn_(clone(), False)
    cl = clone()
    cl.decode_head.set_channels_last(True)
    nosdpa = clone()
    nosdpa.backbone.set_fused_attn(True)
    bf16 = _as_detector_runs(clone(), "bf16")
    nets = {"literal": (literal, x), "default": (default, x), "-bnfold": (bnfold, x), "+cl_head": (cl, x),
            "+sdpa": (nosdpa, x), "bf16": (bf16, x.bfloat16())}
    if args.compile:
        comp = torch.compile(clone())
        t0 = time.perf_counter()
        with torch.inference_mode():
            comp(x)
        print(json.dumps({"bench": "compile", "first_call_incl_compile_s": round(time.perf_counter() - t0, 1)}),
              flush=True)
        nets["compile"] = (comp, x)
    with torch.inference_mode():
        ref = literal(x).float()
        diffs = {k: float((m(inp).float() - ref).abs().max()) for k, (m, inp) in nets.items()}
    print(json.dumps({"bench": "candidates_max_abs_logit_diff_vs_literal", **diffs}), flush=True)
    times = alternate({k: (lambda m=m, inp=inp: m(inp)) for k, (m, inp) in nets.items()}, args.runs)
    summary(times, "candidates", preset=args.preset, size=args.size)


def bf16_variants(args) -> None:
    """What --dtype bf16 runs on a CPU (NHWC head) against the NCHW head and SDPA window attention:
    which one the bf16 default should be."""
    from comfyui_pal.models import create_model

    torch.manual_seed(0)
    base = create_model(args.preset, aux_head=False).eval()
    default = _as_detector_runs(copy.deepcopy(base), "bf16")
    nchw = _as_detector_runs(copy.deepcopy(base), "bf16")
    nchw.decode_head.set_channels_last(False)
    sdpa = _as_detector_runs(copy.deepcopy(base), "bf16")
    sdpa.backbone.set_fused_attn(True)
    x = torch.randn(1, 3, args.size, args.size).bfloat16()
    nets = {"bf16": default, "bf16_nchw_head": nchw, "bf16+sdpa": sdpa}
    with torch.inference_mode():
        ref = default(x).float()
        diffs = {k: float((m(x).float() - ref).abs().max()) for k, m in nets.items()}
    print(json.dumps({"bench": "bf16_max_abs_logit_diff_vs_bf16", **diffs}), flush=True)
    times = alternate({k: (lambda m=m: m(x)) for k, m in nets.items()}, args.runs)
    summary(times, "bf16_variants", preset=args.preset, size=args.size)


def batch(args) -> None:
    """Per-image latency at each batch size, for each --dtype, on --device (one table per dtype)."""
    from comfyui_pal.models import Detector, create_model, load_detector

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    for dtype in args.dtype:
        torch.manual_seed(0)
        if args.model:
            det = load_detector(args.model, device=args.device, dtype=dtype)
        else:
            model = create_model(args.preset, aux_head=False)
            det = Detector(model, model.config, device=args.device, dtype=dtype)
        xs = {b: torch.randn(b, 3, args.size, args.size) for b in args.batches}
        times = alternate({f"batch{b}": (lambda b=b, det=det, xs=xs: det.logits(xs[b])) for b in args.batches},
                          args.runs, sync)
        per_image = {k: [t / int(k[5:]) for t in v] for k, v in times.items()}
        summary(per_image, "batch_per_image", model=args.model or args.preset, dtype=str(det.dtype),
                device=str(det.device))


def starter(args) -> None:
    import numpy as np

    from comfyui_pal.models import load_detector

    dets = {d: load_detector(args.model, device="cpu", dtype=d) for d in ("fp32", "bf16")}
    img = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    cold = {}
    for d, det in dets.items():
        t0 = time.perf_counter()
        det.detect(img)
        cold[d] = round(time.perf_counter() - t0, 3)
    print(json.dumps({"bench": "starter_first_call_s", **cold}), flush=True)
    times = alternate({f"detect_{d}": (lambda det=det: det.detect(img)) for d, det in dets.items()}, args.runs)
    summary(times, "starter_detect", model=str(args.model or "pal-starter"), size=args.size)


def cold(args) -> None:
    """First forward at a new shape (oneDNN creates its kernels) against the next ones, per dtype."""
    from comfyui_pal.models import create_model

    torch.manual_seed(0)
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        m = create_model(args.preset, aux_head=False).eval().to(dt)
        x = torch.randn(1, 3, args.size, args.size, dtype=dt)
        ts = []
        with torch.inference_mode():
            for _ in range(3):
                t0 = time.perf_counter()
                m(x)
                ts.append(round(time.perf_counter() - t0, 2))
        out[name] = ts
        del m
    print(json.dumps({"bench": "first_three_calls_s", "preset": args.preset, **out, "load1": _load()}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("candidates", "batch", "starter", "cold", "bf16"))
    p.add_argument("--preset", default="pal4vst-swin-b-w12")
    p.add_argument("--model", default=None, help="starter/batch: a checkpoint or registry name (starter default: "
                   "the bundled pal-starter; batch default: --preset with random weights)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--dtype", nargs="+", default=["fp32"], help="batch: one table per dtype; others: the first")
    p.add_argument("--device", default="cpu", help="batch: cpu or cuda")
    p.add_argument("--compile", action="store_true", help="candidates: also torch.compile (opt-in; slow to compile)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    {"candidates": candidates, "batch": batch, "starter": starter, "cold": cold, "bf16": bf16_variants}[a.what](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
