"""Model card generation and `pal push` against the fake Hub's upload endpoints
(create repo, preupload, validate-yaml, commit), then a round trip back through the registry."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

try:
    from fakehub import FakeHub, forbid_network, isolate_hub_env, point_hf_at, write_user_registry
except ImportError:  # tests/ imported as a package
    from .fakehub import FakeHub, forbid_network, isolate_hub_env, point_hf_at, write_user_registry

from comfyui_pal.cli import hub as hub_cli
from comfyui_pal.models import hub

pytest.importorskip("huggingface_hub")

CONFIG = {
    "backbone": {"type": "SwinTransformer", "embed_dims": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                 "window_size": 7},
    "decode_head": {"type": "UPerHead", "in_channels": [16, 32, 64, 128], "channels": 16, "num_classes": 2},
    "auxiliary_head": None,
    "preprocess": {"size": [512, 512], "resize": "bicubic", "mean": [123.675, 116.28, 103.53],
                   "std": [58.395, 57.12, 57.375]},
    "classes": ["background", "bad_region"],
}
PROVENANCE = {"source": "training/synthetic", "command": "pal train --preset tiny", "steps": 200}


def make_ckpt(path, config=CONFIG, provenance=PROVENANCE):
    tensors = {"backbone.patch_embed.projection.weight": np.ones((16, 3, 4, 4), np.float16),
               "decode_head.conv_seg.weight": np.zeros((2, 16, 1, 1), np.float32)}
    meta = {"format": "comfyui-pal/1"}
    if config is not None:
        meta["config"] = json.dumps(config)
    if provenance is not None:
        meta["provenance"] = json.dumps(provenance)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    isolate_hub_env(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    with FakeHub(cdn=False) as server:
        point_hf_at(monkeypatch, server, tmp_path)
        yield server


def test_model_card_from_checkpoint_metadata(tmp_path):
    ckpt = make_ckpt(tmp_path / "pal-tiny.safetensors")
    card = hub.make_model_card(ckpt, repo_id="me/pal-tiny", metrics={"val": {"mIoU": 0.61234, "PAR_mae": 0.01}})
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: comfyui-pal" in front and "pipeline_tag: image-segmentation" in front
    assert "# pal-tiny" in body
    assert "SwinTransformer (embed_dims=16" in body and "UPerHead (channels=16, num_classes=2)" in body
    assert "| parameters | 800 in 2 tensors |" in body  # 16*3*4*4 + 2*16, read from the header only
    assert "F16" in body and "F32" in body
    assert hub.file_sha256(ckpt) in body and "| mIoU | 0.6123 |" in body
    assert "pal train --preset tiny" in body and "Perceptual Artifacts Localization" in body
    assert "pal models download hf:me/pal-tiny" in body and 'load_detector("hf:me/pal-tiny")' in body
    # the machine-readable block that `pal models download hf:...` reads back
    block = hub.read_card_metadata(card)
    assert block["filename"] == "pal-tiny.safetensors" and block["sha256"] == hub.file_sha256(ckpt)
    assert block["size"] == ckpt.stat().st_size and block["format"] == "comfyui-pal/1"
    assert block["architecture"]["backbone"] == "SwinTransformer"


def test_push_refuses_what_loaders_could_not_use(tmp_path):
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"x")
    with pytest.raises(hub.HubPushError, match="pal convert"):
        hub.push(pth, "me/x")
    bare = make_ckpt(tmp_path / "bare.safetensors", config=None)
    with pytest.raises(hub.HubPushError, match="config"):
        hub.push(bare, "me/x")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(hub.HubPushError, match="not a readable safetensors"):
        hub.push(junk, "me/x")


def test_push_uploads_checkpoint_and_card_then_round_trips(fake, tmp_path):
    ckpt = make_ckpt(tmp_path / "pal-tiny.safetensors")
    result = hub.push(ckpt, "me/pal-tiny", private=True, token="hf_write_token")
    repo = fake.repos["me/pal-tiny"]
    assert repo.private is True
    files = repo.commits[result["revision"]]
    assert files["pal-tiny.safetensors"] == ckpt.read_bytes()
    assert files["README.md"].decode().startswith("---\nlicense:")
    assert result["sha256"] in files["README.md"].decode()
    commit_req = [r for r in fake.requests if "/commit/" in r.path][-1]
    assert commit_req.headers["authorization"] == "Bearer hf_write_token"
    assert fake.count("POST", "/api/validate-yaml") == 1

    # the returned registry entry downloads the same bytes by name (private repo: token needed)
    write_user_registry(tmp_path, {"pal-tiny": result["registry_entry"]})
    got = hub.resolve("pal-tiny", download=True, token="hf_write_token", progress=False)
    assert got.read_bytes() == ckpt.read_bytes()

    # pushing again to the existing repo (409 on create) adds a commit with a custom card
    result2 = hub.push(ckpt, "me/pal-tiny", token="t", model_card="# custom card\n")
    assert result2["revision"] != result["revision"]
    assert repo.commits[result2["revision"]]["README.md"] == b"# custom card\n"


def _cli(argv):
    parser = argparse.ArgumentParser(prog="pal")
    sub = parser.add_subparsers(dest="command")
    hub_cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_push_and_list(fake, tmp_path, capsys):
    ckpt = make_ckpt(tmp_path / "pal-tiny.safetensors")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"mIoU": 0.5}))
    rc = _cli(["push", str(ckpt), "--repo", "me/cli-push", "--token", "tok", "--metrics", str(metrics)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    readme = fake.repos["me/cli-push"].commits[result["revision"]]["README.md"].decode()
    assert "| mIoU | 0.5 |" in readme and "uploaded pal-tiny.safetensors" in err

    assert _cli(["push", str(tmp_path / "missing.safetensors"), "--repo", "me/x"]) == 1
    assert "no such checkpoint" in capsys.readouterr().err

    assert _cli(["models", "list"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"pal-starter", "pal4vst-unified"} <= {r["name"] for r in rows}
    assert all({"name", "size", "present", "path"} <= set(r) for r in rows)
    assert _cli(["models", "list", "--table"]) == 0
    assert "pal4vst-shadow" in capsys.readouterr().out
    assert _cli(["models", "download", "no-such-model", "--quiet"]) == 1
    assert "registered" in capsys.readouterr().err
