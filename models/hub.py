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

Rooms: `registry.py` (entries, source kinds, user registry), `gdrive.py` (the Drive client and the
download -> verify -> convert pipeline), `lockfile.py` (TOFU records), `publish.py` (card, push);
this module resolves, caches and downloads (Hub entries and hf: references).
Offline (`PAL_OFFLINE=1`, `HF_HUB_OFFLINE=1`): no request at all; cached files still load.
huggingface_hub and torch are imported only by the functions that need them, so importing this
module (and ComfyUI start-up) never touches the network.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import registry as _registry
from .gdrive import fetch, manual_route
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
    user_models_dir,
    user_registry_path,
)
from .registry import is_torchscript_file as _is_torchscript_file
from .registry import lookup as _lookup
from .registry import say as _say

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
DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_PTH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
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


def _search_dirs(dirs: list[Path]) -> list[Path]:
    """The host's folders, then the CLI's user models folder (always searched)."""
    user = user_models_dir()
    return dirs + ([user] if user not in dirs else [])


def _check(path: Path, entry: dict) -> str | None:
    """None if the file matches the entry's size/sha256 pin, else a description of the mismatch."""
    size = path.stat().st_size
    if entry.get("size") is not None and size != entry["size"]:
        return f"its size is {size} bytes, expected {entry['size']} (truncated or a different file)"
    if entry.get("sha256"):
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            return f"its sha256 is {actual}, expected {entry['sha256']} (corrupted or a different version)"
    return None



# ----------------------------------------------------------------------------- cache lookups
def _repo_cache_dir(entry: dict) -> Path:
    return hf_cache_dir() / ("models--" + entry["repo_id"].replace("/", "--"))


def _cache_candidates(entry: dict) -> tuple[Path | None, list[Path]]:
    """(file at the pinned revision, same file name in other cached snapshots). File system only."""
    repo_dir = _repo_cache_dir(entry)
    if not repo_dir.is_dir():
        return None, []
    revision = entry.get("revision") or "main"
    commit = revision if _COMMIT_RE.match(revision) else None
    if commit is None:
        ref = repo_dir / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else None
    primary = repo_dir / "snapshots" / commit / entry["filename"] if commit else None
    others = sorted(p / entry["filename"] for p in (repo_dir / "snapshots").glob("*")
                    if p.is_dir() and p.name != commit)
    return primary, [p for p in others if p.is_file()]


def _remove_cached(path: Path) -> None:
    """Delete a bad cached copy (blob + snapshot link) so the next call downloads it again.
    Only ever touches files inside the Hub cache."""
    cache = hf_cache_dir().resolve()
    blob = path.resolve()
    for p in (blob, path):
        try:
            if cache in p.resolve().parents or cache in p.parents:
                p.unlink(missing_ok=True)
        except OSError:
            pass


def _find_cached(entry: dict) -> tuple[Path | None, str]:
    """A verified copy in the Hub cache, or (None, note about a bad copy that was removed)."""
    primary, others = _cache_candidates(entry)
    note = ""
    if primary is not None and primary.is_file():
        problem = _check(primary, entry) if entry["sha256"] or entry["size"] else None
        if problem is None:
            return primary, ""
        _remove_cached(primary)
        note = f"The cached copy {primary} was rejected ({problem}) and removed. "
    if entry["sha256"]:  # the sha256 pins the bytes, so any snapshot that matches will do
        for p in others:
            if _check(p, entry) is None:
                return p, ""
    return None, note


def _where_to_put(entry: dict, models_dir: str | Path | None) -> Path:
    return (Path(models_dir).expanduser() if models_dir else user_models_dir()) / entry["filename"]


def _url(entry: dict) -> str:
    endpoint = (entry.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/{entry['repo_id']}/resolve/{entry.get('revision') or 'main'}/{entry['filename']}"


def _pin_text(entry: dict) -> str:
    parts = []
    if entry.get("sha256"):
        parts.append(f"sha256 {entry['sha256']}")
    if entry.get("size") is not None:
        parts.append(_human(entry["size"]))
    return f" ({', '.join(parts)})" if parts else ""



def _tqdm_class(progress):
    """None (huggingface_hub's own bar) for progress=True, else a silent bar that reports to the callback."""
    if progress is True:
        return None
    from tqdm.auto import tqdm

    callback = progress if callable(progress) else None

    class _ReportingTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            self._pal_done = kwargs.get("initial") or 0
            self._pal_total = kwargs.get("total")
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self._pal_done += n or 0
            if callback is not None:
                callback(self._pal_done, self._pal_total)
            return super().update(n)

    return _ReportingTqdm


def _download(entry: dict, *, models_dir, token, progress) -> Path:
    name = entry["name"]
    target = _where_to_put(entry, models_dir)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelNotAvailableError(
            f"downloading {name!r} needs the huggingface_hub package (pip install huggingface_hub); or put "
            f"{entry['filename']}{_pin_text(entry)} at {target} (from {_url(entry)}).") from None
    kwargs: dict[str, Any] = dict(
        repo_id=entry["repo_id"], filename=entry["filename"], revision=entry.get("revision") or "main",
        token=token, endpoint=entry.get("endpoint") or os.environ.get("HF_ENDPOINT") or None)
    if models_dir:
        Path(models_dir).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["local_dir"] = str(Path(models_dir).expanduser())
    else:
        kwargs["cache_dir"] = str(hf_cache_dir())
    bar = _tqdm_class(progress)
    if bar is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = bar
    if progress is True:
        _say(f"downloading {name} ({_human(entry.get('size'))}) from {_url(entry)} "
             f"into {kwargs.get('local_dir') or kwargs['cache_dir']}")
    t0 = time.monotonic()
    try:
        path = Path(hf_hub_download(**kwargs))
    except Exception as e:
        raise _hub_error(e, entry, target) from e
    problem = _check(path, entry)
    if problem:
        if models_dir:  # this call created the file (it was absent above): remove it and its metadata
            path.unlink(missing_ok=True)
            meta = Path(kwargs["local_dir"]) / ".cache" / "huggingface" / "download" / f"{entry['filename']}.metadata"
            meta.unlink(missing_ok=True)
        else:
            _remove_cached(path)
        raise ChecksumMismatchError(
            f"the download of {name!r} from {_url(entry)} was rejected: {problem}. The bad copy was "
            "removed, so a retry downloads it again; if this repeats, the repo (or mirror) serves a "
            "different file than the registry pins: check PAL_HUB_REPO_/PAL_HUB_REVISION_"
            f"{env_key(name)} and {user_registry_path()}.")
    if progress is True:
        _say(f"{name}: verified sha256, saved to {path} ({time.monotonic() - t0:.1f} s)")
    return path


def _hub_error(e: Exception, entry: dict, target: Path) -> ModelNotAvailableError:
    """huggingface_hub exception -> a message naming the repo/revision/file and the fix.
    Matched by class name so it works across huggingface_hub versions."""
    kinds = {cls.__name__ for cls in type(e).__mro__}
    name, repo, rev, fn = entry["name"], entry["repo_id"], entry.get("revision") or "main", entry["filename"]
    endpoint = entry.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    key = env_key(name)
    manual = f"Or put {fn}{_pin_text(entry)} at {target} yourself."
    if "GatedRepoError" in kinds:
        return HubDownloadError(
            f"model {name!r}: the Hub repo {repo} is gated. Accept its terms at {endpoint}/{repo} and "
            f"authenticate (`hf auth login`, HF_TOKEN, or --token). {manual}")
    if "RepositoryNotFoundError" in kinds:
        return HubDownloadError(
            f"model {name!r}: the Hub repo {repo!r} was not found at {endpoint} (or it is private and no "
            f"valid token was given). Check the repo id (override with PAL_HUB_REPO_{key} or in "
            f"{user_registry_path()}) and your token (HF_TOKEN / `hf auth login` / --token). {manual}")
    if "RevisionNotFoundError" in kinds:
        return HubDownloadError(
            f"model {name!r}: revision {rev!r} does not exist in the Hub repo {repo}. Set an existing "
            f"branch or commit with PAL_HUB_REVISION_{key} or in {user_registry_path()}. {manual}")
    if "LocalEntryNotFoundError" in kinds or "OfflineModeIsEnabled" in kinds:
        return ModelNotAvailableError(
            f"model {name!r}: could not reach {endpoint} to download {fn} and no cached copy exists "
            f"({type(e).__name__}). Check the network / HF_ENDPOINT (set HF_HUB_OFFLINE=1 to fail fast). "
            f"{manual}")
    if "EntryNotFoundError" in kinds:
        return HubDownloadError(
            f"model {name!r}: the file {fn!r} does not exist in the Hub repo {repo} at revision {rev!r}. "
            f"Fix the filename (PAL_HUB_FILENAME_{key} or {user_registry_path()}) or the revision. {manual}")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return HubDownloadError(
            f"model {name!r}: the Hub refused access to {repo} (HTTP {status}); check your token "
            f"(HF_TOKEN / `hf auth login` / --token). {manual}")
    if isinstance(e, OSError) and "HfHubHTTPError" not in kinds:
        return HubDownloadError(f"model {name!r}: download failed ({type(e).__name__}: {e}). {manual}")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return HubDownloadError(f"model {name!r}: download from {endpoint} failed: {first}. {manual}")



# ---------------------------------------------------------------------------------- resolving
def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES) or text.startswith("~")


_HF_REF_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/\s@]+))?(?:/(?P<path>\S+))?$")
_BARE_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_hf_ref(text: str) -> dict | None:
    """'hf:owner/repo[@revision][/path/in/repo]' -> {"repo", "revision", "path", "ref"}; else None."""
    if not isinstance(text, str):
        return None
    body = text[3:] if text.startswith("hf:") else text[7:] if text.startswith("hf-hub:") else None
    if body is None:
        return None
    m = _HF_REF_RE.match(body.strip())
    if not m:
        raise UnknownModelError(f"{text!r}: not a Hub reference; write hf:owner/repo[@revision][/file.safetensors]")
    repo, rev, path = m.group("repo"), m.group("rev"), m.group("path")
    ref = f"hf:{repo}" + (f"@{rev}" if rev else "") + (f"/{path}" if path else "")
    return {"repo": repo, "revision": rev, "path": path, "ref": ref}


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
    for directory in _search_dirs(dirs):
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


# -------------------------------------------------------------------------- Hub references
def _ref_records(dirs: list[Path], ref: str) -> list[tuple[Path, dict]]:
    out = []
    for d in _search_dirs(dirs):
        try:
            rec = read_lock(d)["refs"].get(ref)
        except RegistryError:
            continue
        if rec:
            out.append((d, rec))
    return out


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _resolve_hf(hf: dict, dirs: list[Path], *, download: bool, token, progress: ProgressArg, allow_pth: bool,
                update: bool = False) -> Path:
    """hf:owner/repo[@rev][/path] -> a verified local file. Pinned: the first download records the
    commit and sha256 in the lock file; later calls use that record with no request at all."""
    ref = hf["ref"]
    if not update:
        for _d, rec in _ref_records(dirs, ref):
            path = Path(rec["file"])
            if path.is_file():
                actual = file_sha256(path)
                if actual != rec["sha256"]:
                    raise ChecksumMismatchError(
                        f"{ref}: {path} does not match the sha256 recorded at download ({rec['sha256']}, now "
                        f"{actual}). Delete it and run `pal models download {ref}` again.")
                return path
    dest = dirs[0] if dirs else None
    where = str(dest) if dest else f"the Hub cache ({hf_cache_dir()})"
    if is_offline():
        raise ModelNotAvailableError(
            f"{ref} is not in the cache and offline mode is on (HF_HUB_OFFLINE / PAL_OFFLINE), so nothing was "
            f"requested. On a connected machine run `pal models download {ref}` and copy the file into {where}, "
            "or unset HF_HUB_OFFLINE.")
    if not download:
        raise ModelNotAvailableError(f"{ref} is not downloaded. Run `pal models download {ref}` (or allow "
                                     f"downloading in the host); it goes into {where}.")
    return _download_hf(hf, dest, token=token, progress=progress, allow_pth=allow_pth)


def _hf_error(e: Exception, hf: dict, what: str) -> ModelNotAvailableError:
    kinds = {cls.__name__ for cls in type(e).__mro__}
    ref, repo, rev = hf["ref"], hf["repo"], hf["revision"] or "main"
    endpoint = _hf_endpoint()
    if "GatedRepoError" in kinds:
        return HubDownloadError(f"{ref}: the Hub repo {repo} is gated: accept its terms at {endpoint}/{repo}, then "
                                "give a token (`hf auth login`, HF_TOKEN, or --token).")
    if "RepositoryNotFoundError" in kinds:
        return HubDownloadError(f"{ref}: the Hub repo {repo!r} was not found at {endpoint} (or it is private: give "
                                "a token with HF_TOKEN / `hf auth login` / --token). Check the spelling owner/repo.")
    if "RevisionNotFoundError" in kinds:
        return HubDownloadError(f"{ref}: revision {rev!r} does not exist in {repo}; use an existing branch, tag "
                                "or commit after '@'.")
    if "EntryNotFoundError" in kinds:
        return HubDownloadError(f"{ref}: the file {what!r} does not exist in {repo} at {rev!r}.")
    if "LocalEntryNotFoundError" in kinds or "OfflineModeIsEnabled" in kinds:
        return ModelNotAvailableError(f"{ref}: could not reach {endpoint} ({type(e).__name__}); check the network "
                                      "or HF_ENDPOINT (HF_HUB_OFFLINE=1 fails fast).")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return HubDownloadError(f"{ref}: the Hub refused access to {repo} (HTTP {status}); check your token.")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return HubDownloadError(f"{ref}: Hub request to {endpoint} failed: {type(e).__name__}: {first}")


def _pal_metadata_problem(path: Path) -> str | None:
    """None if `path` is a comfyui-pal safetensors file whose architecture we can build."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own type for a bad header
        return f"not a readable safetensors file ({e})"
    if "config" not in meta:
        return "it has no comfyui-pal architecture metadata ('config' missing); not a PAL checkpoint"
    try:
        config = json.loads(meta["config"])
        from .factory import resolve_config

        resolve_config(config)
    except Exception as e:  # noqa: BLE001 - any failure means "we cannot build this"
        return f"its architecture metadata is unknown to comfyui-pal ({e})"
    return None


def _download_hf(hf: dict, dest: Path | None, *, token, progress: ProgressArg, allow_pth: bool) -> Path:
    try:
        from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:
        raise ModelNotAvailableError(f"{hf['ref']}: downloading needs the huggingface_hub package "
                                     "(pip install huggingface_hub)") from None
    ref, repo = hf["ref"], hf["repo"]
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo, revision=hf["revision"] or "main")
    except Exception as e:  # noqa: BLE001 - mapped by class name across huggingface_hub versions
        raise _hf_error(e, hf, hf["path"] or "") from e
    commit = info.sha
    files = sorted(s.rfilename for s in (info.siblings or []))
    card = None
    path_in_repo = hf["path"]
    if path_in_repo is None:
        if "README.md" in files:
            try:
                card_path = hf_hub_download(repo, "README.md", revision=commit, token=token, endpoint=endpoint,
                                            cache_dir=str(hf_cache_dir()))
                card = read_card_metadata(Path(card_path).read_text(encoding="utf-8", errors="replace"))
            except Exception as e:  # noqa: BLE001
                raise _hf_error(e, hf, "README.md") from e
        if card and card.get("filename") in files:
            path_in_repo = card["filename"]
        else:
            wanted = (".safetensors",) + (_PTH_SUFFIXES if allow_pth else ())
            cands = [f for f in files if f.lower().endswith(wanted)]
            if not cands:
                raise ModelNotAvailableError(
                    f"{ref}: the repo {repo} at {commit[:12]} holds no PAL checkpoint (.safetensors) and its model "
                    "card has no comfyui_pal block (`pal push` writes one). Files: " + (", ".join(files) or "none"))
            if len(cands) > 1:
                raise ModelNotAvailableError(
                    f"{ref}: the repo {repo} holds more than one checkpoint: {', '.join(cands)}. Name one: "
                    + " or ".join(f"hf:{repo}{'@' + hf['revision'] if hf['revision'] else ''}/{c}" for c in cands))
            path_in_repo = cands[0]
    elif path_in_repo not in files:
        raise HubDownloadError(f"{ref}: the file {path_in_repo!r} does not exist in {repo} at "
                               f"{hf['revision'] or 'main'} ({commit[:12]}). Files: {', '.join(files) or 'none'}")
    suffix = Path(path_in_repo).suffix.lower()
    if suffix != ".safetensors" and not (allow_pth and suffix in _PTH_SUFFIXES):
        raise ModelNotAvailableError(
            f"{ref}: {path_in_repo} is not a .safetensors file. Only safetensors is taken from the Hub by default; "
            "pass --allow-pth (allow_pth=True) for a .pth, which is then loaded with weights_only=True.")
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, path_in_repo, revision=commit, endpoint=endpoint), token=token)
    except Exception as e:  # noqa: BLE001
        raise _hf_error(e, hf, path_in_repo) from e
    etag = (meta.etag or "").strip('"').removeprefix("W/").strip('"').lower()
    want_sha = etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None  # LFS files: the etag is the sha256
    if card and card.get("filename") == path_in_repo and card.get("sha256"):
        if want_sha and card["sha256"] != want_sha:
            raise ChecksumMismatchError(f"{ref}: the model card pins sha256 {card['sha256']} but the Hub's LFS "
                                        f"metadata says {want_sha}; not downloaded.")
        want_sha = want_sha or card["sha256"]
    kwargs: dict[str, Any] = dict(repo_id=repo, filename=path_in_repo, revision=commit, token=token, endpoint=endpoint)
    if dest is not None:
        local = dest / "hf" / f"{repo.replace('/', '--')}" / commit[:12]
        local.mkdir(parents=True, exist_ok=True)
        kwargs["local_dir"] = str(local)
    else:
        kwargs["cache_dir"] = str(hf_cache_dir())
    bar = _tqdm_class(progress if progress is not None else True)
    if bar is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = bar
    if progress is not False:
        _say(f"downloading {ref} -> {repo}@{commit[:12]}/{path_in_repo} ({_human(meta.size)})")
    try:
        path = Path(hf_hub_download(**kwargs))
    except Exception as e:  # noqa: BLE001
        raise _hf_error(e, hf, path_in_repo) from e

    def reject(msg: str, exc=ModelNotAvailableError):
        if dest is not None:
            path.unlink(missing_ok=True)
            (Path(kwargs["local_dir"]) / ".cache" / "huggingface" / "download" / f"{path_in_repo}.metadata").unlink(
                missing_ok=True)
        else:
            _remove_cached(path)
        raise exc(f"{ref}: {msg} The download was deleted.")

    actual = file_sha256(path)
    if want_sha is None:
        import hashlib

        data_len = path.stat().st_size  # a small non-LFS file: the etag is its git blob sha1
        h = hashlib.sha1(b"blob %d\0" % data_len)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if etag and h.hexdigest() != etag:
            reject(f"{path_in_repo}: its git sha1 is {h.hexdigest()}, the Hub says {etag}.", ChecksumMismatchError)
    elif actual != want_sha:
        reject(f"{path_in_repo}: sha256 mismatch: got {actual}, the Hub's LFS metadata pins {want_sha}.",
               ChecksumMismatchError)
    if _is_torchscript_file(path):
        reject(f"{path_in_repo} is a TorchScript archive (code); TorchScript is never taken from the Hub.")
    if suffix == ".safetensors":
        problem = _pal_metadata_problem(path)
        if problem:
            reject(f"{path_in_repo}: {problem}.")
    record = {"repo": repo, "revision": hf["revision"] or "main", "commit": commit, "path": path_in_repo,
              "sha256": actual, "size": path.stat().st_size, "file": str(path),  # the snapshot link keeps the suffix
              "recorded": _now(), "card": card}
    lock_dir = dest if dest is not None else user_models_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    _update_lock(lock_dir, "refs", ref, record)
    if ref != f"hf:{repo}@{commit}/{path_in_repo}":
        _update_lock(lock_dir, "refs", f"hf:{repo}@{commit}/{path_in_repo}", record)
    if progress is not False:
        _say(f"{ref}: pinned to commit {commit}, sha256 {actual} (recorded in {lock_dir / LOCK_NAME})")
    return path


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
    for d in _search_dirs(_as_dirs(model_dirs)):
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
    candidates = [d / entry["filename"] for d in _search_dirs(dirs)]
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
    for d in _search_dirs(dirs):
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
