"""Downloads through huggingface_hub against the loopback fake Hub (tests/fakehub.py).

In-process tests pass the endpoint per call (comfyui_pal reads HF_ENDPOINT at call time) and patch
huggingface_hub's import-time constants; the cross-process tests set the environment before the
child imports anything, which is how a user's HF_ENDPOINT / HF_HUB_OFFLINE really arrive.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

try:
    from fakehub import FakeHub, child_env, forbid_network, isolate_hub_env, point_hf_at, write_user_registry
except ImportError:  # tests/ imported as a package
    from .fakehub import FakeHub, child_env, forbid_network, isolate_hub_env, point_hf_at, write_user_registry

from comfyui_pal.models import hub

pytest.importorskip("huggingface_hub")

REPO = "comfyui-pal/test-weights"
FILE = "tiny-pal.safetensors"
DATA = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, deterministic


@pytest.fixture
def fake(monkeypatch, tmp_path):
    isolate_hub_env(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    with FakeHub() as server:
        server.commit_id = server.add_file(REPO, FILE, DATA)
        point_hf_at(monkeypatch, server, tmp_path)
        write_user_registry(tmp_path, {"tiny": {
            "repo_id": REPO, "filename": FILE, "revision": server.commit_id,
            "sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA)}})
        yield server


def _blobs(tmp_path):
    return sorted((tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs").glob("*"))


def test_first_download_fetches_verifies_then_serves_from_cache(fake, tmp_path):
    seen = []
    path = hub.resolve("tiny", download=True, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == DATA
    assert str(path).startswith(str(tmp_path / "hf" / "hub"))
    assert fake.count("HEAD", f"/{REPO}/resolve/{fake.commit_id}/{FILE}") == 1
    assert fake.count("GET", "/objects/") == 1  # body fetched from the "CDN" origin after the 302
    assert seen and seen[-1][0] == len(DATA)
    before = len(fake.requests)
    assert hub.resolve("tiny") == path
    assert len(fake.requests) == before  # pinned commit + verified cache: not even a HEAD
    assert [r["present"] for r in hub.list_models() if r["name"] == "tiny"] == [True]


def test_second_process_offline_uses_cache_with_zero_requests(fake, tmp_path):
    path = hub.resolve("tiny", download=True, progress=False)
    before = len(fake.requests)
    code = ("import sys, comfyui_pal.models.hub as h\n"
            "print(h.resolve('tiny'))\n"
            "print('huggingface_hub' in sys.modules)\n")
    for offline in ("1", "0"):  # offline, and online: a pinned, verified cached file needs no request
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=child_env(HF_HUB_OFFLINE=offline, HF_ENDPOINT=fake.url))
        assert out.returncode == 0, out.stderr
        got, imported = out.stdout.split()
        assert got == str(path) and imported == "False"
    assert len(fake.requests) == before


def test_offline_with_empty_cache_fails_fast_and_names_the_file(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    host_dir = tmp_path / "ComfyUI" / "models" / "pal"
    t0 = time.perf_counter()
    with pytest.raises(hub.ModelNotAvailableError) as ei:
        hub.resolve("tiny", download=True, models_dir=host_dir)
    assert time.perf_counter() - t0 < 1.0
    msg = str(ei.value)
    assert str(host_dir / FILE) in msg and hashlib.sha256(DATA).hexdigest() in msg and "HF_HUB_OFFLINE" in msg
    assert f"{fake.url}/{REPO}/resolve/{fake.commit_id}/{FILE}" in msg
    assert fake.requests == []


@pytest.mark.parametrize("kind", ["corrupted", "truncated"])
def test_bad_download_is_rejected_removed_and_retried(fake, tmp_path, kind):
    bad = bytes([DATA[0] ^ 0xFF]) + DATA[1:] if kind == "corrupted" else DATA[:-1000]
    fake.override_body[(REPO, FILE)] = bad  # the server (or a broken mirror/CDN) serves wrong bytes
    with pytest.raises(hub.ChecksumMismatchError) as ei:
        hub.resolve("tiny", download=True, progress=False)
    assert ("sha256" if kind == "corrupted" else "size") in str(ei.value)
    assert "removed" in str(ei.value)
    assert _blobs(tmp_path) == []  # nothing bad left behind for the next call to pick up
    del fake.override_body[(REPO, FILE)]
    path = hub.resolve("tiny", download=True, progress=False)
    assert path.read_bytes() == DATA and fake.count("HEAD") == 2


def test_corrupted_cache_is_detected_and_healed(fake, tmp_path):
    path = hub.resolve("tiny", download=True, progress=False)
    blob = path.resolve()
    blob.write_bytes(b"\0" * len(DATA))  # bit rot / a tool that overwrote the blob: same size
    with pytest.raises(hub.ModelNotAvailableError, match="rejected"):
        hub.resolve("tiny", download=False)
    heads = fake.count("HEAD")
    assert hub.resolve("tiny", download=True, progress=False).read_bytes() == DATA
    assert fake.count("HEAD") == heads + 1


def test_download_into_host_models_dir(fake, tmp_path):
    host_dir = tmp_path / "ComfyUI" / "models" / "pal"
    path = hub.resolve("tiny", download=True, models_dir=host_dir, progress=False)
    assert path == host_dir / FILE and path.read_bytes() == DATA and not path.is_symlink()
    before = len(fake.requests)
    assert hub.resolve("tiny", models_dir=host_dir) == path and len(fake.requests) == before
    # `pal models download --models-dir` copies a cached copy instead of downloading again
    other = tmp_path / "sd-webui" / "models" / "pal"
    cached = hub.resolve("tiny", download=True, progress=False)
    before = len(fake.requests)
    assert hub.download("tiny", models_dir=other, progress=False).read_bytes() == DATA
    assert cached.exists() and len(fake.requests) == before


def test_bad_download_into_models_dir_is_removed(fake, tmp_path):
    host_dir = tmp_path / "models" / "pal"
    fake.override_body[(REPO, FILE)] = DATA[::-1]
    with pytest.raises(hub.ChecksumMismatchError):
        hub.resolve("tiny", download=True, models_dir=host_dir, progress=False)
    assert not (host_dir / FILE).exists()


def _entry(tmp_path, fake, **fields):
    base = {"repo_id": REPO, "filename": FILE, "revision": "main", "sha256": hashlib.sha256(DATA).hexdigest()}
    write_user_registry(tmp_path, {"tiny": {**base, **fields}})


@pytest.mark.parametrize("fields, expect", [
    ({"repo_id": "comfyui-pal/no-such-repo"}, ["'comfyui-pal/no-such-repo' was not found", "PAL_HUB_REPO_TINY"]),
    ({"revision": "v9"}, ["revision 'v9' does not exist", "PAL_HUB_REVISION_TINY"]),
    ({"filename": "nope.safetensors"}, ["'nope.safetensors' does not exist in the Hub repo", "revision 'main'"]),
])
def test_hub_errors_become_clear_messages(fake, tmp_path, fields, expect):
    _entry(tmp_path, fake, **fields)
    with pytest.raises(hub.HubDownloadError) as ei:
        hub.resolve("tiny", download=True, progress=False)
    for text in expect:
        assert text in str(ei.value)
    assert "put" in str(ei.value).lower()  # always says how to do it by hand


def test_gated_and_private_repos(fake, tmp_path, monkeypatch):
    fake.repos[REPO].gated = True
    _entry(tmp_path, fake)
    with pytest.raises(hub.HubDownloadError, match="gated"):
        hub.resolve("tiny", download=True, progress=False)
    fake.repos[REPO].gated = False
    fake.repos[REPO].private = True
    with pytest.raises(hub.HubDownloadError, match="private"):
        hub.resolve("tiny", download=True, progress=False)
    path = hub.resolve("tiny", download=True, token="hf_loopback_token", progress=False)
    assert path.read_bytes() == DATA
    head = [r for r in fake.requests if r.method == "HEAD" and r.server == "hub"][-1]
    assert head.headers.get("authorization") == "Bearer hf_loopback_token"
    cdn = [r for r in fake.requests if r.server == "cdn"][-1]
    assert "authorization" not in cdn.headers  # the token is not leaked to another origin


def test_mirror_of_an_unpublished_entry_via_env(fake, tmp_path, monkeypatch):
    mirror_commit = fake.add_file("someone/pal-mirror", "pal4vst-unified-swin-b-w12.safetensors", DATA)
    monkeypatch.setenv("PAL_HUB_REPO_PAL4VST_UNIFIED", "someone/pal-mirror")
    monkeypatch.setenv("PAL_HUB_SHA256_PAL4VST_UNIFIED", hashlib.sha256(DATA).hexdigest())
    path = hub.resolve("pal4vst-unified", download=True, progress=False)
    assert path.read_bytes() == DATA and mirror_commit in str(path)


def test_cli_download_path_list_in_a_fresh_process(fake, tmp_path):
    """HF_ENDPOINT set before huggingface_hub is imported, as a user would."""
    env = child_env(HF_ENDPOINT=fake.url)
    run = [sys.executable, "-m", "comfyui_pal.cli.hub"]
    out = subprocess.run(run + ["models", "download", "tiny", "--quiet"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["name"] == "tiny" and row["size"] == len(DATA)
    assert open(row["path"], "rb").read() == DATA
    out = subprocess.run(run + ["models", "path", "tiny"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == row["path"]
    out = subprocess.run(run + ["models", "path", "pal4vst-shadow"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "pal models download pal4vst-shadow" in out.stderr
    rows = {r["name"]: r for r in hub.list_models()}  # same cache, seen from this process
    assert rows["tiny"]["present"] is True and rows["tiny"]["path"] == row["path"]
