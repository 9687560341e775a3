"""The authors' Google Drive files: download -> verify -> convert -> cache, against tests/fakedrive.py.

A registry override (the user registry file) points a Drive entry at the tiny w12 fixture, which
stands in for the 400+ MB official checkpoint; its expected architecture is written out below, so
the strict manifest check is real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

try:
    from fakedrive import FakeDrive
    from fakehub import a1111_script, child_env, forbid_network, isolate_hub_env, write_user_registry
except ImportError:  # tests/ imported as a package
    from .fakedrive import FakeDrive
    from .fakehub import a1111_script, child_env, forbid_network, isolate_hub_env, write_user_registry

from comfyui_pal.models import hub

FIX = Path(__file__).resolve().parent / "fixtures"
W12 = FIX / "tiny_swin_upernet_w12.pth"
FID = "1TinyW12fakeDriveId_0001"
# The architecture the Drive entry promises (tiny Swin w12 + UPerHead + FCN aux), as a registry
# "config" would state it; the served file must match it key for key.
CONFIG = {
    "backbone": {"type": "SwinTransformer", "embed_dims": 12, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8],
                 "window_size": 12, "mlp_ratio": 4, "patch_size": 4, "qkv_bias": True, "drop_path_rate": 0.3,
                 "pretrain_img_size": 384},
    "decode_head": {"type": "UPerHead", "in_channels": [12, 24, 48, 96], "channels": 16, "pool_scales": [1, 2, 3, 6],
                    "num_classes": 2, "dropout_ratio": 0.1},
    "auxiliary_head": {"type": "FCNHead", "in_channels": 48, "in_index": 2, "channels": 8, "num_convs": 1,
                       "kernel_size": 3, "num_classes": 2, "dropout_ratio": 0.1, "concat_input": False},
    "preprocess": {"size": [512, 512], "resize": "bicubic", "mean": [123.675, 116.28, 103.53],
                   "std": [58.395, 57.12, 57.375]},
    "classes": ["background", "bad_region"],
}
NOTICE = "research weights by the test authors; no licence given"


def entry(**fields):
    base = {"source": "gdrive", "file_id": FID, "format": "mmseg-pth", "config": CONFIG,
            "original_name": "best_mIoU_iter_7200.pth", "size_approx": W12.stat().st_size,
            "filename": "tiny-official-w12.safetensors", "license": "none given", "license_notice": NOTICE,
            "torchscript_file_id": "1TinyTorchScriptId_0002"}
    return {**base, **fields}


@pytest.fixture
def drive(monkeypatch, tmp_path):
    isolate_hub_env(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    monkeypatch.delenv("PAL_OFFLINE", raising=False)
    with FakeDrive() as server:
        monkeypatch.setenv("PAL_GDRIVE_URL", server.url)
        server.add(FID, W12.read_bytes(), "best_mIoU_iter_7200.pth", mode="confirm")
        write_user_registry(tmp_path, {"tiny-official": entry()})
        yield server


def user_dir(tmp_path) -> Path:
    return tmp_path / "data" / "comfyui-pal" / "models"


def leftovers(d: Path) -> list[str]:
    """Everything in a models folder except the (empty) lock sentinels and the lock file."""
    if not d.exists():
        return []
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if p.is_file() and ".locks" not in p.parts and p.name != hub.LOCK_NAME)


def test_confirm_form_flow_downloads_verifies_converts_and_records(drive, tmp_path, capsys):
    path = hub.resolve("tiny-official", download=True, progress=False)
    d = user_dir(tmp_path)
    assert path == d / "tiny-official-w12.safetensors"
    assert leftovers(d) == ["tiny-official-w12.safetensors"]  # the .pth is gone, no temp files
    paths = [p for m, p in drive.requests if m == "GET"]
    assert paths[0].startswith("/uc?") and "confirm=t" in paths[-1] and "uuid=" in paths[-1]
    assert drive.body_requests() == 1
    # the converted file carries config + provenance (source, file id, original name and sha256)
    from comfyui_pal.models.checkpoint import load_checkpoint

    _sd, config, prov = load_checkpoint(path)
    assert config["backbone"]["window_size"] == 12
    assert prov["source"] == "gdrive" and prov["gdrive_file_id"] == FID
    assert prov["source_name"] == "best_mIoU_iter_7200.pth" and prov["source_sha256"] == hub.file_sha256(W12)
    # trust on first use: both hashes recorded and printed, the licence notice shown
    rec = hub.read_lock(d)["files"]["tiny-official-w12.safetensors"]
    assert rec["original_sha256"] == hub.file_sha256(W12) and rec["sha256"] == hub.file_sha256(path)
    err = capsys.readouterr().err
    assert rec["original_sha256"] in err and rec["sha256"] in err and NOTICE in err
    # second use: from the cache, no request, no notice again
    n = len(drive.requests)
    assert hub.resolve("tiny-official", download=True) == path
    assert len(drive.requests) == n and NOTICE not in capsys.readouterr().err


def test_older_confirm_link_page(drive, tmp_path):
    drive.files[FID].mode = "legacy"
    assert hub.resolve("tiny-official", download=True, progress=False).is_file()
    assert any("confirm=Xq1z" in p for _, p in drive.requests) and drive.body_requests() == 1


def test_small_file_served_directly_with_keep_source(drive, tmp_path):
    drive.files[FID].mode = "direct"
    seen = []
    path = hub.download("tiny-official", keep_source=True, progress=lambda done, total: seen.append((done, total)))
    d = user_dir(tmp_path)
    assert leftovers(d) == ["best_mIoU_iter_7200.pth", "tiny-official-w12.safetensors"]
    assert (d / "best_mIoU_iter_7200.pth").read_bytes() == W12.read_bytes()
    assert seen[-1] == (W12.stat().st_size, W12.stat().st_size) and path.is_file()
    assert [m for m, _ in drive.requests].count("GET") == 2  # /uc -> 303 -> /download, no confirm page


@pytest.mark.parametrize("mode, kind, text", [
    ("quota", "quota", "Too many users"),
    ("denied", "denied", "access denied"),
    ("missing", "not_found", "not found"),
    ("html200", "html", "web page where the file was expected"),
    ("html_body", "html", "the body is HTML"),
    ("truncated", "truncated", "truncated"),
])
def test_drive_failures_are_clear_and_leave_nothing(drive, tmp_path, mode, kind, text):
    from comfyui_pal.models.gdrive import DriveError

    drive.files[FID].mode = mode
    with pytest.raises(DriveError) as ei:
        hub.resolve("tiny-official", download=True, progress=False)
    msg = str(ei.value)
    assert ei.value.kind == kind and text in msg
    # names the model, the file id and the manual route (link, pal convert, the host folders)
    for part in ("'tiny-official'", FID, f"https://drive.google.com/file/d/{FID}/view",
                 "pal convert best_mIoU_iter_7200.pth tiny-official-w12.safetensors",
                 "ComfyUI/models/pal/", "stable-diffusion-webui/models/pal/",
                 str(user_dir(tmp_path) / "tiny-official-w12.safetensors")):
        assert part in msg, part
    assert leftovers(user_dir(tmp_path)) == []


def test_wrong_architecture_is_refused(drive, tmp_path):
    drive.files[FID].data = (FIX / "tiny_swin_upernet_w7.pth").read_bytes()  # a real .pth, other network
    write_user_registry(tmp_path, {"tiny-official": entry(size_approx=len(drive.files[FID].data))})
    with pytest.raises(hub.ModelNotAvailableError, match="wrong structure") as ei:
        hub.resolve("tiny-official", download=True, progress=False)
    assert "relative_position_bias_table" in str(ei.value) and FID in str(ei.value)
    assert leftovers(user_dir(tmp_path)) == []


def test_torchscript_needs_the_trust_flag(drive, tmp_path):
    ts = (FIX / "tiny_swin_upernet_w7.end2end.pt").read_bytes()
    drive.files[FID].data = ts  # Drive serves a TorchScript archive where the .pth was expected
    write_user_registry(tmp_path, {"tiny-official": entry(size_approx=len(ts))})
    with pytest.raises(hub.ModelNotAvailableError, match="trust-torchscript") as ei:
        hub.resolve("tiny-official", download=True, progress=False)
    assert "TorchScript" in str(ei.value)
    assert leftovers(user_dir(tmp_path)) == []
    # the registry's TorchScript file id is used only with --torchscript AND --trust-torchscript
    with pytest.raises(hub.ModelNotAvailableError, match="--trust-torchscript"):
        hub.download("tiny-official", torchscript=True)
    assert not any("1TinyTorchScriptId" in p for _, p in drive.requests)


def test_disk_full_is_checked_before_downloading(drive, tmp_path, monkeypatch):
    from comfyui_pal.models import gdrive

    monkeypatch.setattr(gdrive.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(hub.ModelNotAvailableError, match="disk is full"):
        hub.resolve("tiny-official", download=True, progress=False)
    assert drive.requests == [] and leftovers(user_dir(tmp_path)) == []


def test_disk_full_while_writing(drive, tmp_path, monkeypatch):
    import errno

    from comfyui_pal.models import gdrive

    real = gdrive.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gdrive.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(gdrive.DriveError, match="disk is full"):
        hub.resolve("tiny-official", download=True, progress=False)
    assert leftovers(user_dir(tmp_path)) == []


@pytest.mark.parametrize("var", ["PAL_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_makes_no_request(drive, tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(hub.ModelNotAvailableError, match="offline") as ei:
        hub.resolve("tiny-official", download=True)
    assert "pal convert" in str(ei.value) and drive.requests == []
    with pytest.raises(hub.ModelNotAvailableError):
        hub.download("tiny-official")
    assert drive.requests == []


def test_not_downloading_says_what_to_run(drive, tmp_path):
    with pytest.raises(hub.ModelNotAvailableError, match="pal models download tiny-official"):
        hub.resolve("tiny-official")  # download=False: the default for hosts that did not ask
    assert drive.requests == []


def test_two_downloads_at_once_do_not_corrupt_the_cache(drive, tmp_path):
    drive.gate = threading.Event()  # hold the body back until both callers are in
    results, errors = [], []

    def run():
        try:
            results.append(hub.resolve("tiny-official", download=True, progress=False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    threading.Timer(0.5, drive.gate.set).start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert drive.body_requests() == 1  # the second waited on the lock, then found the verified file
    assert leftovers(user_dir(tmp_path)) == ["tiny-official-w12.safetensors"]


def test_tampered_cache_is_refused_and_verify_reports_it(drive, tmp_path, capsys):
    path = hub.resolve("tiny-official", download=True, progress=False)
    from comfyui_pal.cli import main

    assert main(["models", "verify"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["ok"] is True
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(hub.ChecksumMismatchError, match="left untouched"):
        hub.resolve("tiny-official", download=True)
    assert path.read_bytes() == bytes(data)  # never deleted behind the user's back
    assert main(["models", "verify"]) == 1
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["ok"] is False and "sha256" in row["problem"]


def test_user_file_in_place_is_used_and_never_touched(drive, tmp_path):
    d = user_dir(tmp_path)
    d.mkdir(parents=True)
    mine = d / "tiny-official-w12.safetensors"
    mine.write_bytes(b"the user's own conversion")
    assert hub.resolve("tiny-official", download=True) == mine  # no lock record: the user's file
    assert drive.requests == [] and mine.read_bytes() == b"the user's own conversion"


def test_models_list_shows_source_size_presence_and_licence(drive, tmp_path, capsys):
    from comfyui_pal.cli import main

    assert main(["models", "list"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    r = rows["tiny-official"]
    assert (r["source"], r["present"], r["size"], r["license_notice"]) == ("gdrive", False, W12.stat().st_size,
                                                                           NOTICE)
    assert rows["pal4vst-unified"]["source"] == "gdrive"
    assert "no licence" in rows["pal4vst-unified"]["license_notice"]
    assert main(["models", "list", "--table"]) == 0
    table = capsys.readouterr().out
    assert "tiny-official" in table and "gdrive" in table and "not downloaded" in table
    hub.resolve("tiny-official", download=True, progress=False)
    assert {r["name"]: r for r in hub.list_models()}["tiny-official"]["present"] is True


def test_pal_detect_end_to_end_then_offline_in_a_fresh_process(drive, tmp_path):
    """`pal detect IMG --model <drive entry>` downloads, converts, detects; a second process with
    PAL_OFFLINE=1 loads from the cache with zero requests."""
    img = FIX / "input_B.png"
    env = child_env(PAL_GDRIVE_URL=drive.url)
    cmd = [sys.executable, "-m", "comfyui_pal.cli", "detect", str(img), "--model", "tiny-official",
           "--device", "cpu", "--out", str(tmp_path / "out1")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    assert "trust on first use" in first.stderr and drive.body_requests() == 1
    n = len(drive.requests)
    cmd[-1] = str(tmp_path / "out2")
    second = subprocess.run(cmd, env=child_env(PAL_GDRIVE_URL=drive.url, PAL_OFFLINE="1"), capture_output=True,
                            text=True, timeout=240)
    assert second.returncode == 0, second.stderr
    assert len(drive.requests) == n  # zero requests
    par1 = [json.loads(x)["par"] for x in first.stdout.splitlines() if x.startswith("{")]
    par2 = [json.loads(x)["par"] for x in second.stdout.splitlines() if x.startswith("{")]
    assert par1 and par1 == par2


def test_comfyui_loader_downloads_at_execution_with_progress(drive, tmp_path, monkeypatch):
    from comfyui_pal.pal_nodes import host
    from comfyui_pal.pal_nodes import model as pal_model

    comfy_dir = tmp_path / "ComfyUI" / "models" / "pal"
    monkeypatch.setattr(pal_model, "model_dirs", lambda: [str(comfy_dir)])
    updates = []

    class Bar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total))

    monkeypatch.setattr(host, "progress_bar", lambda total, node_id=None: Bar(total))
    names = pal_model.available_models()
    assert "tiny-official" in names and drive.requests == []  # listing never downloads
    pm = pal_model.load("tiny-official", "cpu", "fp32")
    assert Path(pm.path) == comfy_dir / "tiny-official-w12.safetensors" and drive.body_requests() == 1
    assert updates and updates[-1][0] == W12.stat().st_size


def test_a1111_style_resolution(drive, tmp_path):
    """What scripts/pal_autofix.py calls: resolve(ref, model_dirs=[<webui>/models/pal], download=<allow>)."""
    webui = tmp_path / "stable-diffusion-webui" / "models" / "pal"
    with pytest.raises(hub.ModelNotAvailableError, match="pal models download"):
        hub.resolve("tiny-official", model_dirs=[webui], download=False)
    assert drive.requests == []
    path = hub.resolve("tiny-official", model_dirs=[webui], download=True, progress=False)
    assert path == webui / "tiny-official-w12.safetensors"
    assert hub.read_lock(webui)["files"][path.name]["file_id"] == FID


def test_through_the_comfyui_loader_node(drive, tmp_path, monkeypatch):
    from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS
    from comfyui_pal.pal_nodes import model as pal_model

    monkeypatch.setattr(pal_model, "model_dirs", lambda: [str(tmp_path / "ComfyUI" / "models" / "pal")])
    node = NODE_CLASS_MAPPINGS["PALModelLoader"]
    assert "tiny-official" in node.INPUT_TYPES()["required"]["model_name"][0] and drive.requests == []
    (pm,) = node().load("tiny-official", "cpu", "fp32")
    assert pm.path.endswith("tiny-official-w12.safetensors") and drive.body_requests() == 1


def test_through_the_a1111_script(drive, tmp_path, monkeypatch):
    """scripts/pal_autofix.py loaded as A1111 loads it (tests/a1111_stub): its model resolution
    downloads only when the 'allow downloading' setting is on."""
    with a1111_script(tmp_path, monkeypatch) as (mod, shared):
        shared.opts.data["pal_allow_download"] = False
        with pytest.raises(hub.ModelNotAvailableError, match="pal models download tiny-official"):
            mod.host.resolve_model("tiny-official")
        assert drive.requests == []
        shared.opts.data["pal_allow_download"] = True
        path = mod.host.resolve_model("tiny-official")
        assert path == tmp_path / "webui" / "models" / "pal" / "tiny-official-w12.safetensors"
        assert drive.body_requests() == 1


def test_the_download_lock_holds_across_processes(tmp_path):
    """The lock the Drive fetch takes is inter-process (flock/msvcrt), not just inter-thread."""
    import time

    from comfyui_pal.models.lockfile import file_lock

    lock = tmp_path / ".locks" / "x.lock"
    code = ("import sys, time\nfrom pathlib import Path\nfrom comfyui_pal.models.lockfile import file_lock\n"
            f"with file_lock(Path({str(lock)!r})):\n    print('held', flush=True)\n    time.sleep(1.5)\n")
    child = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        waited, t0 = [], time.perf_counter()
        with file_lock(lock, on_wait=lambda: waited.append(True)):
            elapsed = time.perf_counter() - t0
        assert waited == [True] and elapsed > 0.5
    finally:
        child.wait(30)


def test_torchscript_file_with_the_trust_flag_keeps_only_its_weights(drive, tmp_path):
    from comfyui_pal.models.checkpoint import load_checkpoint

    _sd, w7_config, _ = load_checkpoint(FIX / "tiny_swin_upernet_w7.pth")
    ts = FIX / "tiny_swin_upernet_w7.end2end.pt"
    drive.add("1TinyTorchScriptId_0002", ts.read_bytes(), "end2end.pt", mode="confirm")
    write_user_registry(tmp_path, {"tiny-official": entry(config=w7_config, size_approx=ts.stat().st_size)})
    path = hub.download("tiny-official", torchscript=True, trust_torchscript=True, progress=False)
    sd, _config, prov = load_checkpoint(path)  # a plain safetensors now: no code, no trust needed
    assert prov["gdrive_file_id"] == "1TinyTorchScriptId_0002" and prov["source_format"] == "mmdeploy-torchscript"
    ref, _, _ = load_checkpoint(FIX / "tiny_swin_upernet_w7.pth")
    assert set(sd) == {k for k in ref if not k.startswith("auxiliary_head.")}
    assert all((sd[k] == ref[k]).all() for k in sd)  # the same weights as the .pth
