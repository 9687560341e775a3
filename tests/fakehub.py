"""A loopback fake of the Hugging Face Hub for the hub tests (no network beyond 127.0.0.1).

Speaks the parts of the Hub protocol that huggingface_hub's `hf_hub_download`, `model_info`,
`get_hf_file_metadata`, `create_repo` and `create_commit` use (as documented for huggingface_hub
2.4.0's file_download.py / hf_api.py; the project keeps no copy of that protocol text): HEAD/GET on
/{repo}/resolve/{rev}/{path} with X-Repo-Commit, ETag/X-Linked-Etag, X-Linked-Size, Range,
X-Error-Code errors and an optional 302 to a second "CDN" server (another origin); the
/api/agent-harnesses probe; /api/models/{repo}/revision/{rev} (model_info: sha + siblings); /api/repos/create, /preupload/, /commit/ (regular upload mode) and
/api/validate-yaml. Every request is recorded in `hub.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: bytes}
    private: bool = False
    gated: bool = False
    last_summary: str = ""


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    server: str  # "hub" or "cdn"


class FakeHub:
    """`with FakeHub() as hub: hub.add_file("org/repo", "f.bin", b"...")`; `hub.url` is the endpoint."""

    def __init__(self, cdn: bool = True, lifetime_s: float = 120.0):
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.cdn = cdn  # serve file bodies through a 302 to another origin, like the real Hub
        self.lifetime_s = lifetime_s
        self.override_body: dict[tuple[str, str], bytes] = {}  # (repo, path) -> bytes to serve instead
        self._lock = threading.Lock()
        self._commit_counter = 0
        self._servers: list[ThreadingHTTPServer] = []

    # ------------------------------------------------------------------ repository content
    def _new_commit_id(self, repo_id: str) -> str:
        self._commit_counter += 1
        return hashlib.sha1(f"{repo_id}:{self._commit_counter}:{time.time_ns()}".encode()).hexdigest()

    def add_file(self, repo_id: str, path: str, content: bytes, branch: str = "main") -> str:
        """Commit one file on `branch` (creating the repo); returns the new commit id."""
        return self.commit(repo_id, {path: content}, branch=branch)

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.commits.get(repo.branches.get(branch, ""), {})
            commit = self._new_commit_id(repo_id)
            repo.commits[commit] = {**parent, **files}
            repo.branches[branch] = commit
            return commit

    def file_at(self, repo_id: str, revision: str, path: str) -> bytes | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        commit = repo.branches.get(revision, revision)
        return repo.commits.get(commit, {}).get(path)

    # ------------------------------------------------------------------ request accounting
    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(1 for r in list(self.requests)
                   if (method is None or r.method == method) and contains in r.path)

    def file_requests(self) -> int:
        """Requests that are about files (everything except the agent-harness probe)."""
        return sum(1 for r in list(self.requests) if "agent-harnesses" not in r.path)

    # ------------------------------------------------------------------ server lifecycle
    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self, role))
            server.daemon_threads = True
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        # self-stop so a forgotten server never outlives a hung test for long
        timer = threading.Timer(self.lifetime_s, self.stop)
        timer.daemon = True
        timer.start()
        self._timer = timer
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"http://{host}:{port}"


def _make_handler(hub: FakeHub, role: str):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no pooled keep-alive socket outlives stop()
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):  # keep pytest output clean
            pass

        # -------------------------------------------------------------- helpers
        def _record(self):
            hub.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                        role))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only=False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not head_only and body:
                self.wfile.write(body)

        def _json(self, status: int, obj, headers: dict | None = None):
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, extra: dict | None = None, head_only=False):
            body = json.dumps({"error": message}).encode()
            self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                      "Content-Type": "application/json", **(extra or {})}, head_only=head_only)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        # -------------------------------------------------------------- routes
        def do_HEAD(self):
            self._record()
            self._route(head_only=True)

        def do_GET(self):
            self._record()
            self._route(head_only=False)

        def do_POST(self):
            self._record()
            path = urlsplit(self.path).path
            body = self._body()
            if role != "hub":
                return self._send(404)
            if path == "/api/repos/create":
                return self._create_repo(json.loads(body or b"{}"))
            if path == "/api/validate-yaml":
                return self._json(200, {})
            parts = path.split("/")
            # /api/models/{org}/{name}/preupload/{rev}  and  .../commit/{rev}
            if len(parts) >= 7 and parts[1] == "api" and parts[2] == "models":
                repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                rev = unquote("/".join(parts[6:]))
                if repo_id not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if action == "preupload":
                    files = json.loads(body or b"{}").get("files", [])
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if action == "commit":
                    return self._commit(repo_id, rev, body)
            return self._send(404)

        def _create_repo(self, payload: dict):
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            url = f"{hub.url}/{repo_id}"
            with hub._lock:
                if repo_id in hub.repos:
                    return self._json(409, {"error": "You already created this model repo", "url": url})
                hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            return self._json(200, {"url": url})

        def _commit(self, repo_id: str, rev: str, body: bytes):
            files = {}
            summary = ""
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["key"] == "header":
                    summary = item["value"].get("summary", "")
                elif item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                else:
                    return self._json(400, {"error": f"fake hub: unsupported commit op {item['key']}"})
            commit = hub.commit(repo_id, files, branch=rev)
            hub.repos[repo_id].last_summary = summary
            return self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                                    "success": True})

        def _route(self, head_only: bool):
            path = urlsplit(self.path).path
            if role == "cdn":
                return self._serve_cdn(path, head_only)
            if path == "/api/agent-harnesses":
                return self._json(200, {"standardEnvVars": [], "harnesses": {}})
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "revision":
                return self._model_info(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]), head_only)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head_only)
            return self._error(404, "RepoNotFound", "not found", head_only=head_only)

        def _model_info(self, repo_id: str, revision: str, head_only: bool):
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self.headers.get("Authorization")):
                return self._error(404, "RepoNotFound", "Repository not found", head_only=head_only)
            commit = repo.branches.get(revision, revision if revision in repo.commits else None)
            if commit is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, head_only=head_only)
            files = repo.commits[commit]
            return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.private,
                                    "gated": "auto" if repo.gated else False,
                                    "siblings": [{"rfilename": p} for p in sorted(files)]})

        def _resolve(self, repo_id: str, revision: str, filename: str, head_only: bool):
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self.headers.get("Authorization")):
                return self._error(404, "RepoNotFound", "Repository not found", head_only=head_only)
            if repo.gated:
                return self._error(403, "GatedRepo", "Access to this model is restricted", head_only=head_only)
            commit = repo.branches.get(revision, revision if revision in repo.commits else None)
            if commit is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, head_only=head_only)
            content = repo.commits[commit].get(filename)
            if content is None:
                return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit},
                                   head_only=head_only)
            etag = hashlib.sha256(content).hexdigest()  # LFS-style etag = sha256 of the true content
            served = hub.override_body.get((repo_id, filename), content)
            meta = {"X-Repo-Commit": commit, "ETag": f'"{git_sha1(content)}"', "X-Linked-Etag": f'"{etag}"',
                    "X-Linked-Size": len(served), "Accept-Ranges": "bytes"}
            if hub.cdn:
                key = f"{repo_id}/{commit}/{filename}"
                with hub._lock:
                    hub._cdn_objects = getattr(hub, "_cdn_objects", {})
                    hub._cdn_objects[key] = served
                location = f"{hub.cdn_url}/objects/{key}?sig=loopback"
                self.send_response(302)
                for k, v in {**meta, "Location": location, "Content-Length": 0, "Connection": "close"}.items():
                    self.send_header(k, str(v))
                self.end_headers()
                return
            self._send_bytes(served, meta, head_only)

        def _serve_cdn(self, path: str, head_only: bool):
            key = unquote(path[len("/objects/"):]) if path.startswith("/objects/") else None
            data = getattr(hub, "_cdn_objects", {}).get(key) if key else None
            if data is None:
                return self._send(404)
            self._send_bytes(data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, head_only)

        def _send_bytes(self, data: bytes, headers: dict, head_only: bool):
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and not head_only:
                start = int(rng[6:].split("-")[0] or 0)
                chunk = data[start:]
                self._send(206, chunk, {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                return
            if head_only:
                self.send_response(200)
                for k, v in {**headers, "Content-Length": len(data), "Connection": "close"}.items():
                    self.send_header(k, str(v))
                self.end_headers()
                return
            self._send(200, data, headers)

    return Handler


# ---------------------------------------------------------------------- test-setup helpers
HUB_ENV_VARS = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HUGGINGFACE_HUB_CACHE", "PAL_REGISTRY", "PAL_MODELS_DIR")


def isolate_hub_env(monkeypatch, tmp_path) -> dict:
    """Point every Hub / registry location at tmp_path and clear overrides (undone by monkeypatch)."""
    import os
    import sys

    for var in list(os.environ):
        if var in HUB_ENV_VARS or var.startswith("PAL_HUB_"):
            monkeypatch.delenv(var)
    paths = {"HF_HOME": tmp_path / "hf", "HF_HUB_CACHE": tmp_path / "hf" / "hub",
             "XDG_CONFIG_HOME": tmp_path / "config", "XDG_DATA_HOME": tmp_path / "data"}
    for var, value in paths.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported earlier in this process: its import-time copies matter too
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return paths


def point_hf_at(monkeypatch, hub: FakeHub, tmp_path) -> None:
    """In-process: comfyui_pal passes HF_ENDPOINT (read at call time) as the per-call endpoint.
    huggingface_hub froze the rest at import: leave constants.ENDPOINT alone (hf_hub_download only
    swaps the endpoint into URLs that start with it), give the agent-harness probe a fresh cached
    answer so it never fetches, and keep the token file inside tmp_path."""
    import json

    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if hasattr(constants, "AGENT_HARNESSES_PATH"):
        probe = tmp_path / "hf" / ".agent_harnesses.json"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(probe))
    if hasattr(constants, "HF_TOKEN_PATH"):
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))


def forbid_network(monkeypatch) -> None:
    """Safety net: any name lookup other than loopback fails inside the test."""
    import socket

    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"test tried to reach {host!r}: only the loopback fake hub is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


def write_user_registry(tmp_path, models: dict):
    import json

    path = tmp_path / "config" / "comfyui-pal" / "registry.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": models}))
    return path


def child_env(**extra) -> dict:
    """Environment for a subprocess that can import comfyui_pal exactly as this process does."""
    import os
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def a1111_script(tmp_path, monkeypatch):
    """Context manager: scripts/pal_autofix.py loaded the way A1111 loads it (tests/a1111_stub), with
    `models/` under tmp_path/webui; yields (module, shared). Restores sys.modules afterwards."""
    import contextlib
    import sys
    from pathlib import Path

    @contextlib.contextmanager
    def cm():
        stub = Path(__file__).resolve().parent / "a1111_stub"
        root = Path(__file__).resolve().parents[1]
        keys = ("modules.", "gradio", "comfyui_pal.a1111")
        saved = {k: v for k, v in sys.modules.items() if k == "modules" or k.startswith(keys)}
        for k in saved:
            del sys.modules[k]
        monkeypatch.syspath_prepend(str(stub))
        try:
            from modules import paths, scripts, shared

            paths.models_path = str(tmp_path / "webui" / "models")
            shared.opts.data.clear()
            yield scripts.load_module(str(root / "scripts" / "pal_autofix.py"), str(root)), shared
        finally:
            for k in [k for k in sys.modules if k == "modules" or k.startswith(keys)]:
                del sys.modules[k]
            sys.modules.update(saved)

    return cm()
