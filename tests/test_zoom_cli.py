"""`pal fix` command line: outputs, --mask file/folder, bad inputs, never overwriting inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_pal.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _img(path: Path, h: int = 60, w: int = 80, blob=(20, 30, 30, 45)) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 3, yy * 3, np.full_like(xx, 100)], -1).astype(np.uint8)
    y0, y1, x0, x1 = blob
    arr[y0:y1, x0:x1] = (255, 0, 255)
    Image.fromarray(arr).save(path)
    return arr


def _mask(path: Path, h: int = 60, w: int = 80, blob=(20, 30, 30, 45)) -> None:
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = blob
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_fix_with_mask_folder_and_a_bad_file(tmp_path, capsys):
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks.mkdir()
    a = _img(src / "a.png")
    _img(src / "b.jpg", 40, 50, (5, 10, 5, 10))
    (src / "broken.png").write_bytes(b"not an image")
    _mask(masks / "a.png")
    _mask(masks / "b_mask.png", 40, 50, (5, 10, 5, 10))
    _mask(masks / "broken.png")
    rc = main(["fix", str(src), "--out", str(out), "--mask", str(masks), "--size", "64", "--min-side", "16"])
    assert rc == 1  # one input failed, the batch went on
    recs = {Path(r["image"]).name: r for r in _lines(capsys.readouterr().out)}
    assert set(recs) == {"a.png", "b.jpg", "broken.png"}
    assert "error" in recs["broken.png"]
    assert recs["a.png"]["status"] == "fixed" and recs["b.jpg"]["n_crops"] == 1
    fixed = np.asarray(Image.open(out / "a_fixed.png"))
    assert fixed.shape == a.shape and not np.array_equal(fixed[20:30, 30:45], a[20:30, 30:45])
    assert np.array_equal(fixed[:5], a[:5])  # far from the region: untouched
    vis = np.asarray(Image.open(out / "a_fix_vis.png"))
    assert vis.shape[0] == 60 and vis.shape[1] > 160
    rep = json.loads((out / "a_fix.json").read_text())
    assert rep["image"].endswith("a.png") and rep["mask_source"].endswith("a.png")
    assert rep["par_before"] == pytest.approx(150 / 4800, abs=1e-6) and rep["par_after"] is None
    c = rep["crops"][0]
    assert {"box", "component_bbox", "padding"} <= set(c)
    x0, y0, x1, y1 = c["box"]
    bx0, by0, bx1, by1 = c["component_bbox"]
    assert 0 <= x0 <= bx0 < bx1 <= x1 <= 80 and 0 <= y0 <= by0 < by1 <= y1 <= 60
    assert not (out / "broken_fixed.png").exists()


def test_single_mask_file_missing_mask_in_folder_and_no_overwrite(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    a = _img(src / "a.png")
    _img(src / "a_fixed.png")  # an input that is also a would-be output name
    before = (src / "a_fixed.png").read_bytes()
    mfile = tmp_path / "m.png"
    _mask(mfile)
    rc = main(["fix", str(src / "a.png"), str(src / "a_fixed.png"), "--out", str(src), "--mask", str(mfile),
               "--size", "32"])
    recs = _lines(capsys.readouterr().out)
    assert rc == 1
    assert "overwrite an input" in recs[0]["error"]
    assert (src / "a_fixed.png").read_bytes() == before  # the input is intact
    assert "error" not in recs[1] and (src / "a_fixed_fixed.png").exists()
    assert np.array_equal(np.asarray(Image.open(src / "a.png")), a)

    # a second run refuses to replace its own earlier outputs unless --overwrite
    out = tmp_path / "o"
    args = ["fix", str(src / "a.png"), "--out", str(out), "--mask", str(mfile), "--size", "32"]
    assert main(args) == 0
    assert main(args) == 1
    assert "already exists" in _lines(capsys.readouterr().out)[-1]["error"]
    assert main(args + ["--overwrite"]) == 0

    # a mask folder without this image's mask: that image fails with a clear message
    empty = tmp_path / "nomasks"
    empty.mkdir()
    assert main(["fix", str(src / "a.png"), "--out", str(tmp_path / "o2"), "--mask", str(empty)]) == 1
    assert "no mask named a.png" in _lines(capsys.readouterr().out)[-1]["error"]


@pytest.mark.slow
def test_fix_with_detector_guard_and_options(tmp_path, capsys):
    img_path = tmp_path / "x.png"
    _img(img_path, 48, 64, (10, 20, 10, 20))
    model = FIXTURES / "tiny_swin_upernet_w7.pth"
    rc = main(["fix", str(img_path), "--out", str(tmp_path / "o"), "--model", str(model), "--threshold", "0.01",
               "--max-regions", "1", "--size", "32", "--guard", "--color-match", "--feather", "4", "--dilate", "0",
               "--inpainter", "opencv-ns"])
    assert rc == 0, capsys.readouterr()
    rec = _lines(capsys.readouterr().out)[0]
    rep = json.loads(Path(rec["report"]).read_text())
    assert rep["par_source"] == "detector" and isinstance(rep["par_after"], float)
    assert rep["inpainter"] == "opencv-ns" and rep["options"]["feather"] == 4 and rep["options"]["guard"]
    assert all("artifact_ratio_after" in c for c in rep["crops"])


def test_bad_options_fail_fast(tmp_path, capsys):
    img_path = tmp_path / "x.png"
    _img(img_path)
    with pytest.raises(SystemExit):
        main(["fix", str(img_path), "--out", str(tmp_path), "--size", "100"])
    assert main(["fix", str(img_path), "--out", str(tmp_path / "o"), "--mask", str(tmp_path / "nope.png")]) == 2
    assert main(["fix", str(img_path), "--out", str(tmp_path / "o"), "--mask", str(img_path),
                 "--inpainter", "magic"]) == 2
    assert "unknown inpainter" in _lines(capsys.readouterr().out)[-1]["error"]
