"""Named checkpoints: the model registry, Hugging Face Hub downloads, sha256 verification, offline
behaviour, and `push` of a checkpoint with a generated model card.

- `get_registry()` merges `models/registry.json` with the user registry file
  (`$PAL_REGISTRY`, else `$XDG_CONFIG_HOME/comfyui-pal/registry.json`) and the per-model
  environment overrides `PAL_HUB_{REPO,REVISION,FILENAME,SHA256,ENDPOINT}_<NAME>`.
- `resolve(name_or_path)` returns a local, verified file: an existing path as is, the bundled
  file, a copy already in the host's models dir / `$PAL_MODELS_DIR` / the Hub cache, or a fresh
  download. Hub entries without a pinned sha256 (not published yet) are never downloaded.

huggingface_hub is imported only inside the functions that talk to a Hub: importing this module
(and so ComfyUI start-up) never touches the network, and the offline / not-present paths answer
in milliseconds because they only look at the file system.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ChecksumMismatchError",
    "clear_cache",
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
    "load_cached",
    "make_model_card",
    "push",
    "resolve",
    "user_models_dir",
    "user_registry_path",
]

PACKAGE_MODELS_DIR = Path(__file__).resolve().parent
BUILTIN_REGISTRY = PACKAGE_MODELS_DIR / "registry.json"
DEFAULT_ENDPOINT = "https://huggingface.co"
SOURCES = ("bundled", "hub", "local")
# environment override suffix -> registry field
ENV_OVERRIDES = {"REPO": "repo_id", "REVISION": "revision", "FILENAME": "filename", "SHA256": "sha256",
                 "ENDPOINT": "endpoint"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


class ModelNotAvailableError(ValueError):
    """The requested model cannot be delivered; the message says which file to put where."""


class UnknownModelError(ModelNotAvailableError):
    """Neither an existing file nor a registered model name."""


class HubDownloadError(ModelNotAvailableError):
    """The Hub refused or failed the download (repo, revision or file missing, gated, network)."""


class ChecksumMismatchError(ModelNotAvailableError):
    """A file's sha256 (or size) differs from the registry pin."""


class RegistryError(ValueError):
    """A registry file or override is malformed."""


class HubPushError(ValueError):
    """`push` could not upload (bad checkpoint, authentication, Hub error)."""


# ----------------------------------------------------------------------------------- locations
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def is_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE now, or huggingface_hub's own (import-time) flag."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hf_cache_dir() -> Path:
    """The Hub cache, read from the environment at call time (same rules as huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def user_models_dir() -> Path:
    """Where a user puts checkpoints by hand outside a host: $PAL_MODELS_DIR or
    $XDG_DATA_HOME/comfyui-pal/models (~/.local/share/comfyui-pal/models). Always searched."""
    env = os.environ.get("PAL_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(base).expanduser() / "comfyui-pal" / "models"


def user_registry_path() -> Path:
    """$PAL_REGISTRY, else $XDG_CONFIG_HOME/comfyui-pal/registry.json (~/.config/...)."""
    env = os.environ.get("PAL_REGISTRY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join("~", ".config")
    return Path(base).expanduser() / "comfyui-pal" / "registry.json"


def env_key(name: str) -> str:
    """Registry name -> environment-variable suffix: 'pal4vst-unified' -> 'PAL4VST_UNIFIED'."""
    return re.sub(r"[^0-9A-Za-z]", "_", name).upper()


# ------------------------------------------------------------------------------------ registry
def _read_registry_file(path: Path, required: bool) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise RegistryError(
                f"{path}: PAL_REGISTRY names a registry file that does not exist; create it or unset "
                "PAL_REGISTRY") from None
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{path}: not a readable registry JSON file ({e}); fix or remove it") from e
    if isinstance(data, dict) and "models" in data:
        models = data["models"]
    elif isinstance(data, dict):  # a bare {name: entry} mapping is accepted too
        models = {k: v for k, v in data.items() if k not in ("schema_version", "about", "$schema")}
    else:
        models = None
    if not isinstance(models, dict):
        raise RegistryError(f'{path}: expected {{"models": {{name: entry, ...}}}}, got {type(data).__name__}')
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: entry {name!r} must be a JSON object, got {type(entry).__name__}")
    return models


def _validate(name: str, entry: dict, origin: str) -> dict:
    entry = dict(entry)
    source = entry.get("source") or ("hub" if entry.get("repo_id") else "local" if entry.get("path") else None)
    if source not in SOURCES:
        raise RegistryError(f"{origin}: model {name!r} needs 'repo_id' + 'filename' (Hub) or 'path' (a file); "
                            f"source must be one of {SOURCES}")
    entry["source"] = source
    if source == "hub":
        for key in ("repo_id", "filename"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise RegistryError(f"{origin}: Hub model {name!r} needs a non-empty {key!r}")
    elif not isinstance(entry.get("path"), str) or not entry["path"]:
        raise RegistryError(f"{origin}: model {name!r} (source {source}) needs a 'path'")
    sha = entry.get("sha256")
    if sha is not None:
        sha = str(sha).strip().lower()
        if not _SHA256_RE.match(sha):
            raise RegistryError(f"{origin}: model {name!r} sha256 must be 64 hex digits, got {entry['sha256']!r}")
        entry["sha256"] = sha
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise RegistryError(f"{origin}: model {name!r} size must be a byte count or null, got {size!r}")
    entry.setdefault("revision", None)
    entry.setdefault("sha256", None)
    entry.setdefault("size", None)
    entry.setdefault("published", entry["sha256"] is not None or source != "hub")
    entry["name"] = name
    return entry


def get_registry() -> dict[str, dict]:
    """name -> entry (built-in registry, then the user registry file, then env overrides).

    Read on every call (a few KB of JSON) so edits and env changes apply without a restart.
    Each entry gets 'name', 'source' and 'overridden' (fields changed by user file or env).
    Overriding 'repo_id' without 'revision' uses the new repo's default branch: a mirror rarely
    has the pinned commit, and the sha256 still pins the bytes.
    """
    builtin = _read_registry_file(BUILTIN_REGISTRY, required=True)
    user_path = user_registry_path()
    user = _read_registry_file(user_path, required="PAL_REGISTRY" in os.environ)
    out: dict[str, dict] = {}
    for name in list(builtin) + [n for n in user if n not in builtin]:
        entry = dict(builtin.get(name, {}))
        changed: dict[str, str] = {}
        for key, value in user.get(name, {}).items():
            entry[key] = value
            changed[key] = str(user_path)
        u = user.get(name, {})
        if isinstance(u.get("path"), str) and "repo_id" not in u and u.get("source") in (None, "local"):
            # a user entry naming a file: relative paths are relative to the registry file
            entry["source"] = "local"
            entry["path"] = str(user_path.parent / Path(u["path"]).expanduser())
        for suffix, key in ENV_OVERRIDES.items():
            var = f"PAL_HUB_{suffix}_{env_key(name)}"
            if os.environ.get(var):
                entry[key] = os.environ[var].strip()
                changed[key] = var
        if "repo_id" in changed and "revision" not in changed and name in builtin:
            entry["revision"] = None
        origin = ", ".join(sorted(set(changed.values()))) or str(BUILTIN_REGISTRY)
        entry = _validate(name, entry, origin)
        if changed.get("sha256"):
            entry["published"] = True  # a user-supplied pin makes an unpublished entry downloadable
        entry["overridden"] = sorted(changed)
        out[name] = entry
    return out


def _lookup(registry: Mapping[str, dict], name: str) -> dict | None:
    if name in registry:
        return registry[name]
    lowered = {k.lower(): v for k, v in registry.items()}
    return lowered.get(name.lower())


# ----------------------------------------------------------------------------------- hashing
_HASH_MEMO: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file; memoised per (real path, inode, size, mtime, ctime) so a re-load in the same
    process does not re-hash a 250 MB checkpoint."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


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


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1000 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"  # pragma: no cover


def _say(msg: str) -> None:
    print(f"[comfyui-pal] {msg}", file=sys.stderr, flush=True)


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


def _local_dirs(models_dir: str | Path | None) -> list[Path]:
    dirs = [Path(models_dir).expanduser()] if models_dir else []
    user = user_models_dir()
    if user not in dirs:
        dirs.append(user)
    return dirs


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


# ---------------------------------------------------------------------------------- resolving
def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES) or text.startswith("~")


def _as_dirs(model_dirs, models_dir=None) -> list[Path]:
    """model_dirs (one path or a list; the first is where downloads go) -> a list of Paths."""
    if model_dirs is None or isinstance(model_dirs, (str, os.PathLike)):
        model_dirs = [model_dirs] if model_dirs else []
    dirs = [Path(d).expanduser() for d in model_dirs if d]
    if models_dir:  # the older single-folder keyword
        dirs.insert(0, Path(models_dir).expanduser())
    return list(dict.fromkeys(dirs))


def resolve(
    name_or_path: str | os.PathLike,
    model_dirs: str | os.PathLike | list | tuple | None = None,
    download: bool = False,
    progress: bool | Callable[[int, int | None], Any] | None = None,
    *,
    token: str | bool | None = None,
    models_dir: str | Path | None = None,
) -> Path:
    """THE model resolver: a path, a file name in one of `model_dirs`, or a registry name -> a local,
    verified checkpoint file. Every host calls this (or `load_cached`).

    `model_dirs`: the host's model folders (ComfyUI/A1111 `models/pal`), searched first; downloads go
    into the first one (else the Hub cache / user models folder). `download=False` never touches
    the network and says what to run instead. `progress`: None/True = a log line and a bar on
    stderr, False = silent, or a callback(done_bytes, total_bytes). Raises ModelNotAvailableError
    (a ValueError) saying which file to put where.
    """
    dirs = _as_dirs(model_dirs, models_dir)
    if progress is None:
        progress = True
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute():
        for d in dirs:
            if (d / path).is_file():
                return d / path
    registry = get_registry()
    entry = _lookup(registry, str(text))
    if entry is None:
        names = ", ".join(sorted(registry))
        if path.is_dir():
            raise UnknownModelError(f"{path} is a directory; pass a checkpoint file (.safetensors, .pth, .pt)")
        if _looks_like_path(str(text)):
            raise UnknownModelError(
                f"checkpoint file not found: {path.absolute()}. Check the path, or use a registered model "
                f"name ({names}).")
        raise UnknownModelError(
            f"{text!r} is neither an existing file nor a registered model name. Registered names: {names} "
            "(`pal models list` shows them); pass a file path to use your own checkpoint.")
    return _resolve_entry(entry, download=download, models_dir=dirs[0] if dirs else None, token=token,
                          progress=progress, extra_dirs=dirs[1:])


# (real path, mtime, size, device, dtype, trust) -> Detector. Small: each entry holds a whole network.
_DETECTORS: OrderedDict[tuple, Any] = OrderedDict()
_DETECTORS_MAX = 2
_DETECTORS_LOCK = threading.Lock()


def load_cached(
    ref: str | os.PathLike | None,
    *,
    device=None,
    dtype=None,
    model_dirs: str | os.PathLike | list | tuple | None = None,
    download: bool = False,
    trust_torchscript: bool = False,
    progress: bool | Callable[[int, int | None], Any] | None = None,
):
    """`resolve(ref)` then a Detector from a small process-wide LRU keyed on the resolved file
    (path, mtime, size) + device + dtype + trust flag: hosts share one loaded network per key.
    `ref=None` is the bundled default model."""
    from .detector import DEFAULT_MODEL, _as_dtype, auto_device, load_detector

    path = resolve(DEFAULT_MODEL if ref is None else ref, model_dirs=model_dirs, download=download,
                   progress=progress)
    real = os.path.realpath(path)
    st = os.stat(real)
    dev = str(device) if device is not None else str(auto_device())
    key = (real, st.st_mtime_ns, st.st_size, dev, str(_as_dtype(dtype)), bool(trust_torchscript))
    with _DETECTORS_LOCK:
        det = _DETECTORS.get(key)
        if det is not None:
            _DETECTORS.move_to_end(key)
            return det
        # free the least recently used network before loading the next one
        while len(_DETECTORS) >= _DETECTORS_MAX:
            _DETECTORS.popitem(last=False)
        det = load_detector(path, device=dev, dtype=dtype, trust_torchscript=trust_torchscript)
        _DETECTORS[key] = det
        return det


def clear_cache() -> None:
    """Drop every cached Detector (e.g. when a host unloads models)."""
    with _DETECTORS_LOCK:
        _DETECTORS.clear()


def _resolve_entry(entry: dict, *, download: bool, models_dir, token, progress, extra_dirs=()) -> Path:
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

    # Hub entry. Files a user or host placed themselves are checked but never deleted.
    for directory in _local_dirs(models_dir) + [d for d in extra_dirs if d not in _local_dirs(models_dir)]:
        candidate = directory / entry["filename"]
        if candidate.is_file():
            if entry["sha256"] is None and entry["size"] is None:
                return candidate  # nothing to verify against (unpublished); the user chose this file
            problem = _check(candidate, entry)
            if problem:
                raise ChecksumMismatchError(
                    f"{candidate} (model {name!r}) does not match the registry: {problem}. The file was "
                    f"left untouched: delete or move it and run `pal models download {name}`, or pass "
                    "the path itself to use it unverified.")
            return candidate
    cached, note = _find_cached(entry)
    if cached is not None:
        return cached

    target = _where_to_put(entry, models_dir)
    if entry["sha256"] is None:
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not published on the Hub yet (no pinned sha256 in the registry), so "
            f"it cannot be downloaded. Put the converted file {entry['filename']} at {target} (convert the "
            f"official checkpoint with `pal convert`), or, for a mirror you trust, set its sha256 with "
            f"PAL_HUB_SHA256_{env_key(name)} or in {user_registry_path()}.")
    if not download:
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not downloaded. Run `pal models download {name}`, or put the file "
            f"{entry['filename']}{_pin_text(entry)} at {target}; it is published at {_url(entry)}.")
    if is_offline():
        raise ModelNotAvailableError(
            f"{note}model {name!r} is not available offline (HF_HUB_OFFLINE is set) and no local copy "
            f"exists. Put the file {entry['filename']}{_pin_text(entry)} at {target} (download it from "
            f"{_url(entry)} on a connected machine), or unset HF_HUB_OFFLINE and run "
            f"`pal models download {name}`.")
    return _download(entry, models_dir=models_dir, token=token, progress=progress)


def download(
    name: str,
    models_dir: str | Path | None = None,
    *,
    token: str | bool | None = None,
    progress: bool | Callable[[int, int | None], Any] = True,
) -> Path:
    """`pal models download`: like resolve(), but with `models_dir` the file ends up there (a copy
    already in the Hub cache is copied, not downloaded again)."""
    registry = get_registry()
    entry = _lookup(registry, name)
    if entry is None:
        raise UnknownModelError(f"{name!r} is not a registered model name; registered: {', '.join(sorted(registry))}")
    path = _resolve_entry(entry, download=True, models_dir=models_dir, token=token, progress=progress)
    if models_dir and entry["source"] == "hub":
        want = Path(models_dir).expanduser() / entry["filename"]
        if path != want:
            want.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{want.name}.", suffix=".tmp", dir=want.parent)
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)
                os.replace(tmp, want)
            finally:
                Path(tmp).unlink(missing_ok=True)
            path = want
    return path


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


# ------------------------------------------------------------------------------------ listing
def _present_path(entry: dict, models_dir) -> Path | None:
    """Cheap presence check (exists, size matches when pinned); no hashing."""
    if entry["source"] != "hub":
        p = Path(entry["path"]).expanduser()
        p = PACKAGE_MODELS_DIR / p if entry["source"] == "bundled" else p
        return p if p.is_file() else None
    size = entry.get("size")
    candidates = [d / entry["filename"] for d in _local_dirs(models_dir)]
    primary, others = _cache_candidates(entry)
    candidates += ([primary] if primary else []) + (others if entry["sha256"] else [])
    for p in candidates:
        if p.is_file() and (size is None or p.stat().st_size == size):
            return p
    return None


def list_models(model_dirs: str | os.PathLike | list | tuple | None = None, *,
                models_dir: str | Path | None = None) -> list[dict]:
    """One dict per registered model: name, source, size, present, path (where it is, or where it
    would go), repo_id, revision, filename, sha256, published, architecture, license, description."""
    dirs = _as_dirs(model_dirs, models_dir)
    models_dir = dirs[0] if dirs else None
    rows = []
    for name, entry in get_registry().items():
        found = _present_path(entry, models_dir)
        if found is not None:
            path = found
        elif entry["source"] == "hub":
            path = _where_to_put(entry, models_dir)  # where a user would put it by hand
        else:
            path = Path(entry["path"]).expanduser()
            path = PACKAGE_MODELS_DIR / path if entry["source"] == "bundled" else path
        rows.append({
            "name": name, "source": entry["source"],
            "size": entry["size"] if entry["size"] is not None else (found.stat().st_size if found else None),
            "present": found is not None, "path": str(path),
            "repo_id": entry.get("repo_id"), "revision": entry.get("revision"), "filename": entry.get("filename"),
            "sha256": entry["sha256"], "published": bool(entry.get("published")),
            "architecture": entry.get("architecture"), "license": entry.get("license"),
            "description": entry.get("description"), "overridden": entry["overridden"],
        })
    return rows


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

    return {"format": meta.get("format"), "config": parse("config"), "provenance": parse("provenance") or {},
            "params": params, "tensors": count, "dtypes": dtypes}


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
        "```python",
        "from huggingface_hub import hf_hub_download",
        "from comfyui_pal.models import load_detector",
        "",
        f'path = hf_hub_download("{repo_hint}", "{filename}")',
        "det = load_detector(path)",
        'd = det.detect("image.png")   # d.prob, d.mask(0.5), d.par',
        "```",
        "",
        "In ComfyUI or AUTOMATIC1111 put the file in `models/pal/`. Register it by name for "
        "`pal models download` in `~/.config/comfyui-pal/registry.json`:",
        "",
        "```json",
        json.dumps({"models": {name: {"repo_id": repo_hint, "filename": filename, "sha256": sha, "size": size}}},
                   indent=2),
        "```",
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
