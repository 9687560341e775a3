"""Latency of the bare network (no pre/post-processing): Swin-B-w12 UperNet, fp32, CPU.

Usage: python benchmarks/bench_detector_network.py [--preset P] [--size 512] [--batch 1]
       [--runs 3] [--threads N] [--bf16]
The reference mmseg implementation of the same model takes about 3.6 s/image on the 2-core dev CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="pal4vst-swin-b-w12")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--bf16", action="store_true", help="also time CPU bf16 autocast")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from comfyui_pal.models import create_model

    model = create_model(args.preset, aux_head=False).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    modes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if args.bf16 else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"preset={args.preset} input={tuple(x.shape)} threads={torch.get_num_threads()} load1={load:.2f}")
    for name, dtype in modes:
        times = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(x)  # warm-up
            for _ in range(args.runs):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{name}: median {med:.3f} s/batch, {med / args.batch:.3f} s/image over {args.runs} runs "
              f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
