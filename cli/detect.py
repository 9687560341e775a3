"""`pal detect`, `pal score`, `pal convert`."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..core.imageio import ImageLoadError, atomic_write_bytes, atomic_write_text, iter_image_paths, load_image
from .common import OutputPlanner, add_model_args, emit, load_detector_from_args, progress, warn


def register(sub) -> None:
    p = sub.add_parser("detect", help="write artifact masks and overlays, print PAR per image")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.5, help="artifact probability threshold (default 0.5)")
    p.add_argument("--work-size-mask", action="store_true",
                   help="save the mask at the model's 512x512 working size like the official scripts "
                        "(default: the original image size)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_model_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("score", help="PAR per image; sort, export JSON/CSV, rank copies and a contact sheet")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", dest="json_out", help="write all records (errors included) as a JSON list")
    p.add_argument("--csv", dest="csv_out", help="write rank,image,par,error as CSV")
    p.add_argument("--sort", action="store_true", help="print in ascending PAR order (best first)")
    p.add_argument("--rank-dir", help="write rank-prefixed copies and contact_sheet.png here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: 1 on CPU, where batching measured no faster "
                        "(benchmarks/bench_speed.py batch); 8 on GPU)")
    add_model_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("convert", help="mmseg .pth / mmdeploy end2end.pt / safetensors -> our safetensors")
    p.add_argument("src")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--fp16", action="store_true", help="store float tensors as fp16 (half the size)")
    p.add_argument("--keep-aux", action="store_true", help="keep the training-only auxiliary FCN head")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow reading a TorchScript end2end.pt (contains code; only for files you trust)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)


def _load_model_or_report(args):
    try:
        return load_detector_from_args(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        emit({"error": f"cannot load model {args.model or 'default'}: {e}"})
        return None


def cmd_detect(args) -> int:
    from ..core.par import overlay

    det = _load_model_or_report(args)
    if det is None:
        return 2
    paths = list(iter_image_paths(args.inputs))
    planner = OutputPlanner(Path(args.out), paths, overwrite=args.overwrite)
    failed = 0
    for path in progress(paths, "detect"):
        try:
            rgb = load_image(path)
            mask_path = planner.path(path, f"{path.stem}_pal.png")
            vis_path = planner.path(path, f"{path.stem}_pal_vis.png")
            d = det.detect(rgb, threshold=args.threshold)
            mask = d.mask_work() if args.work_size_mask else d.mask()
            _save_png(mask_path, (mask * 255).astype("uint8"))
            _save_png(vis_path, overlay(rgb, d.mask()))
            emit({"image": str(path), "par": round(d.par, 6), "mask": str(mask_path), "vis": str(vis_path)})
        except (ImageLoadError, ValueError, OSError) as e:
            failed += 1
            emit({"image": str(path), "error": str(e)})
    if not paths:
        warn("no images found in the given inputs")
        return 1
    return 1 if failed else 0


def _save_png(path: Path, arr) -> None:
    from ..core.imageio import save_image_atomic

    save_image_atomic(arr, path)


def cmd_score(args) -> int:
    det = _load_model_or_report(args)
    if det is None:
        return 2
    paths = list(iter_image_paths(args.inputs))
    if args.batch_size is not None and args.batch_size < 1:
        emit({"error": f"--batch-size {args.batch_size}: must be at least 1"})
        return 2
    batch = args.batch_size or default_batch_size(det.device)
    records = [{"image": str(p)} for p in paths]
    pending: list[tuple[dict, object]] = []  # (record, image) waiting for a full batch

    def flush() -> None:
        try:
            dets = det.detect([im for _, im in pending], threshold=args.threshold, batch_size=batch)
        except (ValueError, RuntimeError) as e:  # one bad batch: report it on each of its images
            dets = [e] * len(pending)
        for (rec, _), d in zip(pending, dets):
            if isinstance(d, Exception):
                rec["error"] = str(d)
            else:
                rec["par"] = round(d.par, 6)
        pending.clear()

    for rec, path in progress(list(zip(records, paths)), "score"):
        try:
            pending.append((rec, load_image(path)))
        except (ImageLoadError, ValueError, OSError) as e:
            rec["error"] = str(e)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    ok = rank_records(records)
    for r in (ok + [r for r in records if "error" in r]) if args.sort else records:
        emit(r)
    failed = sum("error" in r for r in records)
    try:
        if args.json_out:
            atomic_write_text(args.json_out, json.dumps(records, indent=1) + "\n")
        if args.csv_out:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["rank", "image", "par", "error"])
            for r in records:
                w.writerow([r.get("rank", ""), r["image"], r.get("par", ""), r.get("error", "")])
            atomic_write_text(args.csv_out, buf.getvalue())
        if args.rank_dir:
            write_rank_dir(ok, Path(args.rank_dir), paths, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        emit({"error": f"could not write outputs: {e}"})
        return 1
    if not paths:
        warn("no images found in the given inputs")
        return 1
    return 1 if failed else 0


def default_batch_size(device) -> int:
    """CPU: 1 (a batch of 4 took as long per image as 1, and holds 4x the memory); GPU: 8."""
    return 1 if str(getattr(device, "type", device)) == "cpu" else 8


def rank_records(records: list[dict]) -> list[dict]:
    """Stable ascending sort by PAR (ties keep input order, like curate_images.py); adds 'rank' (1 = best)."""
    from ..core.par import rank_by_par

    scored = [r for r in records if "par" in r]
    ok = [scored[i] for i in rank_by_par([r["par"] for r in scored])[0]]
    for i, r in enumerate(ok, 1):
        r["rank"] = i
    return ok


def write_rank_dir(ranked: list[dict], out: Path, inputs: list[Path], overwrite: bool = False) -> None:
    """Rank-prefixed copies (zero-padded rank + '_' + name, as curate_images.py) and a contact sheet."""
    planner = OutputPlanner(out, inputs, overwrite=overwrite)
    width = len(str(len(ranked))) if ranked else 1
    for r in ranked:
        src = Path(r["image"])
        dst = planner.path(src, f"{r['rank']:0{width}d}_{src.name}")
        atomic_write_bytes(dst, src.read_bytes())
    if ranked:
        sheet = contact_sheet(ranked)
        from ..core.imageio import save_image_atomic

        save_image_atomic(sheet, planner.path(out / "contact_sheet.png", "contact_sheet.png"))


def contact_sheet(ranked: list[dict], thumb: int = 192, cols: int | None = None):
    """Thumbnails in rank order with 'rank N  PAR x.xxx' under each."""
    from PIL import Image, ImageDraw

    n = len(ranked)
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    label_h = 18
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + label_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(ranked):
        im = Image.fromarray(load_image(r["image"]))
        im.thumbnail((thumb, thumb))
        x, y = (i % cols) * thumb, (i // cols) * (thumb + label_h)
        sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        draw.text((x + 4, y + thumb + 3), f"rank {r['rank']}  PAR {r['par']:.3f}", fill=(255, 105, 180))
    return sheet


def cmd_convert(args) -> int:
    from ..models.checkpoint import CheckpointError, convert

    try:
        out = convert(args.src, args.dst, fp16=args.fp16, include_aux=args.keep_aux,
                      trust_torchscript=args.trust_torchscript, overwrite=args.overwrite)
    except (CheckpointError, OSError) as e:
        emit({"src": args.src, "error": str(e)})
        return 2
    emit({"src": args.src, "dst": str(out), "bytes": out.stat().st_size})
    return 0
