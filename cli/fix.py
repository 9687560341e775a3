"""`pal fix`: detect artifacts (or take a mask), zoom in on each region, inpaint, paste back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import options as O
from ..core.imageio import IMAGE_EXTENSIONS, ImageLoadError, atomic_write_text, iter_image_paths, load_image
from ..core.par import fix_vis
from .common import OutputPlanner, add_model_args, emit, load_detector_from_args, progress, warn

# Flags generated from the one option schema (core/options.py); only the inpainter's are CLI-local.
REGION_OPTIONS = ["zoom", "size", "min_side", "overflow", "dilation", "min_area", "max_regions", "order",
                  "merge_overlap"]
BLEND_OPTIONS = ["feather", "color_match", "par_guard", "rounds"]
FIX_OPTIONS = ["threshold", *REGION_OPTIONS, *BLEND_OPTIONS]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fix",
        help="zoom-in inpainting of detected artifacts (or of your own masks)",
        description=(
            "For each image: find artifact regions (detector or --mask), crop a square around each "
            "(zoom x its longest side), inpaint the crop at --size, paste it back with a feathered "
            "blend. Writes <stem>_fixed.png, <stem>_fix_vis.png and <stem>_fix.json into --out; "
            "prints one JSON line per image."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IMG|DIR", help="images or folders of images")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_model_args(p)
    src = p.add_argument_group("where the artifact mask comes from")
    src.add_argument("--mask", default=None, metavar="MASK_OR_DIR",
                     help="use this mask (white = fix) instead of the detector; a folder is matched by "
                          "file stem (<stem>.png or <stem>_mask.png). With --model or --guard the "
                          "detector still measures PAR")
    O.add_cli_arguments(src, ["threshold"])
    O.add_cli_arguments(p.add_argument_group("regions and crops"), REGION_OPTIONS)
    O.add_cli_arguments(p.add_argument_group("blending and refinement"), BLEND_OPTIONS)
    ip = p.add_argument_group("inpainter")
    ip.add_argument("--inpainter", default="opencv",
                    help="opencv (Telea, default, offline CPU), opencv-ns, biharmonic, or "
                         "diffusers:<local folder | .safetensors | hub id>")
    ip.add_argument("--prompt", default="", help="diffusers prompt")
    ip.add_argument("--negative-prompt", default="", help="diffusers negative prompt")
    ip.add_argument("--steps", type=int, default=30, help="diffusers steps (30)")
    ip.add_argument("--strength", type=float, default=0.99, help="diffusers denoising strength (0.99)")
    ip.add_argument("--guidance", type=float, default=7.5, help="diffusers guidance scale (7.5)")
    ip.add_argument("--seed", type=int, default=0, help="diffusers seed; crop i uses seed + i (0)")
    p.set_defaults(func=run)


def find_mask_for(image_path: Path, mask_arg: Path) -> Path:
    """--mask FILE applies to every input; --mask DIR is matched by stem (<stem>.*, then <stem>_mask.*)."""
    if not mask_arg.is_dir():
        return mask_arg
    stem = image_path.stem
    files = [f for f in sorted(mask_arg.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    for wanted in (stem, f"{stem}_mask", f"{stem}-mask", f"{stem}.mask"):
        for f in files:
            if f.stem == wanted:
                return f
    raise ImageLoadError(image_path, f"no mask named {stem}.png or {stem}_mask.png in {mask_arg}")


def load_mask(path: Path) -> np.ndarray:
    """Mask image -> bool HxW (white/non-zero luminance >= 128 = fix). Alpha-only masks use their alpha."""
    from PIL import Image

    if not path.exists():
        raise ImageLoadError(path, "mask file not found; check --mask")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") and np.asarray(im.convert("RGB")).max() == 0:
                arr = np.asarray(im.getchannel("A"))
            else:
                arr = np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(path, f"not a readable mask image ({e}); save it as a PNG") from e
    return arr >= 128


def run(args) -> int:
    from ..core.fix import FixOptions, fix_image
    from ..core.imageio import save_image_atomic
    from ..core.inpainters import make_inpainter

    paths = list(iter_image_paths(args.inputs))
    if not paths:
        emit({"error": "no images found in the given inputs"})
        return 2
    mask_arg = Path(args.mask) if args.mask else None
    if mask_arg is not None and not mask_arg.exists():
        emit({"error": f"--mask {mask_arg} does not exist"})
        return 2
    try:
        opts = FixOptions.from_schema(O.cli_values(args, FIX_OPTIONS))
        # make_inpainter refuses options a backend does not take: the diffusers flags go only to diffusers
        diffusers_opts = dict(
            prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
            strength=args.strength, guidance=args.guidance, seed=args.seed, device=args.device,
        ) if args.inpainter.strip().lower().startswith("diffusers") else {}
        inpainter = make_inpainter(args.inpainter, **diffusers_opts)
    except (ValueError, TypeError) as e:
        emit({"error": str(e)})
        return 2
    detector = None
    if mask_arg is None or args.model is not None or args.par_guard:
        try:
            detector = load_detector_from_args(args)
        except Exception as e:  # one clear line instead of a traceback
            emit({"error": f"cannot load model {args.model or 'default'}: {e}"})
            return 2

    planner = OutputPlanner(Path(args.out), paths, overwrite=args.overwrite)
    failed = 0
    for path in progress(paths, "fix"):
        stem = path.stem
        try:
            outs = {k: planner.path(path, f"{stem}{suffix}") for k, suffix in
                    (("fixed", "_fixed.png"), ("vis", "_fix_vis.png"), ("report", "_fix.json"))}
            image = load_image(path)
            if mask_arg is not None:
                mpath = find_mask_for(path, mask_arg)
                res = fix_image(image, load_mask(mpath), inpainter, opts, detector=detector)
                mask_source = str(mpath)
            else:
                res = fix_image(image, detector, inpainter, opts)
                mask_source = "detector"
            report = {"image": str(path), "mask_source": mask_source, **res.report}
            save_image_atomic(res.image, outs["fixed"])
            save_image_atomic(fix_vis(image, res.image, res.mask, res.report["crops"]), outs["vis"])
            atomic_write_text(outs["report"], json.dumps(report, indent=2) + "\n")
            emit({
                "image": str(path), "status": report["status"], "par_before": report["par_before"],
                "par_after": report["par_after"], "n_crops": report["n_crops"], "n_kept": report["n_kept"],
                **{k: str(v) for k, v in outs.items()},
            })
        except Exception as e:  # one bad input must not stop the batch
            failed += 1
            msg = str(e) if isinstance(e, ImageLoadError) else f"{path}: {type(e).__name__}: {e}"
            warn(f"pal fix: {msg}")
            emit({"image": str(path), "error": msg})
    return 1 if failed else 0
