"""Helpers shared by the `pal` sub-commands: model options, JSON-lines output, safe output paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_model_args(p, default_help: str = "bundled starter model") -> None:
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint path (.safetensors/.pth/.pt), registry name (pal4vst-unified: downloaded, "
                        "verified and converted on first use) or Hub reference hf:owner/repo[@rev][/file] "
                        f"(default: {default_help})")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="inference precision. auto (default): bf16 or fp16 on CUDA; on CPUs bf16 only where the CPU "
                        "has native bf16 (AMX/AVX512-BF16) and the architecture met the agreement target (none so "
                        "far, see README 'Performance'), else fp32. fp32 = exact mmseg numbers. bf16 on a native-bf16 "
                        "CPU is about 2x faster than fp32 for Swin-B")
    p.add_argument("--resize", default=None, choices=["bicubic", "bilinear"],
                   help="resize to 512: bicubic (official scripts, default) or bilinear (mmseg test pipeline)")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading a TorchScript end2end.pt (it contains code; only for files you trust)")


def load_detector_from_args(args):
    from ..models import load_detector

    return load_detector(args.model, device=args.device, dtype=args.dtype,
                         trust_torchscript=args.trust_torchscript, resize=args.resize)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress(items, desc: str):
    """A tqdm bar on stderr for long runs; silent when stderr is not a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    items = list(items)
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=None if len(items) > 1 else True)


class OutputPlanner:
    """Decides output file names and refuses to clobber inputs, user files or a sibling's output."""

    def __init__(self, out_dir: Path, inputs: list[Path], overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.inputs = {p.resolve() for p in inputs if p.exists()}
        self.overwrite = overwrite
        self.claimed: dict[Path, Path] = {}

    def path(self, src: Path, name: str) -> Path:
        dst = (self.out_dir / name).resolve()
        if dst in self.inputs:
            raise ValueError(f"output {dst} would overwrite an input image; choose another --out folder")
        owner = self.claimed.get(dst)
        if owner is not None and owner != src:
            raise ValueError(f"output {dst.name} collides with the output of {owner}; rename one of the inputs")
        if dst.exists() and not self.overwrite and owner is None:
            raise ValueError(f"output {dst} already exists; pass --overwrite to replace it or choose another --out")
        self.claimed[dst] = src
        return dst
