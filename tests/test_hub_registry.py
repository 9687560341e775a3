"""Registry, overrides and the file-system-only paths of models/hub.py (no server needed)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from fakehub import child_env, isolate_hub_env, write_user_registry
except ImportError:  # tests/ imported as a package
    from .fakehub import child_env, isolate_hub_env, write_user_registry

from comfyui_pal.models import hub


@pytest.fixture
def env(monkeypatch, tmp_path):
    paths = isolate_hub_env(monkeypatch, tmp_path)

    def no_download(*a, **k):  # the code under test must never reach the Hub here
        raise AssertionError("unexpected download attempt")

    monkeypatch.setattr(hub, "_download", no_download)
    return paths

ROOT = Path(__file__).resolve().parents[1]


OFFICIAL = {  # from the PAL4VST README (HEAD 5c26fea): .pth id, TorchScript id
    "pal4vst-unified": ("1414RYir0Q58Ix2CKrZoDmA5iilx8Gopb", "1bGjEKquWa4cZJ6v52NoRfViwKK15U7vd"),
    "pal4vst-stylegan2": ("1sHWQLwpt1eM36ttjdIdXLQIuLYftJoWR", "1FYId9CSmP0rEE1c-2E7aGaPD0WuRdX6o"),
    "pal4vst-shadow": ("1AOuSwSFwN5X1u6SYni8KehhjFquBpJ6Q", "1omx3lhYNRjJiPY49HoknVUwiy-J0uxcr"),
}


def test_builtin_registry_entries_are_complete(env):
    reg = hub.get_registry()
    assert set(OFFICIAL) | {"pal-starter"} <= set(reg)
    assert reg["pal-starter"]["source"] == "bundled"
    assert reg["pal-starter"]["path"] == "weights/pal-starter.safetensors"
    for name, (pth_id, ts_id) in OFFICIAL.items():
        e = reg[name]
        assert e["source"] == "gdrive" and e["file_id"] == pth_id and e["torchscript_file_id"] == ts_id
        assert e["format"] == "mmseg-pth" and e["preset"] == "pal4vst-swin-b-w12"
        assert e["filename"].endswith(".safetensors") and e["size_approx"] > 400_000_000
        assert "no licence" in e["license_notice"] and "commercial" in e["license_notice"]
        for key in ("original_name", "homepage", "license", "description", "architecture"):
            assert e.get(key), (name, key)
        assert not e["hub_copy"]  # no Hub copy is published yet; when one is (repo_id + sha256), it wins
    assert "1alICAkY8sjr-gwWknAEQjIKDkdPUPyKd" not in hub.BUILTIN_REGISTRY.read_text()  # the README's dead link
    filenames = [e["filename"] for e in reg.values() if e["source"] in ("hub", "gdrive")]
    assert len(filenames) == len(set(filenames))


def test_env_override_repo_falls_back_to_main_unless_revision_given(env, monkeypatch):
    monkeypatch.setenv("PAL_HUB_REPO_PAL4VST_UNIFIED", "my-org/pal-mirror")
    e = hub.get_registry()["pal4vst-unified"]
    assert e["repo_id"] == "my-org/pal-mirror" and e["revision"] is None
    assert e["overridden"] == ["repo_id"]
    monkeypatch.setenv("PAL_HUB_REVISION_PAL4VST_UNIFIED", "v2")
    sha = "ab" * 32
    monkeypatch.setenv("PAL_HUB_SHA256_PAL4VST_UNIFIED", sha.upper())
    e = hub.get_registry()["pal4vst-unified"]
    assert e["revision"] == "v2" and e["sha256"] == sha and e["published"] is True
    assert hub.get_registry()["pal4vst-shadow"]["repo_id"] == "comfyui-pal/pal4vst"  # others untouched


def test_user_registry_merges_adds_and_validates(env, monkeypatch, tmp_path):
    path = write_user_registry(tmp_path, {
        "pal4vst-shadow": {"repo_id": "private/shadow", "revision": "abc"},
        "mine": {"path": "weights/mine.safetensors", "description": "my fine-tune"},
    })
    reg = hub.get_registry()
    assert reg["pal4vst-shadow"]["repo_id"] == "private/shadow" and reg["pal4vst-shadow"]["revision"] == "abc"
    assert reg["pal4vst-shadow"]["filename"] == "pal4vst-shadow-swin-b-w12.safetensors"  # merged field-wise
    assert reg["mine"]["source"] == "local"
    assert reg["mine"]["path"] == str(path.parent / "weights" / "mine.safetensors")

    # PAL_REGISTRY wins over the default location; a missing explicit file is an error
    monkeypatch.setenv("PAL_REGISTRY", str(tmp_path / "nope.json"))
    with pytest.raises(hub.RegistryError, match="nope.json"):
        hub.get_registry()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("PAL_REGISTRY", str(bad))
    with pytest.raises(hub.RegistryError, match="bad.json"):
        hub.get_registry()
    bad.write_text(json.dumps({"models": {"x": {"repo_id": "a/b", "filename": "f", "sha256": "123"}}}))
    with pytest.raises(hub.RegistryError, match="64 hex"):
        hub.get_registry()


def test_resolve_existing_path_is_returned_as_is(env, tmp_path):
    f = tmp_path / "any name.pth"
    f.write_bytes(b"x")
    assert hub.resolve(f) == f
    assert hub.resolve(str(f)) == f
    models_dir = tmp_path / "host_models"
    models_dir.mkdir()
    (models_dir / "local.safetensors").write_bytes(b"y")
    assert hub.resolve("local.safetensors", models_dir=models_dir) == models_dir / "local.safetensors"


def test_unknown_names_and_missing_paths_are_clear(env, tmp_path):
    with pytest.raises(hub.UnknownModelError, match="pal4vst-unified") as ei:
        hub.resolve("pal4vst-unifed")
    assert isinstance(ei.value, ValueError) and "pal models list" in str(ei.value)
    with pytest.raises(hub.ModelNotAvailableError, match="checkpoint file not found"):
        hub.resolve(tmp_path / "missing.safetensors")


def test_pal_starter_missing_then_present(env, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "PACKAGE_MODELS_DIR", tmp_path / "pkg")
    t0 = time.perf_counter()
    with pytest.raises(hub.ModelNotAvailableError) as ei:
        hub.resolve("pal-starter")
    assert time.perf_counter() - t0 < 1.0
    expected = tmp_path / "pkg" / "weights" / "pal-starter.safetensors"
    assert str(expected) in str(ei.value) and "bundled" in str(ei.value)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"starter")
    # the registry pins the shipped file's sha256, so a different file is refused, not loaded
    with pytest.raises(hub.ChecksumMismatchError):
        hub.resolve("pal-starter")
    shutil.copy(ROOT / "models" / "weights" / "pal-starter.safetensors", expected)
    assert hub.resolve("pal-starter") == expected
    assert hub.resolve("PAL-Starter") == expected  # names are case-insensitive


def test_official_entry_without_download_says_what_to_run_and_where(env, tmp_path):
    host_dir = tmp_path / "ComfyUI" / "models" / "pal"
    with pytest.raises(hub.ModelNotAvailableError) as ei:
        hub.resolve("pal4vst-unified", models_dir=host_dir)
    msg = str(ei.value)
    assert "pal models download pal4vst-unified" in msg and str(host_dir / "pal4vst-unified-swin-b-w12.safetensors") in msg
    assert "pal convert best_mIoU_iter_7200.pth" in msg and "1414RYir0Q58Ix2CKrZoDmA5iilx8Gopb" in msg
    # a file the user converted and put there is used (nothing recorded to verify against)
    host_dir.mkdir(parents=True)
    (host_dir / "pal4vst-unified-swin-b-w12.safetensors").write_bytes(b"converted")
    assert hub.resolve("pal4vst-unified", models_dir=host_dir) == host_dir / "pal4vst-unified-swin-b-w12.safetensors"


def test_user_file_with_wrong_hash_is_refused_and_kept(env, monkeypatch, tmp_path):
    good = b"good weights"
    monkeypatch.setenv("PAL_HUB_SHA256_PAL4VST_SHADOW", hashlib.sha256(good).hexdigest())
    user_dir = tmp_path / "data" / "comfyui-pal" / "models"  # user_models_dir() under XDG_DATA_HOME
    user_dir.mkdir(parents=True)
    f = user_dir / "pal4vst-shadow-swin-b-w12.safetensors"
    f.write_bytes(b"bad weights!")
    with pytest.raises(hub.ChecksumMismatchError, match="left untouched"):
        hub.resolve("pal4vst-shadow")
    assert f.read_bytes() == b"bad weights!"  # never delete a user's file
    f.write_bytes(good)
    assert hub.resolve("pal4vst-shadow") == f


def test_list_models_reports_presence_and_paths(env, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "PACKAGE_MODELS_DIR", tmp_path / "pkg")
    host_dir = tmp_path / "models" / "pal"
    host_dir.mkdir(parents=True)
    (host_dir / "pal4vst-stylegan2-swin-b-w12.safetensors").write_bytes(b"12345")
    rows = {r["name"]: r for r in hub.list_models(models_dir=host_dir)}
    assert rows["pal4vst-stylegan2"]["present"] is True and rows["pal4vst-stylegan2"]["size"] == 5
    assert rows["pal4vst-stylegan2"]["path"] == str(host_dir / "pal4vst-stylegan2-swin-b-w12.safetensors")
    assert rows["pal4vst-unified"]["present"] is False
    assert rows["pal4vst-unified"]["path"] == str(host_dir / "pal4vst-unified-swin-b-w12.safetensors")
    assert rows["pal-starter"]["present"] is False
    assert rows["pal-starter"]["path"].endswith("pal-starter.safetensors")


def test_import_is_lazy_and_offline_check_is_fast(tmp_path, monkeypatch):
    isolate_hub_env(monkeypatch, tmp_path)
    code = (
        "import sys, time\n"
        "import comfyui_pal.models.hub as h\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub imported at import time'\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    h.resolve('pal4vst-unified')\n"
        "except h.ModelNotAvailableError:\n"
        "    pass\n"
        "print(time.perf_counter() - t, 'huggingface_hub' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env(HF_HUB_OFFLINE=1),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seconds, imported = out.stdout.split()
    assert float(seconds) < 1.0 and imported == "False"
