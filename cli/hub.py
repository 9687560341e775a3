"""`pal models list|download|path` and `pal push`: the registry and the Hugging Face Hub.

JSON lines on stdout (`pal models path` prints a bare path for shell use), messages on stderr.
Runs stand-alone too: `python -m comfyui_pal.cli.hub models list`.
"""

from __future__ import annotations

import argparse
import json
import sys


def _emit(obj) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


def _err(msg: str) -> None:
    print(f"pal: {msg}", file=sys.stderr, flush=True)


def _models_list(args) -> int:
    from ..models import hub

    try:
        rows = hub.list_models(models_dir=args.models_dir)
    except ValueError as e:
        _err(str(e))
        return 1
    if args.table:
        width = max(len(r["name"]) for r in rows) if rows else 4
        for r in rows:
            size = hub._human(r["size"]) if r["size"] is not None else "-"
            state = ("present" if r["present"] else "missing" if r["source"] != "hub"
                     else "not published" if not r["published"] else "not downloaded")
            print(f"{r['name']:<{width}}  {size:>9}  {state:<14}  {r['path']}")
        return 0
    for r in rows:
        _emit({k: r[k] for k in ("name", "size", "present", "path", "source", "repo_id", "revision",
                                 "filename", "sha256", "published", "description")})
    return 0


def _models_download(args) -> int:
    from ..models import hub

    failed = 0
    for name in args.names:
        try:
            path = hub.download(name, models_dir=args.models_dir, token=args.token, progress=not args.quiet)
        except ValueError as e:
            _err(str(e))
            failed += 1
            continue
        _emit({"name": name, "path": str(path), "size": path.stat().st_size})
    return 1 if failed else 0


def _models_path(args) -> int:
    from ..models import hub

    try:
        path = hub.resolve(args.name, download=args.download, models_dir=args.models_dir,
                           progress=not args.quiet)
    except ValueError as e:
        _err(str(e))
        return 1
    print(path, flush=True)
    return 0


def _push(args) -> int:
    from ..models import hub

    metrics = None
    if args.metrics:
        try:
            with open(args.metrics, encoding="utf-8") as f:
                metrics = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            _err(f"{args.metrics}: cannot read metrics JSON ({e})")
            return 1
    try:
        result = hub.push(args.ckpt, args.repo, private=args.private, token=args.token,
                          model_card=args.model_card, path_in_repo=args.path_in_repo,
                          revision=args.revision, commit_message=args.message, metrics=metrics)
    except ValueError as e:
        _err(str(e))
        return 1
    _err(f"uploaded {result['filename']} to {result['repo_id']} ({result['commit_url']}); add "
         "'registry_entry' to your registry to download it by name")
    _emit(result)
    return 0


def register(subparsers) -> None:
    models = subparsers.add_parser(
        "models", help="list, download and locate registered checkpoints",
        description="Registered checkpoints (models/registry.json + ~/.config/comfyui-pal/registry.json).")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    def dir_arg(p):
        p.add_argument("--models-dir", default=None,
                       help="host models folder (ComfyUI models/pal, A1111 models/pal): searched first, "
                            "downloads go there instead of the Hub cache")

    p = msub.add_parser("list", help="name, size, present?, path of every registered model (JSON lines)")
    dir_arg(p)
    p.add_argument("--table", action="store_true", help="a human-readable table instead of JSON lines")
    p.set_defaults(func=_models_list)

    p = msub.add_parser("download", help="download (and sha256-verify) registered models")
    p.add_argument("names", nargs="+", metavar="NAME")
    dir_arg(p)
    p.add_argument("--token", default=None, help="Hub token for private/gated repos (default: HF_TOKEN / hf login)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_models_download)

    p = msub.add_parser("path", help="print the local file of a model name or path (no download unless --download)")
    p.add_argument("name", metavar="NAME")
    dir_arg(p)
    p.add_argument("--download", action="store_true", help="download it if it is not present")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_models_path)

    p = subparsers.add_parser(
        "push", help="upload a .safetensors checkpoint and a generated model card to a Hub repo",
        description="Creates the repo if needed and uploads CKPT plus README.md in one commit; prints a "
                    "registry entry (repo, file, commit, sha256, size) to register it by name.")
    p.add_argument("ckpt", metavar="CKPT", help="a comfyui-pal .safetensors checkpoint")
    p.add_argument("--repo", required=True, metavar="ID", help="Hub repo id, e.g. your-name/pal-finetuned")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="Hub write token (default: HF_TOKEN / hf login)")
    p.add_argument("--model-card", default=None, metavar="FILE", help="use this README.md instead of a generated one")
    p.add_argument("--metrics", default=None, metavar="JSON", help="metrics JSON to include in the generated card")
    p.add_argument("--path-in-repo", default=None, help="file name in the repo (default: the checkpoint's name)")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=_push)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pal")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
