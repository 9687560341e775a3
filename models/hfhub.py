"""Everything that talks to the Hugging Face Hub: registry `hub` entries (pinned sha256/size,
Hub cache lookups, downloads) and `hf:owner/repo[@revision][/path]` references (model card block,
revision pinned to a commit in the lock file, sha256 from the LFS metadata, safetensors only
unless allowed, never TorchScript). huggingface_hub is imported inside the functions only.
`models.hub.resolve` is the entry point; nothing here imports it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .lockfile import now as _now
from .lockfile import read_lock
from .lockfile import update_lock as _update_lock
from .publish import read_card_metadata
from .registry import (
    LOCK_NAME,
    ChecksumMismatchError,
    HubDownloadError,
    ModelNotAvailableError,
    RegistryError,
    UnknownModelError,
    env_key,
    file_sha256,
    hf_cache_dir,
    human_size,
    is_offline,
    search_dirs,
    user_models_dir,
    user_registry_path,
)
from .registry import is_torchscript_file as _is_torchscript_file
from .registry import say as _say

DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_PTH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_human = human_size


# ----------------------------------------------------------------------- registry Hub entries
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


def download_entry(entry: dict, *, models_dir, token, progress) -> Path:
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




# -------------------------------------------------------------------------- hf: references
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


def _ref_records(dirs: list[Path], ref: str) -> list[tuple[Path, dict]]:
    out = []
    for d in search_dirs(dirs):
        try:
            rec = read_lock(d)["refs"].get(ref)
        except RegistryError:
            continue
        if rec:
            out.append((d, rec))
    return out


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_ref(hf: dict, dirs: list[Path], *, download: bool, token, progress: Any, allow_pth: bool,
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


def _download_hf(hf: dict, dest: Path | None, *, token, progress: Any, allow_pth: bool) -> Path:
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
