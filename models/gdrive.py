"""Google Drive entries: a small download client (standard library only) for the authors' published
files, and `fetch`, which turns one into a verified, converted, recorded checkpoint.

Protocol, as Drive serves public files:
1. `GET {base}/uc?export=download&id=<id>`; Drive may redirect (to drive.usercontent.google.com).
2. Small files come back directly (`Content-Disposition: attachment; filename=...`).
3. Large files come back as an HTML page ("Google Drive can't scan this file for viruses") with a
   form (`action` URL + hidden inputs such as id, export, confirm, uuid); submitting it as a GET
   returns the bytes. Older pages carry a `confirm=<token>` link instead; both are followed.
4. Quota ("Too many users have viewed or downloaded this file recently"), sign-in/access-denied
   and not-found pages are HTML too, with status 200, 403 or 404. An HTML body is never taken for
   a file.

`PAL_GDRIVE_URL` replaces the base URL (the tests point it at a loopback fake); redirects and
form actions are followed only to that host or to Google's Drive hosts. `PAL_OFFLINE=1` or
`HF_HUB_OFFLINE=1`: no request at all.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from html.parser import HTMLParser
from http.client import HTTPException
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, unquote, urlencode, urljoin, urlsplit
from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

from .lockfile import check_lock, file_lock, now, update_lock
from .registry import (
    LOCK_NAME,
    ModelNotAvailableError,
    drive_link,
    file_sha256,
    human_size,
    is_offline,
    is_torchscript_file,
    say,
    user_models_dir,
)

DEFAULT_BASE = "https://drive.google.com"
_GOOGLE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")
_MAX_HTML = 2 << 20  # an HTML page is small; a bigger text/html body is not a Drive page
_MAX_HOPS = 6
_CHUNK = 1 << 20


class DriveError(ModelNotAvailableError):
    """A Drive download failed; `kind` is one of offline, quota, denied, not_found, html, truncated,
    network, disk_full."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def base_url() -> str:
    return (os.environ.get("PAL_GDRIVE_URL") or DEFAULT_BASE).rstrip("/")


def _allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return False
    base = urlsplit(base_url())
    if parts.netloc == base.netloc:
        return True
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host in _GOOGLE_HOSTS or host.endswith(".googleusercontent.com"))


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # we follow redirects ourselves, host-checked
        return None


class _Forms(HTMLParser):
    """Collects <form action=...> with their <input name value> and confirm links from a page."""

    def __init__(self):
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._current: tuple[str, dict[str, str]] | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = (a.get("action", ""), {})
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current[1][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _classify_page(text: str) -> str | None:
    low = text.lower()
    if "too many users have viewed or downloaded" in low or "quota" in low and "exceeded" in low:
        return "quota"
    if ("accounts.google.com" in low and ("servicelogin" in low or "sign in" in low)) or "you need access" in low \
            or "request access" in low or "access denied" in low:
        return "denied"
    if "does not exist" in low or "file not found" in low or "<title>not found" in low:
        return "not_found"
    return None


def _filename(disposition: str | None) -> str | None:
    if not disposition:
        return None
    m = re.search(r"filename\*\s*=\s*[^']*''([^;]+)", disposition)
    if m:
        return os.path.basename(unquote(m.group(1).strip().strip('"')))
    m = re.search(r'filename\s*=\s*"?([^";]+)"?', disposition)
    return os.path.basename(m.group(1).strip()) if m else None


def download(
    file_id: str,
    dest_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int | None], object] | None = None,
    timeout: float = 60.0,
    what: str = "",
) -> tuple[Path, str | None, dict]:
    """Download a public Drive file into a new temporary file inside `dest_dir`.

    Returns (temporary path, the file name Drive gives, {"url", "bytes", "requests"}). The caller
    renames or deletes the file. Raises DriveError; nothing is left behind on failure.
    `what` names the model in messages.
    """
    label = f"{what} (Drive file {file_id})" if what else f"Drive file {file_id}"
    if is_offline():
        raise DriveError("offline", f"{label}: offline mode is on (PAL_OFFLINE / HF_HUB_OFFLINE), so it was not "
                                    "downloaded")
    opener = build_opener(_NoRedirect(), HTTPCookieProcessor(CookieJar()))
    url = f"{base_url()}/uc?{urlencode({'export': 'download', 'id': file_id})}"
    requests = 0
    for _hop in range(_MAX_HOPS):
        if not _allowed(url):
            host = urlsplit(url).hostname or url
            if "accounts.google" in host:
                raise DriveError("denied", f"{label}: Drive asks to sign in: the file is not shared publicly "
                                           "(access denied)")
            raise DriveError("html", f"{label}: Drive sent us to {host}, which is not a Drive host; refusing "
                                     "to follow")
        requests += 1
        try:
            resp = opener.open(Request(url, headers={"User-Agent": "comfyui-pal", "Accept-Encoding": "identity"}),
                               timeout=timeout)
        except HTTPError as e:
            if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                url = urljoin(url, e.headers["Location"])
                e.close()
                continue
            body = e.read(_MAX_HTML).decode("utf-8", "replace") if e.fp else ""
            e.close()
            kind = _classify_page(body) or {404: "not_found", 401: "denied", 403: "denied",
                                            429: "quota"}.get(e.code, "network")
            raise DriveError(kind, f"{label}: {_KIND_TEXT[kind]} (HTTP {e.code})") from None
        except (URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DriveError("network", f"{label}: could not reach {urlsplit(url).netloc} ({reason})") from None
        with resp:
            ctype = (resp.headers.get("Content-Type") or "").lower()
            disposition = resp.headers.get("Content-Disposition")
            if "text/html" in ctype and not (disposition and "attachment" in disposition.lower()):
                text = resp.read(_MAX_HTML).decode("utf-8", "replace")
                url = _next_url(text, url, label)
                continue
            name = _filename(disposition)
            path, n = _stream(resp, Path(dest_dir), label, progress)
            return path, name, {"url": url, "bytes": n, "requests": requests}
    raise DriveError("html", f"{label}: too many redirects or confirmation pages")


_KIND_TEXT = {
    "quota": "Drive's download quota for this file is exceeded ('Too many users have viewed or downloaded this "
             "file recently'); try again in 24 hours or download it in a browser",
    "denied": "access denied: Drive wants a sign-in or the file is not shared publicly",
    "not_found": "not found: the file id does not exist on Drive (dead link?)",
    "html": "Drive answered with a web page where the file was expected",
    "network": "the download failed",
}


def _next_url(text: str, url: str, label: str) -> str:
    """The confirm-form (or legacy confirm link) URL of a Drive warning page, else a DriveError."""
    kind = _classify_page(text)
    if kind:
        raise DriveError(kind, f"{label}: {_KIND_TEXT[kind]}")
    parser = _Forms()
    try:
        parser.feed(text)
    except Exception:  # noqa: BLE001 - a malformed page is just "not a file"
        parser.forms = []
    for action, fields in parser.forms:
        if "id" in fields or "confirm" in fields:  # the virus-scan warning's #download-form
            target = urlsplit(urljoin(url, (action or url).replace("&amp;", "&")))
            query = {k: v[-1] for k, v in parse_qs(target.query).items()}
            query.update(fields)  # hidden inputs win over the action's own query, as a browser submits
            return target._replace(query=urlencode(query)).geturl()
    for href in parser.links:  # older pages: a /uc?export=download&confirm=... link
        return urljoin(url, href.replace("&amp;", "&"))
    m = re.search(r'"downloadUrl":"([^"]+)', text)  # pages that embed the URL as JSON
    if m:
        return urljoin(url, m.group(1).replace("\\u003d", "=").replace("\\u0026", "&"))
    m = re.search(r'<p class="uc-error-subcaption">(.*?)</p>', text, re.S)
    detail = re.sub(r"<[^>]+>|\s+", " ", m.group(1)).strip() if m else (parser.title.strip() or "untitled page")
    raise DriveError("html", f"{label}: {_KIND_TEXT['html']} ({detail!r}, no download form on it)")


def _stream(resp, dest_dir: Path, label: str, progress) -> tuple[Path, int]:
    total = resp.headers.get("Content-Length")
    total = int(total) if total and total.isdigit() else None
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pal-download.", suffix=".part", dir=dest_dir)
    done = 0
    try:
        with os.fdopen(fd, "wb") as f:
            first = True
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, ValueError, HTTPException) as e:  # connection dropped mid-body
                    raise DriveError("truncated", f"{label}: the download broke off after {done} bytes ({e})") \
                        from None
                if not chunk:
                    break
                if first:
                    head = chunk[:512].lstrip().lower()
                    if head.startswith((b"<!doctype html", b"<html")):
                        raise DriveError("html", f"{label}: {_KIND_TEXT['html']} (the body is HTML, not a "
                                                 "checkpoint)")
                    first = False
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise DriveError("truncated", f"{label}: truncated download: got {done} of {total} bytes")
        if done == 0:
            raise DriveError("truncated", f"{label}: Drive sent an empty file")
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DriveError("disk_full", f"{label}: the disk is full ({dest_dir}); free some space") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), done


# ------------------------------------------------------------------ registry entries (gdrive)
def byte_progress(progress, desc: str):
    """progress argument -> (callback(done, total) or None, close()). None/True: a tqdm bar on stderr
    (silent when stderr is not a terminal)."""
    if progress is False:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None, lambda: None
    bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
               disable=None, leave=False)

    def update(done, total):
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def _host_folders_text(filename: str, target: Path | None = None) -> str:
    cli = user_models_dir() / filename
    folders = [f"ComfyUI/models/pal/{filename}", f"stable-diffusion-webui/models/pal/{filename} (A1111/Forge)"]
    if target != cli:
        folders.append(f"{cli} (the CLI's folder)")
    return ", ".join(folders)


def manual_route(entry: dict, target: Path | None = None) -> str:
    """The by-hand route, for every Drive error message."""
    fid = entry["file_id"]
    src = entry.get("original_name") or f"{entry['name']}.pth"
    where = f"{target}, or in another models folder: " if target is not None else ""
    return (f"By hand: download {src} (Drive file {fid}) from {drive_link(fid)} in a browser, run "
            f"`pal convert {src} {entry['filename']}`, and put the result at {where}"
            f"{_host_folders_text(entry['filename'], target)}.")


def fetch(entry: dict, target_dir: Path, *, progress, keep_source: bool,
          trust_torchscript: bool, torchscript: bool) -> Path:
    """Download -> verify (weights_only, strict manifest, finite forward) -> convert -> atomic
    rename, under a per-file lock so two processes never download into each other."""
    name, target = entry["name"], target_dir / entry["filename"]
    if torchscript:
        if not entry.get("torchscript_file_id"):
            raise ModelNotAvailableError(f"model {name!r} has no TorchScript file in the registry")
        if not trust_torchscript:
            raise ModelNotAvailableError(
                f"model {name!r}: the TorchScript file contains code, so it is used only with "
                "--trust-torchscript (and then only its weights are kept); the default .pth needs no trust.")
    file_id = entry["torchscript_file_id"] if torchscript else entry["file_id"]
    route = manual_route(entry, target)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelNotAvailableError(f"model {name!r}: cannot create {target_dir} ({e}). {route}") from e
    lock = target_dir / ".locks" / f"{entry['filename']}.lock"
    with file_lock(lock, on_wait=lambda: say(f"{name}: another process is downloading it; waiting ({lock})")):
        if target.is_file():  # another process finished it while we waited for the lock
            check_lock(target, name)
            return target
        approx = entry.get("size_approx")
        free = shutil.disk_usage(target_dir).free
        if approx and free < approx * 2.2:  # the .pth and the converted file side by side, with margin
            raise ModelNotAvailableError(
                f"model {name!r} (Drive file {file_id}): the disk is full: {target_dir} has {human_size(free)} free, "
                f"about {human_size(int(approx * 2.2))} are needed. Free some space and retry. {route}")
        notice = entry.get("license_notice")
        say(f"downloading {name} (about {human_size(approx)}) from Google Drive file {file_id} into {target_dir}")
        if notice:
            say(f"licence: {notice}")
        cb, close = byte_progress(progress, name)
        tmp_src = None
        tmp_dst = target_dir / f".{entry['filename']}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            try:
                tmp_src, original, info = download(file_id, target_dir, progress=cb, what=f"model {name!r}")
            except DriveError as e:
                raise type(e)(e.kind, f"{str(e).rstrip('.')}. {route}") from None
            finally:
                close()
            got = tmp_src.stat().st_size
            if approx and not (0.9 * approx <= got <= 4 * approx):
                raise ModelNotAvailableError(
                    f"model {name!r} (Drive file {file_id}): got {human_size(got)}, expected about {human_size(approx)}: "
                    f"not the published checkpoint. {route}")
            src_sha = file_sha256(tmp_src)
            prov = {"source": "gdrive", "model": name, "gdrive_file_id": file_id,
                    "source_name": original or entry.get("original_name"), "homepage": entry.get("homepage"),
                    "license": entry.get("license")}
            try:
                from .checkpoint import CheckpointError, verify_and_convert

                verify_and_convert(tmp_src, tmp_dst, entry.get("config") or entry["preset"], provenance=prov,
                                   trust_torchscript=trust_torchscript)
            except CheckpointError as e:
                hint = (" It is a TorchScript archive: that file id is only used with --torchscript "
                        "--trust-torchscript." if is_torchscript_file(tmp_src) else "")
                raise ModelNotAvailableError(f"model {name!r} (Drive file {file_id}): {e}.{hint} Nothing was "
                                             f"kept. {route}") from None
            except OSError as e:
                raise ModelNotAvailableError(f"model {name!r} (Drive file {file_id}): could not write the "
                                             f"converted file in {target_dir} ({e}; disk full?). {route}") from None
            os.replace(tmp_dst, target)  # atomic: readers see nothing or the whole verified file
            record = {"model": name, "source": "gdrive", "file_id": file_id, "original_name": prov["source_name"],
                      "original_sha256": src_sha, "original_size": got, "sha256": file_sha256(target),
                      "size": target.stat().st_size, "recorded": now(), "license_notice": notice}
            update_lock(target_dir, "files", entry["filename"], record)
            say(f"{name}: verified and converted to {target}")
            say(f"{name}: trust on first use: original sha256 {src_sha}, converted sha256 {record['sha256']} "
                 f"(recorded in {target_dir / LOCK_NAME}; `pal models verify` re-checks)")
            if keep_source:
                keep = target_dir / (prov["source_name"] or f"{name}.pth")
                if keep.exists():
                    say(f"{name}: --keep-source: {keep} already exists, left as it was; the download was removed")
                else:
                    os.replace(tmp_src, keep)
                    tmp_src = None
            return target
        finally:
            for p in (tmp_src, tmp_dst):
                if p is not None:
                    Path(p).unlink(missing_ok=True)
