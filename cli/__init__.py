"""`pal` command line: a thin adapter over the host-free core.

Each sub-module registers its own sub-commands, so the parser stays cheap to build and
torch is imported only by the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module name -> registers these sub-commands (documented in README.md)
_SUBMODULES = ("detect", "fix", "train", "hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pal",
        description="PAL4VST perceptual-artifact detection, PAR scoring and zoom-in inpainting.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _SUBMODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
