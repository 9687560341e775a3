"""`pal train`, `pal finetune`, `pal eval`, `pal synth`, `pal data check`.

JSON results on stdout, progress on stderr; torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

FINETUNE_DEFAULTS = {"clean_replay": 10, "max_iters": 2000, "lr": 2e-5, "warmup_iters": 100, "num_images": 10, "val_interval": 200,
                     "checkpoint_interval": 200, "batch_size": 8}


def _floats(text: str, n: int = 2) -> tuple[float, ...]:
    vals = tuple(float(v) for v in text.split(","))
    if len(vals) != n:
        raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
    return vals


def _add_train_args(p: argparse.ArgumentParser, finetune: bool = False) -> None:
    d = FINETUNE_DEFAULTS if finetune else {}
    p.add_argument("--data", required=True, help="data set root (PAL4VST images/+labels/ or images/+masks/)")
    p.add_argument("--work-dir", required=True, help="where checkpoints (latest.pt, best.pt) and log.jsonl go")
    if finetune:
        p.add_argument("--init", required=True, help="checkpoint to adapt (.safetensors, official .pth, or a name)")
        p.add_argument("--model", default=None, help="model preset or config .json (default: the checkpoint's)")
    else:
        p.add_argument("--model", default=None, help="preset name (e.g. pal4vst-swin-b-w12) or a config .json")
        p.add_argument("--init", default=None, help="start from this checkpoint (.safetensors / official .pth)")
    p.add_argument("--backbone-weights", default=None, help="local timm weight file for a timm backbone")
    p.add_argument("--max-iters", type=int, default=d.get("max_iters", 20000))
    p.add_argument("--batch-size", type=int, default=d.get("batch_size", 8), help="per process")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--scale", type=int, default=512, help="RandomResize base scale")
    p.add_argument("--ratio-range", type=_floats, default=(0.5, 2.0), help="RandomResize ratio range, e.g. 0.5,2.0")
    p.add_argument("--cat-max-ratio", type=float, default=0.75)
    p.add_argument("--photometric", action="store_true",
                   help="mmseg PhotoMetricDistortion (brightness, contrast, saturation, hue) on training crops; "
                   "off by default, as in the official config")
    p.add_argument("--lr", type=float, default=d.get("lr", 6e-5))
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--head-lr-mult", type=float, default=10.0, help="lr multiplier of decode/aux heads")
    p.add_argument("--warmup-iters", type=int, default=d.get("warmup_iters", 1500))
    p.add_argument("--poly-end", type=int, default=None,
                   help="iteration where poly decay reaches 0 (default 160000 for train, max-iters for finetune)")
    p.add_argument("--aux-weight", type=float, default=0.4)
    p.add_argument("--class-weight", type=_floats, default=None,
                   help="per-class CE weights, e.g. 1,3 (default: unweighted, as the official recipe)")
    p.add_argument("--dice-weight", type=float, default=0.0,
                   help="add this weight x soft Dice loss of the artifact class (default 0: CE only, as the official recipe)")
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--amp", choices=("auto", "off", "fp16", "bf16"), default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-interval", type=int, default=d.get("val_interval", 500))
    p.add_argument("--metric", choices=("mIoU", "aIoU"), default="mIoU", help="keep the best checkpoint by this")
    p.add_argument("--checkpoint-interval", type=int, default=d.get("checkpoint_interval", 500))
    p.add_argument("--keep-iter-checkpoints", type=int, default=0)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue from WORK_DIR/latest.pt (or the given checkpoint)")
    p.add_argument("--freeze", choices=("none", "backbone", "backbone_bn"), default="none")
    p.add_argument("--freeze-prefix", action="append", default=None,
                   help="keep parameters whose name starts with this fixed (repeatable), "
                   "e.g. backbone.body.conv_stem")
    p.add_argument("--num-images", type=int, default=d.get("num_images"),
                   help="use only N training images, picked by --seed" + (" (few-shot default 10)" if finetune else ""))
    p.add_argument("--clean-replay", type=int, default=d.get("clean_replay", 0), metavar="N",
                   help="add N clean pictures (label 0, made offline by pal synth) to the training images, so a "
                   "few-shot set of artifact images does not teach 'everything is artifact'"
                   + (" (default 10; 0 = off)" if finetune else " (default 0)"))
    p.add_argument("--clean-replay-folder", action="append", default=None, metavar="DIR",
                   help="also draw the clean replay pictures from this folder of clean images (repeatable)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache-images", action="store_true", help="keep decoded images in memory")
    p.add_argument("--precise-bn", type=int, default=None, metavar="N",
                   help="recompute BatchNorm statistics on N training pictures at the working size before each "
                   "validation and checkpoint (0 = off; default: 64 when the total batch is below 16)")
    p.add_argument("--export", default=None, help="write the best weights as .safetensors (+ model card .md)")
    p.add_argument("--export-fp32", action="store_true", help="export float32 instead of float16")


def _train_config(args, finetune: bool):
    from ..training.loop import TrainConfig

    poly_end = args.poly_end if args.poly_end is not None else (args.max_iters if finetune else 160000)
    return TrainConfig(
        data=args.data, work_dir=args.work_dir, model=args.model, init=args.init,
        backbone_weights=args.backbone_weights, max_iters=args.max_iters, batch_size=args.batch_size,
        grad_accum=args.grad_accum, crop_size=args.crop_size, scale=args.scale, ratio_range=tuple(args.ratio_range),
        cat_max_ratio=args.cat_max_ratio, photometric=args.photometric, lr=args.lr, weight_decay=args.weight_decay, head_lr_mult=args.head_lr_mult,
        warmup_iters=args.warmup_iters, poly_end=poly_end, aux_weight=args.aux_weight, class_weight=args.class_weight, dice_weight=args.dice_weight, clip_grad=args.clip_grad,
        amp=args.amp, num_workers=args.workers, seed=args.seed, val_interval=args.val_interval, metric=args.metric,
        checkpoint_interval=args.checkpoint_interval, keep_iter_checkpoints=args.keep_iter_checkpoints,
        log_interval=args.log_interval, resume=args.resume, freeze=args.freeze, num_images=args.num_images,
        clean_replay=args.clean_replay, clean_replay_folders=tuple(args.clean_replay_folder or ()),
        freeze_prefixes=tuple(args.freeze_prefix or ()),
        device=args.device, threads=args.threads, cache_images=args.cache_images, export=args.export,
        precise_bn=args.precise_bn, export_fp16=not args.export_fp32, command=_command_line(args, "finetune" if finetune else "train"))


def _command_line(args, name: str) -> str:
    """The full, explicit command (every option, defaults included) for the provenance record."""
    parts = ["pal", name]
    for k, v in vars(args).items():
        if k in ("func", "command") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, (tuple, list)):
            parts += [flag, ",".join(str(x) for x in v)]
        else:
            parts += [flag, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _run_train(args, finetune: bool) -> int:
    from ..training.data import DataError
    from ..training.loop import TrainingDiverged, fmt_result, train

    cfg = _train_config(args, finetune)
    try:
        res = train(cfg)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(fmt_result(res), flush=True)
    return 0


def cmd_train(args) -> int:
    return _run_train(args, finetune=False)


def cmd_finetune(args) -> int:
    return _run_train(args, finetune=True)


def cmd_eval(args) -> int:
    from ..training.data import DataError
    from ..training.evaluate import run_eval

    try:
        res = run_eval(args.model, args.data, split=args.split, out_dir=args.out, n_overlays=args.overlays,
                       device=args.device, resize=args.resize, trust_torchscript=args.trust_torchscript,
                       threads=args.threads)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, default=str), flush=True)
    return 0


def cmd_synth(args) -> int:
    from ..training.synth import SKIMAGE_HELDOUT, SKIMAGE_TRAIN, SynthConfig, generate, parse_types

    names = SKIMAGE_TRAIN if args.skimage == "train" else SKIMAGE_HELDOUT if args.skimage == "heldout" else \
        (() if args.skimage == "none" else tuple(parse_types(args.skimage)))
    cfg = SynthConfig(
        out=args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed, size=args.size,
        types=tuple(parse_types(args.types)) if args.types else SynthConfig.types,
        exclude=tuple(parse_types(args.exclude)), artifacts_per_image=tuple(int(v) for v in args.per_image.split(",")),
        clean_ratio=args.clean_ratio, skimage_names=names, dead_leaves_ratio=args.dead_leaves_ratio,
        folders=tuple(args.folder or ()), by_type=args.by_type, label_rule=args.label_rule,
        procedural_ratio=args.procedural_ratio, vector_ratio=args.vector_ratio,
        dof_ratio=args.dof_ratio, blotch_palette=args.blotch_palette, png_ratio=args.png_ratio)
    try:
        res = generate(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res), flush=True)
    return 0


def cmd_data_check(args) -> int:
    from ..training.data import check

    report = check(args.root, splits=[s for s in args.splits.split(",") if s])
    for e in report["errors"]:
        print(f"error: {e['path']}: {e['problem']}", file=sys.stderr)
    for w in report["warnings"]:
        print(f"warning: {w['path']}: {w['problem']}", file=sys.stderr)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a detector (official recipe by default)",
                              description="Train an artifact segmenter. Defaults follow the PAL4VST recipe "
                              "(AdamW 6e-5, heads x10, warm-up 1500 + poly, crop 512, CE + 0.4 aux). Use "
                              "torchrun for several GPUs/nodes.")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("finetune", help="few-shot adaptation of a detector (~10 images, 2000 iters)",
                              description="Adapt a checkpoint to a new generator with a few labelled images "
                              "(defaults: 10 images, 2000 iterations, lr 2e-5, warm-up 100, poly to 0).")
    _add_train_args(p, finetune=True)
    p.set_defaults(func=cmd_finetune)

    p = subparsers.add_parser("eval", help="artifact IoU / mIoU per task, PAR statistics, overlays")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors/.pth/training .pt) or registry name; "
                   "default: the bundled starter")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="folder for metrics.json and overlay examples")
    p.add_argument("--overlays", type=int, default=8, help="how many overlay examples to save")
    p.add_argument("--resize", choices=("bilinear", "bicubic"), default=None,
                   help="test resize (default: the model config's; mmseg's val pipeline is bilinear)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trust-torchscript", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("synth", help="synthetic artifact data set (PAL4VST layout, exact masks)")
    p.add_argument("out")
    p.add_argument("--n-train", type=int, default=800)
    p.add_argument("--n-val", type=int, default=80)
    p.add_argument("--n-test", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--types", default=None, help="comma list of artifact types (default: all)")
    p.add_argument("--exclude", default="", help="comma list of artifact types to leave out")
    p.add_argument("--per-image", default="1,3", help="min,max artifacts per image")
    p.add_argument("--clean-ratio", type=float, default=0.1, help="fraction of images left clean")
    p.add_argument("--skimage", default="train",
                   help="scikit-image base pictures: train (default set), heldout, none, or a comma list")
    p.add_argument("--dead-leaves-ratio", type=float, default=0.35)
    p.add_argument("--procedural-ratio", type=float, default=0.0,
                   help="share of procedural clean bases (gradients, textures, shapes)")
    p.add_argument("--blotch-palette", type=float, default=0.0,
                   help="share of colour blotches whose colour is taken from the picture itself (else random)")
    p.add_argument("--vector-ratio", type=float, default=0.0,
                   help="share of vector-art bases (smooth vivid swooshes, petals, blobs on gradients): "
                   "clean smooth colour inside a sharp outline is not an artifact")
    p.add_argument("--dof-ratio", type=float, default=0.0,
                   help="share of bases given a clean depth-of-field blur (bokeh, tilt-shift) before any artifact: "
                   "photographic blur is not an artifact")
    p.add_argument("--png-ratio", type=float, default=0.0,
                   help="share of images written losslessly as PNG (the rest JPEG, quality 85-97): hosts feed "
                   "the detector PNG renders")
    p.add_argument("--folder", action="append", help="also use the images in this folder as bases (repeatable)")
    p.add_argument("--by-type", action="store_true",
                   help="one artifact type per image, in <split>/<type>/ sub-folders (per-type metrics)")
    p.add_argument("--label-rule", choices=("visible", "support"), default="visible",
                   help="visible: label only pixels that visibly changed (rest of the support is ignore); "
                   "support: the whole alpha >= 0.5 support")
    p.set_defaults(func=cmd_synth)

    p = subparsers.add_parser("data", help="data set tools")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    c = sub.add_parser("check", help="validate a data set before training")
    c.add_argument("root")
    c.add_argument("--splits", default="train,val,test")
    c.set_defaults(func=cmd_data_check)
