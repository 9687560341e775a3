"""Median latency of the full PAL4VST Swin-B-w12 UperNet (random weights) at 512x512.

    python benchmarks/bench_detector.py [--preset pal4vst-swin-b-w12] [--repeat 5] [--threads N]

Prints one line per (batch, dtype). The reference mmseg implementation of the same model takes
about 3.6 s per image on one 2-core x86-64 CPU (docs: model_reference.md section 11); on the
CI machine both mmseg 1.2.2 and this implementation take about 6.2-6.5 s (see README).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from comfyui_pal.models import Detector, create_model


def bench(det: Detector, batch: int, repeat: int) -> float:
    x = torch.randn(batch, 3, 512, 512)
    det.logits(x)  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        det.logits(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pal4vst-swin-b-w12")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true",
                    help="also time bf16 (default on GPU; on CPUs without native bf16 it is emulated and very slow)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(args.preset, aux_head=False)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {n / 1e6:.2f} M params, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    dtypes = [torch.float32]
    if args.device != "cpu" or args.bf16:
        dtypes.append(torch.bfloat16)
    for dtype in dtypes:
        det = Detector(model, model.config, device=args.device, dtype=dtype)
        for b in args.batches:
            try:
                t = bench(det, b, args.repeat)
            except RuntimeError as e:  # e.g. bf16 kernels missing on this CPU
                print(f"batch {b} {str(dtype)[6:]}: unavailable ({e})")
                continue
            print(f"batch {b} {str(dtype)[6:]:>8}: median {t:.3f} s/batch = {t / b:.3f} s/image")


if __name__ == "__main__":
    main()
