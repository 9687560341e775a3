"""Overhead of the zoom-in fix machinery (plan + crop + composite) on a 2048x2048 image with 8 regions.

Inpainting and detection are timed separately for scale; the target is plan+crop+composite
< 5% of one detector forward (Swin-B UPerNet at 512x512) on the same machine.

    python benchmarks/bench_zoom.py [--repeat 5] [--size 512] [--no-detector]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def make_case(n: int = 2048, k: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    img = np.stack([(xx * 255 // n), (yy * 255 // n), ((xx + yy) * 127 // n)], -1).astype(np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((n, n), bool)
    sizes = [300, 220, 160, 120, 90, 60, 40, 24][:k]
    cells = [(r, c) for r in range(3) for c in range(3)][:k]
    for (r, c), s in zip(cells, sizes):
        cy, cx = 340 + r * 680, 340 + c * 680
        rr = (yy[cy - s : cy + s, cx - s : cx + s] - cy) ** 2 + (xx[cy - s : cy + s, cx - s : cx + s] - cx) ** 2
        mask[cy - s : cy + s, cx - s : cx + s] |= rr < (s // 2) ** 2
    return img, mask


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--no-detector", action="store_true")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)
    from comfyui_pal.core.composite import composite
    from comfyui_pal.core.crop import extract_crops, plan_crops
    from comfyui_pal.core.inpainters import make_inpainter

    img, mask = make_case()
    plan = plan_crops([img], [mask], size=args.size)
    assert plan.n_active == 8, plan.n_active
    crops, cmasks = extract_crops([img], plan)
    patches = crops.copy()
    t_plan = best_ms(lambda: plan_crops([img], [mask], size=args.size), args.repeat)
    t_crop = best_ms(lambda: extract_crops([img], plan), args.repeat)
    t_comp = best_ms(lambda: composite([img], plan, patches), args.repeat)
    t_comp_cm = best_ms(lambda: composite([img], plan, patches, color_match=True), args.repeat)
    overhead = t_plan + t_crop + t_comp
    print(f"image 2048x2048, 8 regions, crop sides {[c.side for c in plan.crops]}, working size {args.size}")
    print(f"plan      {t_plan:8.1f} ms")
    print(f"crop      {t_crop:8.1f} ms")
    print(f"composite {t_comp:8.1f} ms  (with --color-match {t_comp_cm:.1f} ms)")
    print(f"overhead  {overhead:8.1f} ms  (plan + crop + composite)")
    inp = make_inpainter("opencv")
    t_inp = best_ms(lambda: inp.inpaint(crops, cmasks), max(1, args.repeat // 2))
    print(f"inpaint   {t_inp:8.1f} ms  (OpenCV Telea, 8 crops at {args.size}, for scale)")
    if args.no_detector:
        return
    try:
        import torch

        from comfyui_pal.models import create_model

        torch.set_num_threads(min(2, torch.get_num_threads()))
        model = create_model("pal4vst-swin-b-w12", aux_head=False).eval()
        x = torch.randn(1, 3, 512, 512)
        with torch.inference_mode():
            model(x)  # warm-up
            t_det = best_ms(lambda: model(x), 2)
        print(f"detector  {t_det:8.1f} ms  (Swin-B UPerNet forward at 512, random weights, "
              f"{torch.get_num_threads()} threads)")
        print(f"overhead / detector forward = {100 * overhead / t_det:.1f}% (target < 5%)")
    except Exception as e:  # the network module may be unavailable in a partial checkout
        print(f"detector forward not measured: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
