"""The model registry: named checkpoints, their source kinds, the user registry file and overrides.

Source kinds (the `source` field of an entry):
- `bundled`: a file shipped in the package (`path` relative to models/).
- `hub`: a Hugging Face Hub file (`repo_id`, `filename`, `revision`, `sha256`, `size`).
- `gdrive`: the authors' published file on Google Drive (`file_id`, `format`, `preset` or `config`,
  `size_approx`, `original_name`, `homepage`); downloaded, verified and converted on first use into
  `filename`. A `repo_id` + `sha256` on the same entry is a published Hub copy, preferred when set.
- `local`: a file the user registered by `path`.

`get_registry()` merges `models/registry.json` with the user registry file (`$PAL_REGISTRY`, else
`$XDG_CONFIG_HOME/comfyui-pal/registry.json`) and the environment overrides
`PAL_HUB_{REPO,REVISION,FILENAME,SHA256,ENDPOINT}_<NAME>`. File system only: no network, no torch.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from ..core.imageio import file_sha256  # noqa: F401 - the one implementation, re-exported

PACKAGE_MODELS_DIR = Path(__file__).resolve().parent
BUILTIN_REGISTRY = PACKAGE_MODELS_DIR / "registry.json"
SOURCES = ("bundled", "hub", "gdrive", "local")
GDRIVE_FORMATS = ("mmseg-pth", "torchscript")
ENV_OVERRIDES = {"REPO": "repo_id", "REVISION": "revision", "FILENAME": "filename", "SHA256": "sha256",
                 "ENDPOINT": "endpoint"}
LOCK_NAME = "pal-models.lock.json"  # trust-on-first-use record, one per models folder
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelNotAvailableError(ValueError):
    """The requested model cannot be delivered; the message says which file to put where."""


class UnknownModelError(ModelNotAvailableError):
    """Neither an existing file nor a registered model name."""


class HubDownloadError(ModelNotAvailableError):
    """The Hub refused or failed the download (repo, revision or file missing, gated, network)."""


class ChecksumMismatchError(ModelNotAvailableError):
    """A file's sha256 (or size) differs from the registry pin or the lock file."""


class RegistryError(ValueError):
    """A registry file or override is malformed."""


# ----------------------------------------------------------------------------------- locations
def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def is_offline() -> bool:
    """PAL_OFFLINE, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE now, or huggingface_hub's import-time flag.
    Offline means no request at all, to any host."""
    if env_true("PAL_OFFLINE") or env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE"):
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
    """The CLI's models folder (also always searched by hosts): $PAL_MODELS_DIR or
    $XDG_DATA_HOME/comfyui-pal/models (~/.local/share/comfyui-pal/models)."""
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


def search_dirs(dirs: list[Path]) -> list[Path]:
    """The host's folders, then the CLI's user models folder (always searched)."""
    user = user_models_dir()
    return dirs + ([user] if user not in dirs else [])


def env_key(name: str) -> str:
    """Registry name -> environment-variable suffix: 'pal4vst-unified' -> 'PAL4VST_UNIFIED'."""
    return re.sub(r"[^0-9A-Za-z]", "_", name).upper()


# ----------------------------------------------------------------------------------- sizes
def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1000 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"  # pragma: no cover


def say(msg: str) -> None:
    """One progress/notice line on stderr (the CLI's and the hosts' logs)."""
    print(f"[comfyui-pal] {msg}", file=sys.stderr, flush=True)


def is_torchscript_file(path: Path) -> bool:
    """TorchScript archives carry compiled code (stdlib check, no torch import)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names)


# ----------------------------------------------------------------------- Hub entries (registry)
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
    source = entry.get("source") or (
        "gdrive" if entry.get("file_id") else "hub" if entry.get("repo_id") else "local" if entry.get("path") else None)
    if source not in SOURCES:
        raise RegistryError(f"{origin}: model {name!r} needs 'file_id' (Google Drive), 'repo_id' + 'filename' "
                            f"(Hub) or 'path' (a file); source must be one of {SOURCES}")
    entry["source"] = source
    if source == "hub":
        for key in ("repo_id", "filename"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise RegistryError(f"{origin}: Hub model {name!r} needs a non-empty {key!r}")
    elif source == "gdrive":
        if not isinstance(entry.get("file_id"), str) or not re.fullmatch(r"[0-9A-Za-z_-]{10,}", entry["file_id"]):
            raise RegistryError(f"{origin}: Drive model {name!r} needs a 'file_id' (the id in "
                                "drive.google.com/file/d/<id>/view)")
        entry.setdefault("format", "mmseg-pth")
        if entry["format"] not in GDRIVE_FORMATS:
            raise RegistryError(f"{origin}: Drive model {name!r} format must be one of {GDRIVE_FORMATS}")
        if not isinstance(entry.get("filename"), str) or not entry["filename"].endswith(".safetensors"):
            raise RegistryError(f"{origin}: Drive model {name!r} needs 'filename', the converted "
                                "'<name>.safetensors' it is cached as")
        if not isinstance(entry.get("preset"), str) and not isinstance(entry.get("config"), dict):
            raise RegistryError(f"{origin}: Drive model {name!r} needs the expected architecture: 'preset' "
                                "(e.g. pal4vst-swin-b-w12) or 'config' (a comfyui-pal config object)")
        approx = entry.get("size_approx")
        if approx is not None and (not isinstance(approx, int) or isinstance(approx, bool) or approx <= 0):
            raise RegistryError(f"{origin}: model {name!r} size_approx must be a byte count, got {approx!r}")
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
    # A Hub copy (hub entry, or a gdrive entry's mirror) is downloadable only with its bytes pinned.
    entry.setdefault("published", entry["sha256"] is not None or source in ("bundled", "local", "gdrive"))
    entry["hub_copy"] = bool(entry.get("repo_id") and entry.get("filename") and entry["sha256"])
    entry["name"] = name
    return entry


def get_registry(include_user: bool = True) -> dict[str, dict]:
    """name -> entry (built-in registry, then the user registry file, then env overrides).

    Read on every call (a few KB of JSON) so edits and env changes apply without a restart.
    Each entry gets 'name', 'source' and 'overridden' (fields changed by user file or env).
    Overriding 'repo_id' without 'revision' uses the new repo's default branch: a mirror rarely
    has the pinned commit, and the sha256 still pins the bytes.
    """
    builtin = _read_registry_file(BUILTIN_REGISTRY, required=True)
    user_path = user_registry_path()
    user = _read_registry_file(user_path, required="PAL_REGISTRY" in os.environ) if include_user else {}
    out: dict[str, dict] = {}
    for name in list(builtin) + [n for n in user if n not in builtin]:
        entry = dict(builtin.get(name, {}))
        changed: dict[str, str] = {}
        u = user.get(name, {})
        if u.get("source") and u.get("source") != entry.get("source"):
            entry = {k: v for k, v in entry.items() if k in ("license", "license_notice", "description")}
        for key, value in u.items():
            entry[key] = value
            changed[key] = str(user_path)
        if isinstance(u.get("path"), str) and "repo_id" not in u and u.get("source") in (None, "local"):
            # a user entry naming a file: relative paths are relative to the registry file
            entry = {k: v for k, v in entry.items() if k not in ("file_id", "repo_id")}
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


def lookup(registry: Mapping[str, dict], name: str) -> dict | None:
    """Registry names are matched case-insensitively."""
    if name in registry:
        return registry[name]
    lowered = {k.lower(): v for k, v in registry.items()}
    return lowered.get(name.lower())


def drive_link(file_id: str) -> str:
    """The link a person opens in a browser (the manual route)."""
    return f"https://drive.google.com/file/d/{file_id}/view"
