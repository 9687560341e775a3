"""`hf:owner/repo[@revision][/path]` references against the loopback fake Hub (tests/fakehub.py):
push on one "machine", download and detect on another, pinning, sha256 from the LFS metadata,
offline behaviour, every error, the ComfyUI loader's hub_id and the A1111-style resolution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

try:
    from fakehub import FakeHub, a1111_script, child_env, forbid_network, isolate_hub_env, point_hf_at
except ImportError:  # tests/ imported as a package
    from .fakehub import FakeHub, a1111_script, child_env, forbid_network, isolate_hub_env, point_hf_at

from comfyui_pal.models import hub

pytest.importorskip("huggingface_hub")
FIX = Path(__file__).resolve().parent / "fixtures"
REPO = "me/pal-ft"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A real (tiny, random-weight) comfyui-pal checkpoint, as `pal convert` writes it."""
    from comfyui_pal.models.checkpoint import convert

    out = tmp_path_factory.mktemp("ckpt") / "pal-ft.safetensors"
    return convert(FIX / "tiny_swin_upernet_w7.pth", out)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    isolate_hub_env(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    monkeypatch.delenv("PAL_OFFLINE", raising=False)
    with FakeHub() as server:
        point_hf_at(monkeypatch, server, tmp_path)
        yield server


def pushed(fake, ckpt, repo=REPO) -> dict:
    return hub.push(ckpt, repo, token="hf_write")


def test_push_then_download_by_reference_and_load(fake, ckpt, tmp_path):
    result = pushed(fake, ckpt)
    path = hub.resolve(f"hf:{REPO}", download=True, progress=False)
    assert path.read_bytes() == ckpt.read_bytes()
    # the card written by push named the file; the commit and sha256 are recorded (lock file)
    rec = hub.read_lock(hub.user_models_dir())["refs"][f"hf:{REPO}"]
    assert rec["commit"] == result["revision"] and rec["sha256"] == result["sha256"]
    assert rec["card"]["filename"] == "pal-ft.safetensors" and rec["path"] == "pal-ft.safetensors"
    from comfyui_pal.models import load_detector

    det = load_detector(f"hf:{REPO}", device="cpu", input_size=(64, 64))
    assert det.detect(np.zeros((32, 32, 3), np.uint8)).prob.shape == (32, 32)
    # the reference is listed (dropdowns: Hub models already in the cache)
    assert f"hf:{REPO}" in [r["name"] for r in hub.list_models()]
    # a bare owner/repo works when it is neither a file nor a registry name
    assert hub.resolve(REPO, download=True, progress=False).read_bytes() == path.read_bytes()


def test_revision_is_pinned_to_a_commit_even_when_the_branch_moves(fake, ckpt, tmp_path):
    first = pushed(fake, ckpt)["revision"]
    a = hub.resolve(f"hf:{REPO}@main", download=True, progress=False)
    from comfyui_pal.models.checkpoint import convert

    v2 = convert(FIX / "tiny_swin_upernet_w7.pth", tmp_path / "v2.safetensors", fp16=True)  # other bytes
    second = hub.push(v2, REPO, token="t", path_in_repo="pal-ft.safetensors", commit_message="v2")["revision"]
    n = fake.file_requests()
    b = hub.resolve(f"hf:{REPO}@main", download=True)
    assert b == a and fake.file_requests() == n  # still the pinned commit, and no request at all
    assert hub.read_lock(hub.user_models_dir())["refs"][f"hf:{REPO}@main"]["commit"] == first
    c = hub.download(f"hf:{REPO}@main", update=True, progress=False)  # explicit update re-resolves
    assert c.read_bytes() == v2.read_bytes() != a.read_bytes()
    assert hub.read_lock(hub.user_models_dir())["refs"][f"hf:{REPO}@main"]["commit"] == second
    # an explicit 40-hex commit or a path in the repo work too
    assert hub.resolve(f"hf:{REPO}@{first}/pal-ft.safetensors", download=True).read_bytes() == ckpt.read_bytes()


def test_sha256_mismatch_deletes_the_download(fake, ckpt, tmp_path):
    pushed(fake, ckpt)
    good = ckpt.read_bytes()
    fake.override_body[(REPO, "pal-ft.safetensors")] = good[:-1] + bytes([good[-1] ^ 1])  # same size
    host = tmp_path / "ComfyUI" / "models" / "pal"
    with pytest.raises(hub.ChecksumMismatchError, match="sha256 mismatch") as ei:
        hub.resolve(f"hf:{REPO}", model_dirs=[host], download=True, progress=False)
    assert "deleted" in str(ei.value)
    assert not [p for p in host.rglob("*.safetensors")]
    assert f"hf:{REPO}" not in hub.read_lock(host)["refs"]


def test_offline_cache_hit_with_zero_requests_and_a_miss_fails_at_once(fake, ckpt, tmp_path):
    pushed(fake, ckpt)
    path = hub.resolve(f"hf:{REPO}", download=True, progress=False)
    n = len(fake.requests)
    code = ("import sys, comfyui_pal.models as m\n"
            f"print(m.resolve('hf:{REPO}'))\n"
            "print('huggingface_hub' in sys.modules)\n"
            "try:\n"
            "    m.resolve('hf:me/never-downloaded', download=True)\n"
            "except ValueError as e:\n"
            "    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=child_env(HF_HUB_OFFLINE="1", HF_ENDPOINT=fake.url))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(path) and lines[1] == "False"
    assert "pal models download hf:me/never-downloaded" in lines[2]
    assert len(fake.requests) == n


def test_two_machine_round_trip_with_the_cli(fake, ckpt, tmp_path):
    """README 'Models': push here; on the other machine download, then detect offline."""
    from comfyui_pal.cli import main

    assert main(["push", str(ckpt), "--repo", REPO, "--token", "t"]) == 0
    other = tmp_path / "machine-b"
    env = child_env(HF_ENDPOINT=fake.url, HF_HOME=other / "hf", HF_HUB_CACHE=other / "hf" / "hub",
                    XDG_DATA_HOME=other / "data", XDG_CONFIG_HOME=other / "config")
    pal = [sys.executable, "-m", "comfyui_pal.cli"]
    out = subprocess.run(pal + ["models", "download", f"hf:{REPO}"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[-1])
    assert row["sha256"] == hub.file_sha256(ckpt) and "pinned to commit" in out.stderr
    n = len(fake.requests)
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run(pal + ["detect", str(FIX / "input_B.png"), "--model", f"hf:{REPO}", "--device", "cpu",
                                "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert len(fake.requests) == n and '"par"' in out.stdout


def _bare_safetensors(path: Path, config: dict | None) -> Path:
    meta = {"format": "comfyui-pal/1"}
    if config is not None:
        meta["config"] = json.dumps(config)
    save_file({"backbone.x": np.zeros(4, np.float32)}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("case, ref, expect", [
    ("repo", "hf:me/nope", ["'me/nope' was not found", "token"]),
    ("gated", f"hf:{REPO}", ["gated", "token"]),
    ("revision", f"hf:{REPO}@v9", ["revision 'v9' does not exist"]),
    ("file", f"hf:{REPO}/missing.safetensors", ["'missing.safetensors' does not exist", "pal-ft.safetensors"]),
    ("several", "hf:me/two", ["more than one checkpoint", "a.safetensors", "b.safetensors",
                              "hf:me/two/a.safetensors"]),
    ("notpal", "hf:me/notpal", ["not a PAL checkpoint", "deleted"]),
    ("unknown-arch", "hf:me/alien", ["architecture metadata is unknown", "deleted"]),
    ("pth", "hf:me/pth/model.pth", ["not a .safetensors file", "--allow-pth"]),
])
def test_errors_name_the_reference_and_the_fix(fake, ckpt, tmp_path, case, ref, expect):
    pushed(fake, ckpt)
    if case == "gated":
        fake.repos[REPO].gated = True
    fake.commit("me/two", {"a.safetensors": ckpt.read_bytes(), "b.safetensors": ckpt.read_bytes()})
    fake.commit("me/notpal", {"x.safetensors": _bare_safetensors(tmp_path / "x.safetensors", None).read_bytes()})
    fake.commit("me/alien", {"x.safetensors": _bare_safetensors(tmp_path / "y.safetensors",
                                                                  {"backbone": {"type": "Alien"}}).read_bytes()})
    fake.commit("me/pth", {"model.pth": (FIX / "tiny_swin_upernet_w7.pth").read_bytes()})
    with pytest.raises(hub.ModelNotAvailableError) as ei:
        hub.resolve(ref, download=True, progress=False)
    msg = str(ei.value)
    assert msg.startswith(ref)  # every error names the reference first
    for text in expect:
        assert text in msg, text
    assert not list(hub.user_models_dir().rglob("*.safetensors"))  # nothing half-kept


def test_pth_only_with_the_flag_and_torchscript_never(fake, ckpt, tmp_path):
    fake.commit("me/pth", {"model.pth": (FIX / "tiny_swin_upernet_w7.pth").read_bytes(),
                           "end2end.pt": (FIX / "tiny_swin_upernet_w7.end2end.pt").read_bytes()})
    host = tmp_path / "models" / "pal"
    path = hub.resolve("hf:me/pth/model.pth", model_dirs=[host], download=True, allow_pth=True, progress=False)
    assert path.read_bytes() == (FIX / "tiny_swin_upernet_w7.pth").read_bytes()
    with pytest.raises(hub.ModelNotAvailableError, match="never taken from the Hub"):
        hub.resolve("hf:me/pth/end2end.pt", model_dirs=[host], download=True, allow_pth=True, progress=False)
    assert not list(host.rglob("end2end.pt"))


def test_not_downloading_makes_no_request(fake, ckpt):
    pushed(fake, ckpt)
    n = len(fake.requests)
    with pytest.raises(hub.ModelNotAvailableError, match=f"pal models download hf:{REPO}"):
        hub.resolve(f"hf:{REPO}")
    assert len(fake.requests) == n


def test_comfyui_loader_hub_id(fake, ckpt, tmp_path, monkeypatch):
    from comfyui_pal.pal_nodes import host
    from comfyui_pal.pal_nodes import model as pal_model

    pushed(fake, ckpt)
    comfy = tmp_path / "ComfyUI" / "models" / "pal"
    monkeypatch.setattr(pal_model, "model_dirs", lambda: [str(comfy)])
    pm = pal_model.load("pal-starter", "cpu", "fp32", hub_id=REPO)  # hub_id wins over the dropdown
    assert Path(pm.path).is_relative_to(comfy) and Path(pm.path).read_bytes() == ckpt.read_bytes()
    assert pm.name == REPO
    monkeypatch.setattr(host, "list_local_models", lambda: [str(Path(pm.path).relative_to(comfy)), "mine.pth"])
    names = pal_model.available_models()
    assert f"hf:{REPO}" in names and "mine.pth" in names  # listed once downloaded, by its reference
    assert not [n for n in names if n.startswith("hf/")]  # not a second time as a models/pal/hf/... file


def test_a1111_style_resolution_with_a_reference(fake, ckpt, tmp_path):
    """scripts/pal_autofix.py: resolve(ref, model_dirs=[<webui>/models/pal], download=<allow setting>)."""
    pushed(fake, ckpt)
    webui = tmp_path / "stable-diffusion-webui" / "models" / "pal"
    n = len(fake.requests)
    with pytest.raises(hub.ModelNotAvailableError, match="not downloaded"):
        hub.resolve(f"hf:{REPO}", model_dirs=[webui], download=False)
    assert len(fake.requests) == n
    path = hub.resolve(f"hf:{REPO}", model_dirs=[webui], download=True, progress=False)
    assert path.is_relative_to(webui) and path.read_bytes() == ckpt.read_bytes()
    assert f"hf:{REPO}" in hub.read_lock(webui)["refs"]


def test_a1111_script_accepts_a_reference_when_downloading_is_allowed(fake, ckpt, tmp_path, monkeypatch):
    pushed(fake, ckpt)
    with a1111_script(tmp_path, monkeypatch) as (mod, shared):
        shared.opts.data["pal_allow_download"] = False
        n = len(fake.requests)
        with pytest.raises(hub.ModelNotAvailableError, match=f"pal models download hf:{REPO}"):
            mod.host.resolve_model(f"hf:{REPO}")
        assert len(fake.requests) == n
        shared.opts.data["pal_allow_download"] = True
        path = mod.host.resolve_model(f"hf:{REPO}")
        assert path.is_relative_to(tmp_path / "webui" / "models" / "pal") and path.read_bytes() == ckpt.read_bytes()
