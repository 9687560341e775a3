"""A small Google Drive download client (standard library only) for the authors' published files.

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
import tempfile
from collections.abc import Callable
from html.parser import HTMLParser
from http.client import HTTPException
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlencode, urljoin, urlsplit
from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

from .registry import ModelNotAvailableError, is_offline

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
        if "id" in fields or "confirm" in fields:
            target = urljoin(url, action or url)
            return f"{target.split('?')[0]}?{urlencode(fields)}"
    for href in parser.links:
        return urljoin(url, href.replace("&amp;", "&"))
    title = parser.title.strip() or "untitled page"
    raise DriveError("html", f"{label}: {_KIND_TEXT['html']} ({title!r}, no download form on it)")


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
