"""A loopback fake of Google Drive's public-file download (no network beyond 127.0.0.1).

Imitates what `models/gdrive.py` has to cope with (the real Drive cannot be reached from the test
machines; this follows the protocol as Drive serves public files and as gdown handles it):
- `GET /uc?export=download&id=ID` answers 303 to `/download?id=ID&export=download` (Drive's move
  to drive.usercontent.google.com);
- per file `mode`:
  - "direct": the bytes with `Content-Disposition: attachment; filename="..."` (small files);
  - "confirm": an HTML "can't scan this file for viruses" page with `<form id="download-form"
    action=".../download">` and hidden inputs id, export, confirm, uuid; only the submitted form
    (right uuid) gets the bytes;
  - "quota": the "Too many users have viewed or downloaded this file recently" page (200);
  - "denied": a "You need access" / sign-in page (403);
  - "missing": 404 "Sorry, the file you have requested does not exist";
  - "html200": some other HTML page on a 200, no form;
  - "html_body": an HTML body sent as application/octet-stream with an attachment header;
  - "truncated": a Content-Length larger than the body, then the connection closes;
  - "legacy": an older warning page with a `/uc?export=download&confirm=<token>&id=ID` link.
Every request is recorded in `drive.requests` (method, path).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WARNING_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">{name}</a> ({size})</span>
is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="{base}/download?authuser=0" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">
</form></div></body></html>"""
QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<p class="uc-error-caption">Sorry, you can't view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try
accessing the file again later. If the file you are trying to access is particularly large or is shared
with many people, it may take up to 24 hours to be able to view or download the file.</p></body></html>"""
DENIED_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - You need access</title></head><body>
<p>You need access</p><p>Request access, or switch to an account with access.</p>
<a href="https://accounts.google.com/ServiceLogin?continue=x">Sign in</a></body></html>"""
MISSING_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - 404</title></head><body>
<p>Sorry, the file you have requested does not exist.</p></body></html>"""
LEGACY_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<a id="uc-download-link" href="/uc?export=download&amp;confirm={token}&amp;id={id}">Download anyway</a>
</body></html>"""
OTHER_PAGE = """<!DOCTYPE html><html><head><title>Google Drive</title></head><body>
<p>Something went wrong. Try again.</p></body></html>"""


@dataclass
class DriveFile:
    data: bytes
    name: str
    mode: str = "confirm"


class FakeDrive:
    """`with FakeDrive() as drive: drive.add("ID", b"...", "x.pth", mode="confirm")`; `drive.url` is
    what PAL_GDRIVE_URL should be."""

    def __init__(self, lifetime_s: float = 120.0):
        self.files: dict[str, DriveFile] = {}
        self.requests: list[tuple[str, str]] = []
        self.uuids: dict[str, str] = {}
        self.lifetime_s = lifetime_s
        self.gate: threading.Event | None = None  # set by a test to hold file bodies back
        self._server: ThreadingHTTPServer | None = None

    def add(self, file_id: str, data: bytes, name: str, mode: str = "confirm") -> None:
        self.files[file_id] = DriveFile(data, name, mode)

    def body_requests(self) -> int:
        """Requests that were answered with file bytes."""
        return sum(1 for m, p in self.requests if m == "BODY")

    def start(self) -> FakeDrive:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._timer.cancel()

    def __enter__(self) -> FakeDrive:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


def _handler(drive: FakeDrive):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def _send(self, status, body: bytes, ctype="text/html; charset=utf-8", headers=None, length=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _file(self, f: DriveFile, truncated: bool = False):
            if drive.gate is not None:
                drive.gate.wait(30)
            drive.requests.append(("BODY", self.path))
            headers = {"Content-Disposition": f'attachment; filename="{f.name}"'}
            body = f.data[: len(f.data) // 2] if truncated else f.data
            self._send(200, body, "application/octet-stream", headers, length=len(f.data))

        def do_GET(self):
            drive.requests.append(("GET", self.path))
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fid = q.get("id", "")
            if parts.path == "/uc":
                self.send_response(303)
                self.send_header("Location", f"{drive.url}/download?{parts.query}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts.path != "/download":
                return self._send(404, MISSING_PAGE.encode())
            f = drive.files.get(fid)
            if f is None or f.mode == "missing":
                return self._send(404, MISSING_PAGE.encode())
            if f.mode == "quota":
                return self._send(200, QUOTA_PAGE.encode())
            if f.mode == "denied":
                return self._send(403, DENIED_PAGE.encode())
            if f.mode == "html200":
                return self._send(200, OTHER_PAGE.encode())
            if f.mode == "html_body":
                return self._send(200, OTHER_PAGE.encode(), "application/octet-stream",
                                  {"Content-Disposition": f'attachment; filename="{f.name}"'})
            if f.mode == "truncated":
                return self._file(f, truncated=True)
            if f.mode == "direct":
                return self._file(f)
            if f.mode == "legacy":
                if q.get("confirm") == "Xq1z":
                    return self._file(f)
                return self._send(200, LEGACY_PAGE.format(token="Xq1z", id=fid).encode())
            # confirm flow: the bytes only for the submitted form with this file's uuid
            if q.get("confirm") and q.get("uuid") == drive.uuids.get(fid) and q.get("authuser") == "0":
                return self._file(f)
            token = drive.uuids.setdefault(fid, str(uuid.uuid4()))
            page = WARNING_PAGE.format(id=fid, name=f.name, size=f"{len(f.data) // 1000}K", uuid=token,
                                       base=drive.url)
            return self._send(200, page.encode())

    return Handler
