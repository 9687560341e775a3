"""`pal detect`, `pal score`, `pal convert` end to end (in-process `main`, real files)."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from comfyui_pal.cli import main

MODEL = "tiny_swin_upernet_w7.pth"


@pytest.fixture()
def images(tmp_path, fixtures_dir):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(fixtures_dir / "input_A_source.png", d / "a.png")
    shutil.copy(fixtures_dir / "input_B.png", d / "b.png")
    Image.open(fixtures_dir / "input_B.png").convert("L").save(d / "c_gray.jpg")
    (d / "d_broken.png").write_bytes(b"not an image")
    return d


def _records(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_detect_writes_mask_and_overlay_and_reports_bad_file(images, tmp_path, fixtures_dir, capsys):
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    out = tmp_path / "out"
    rc = main(["detect", str(images), "--out", str(out), "--model", str(fixtures_dir / MODEL), "--device", "cpu"])
    recs = _records(capsys)
    assert rc == 1  # one input failed, the rest were processed
    assert [r["image"].split("/")[-1] for r in recs] == ["a.png", "b.png", "c_gray.jpg", "d_broken.png"]
    assert "error" in recs[3] and "d_broken.png" in recs[3]["error"]
    for r, stem in zip(recs[:3], ["a", "b", "c_gray"]):
        mask = np.asarray(Image.open(out / f"{stem}_pal.png"))
        src = np.asarray(Image.open(images / r["image"].split("/")[-1]))
        assert mask.shape == src.shape[:2] and set(np.unique(mask)) <= {0, 255}
        vis = np.asarray(Image.open(out / f"{stem}_pal_vis.png")).astype(int)
        assert vis.shape[:2] == src.shape[:2]
        assert 0 <= r["par"] <= 1
    # overlay: artifact pixels are 0.7*img + 0.3*magenta, the others untouched
    a = np.asarray(Image.open(images / "a.png")).astype(float)
    m = np.asarray(Image.open(out / "a_pal.png")) > 0
    vis = np.asarray(Image.open(out / "a_pal_vis.png")).astype(float)
    assert np.array_equal(vis[~m], a[~m])
    assert np.abs(vis[m] - (0.7 * a[m] + 0.3 * np.array([255, 0, 255]))).max() <= 0.5 + 1e-6
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before  # inputs untouched


def test_detect_refuses_existing_outputs_and_input_clobbering(images, tmp_path, fixtures_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_pal.png").write_bytes(b"user file")
    rc = main(["detect", str(images / "a.png"), str(images / "b.png"), "--out", str(out),
               "--model", str(fixtures_dir / MODEL), "--device", "cpu"])
    recs = _records(capsys)
    assert rc == 1 and "already exists" in recs[0]["error"] and "par" in recs[1]
    assert (out / "a_pal.png").read_bytes() == b"user file"
    # an input named like an output in the same folder is never overwritten
    shutil.copy(images / "a.png", images / "b_pal.png")
    before = (images / "b_pal.png").read_bytes()
    rc = main(["detect", str(images / "b.png"), str(images / "b_pal.png"), "--out", str(images),
               "--model", str(fixtures_dir / MODEL), "--device", "cpu", "--overwrite"])
    recs = _records(capsys)
    assert rc == 1 and "overwrite an input" in recs[0]["error"]
    assert (images / "b_pal.png").read_bytes() == before


def test_score_sorts_and_writes_json_csv_rank_dir(images, tmp_path, fixtures_dir, capsys):
    j, c, rank = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "rank"
    rc = main(["score", str(images), "--model", str(fixtures_dir / MODEL), "--device", "cpu", "--sort",
               "--json", str(j), "--csv", str(c), "--rank-dir", str(rank)])
    recs = _records(capsys)
    assert rc == 1
    pars = [r["par"] for r in recs if "par" in r]
    assert pars == sorted(pars) and len(pars) == 3 and "error" in recs[-1]
    saved = json.loads(j.read_text())
    assert len(saved) == 4 and sum("error" in r for r in saved) == 1
    rows = list(csv.DictReader(c.open()))
    assert [r["rank"] for r in rows if r["par"]] != [] and rows[3]["error"]
    names = sorted(p.name for p in rank.iterdir())
    assert names[-1] == "contact_sheet.png" and [n[:2] for n in names[:3]] == ["1_", "2_", "3_"]
    sheet = Image.open(rank / "contact_sheet.png")
    assert sheet.size[0] >= 192


def test_convert_cli_and_errors(tmp_path, fixtures_dir, capsys):
    dst = tmp_path / "m.safetensors"
    assert main(["convert", str(fixtures_dir / MODEL), str(dst), "--fp16"]) == 0
    assert _records(capsys)[0]["bytes"] == dst.stat().st_size
    assert main(["convert", str(fixtures_dir / "tiny_swin_upernet_w7.end2end.pt"), str(tmp_path / "t.safetensors")]) == 2
    assert "trust-torchscript" in _records(capsys)[0]["error"]
    assert main(["convert", str(fixtures_dir / "input_B.png"), str(tmp_path / "x.safetensors")]) == 2
    assert "input_B.png" in _records(capsys)[0]["error"]


def test_console_script_runs_as_module(tmp_path, fixtures_dir):
    out = subprocess.run([sys.executable, "-m", "comfyui_pal.cli", "score", str(fixtures_dir / "input_B.png"),
                          "--model", str(fixtures_dir / MODEL), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["image"].endswith("input_B.png") and 0 <= rec["par"] <= 1
