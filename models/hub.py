"""Resolve, cache and download models: THE resolver (`resolve`) and detector cache (`load_cached`).

- `resolve(name_or_path, model_dirs=[...], download=...)` -> a local, verified checkpoint file:
  an existing path; a file name in one of the host's `model_dirs`; a registry name (bundled file,
  Hub entry, or the authors' Google Drive file, downloaded, verified and converted on first use);
  or a Hub reference `hf:owner/repo[@revision][/path/in/repo.safetensors]` (a bare `owner/repo`
  too, when it is neither a file nor a registry name).
- `models.cache.load_cached(ref, device=..., dtype=...)` -> a Detector from a small LRU (a module
  of its own: it imports detector, which imports this one).
- `list_models(model_dirs)` -> name/source/size/present/licence rows for dropdowns and the CLI.
- Trust on first use: each models folder keeps `pal-models.lock.json` with the sha256 of every file
  this project downloaded or converted there (and, for Drive files, of the original); later loads and
  `pal models verify` check against it. Hub references are pinned there to a commit.

Rooms: `registry.py` (entries, source kinds, user registry, locations), `hfhub.py` (Hub entries and
hf: references), `gdrive.py` (the Drive client and the download -> verify -> convert pipeline),
`lockfile.py` (TOFU records), `publish.py` (card, push), `cache.py` (`load_cached`); this module is
the one resolver over all of them, plus `download`, `verify` and `list_models`.
Offline (`PAL_OFFLINE=1`, `HF_HUB_OFFLINE=1`): no request at all; cached files still load.
huggingface_hub and torch are imported only by the functions that need them, so importing this
module (and ComfyUI start-up) never touches the network.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import registry as _registry
from .gdrive import fetch, manual_route
from .hfhub import (  # noqa: F401 - DEFAULT_ENDPOINT and parse_hf_ref are public
    _BARE_REPO_RE,
    DEFAULT_ENDPOINT,
    _cache_candidates,
    _check,
    _find_cached,
    _pin_text,
    _url,
    _where_to_put,
    parse_hf_ref,
)
from .hfhub import download_entry as _download  # a module global, so tests can stub the network
from .hfhub import resolve_ref as _resolve_hf
from .lockfile import check_lock as _check_lock
from .lockfile import now as _now
from .lockfile import read_lock  # noqa: F401 - read_lock is public
from .lockfile import update_lock as _update_lock
from .publish import HubPushError, make_model_card, push, read_card_metadata  # noqa: F401 - public API
from .registry import (  # noqa: F401 - re-exported: the public names of the old single module
    BUILTIN_REGISTRY,
    ENV_OVERRIDES,
    LOCK_NAME,
    SOURCES,
    ChecksumMismatchError,
    HubDownloadError,
    ModelNotAvailableError,
    RegistryError,
    UnknownModelError,
    drive_link,
    env_key,
    file_sha256,
    get_registry,
    hf_cache_dir,
    human_size,
    is_offline,
    search_dirs,
    user_models_dir,
    user_registry_path,
)
from .registry import lookup as _lookup

__all__ = [
    "ChecksumMismatchError",
    "HubDownloadError",
    "HubPushError",
    "ModelNotAvailableError",
    "RegistryError",
    "UnknownModelError",
    "download",
    "file_sha256",
    "get_registry",
    "hf_cache_dir",
    "list_models",
    "make_model_card",
    "parse_hf_ref",
    "push",
    "read_lock",
    "resolve",
    "user_models_dir",
    "user_registry_path",
    "verify",
]

PACKAGE_MODELS_DIR = _registry.PACKAGE_MODELS_DIR
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_human = human_size
ProgressArg = bool | Callable[[int, int | None], Any] | None


# ----------------------------------------------------------------------------------- helpers
def _as_dirs(model_dirs, models_dir=None) -> list[Path]:
    """model_dirs (one path or a list; the first is where downloads go) -> a list of Paths."""
    if model_dirs is None or isinstance(model_dirs, (str, os.PathLike)):
        model_dirs = [model_dirs] if model_dirs else []
    dirs = [Path(d).expanduser() for d in model_dirs if d]
    if models_dir:  # the older single-folder keyword
        dirs.insert(0, Path(models_dir).expanduser())
    return list(dict.fromkeys(dirs))


# ---------------------------------------------------------------------------------- resolving
def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES) or text.startswith("~")


def resolve(
    name_or_path: str | os.PathLike,
    model_dirs: str | os.PathLike | list | tuple | None = None,
    download: bool = False,
    progress: ProgressArg = None,
    *,
    token: str | bool | None = None,
    allow_pth: bool = False,
    keep_source: bool = False,
    models_dir: str | Path | None = None,
) -> Path:
    """THE model resolver: a path, a file name in one of `model_dirs`, a registry name or a Hub
    reference -> a local, verified checkpoint file. Every host calls this (or `load_cached`).

    `model_dirs`: the host's model folders (ComfyUI/A1111 `models/pal`), searched first; downloads
    go into the first one (else the user models folder, or the Hub cache for Hub files).
    `download=False` never touches the network and says what to run instead. `progress`:
    None/True = a bar on stderr, False = silent, or a callback(done_bytes, total_bytes).
    `allow_pth`: accept a .pth from a Hub repo (loaded with weights_only=True later); TorchScript is
    never taken from the Hub. Raises ModelNotAvailableError (a ValueError) naming the fix.
    """
    dirs = _as_dirs(model_dirs, models_dir)
    text = os.fspath(name_or_path)
    hf = parse_hf_ref(text)
    if hf is not None:
        return _resolve_hf(hf, dirs, download=download, token=token, progress=progress, allow_pth=allow_pth)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute():
        for d in dirs:
            if (d / path).is_file():
                return d / path
    registry = get_registry()
    entry = _lookup(registry, str(text))
    if entry is not None:
        return _resolve_entry(entry, download=download, dirs=dirs, token=token, progress=progress,
                              keep_source=keep_source)
    if _BARE_REPO_RE.match(text) and path.suffix.lower() not in _CHECKPOINT_SUFFIXES and not path.exists():
        return _resolve_hf(parse_hf_ref("hf:" + text), dirs, download=download, token=token, progress=progress,
                           allow_pth=allow_pth)
    names = ", ".join(sorted(registry))
    if path.is_dir():
        raise UnknownModelError(f"{path} is a directory; pass a checkpoint file (.safetensors, .pth, .pt)")
    if _looks_like_path(str(text)):
        raise UnknownModelError(
            f"checkpoint file not found: {path.absolute()}. Check the path, or use a registered model "
            f"name ({names}) or a Hub reference hf:owner/repo.")
    raise UnknownModelError(
        f"{text!r} is neither an existing file nor a registered model name. Registered names: {names} "
        "(`pal models list` shows them); pass a file path to use your own checkpoint, or hf:owner/repo for a "
        "Hub repo.")


def _resolve_entry(entry: dict, *, download: bool, dirs: list[Path], token=None, progress: ProgressArg = None,
                   keep_source: bool = False, trust_torchscript: bool = False, torchscript: bool = False) -> Path:
    name = entry["name"]
    if entry["source"] in ("bundled", "local"):
        path = Path(entry["path"]).expanduser()
        if entry["source"] == "bundled":
            path = PACKAGE_MODELS_DIR / path
        if not path.is_file():
            if entry["source"] == "bundled":
                raise ModelNotAvailableError(
                    f"the bundled model {name!r} is missing: expected the file {path}. Release packages "
                    "ship it; in a source checkout create it with the training export (see README, "
                    "'Training') or copy it there, or pass another checkpoint path or registry name "
                    "(`pal models list`).")
            raise ModelNotAvailableError(
                f"model {name!r} points to {path}, which does not exist (set in {user_registry_path()}); "
                "put the checkpoint there or fix the entry's 'path'.")
        problem = _check(path, entry)
        if problem:
            raise ChecksumMismatchError(f"{path} (model {name!r}) does not match its registry pin: {problem}.")
        return path

    # Hub or Drive entry. Files a user or host placed themselves are checked but never deleted.
    models_dir = dirs[0] if dirs else None
    for directory in search_dirs(dirs):
        candidate = directory / entry["filename"]
        if candidate.is_file():
            if entry["sha256"] is not None or entry["size"] is not None:
                problem = _check(candidate, entry)
                if problem:
                    raise ChecksumMismatchError(
                        f"{candidate} (model {name!r}) does not match the registry: {problem}. The file was "
                        f"left untouched: delete or move it and run `pal models download {name}`, or pass "
                        "the path itself to use it unverified.")
            else:
                _check_lock(candidate, name)  # TOFU: what we converted there must still be what we wrote
            return candidate
    if entry.get("repo_id") and (entry["source"] == "hub" or entry["hub_copy"]):
        cached, note = _find_cached(entry)
        if cached is not None:
            return cached
    else:
        note = ""

    target = _where_to_put(entry, models_dir)
    if entry["source"] == "gdrive" and not entry["hub_copy"]:
        if is_offline():
            raise ModelNotAvailableError(
                f"model {name!r} is not available offline (PAL_OFFLINE / HF_HUB_OFFLINE is set) and no local "
                f"copy exists, so nothing was requested. {manual_route(entry, target)}")
        if not download:
            raise ModelNotAvailableError(
                f"model {name!r} is not downloaded yet. Run `pal models download {name}` (it fetches the "
                f"authors' file, verifies and converts it). {manual_route(entry, target)}")
        return fetch(entry, target.parent, progress=progress, keep_source=keep_source,
                     trust_torchscript=trust_torchscript, torchscript=torchscript)
    if entry["sha256"] is None:
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not published on the Hub yet (no pinned sha256 in the registry), so "
            f"it cannot be downloaded. Put the converted file {entry['filename']} at {target} (convert the "
            f"official checkpoint with `pal convert`), or, for a mirror you trust, set its sha256 with "
            f"PAL_HUB_SHA256_{env_key(name)} or in {user_registry_path()}.")
    if is_offline():
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not available offline (HF_HUB_OFFLINE / PAL_OFFLINE is set) and no local "
            f"copy exists. Put the file {entry['filename']}{_pin_text(entry)} at {target} (download it from "
            f"{_url(entry)} on a connected machine), or unset HF_HUB_OFFLINE and run "
            f"`pal models download {name}`.")
    if not download:
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not downloaded. Run `pal models download {name}`, or put the file "
            f"{entry['filename']}{_pin_text(entry)} at {target}; it is published at {_url(entry)}.")
    return _download(entry, models_dir=models_dir, token=token, progress=True if progress is None else progress)


# ------------------------------------------------------------------------------- download / verify
def download(
    name: str,
    model_dirs: str | os.PathLike | list | tuple | None = None,
    *,
    token: str | bool | None = None,
    progress: ProgressArg = None,
    keep_source: bool = False,
    trust_torchscript: bool = False,
    torchscript: bool = False,
    allow_pth: bool = False,
    update: bool = False,
    models_dir: str | Path | None = None,
) -> Path:
    """`pal models download`: a registry name or hf: reference into the first of `model_dirs` (else
    the user models folder / Hub cache). A copy already in the Hub cache is copied, not downloaded."""
    dirs = _as_dirs(model_dirs, models_dir)
    hf = parse_hf_ref(name)
    if hf is None and _BARE_REPO_RE.match(name) and _lookup(get_registry(), name) is None:
        hf = parse_hf_ref("hf:" + name)
    if hf is not None:
        return _resolve_hf(hf, dirs, download=True, token=token, progress=progress, allow_pth=allow_pth, update=update)
    registry = get_registry()
    entry = _lookup(registry, name)
    if entry is None:
        raise UnknownModelError(f"{name!r} is not a registered model name; registered: {', '.join(sorted(registry))}"
                                " (or use hf:owner/repo)")
    if torchscript:
        target = _where_to_put(entry, dirs[0] if dirs else None)
        if target.is_file():
            _check_lock(target, entry["name"])
            return target
        return fetch(entry, target.parent, progress=progress, keep_source=keep_source,
                     trust_torchscript=trust_torchscript, torchscript=True)
    path = _resolve_entry(entry, download=True, dirs=dirs, token=token, progress=progress, keep_source=keep_source,
                          trust_torchscript=trust_torchscript)
    if dirs and entry["source"] in ("hub", "gdrive"):
        want = dirs[0] / entry["filename"]
        if path != want:
            want.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{want.name}.", suffix=".tmp", dir=want.parent)
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)
                os.replace(tmp, want)
            finally:
                Path(tmp).unlink(missing_ok=True)
            rec = read_lock(path.parent)["files"].get(path.name)
            if rec:
                _update_lock(want.parent, "files", want.name, dict(rec, copied_from=str(path), recorded=_now()))
            path = want
    return path


def verify(model_dirs: str | os.PathLike | list | tuple | None = None) -> list[dict]:
    """`pal models verify`: re-hash every file recorded in the lock files of `model_dirs` + the user
    models folder. One row per record: {"dir", "key", "path", "ok", "problem"}."""
    rows = []
    for d in search_dirs(_as_dirs(model_dirs)):
        lock = read_lock(d)
        for section in ("files", "refs"):
            for key, rec in sorted(lock[section].items()):
                path = d / key if section == "files" else Path(rec.get("file", ""))
                if not path.is_file():
                    ok, problem = False, "missing"
                else:
                    actual = file_sha256(path)
                    ok = actual == rec.get("sha256")
                    problem = None if ok else f"sha256 {actual}, recorded {rec.get('sha256')}"
                rows.append({"dir": str(d), "key": key, "model": rec.get("model") or key, "path": str(path),
                             "ok": ok, "problem": problem, "sha256": rec.get("sha256"),
                             "original_sha256": rec.get("original_sha256")})
    return rows


# ------------------------------------------------------------------------------------ listing
def _present_path(entry: dict, dirs: list[Path]) -> Path | None:
    """Cheap presence check (exists, size matches when pinned); no hashing."""
    if entry["source"] in ("bundled", "local"):
        p = Path(entry["path"]).expanduser()
        p = PACKAGE_MODELS_DIR / p if entry["source"] == "bundled" else p
        return p if p.is_file() else None
    size = entry.get("size")
    candidates = [d / entry["filename"] for d in search_dirs(dirs)]
    if entry.get("repo_id"):
        primary, others = _cache_candidates(entry)
        candidates += ([primary] if primary else []) + (others if entry["sha256"] else [])
    for p in candidates:
        if p.is_file() and (size is None or p.stat().st_size == size):
            return p
    return None


def list_models(model_dirs: str | os.PathLike | list | tuple | None = None, *,
                models_dir: str | Path | None = None, include_user_registry: bool = True) -> list[dict]:
    """One dict per registered model, then per Hub reference already downloaded (from the lock files):
    name, source, size, present, path (where it is, or where it would go), license, license_notice,
    description, file_id / repo_id / revision / filename / sha256, published, architecture."""
    dirs = _as_dirs(model_dirs, models_dir)
    rows = []
    for name, entry in get_registry(include_user=include_user_registry).items():
        found = _present_path(entry, dirs)
        if found is not None:
            path = found
        elif entry["source"] in ("hub", "gdrive"):
            path = _where_to_put(entry, dirs[0] if dirs else None)
        else:
            path = Path(entry["path"]).expanduser()
            path = PACKAGE_MODELS_DIR / path if entry["source"] == "bundled" else path
        size = entry["size"] if entry["size"] is not None else (found.stat().st_size if found else
                                                                 entry.get("size_approx"))
        rows.append({
            "name": name, "source": entry["source"], "size": size, "present": found is not None, "path": str(path),
            "file_id": entry.get("file_id"), "repo_id": entry.get("repo_id"), "revision": entry.get("revision"),
            "filename": entry.get("filename"), "sha256": entry["sha256"], "published": bool(entry.get("published")),
            "architecture": entry.get("architecture") or entry.get("preset"), "license": entry.get("license"),
            "license_notice": entry.get("license_notice"), "homepage": entry.get("homepage"),
            "description": entry.get("description"), "overridden": entry["overridden"],
        })
    seen = set()
    for d in search_dirs(dirs):
        try:
            refs = read_lock(d)["refs"]
        except RegistryError:
            continue
        for ref, rec in sorted(refs.items()):
            if ref in seen or Path(rec.get("file", "")).suffix == "" or not Path(rec["file"]).is_file():
                continue
            if re.search(r"@[0-9a-f]{40}/", ref) and any(r != ref and v.get("file") == rec["file"]
                                                           for r, v in refs.items()):
                continue  # the commit-pinned alias of a reference the user typed
            seen.add(ref)
            rows.append({"name": ref, "source": "hf", "size": rec.get("size"), "present": True, "path": rec["file"],
                         "file_id": None, "repo_id": rec.get("repo"), "revision": rec.get("commit"),
                         "filename": rec.get("path"), "sha256": rec.get("sha256"), "published": True,
                         "architecture": None, "license": None, "license_notice": None, "homepage": None,
                         "description": f"Hub model {rec.get('repo')} pinned to {rec.get('commit', '')[:12]}",
                         "overridden": []})
    return rows
