"""`pal models list|download|verify|path` and `pal push`: the registry, Google Drive and the Hub.

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


def _dirs(args) -> list[str]:
    return [args.models_dir] if getattr(args, "models_dir", None) else []


def _state(r: dict) -> str:
    if r["present"]:
        return "present"
    if r["source"] in ("bundled", "local"):
        return "missing"
    if r["source"] == "hub" and not r["published"]:
        return "not published"
    return "not downloaded"


def _models_list(args) -> int:
    from ..models import hub

    try:
        rows = hub.list_models(model_dirs=_dirs(args))
    except ValueError as e:
        _err(str(e))
        return 1
    if args.table:
        width = max(len(r["name"]) for r in rows) if rows else 4
        for r in rows:
            size = hub.human_size(r["size"]) if r["size"] is not None else "-"
            if r["source"] == "gdrive" and not r["present"]:
                size = "~" + size
            licence = r.get("license_notice") or r.get("license") or ""
            print(f"{r['name']:<{width}}  {r['source']:<7}  {size:>9}  {_state(r):<14}  {r['path']}"
                  + (f"\n{'':<{width}}  licence: {licence}" if licence else ""))
        return 0
    for r in rows:
        _emit({k: r.get(k) for k in ("name", "source", "size", "present", "path", "license", "license_notice",
                                     "file_id", "repo_id", "revision", "filename", "sha256", "published",
                                     "description")})
    return 0


def _models_download(args) -> int:
    from ..models import hub

    failed = 0
    for name in args.names:
        try:
            path = hub.download(name, model_dirs=_dirs(args), token=args.token, progress=False if args.quiet else None,
                                keep_source=args.keep_source, trust_torchscript=args.trust_torchscript,
                                torchscript=args.torchscript, allow_pth=args.allow_pth, update=args.update)
        except ValueError as e:
            _err(str(e))
            failed += 1
            continue
        _emit({"name": name, "path": str(path), "size": path.stat().st_size, "sha256": hub.file_sha256(path)})
    return 1 if failed else 0


def _models_verify(args) -> int:
    from ..models import hub

    try:
        rows = hub.verify(model_dirs=_dirs(args))
    except ValueError as e:
        _err(str(e))
        return 1
    for r in rows:
        _emit(r)
        if not r["ok"]:
            _err(f"{r['path']}: {r['problem']} (delete it and run `pal models download {r['model']}`)")
    if not rows:
        _err("no downloaded models recorded in " + ", ".join(str(d) for d in hub._search_dirs(
            hub._as_dirs(_dirs(args)))))
    return 0 if all(r["ok"] for r in rows) else 1


def _models_path(args) -> int:
    from ..models import hub

    try:
        path = hub.resolve(args.name, model_dirs=_dirs(args), download=args.download,
                           progress=False if args.quiet else None)
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
    _err(f"uploaded {result['filename']} to {result['repo_id']} ({result['commit_url']}); on another machine: "
         f"`pal models download hf:{result['repo_id']}`")
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
                            "downloads go there (default: the user models folder / the Hub cache)")

    p = msub.add_parser("list", help="every registered model: source, size, present?, path, licence (JSON lines)")
    dir_arg(p)
    p.add_argument("--table", action="store_true", help="a human-readable table instead of JSON lines")
    p.set_defaults(func=_models_list)

    p = msub.add_parser(
        "download", help="download, verify and cache registered models or Hub references",
        description="NAME is a registry name (e.g. pal4vst-unified: the authors' file from Google Drive, "
                    "verified and converted to safetensors) or hf:owner/repo[@revision][/file.safetensors].")
    p.add_argument("names", nargs="+", metavar="NAME")
    dir_arg(p)
    p.add_argument("--token", default=None, help="Hub token for private/gated repos (default: HF_TOKEN / hf login)")
    p.add_argument("--keep-source", action="store_true",
                   help="keep the downloaded original (.pth) next to the converted file")
    p.add_argument("--torchscript", action="store_true",
                   help="use the entry's TorchScript file instead of the .pth (needs --trust-torchscript; only "
                        "its weights are kept)")
    p.add_argument("--trust-torchscript", action="store_true", help="allow reading a TorchScript archive")
    p.add_argument("--allow-pth", action="store_true",
                   help="accept a .pth from a Hub repo (loaded with weights_only=True); default safetensors only")
    p.add_argument("--update", action="store_true",
                   help="hf: references: resolve the revision again instead of the commit pinned at first download")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_models_download)

    p = msub.add_parser("verify", help="re-check the sha256 of every downloaded model against the lock file")
    dir_arg(p)
    p.set_defaults(func=_models_verify)

    p = msub.add_parser("path", help="print the local file of a model name, hf: reference or path "
                                     "(no download unless --download)")
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
