"""Publishing: the model card (README.md) generated from a checkpoint's metadata, and `push`.

The card's YAML front matter carries a `comfyui_pal:` block (a JSON flow mapping, valid YAML) with
the file name, sha256, size, format, architecture and calibration/threshold metadata:
`pal models download hf:owner/repo` reads exactly that block to pick and verify the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .registry import file_sha256

__all__ = ["HubPushError", "CARD_KEY", "make_model_card", "push", "read_card_metadata"]

CARD_KEY = "comfyui_pal"


class HubPushError(ValueError):
    """`push` could not upload (bad checkpoint, authentication, Hub error)."""


def read_card_metadata(card_text: str) -> dict | None:
    """The `comfyui_pal:` block of a model card's front matter, or None (no card / not ours)."""
    m = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", card_text or "", re.S)
    if not m:
        return None
    for line in m.group(1).splitlines():
        if line.startswith(f"{CARD_KEY}:"):
            try:
                value = json.loads(line[len(CARD_KEY) + 1:].strip())
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


# ----------------------------------------------------------------------------- model card/push
def _inspect_checkpoint(path: Path) -> dict:
    """Metadata (format/config/provenance) and tensor statistics of a safetensors checkpoint,
    read from the header only."""
    if not path.is_file():
        raise HubPushError(f"{path}: no such checkpoint file")
    if path.suffix != ".safetensors":
        raise HubPushError(f"{path}: only .safetensors checkpoints are published; convert it first with "
                           f"`pal convert {path.name} {path.stem}.safetensors`")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            params, dtypes, count = 0, {}, 0
            for key in f.keys():
                sl = f.get_slice(key)
                n = 1
                for d in sl.get_shape():
                    n *= int(d)
                params += n
                count += 1
                dt = str(sl.get_dtype())
                dtypes[dt] = dtypes.get(dt, 0) + n
    except HubPushError:
        raise
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise HubPushError(f"{path}: not a readable safetensors file ({e})") from e

    def parse(key: str):
        text = meta.get(key)
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    extra = {k: parse(k) for k in meta if k not in ("format", "config", "provenance")}
    return {"format": meta.get("format"), "config": parse("config"), "provenance": parse("provenance") or {},
            "params": params, "tensors": count, "dtypes": dtypes, "extra": extra}


def card_block(info: dict, filename: str, sha: str, size: int) -> dict:
    """What `pal models download hf:...` reads back: file, pins, architecture, calibration."""
    config = info["config"] if isinstance(info["config"], dict) else {}
    bb = config.get("backbone") or {}
    head = config.get("decode_head") or {}
    block = {"filename": filename, "sha256": sha, "size": size, "format": info["format"],
             "architecture": {"name": config.get("name"), "backbone": bb.get("type"),
                              "decode_head": head.get("type"), "num_classes": head.get("num_classes")}}
    for key in ("calibration", "threshold"):  # training's calibration metadata, when the file has it
        if info["extra"].get(key) is not None:
            block[key] = info["extra"][key]
        elif isinstance(info["provenance"], dict) and info["provenance"].get(key) is not None:
            block[key] = info["provenance"][key]
    return block


def _yaml_scalar(value) -> str:
    return json.dumps(value)  # a JSON string is a valid quoted YAML scalar


def _describe_config(config: dict) -> list[tuple[str, str]]:
    rows = []
    bb = config.get("backbone") or {}
    if bb:
        keys = ("model_name", "embed_dims", "depths", "channels", "num_heads", "window_size", "pretrain_img_size")
        bits = [f"{k}={json.dumps(bb[k])}" for k in keys if k in bb]
        rows.append(("backbone", f"{bb.get('type', '?')} ({', '.join(bits)})" if bits else str(bb.get("type"))))
    head = config.get("decode_head") or {}
    if head:
        rows.append(("decode head", f"{head.get('type', '?')} (channels={head.get('channels')}, "
                                    f"num_classes={head.get('num_classes')})"))
    aux = config.get("auxiliary_head")
    rows.append(("auxiliary head", f"{aux.get('type', '?')}" if isinstance(aux, dict) else "none"))
    pre = config.get("preprocess") or {}
    if pre:
        size = pre.get("size")
        rows.append(("input", f"{'x'.join(map(str, size)) if size else '?'} RGB, {pre.get('resize', '?')} resize, "
                              f"mean {pre.get('mean')}, std {pre.get('std')} (0..255 scale)"))
    if config.get("classes"):
        rows.append(("classes", ", ".join(map(str, config["classes"]))))
    return rows


def make_model_card(
    ckpt_path: str | Path,
    repo_id: str | None = None,
    *,
    filename: str | None = None,
    name: str | None = None,
    description: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """A Hub README.md (YAML front matter + Markdown) generated from the checkpoint's safetensors
    metadata ("format", "config", "provenance"), its sha256/size and optional `metrics`
    ({name: value} or {split: {name: value}}). Training's export may pass its own metrics/description."""
    path = Path(ckpt_path).expanduser()
    info = _inspect_checkpoint(path)
    config = info["config"] if isinstance(info["config"], dict) else {}
    prov = info["provenance"] if isinstance(info["provenance"], dict) else {"provenance": info["provenance"]}
    filename = filename or path.name
    name = name or (repo_id.split("/")[-1] if repo_id else path.stem)
    sha, size = file_sha256(path), path.stat().st_size
    license = license or prov.get("license") or "other"
    all_tags = ["comfyui-pal", "pal4vst", "perceptual-artifacts", "artifact-detection", "image-segmentation",
                "safetensors"] + [t for t in (tags or []) if t]
    front = ["---", f"license: {_yaml_scalar(license)}", "library_name: comfyui-pal",
             "pipeline_tag: image-segmentation", "tags:"] + [f"- {_yaml_scalar(t)}" for t in dict.fromkeys(all_tags)]
    if license == "other":
        front.append('license_name: "see-model-card"')
    front.append(f"{CARD_KEY}: {json.dumps(card_block(info, filename, sha, size), sort_keys=True)}")
    front.append("---")

    lines = front + ["", f"# {name}", ""]
    lines.append(description or prov.get("description") or (
        "Perceptual-artifact segmentation model in the PAL4VST format (Zhang et al., ICCV 2023): it predicts, "
        "per pixel, where a generated or edited image shows visible artifacts. Packaged for "
        "[comfyui-pal](https://github.com/comfyui-pal/comfyui-pal) (ComfyUI, AUTOMATIC1111, Python, CLI)."))
    dtype_text = ", ".join(f"{k} ({v:,} values)" for k, v in sorted(info["dtypes"].items())) or "?"
    lines += ["", "## Model", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _describe_config(config)]
    lines += [f"| parameters | {info['params']:,} in {info['tensors']} tensors |", f"| dtype | {dtype_text} |",
              f"| format | {info['format'] or 'unknown (no comfyui-pal metadata)'} |"]
    lines += ["", "## File", "", "| file | size | sha256 |", "|---|---|---|",
              f"| `{filename}` | {size:,} bytes | `{sha}` |"]
    if metrics:
        lines += ["", "## Evaluation", ""]
        flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
        if flat:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items()]
        for split, values in nested.items():
            lines += ["", f"**{split}**", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in values.items()]
    if prov:
        lines += ["", "## Provenance", "", "| key | value |", "|---|---|"]
        for k, v in prov.items():
            text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
            lines.append(f"| {k} | {str(text).replace('|', '/')} |")
    repo_hint = repo_id or "<repo-id>"
    size_cfg = (config.get("preprocess") or {}).get("size")
    work_size = "x".join(map(str, size_cfg)) if size_cfg else "the working size"
    lines += [
        "", "## Usage", "",
        "```bash",
        f"pal models download hf:{repo_hint}        # verified against the sha256 above, pinned to a commit",
        f"pal detect image.png --model hf:{repo_hint}",
        "```",
        "",
        "```python",
        "from comfyui_pal.models import load_detector",
        "",
        f'det = load_detector("hf:{repo_hint}")',
        'd = det.detect("image.png")   # d.prob, d.mask(0.5), d.par',
        "```",
        "",
        f"In ComfyUI type `hf:{repo_hint}` into the PAL Model Loader's `hub_id`; in AUTOMATIC1111/Forge "
        "use it as the model (with downloading allowed). Or put the file in `models/pal/` yourself.",
        "", "## Limitations", "",
        "The network only marks where artifacts are likely; it does not judge overall quality. It sees "
        f"every image resized to {work_size}, so very small defects in large images can be missed "
        "(crop or zoom in first). Check the provenance above for the training data.",
        "", "## Citation", "",
        "```bibtex",
        "@inproceedings{zhang2023perceptual,",
        "  title     = {Perceptual Artifacts Localization for Image Synthesis Tasks},",
        "  author    = {Zhang, Lingzhi and Xu, Zhengjie and Barnes, Connelly and Zhou, Yuqian and Liu, Qing and",
        "               Zhang, He and Amirghodsi, Sohrab and Lin, Zhe and Shechtman, Eli and Shi, Jianbo},",
        "  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},",
        "  year      = {2023}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def push(
    ckpt_path: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    model_card: str | os.PathLike | None = None,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> dict:
    """Upload a safetensors checkpoint and its model card (README.md) to a Hub model repo in one
    commit, creating the repo if needed. `model_card`: Markdown text, a path to a file, or None
    (generated by make_model_card). Returns the commit and a ready-to-paste registry entry."""
    ckpt = Path(ckpt_path).expanduser()
    info = _inspect_checkpoint(ckpt)
    if not isinstance(info["config"], dict):
        raise HubPushError(
            f"{ckpt}: has no comfyui-pal 'config' metadata, so loaders could not build the network from it; "
            "export it with comfyui_pal.models.save_safetensors or `pal convert`")
    if model_card is None:
        card = make_model_card(ckpt, repo_id=repo_id, filename=path_in_repo, metrics=metrics)
    elif isinstance(model_card, os.PathLike) or ("\n" not in str(model_card) and Path(str(model_card)).is_file()):
        card = Path(model_card).read_text(encoding="utf-8")
    else:
        card = str(model_card)
    filename = path_in_repo or ckpt.name
    sha, size = file_sha256(ckpt), ckpt.stat().st_size
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError:
        raise HubPushError("pushing needs the huggingface_hub package (pip install huggingface_hub)") from None
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(ckpt)),
                        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8"))],
            commit_message=commit_message or f"Upload {filename} with comfyui-pal",
            revision=revision, repo_type="model")
    except Exception as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubPushError(
                f"the Hub refused the upload to {repo_id} (HTTP {status}): log in with `hf auth login`, set "
                "HF_TOKEN or pass --token, with write access to that namespace") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HubPushError(f"upload of {ckpt} to {repo_id} failed: {type(e).__name__}: {first}") from e
    oid = getattr(commit, "oid", None)
    return {
        "repo_id": repo_id, "filename": filename, "revision": oid, "sha256": sha, "size": size,
        "private": bool(private), "repo_url": str(repo_url), "commit_url": getattr(commit, "commit_url", None),
        "registry_entry": {"repo_id": repo_id, "filename": filename, "revision": oid, "sha256": sha, "size": size},
    }
