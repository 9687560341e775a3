"""Data discovery, `pal data check`, the train pipeline and the synthetic generator."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from comfyui_pal.training import data as D
from comfyui_pal.training import synth as S
from comfyui_pal.training.transforms import TrainPipeline, pad_to, random_crop


def _write(root, split, name, img, label, label_dir="labels", sub=""):
    ip = root / "images" / split / sub / f"{name}.jpg"
    lp = root / label_dir / split / sub / f"{name}.png"
    ip.parent.mkdir(parents=True, exist_ok=True)
    lp.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ip), img)
    if label is not None:
        cv2.imwrite(str(lp), label)
    return ip, lp


def _img(h=32, w=32):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _lab(h=32, w=32, value=1):
    lab = np.zeros((h, w), np.uint8)
    lab[4:12, 4:12] = value
    return lab


def test_check_clean_dataset_is_ok(tmp_path):
    _write(tmp_path, "train", "a", _img(), _lab())
    _write(tmp_path, "val", "b", _img(), _lab())
    rep = D.check(tmp_path)
    assert rep["ok"], rep["errors"]
    assert rep["splits"]["train"]["images"] == 1 and rep["splits"]["train"]["with_artifacts"] == 1
    assert rep["splits"]["test"]["images"] == 0


@pytest.mark.parametrize("case", ["unreadable_image", "unreadable_label", "missing_label", "size_mismatch",
                                  "bad_values", "colour_label"])
def test_check_catches_each_bad_case(tmp_path, case):
    _write(tmp_path, "train", "good", _img(), _lab())
    ip, lp = _write(tmp_path, "train", "bad", _img(), _lab())
    if case == "unreadable_image":
        ip.write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    elif case == "unreadable_label":
        lp.write_bytes(b"\x89PNG broken")
    elif case == "missing_label":
        lp.unlink()
    elif case == "size_mismatch":
        cv2.imwrite(str(lp), _lab(16, 32))
    elif case == "bad_values":
        cv2.imwrite(str(lp), _lab(value=7))
    elif case == "colour_label":
        lab = np.zeros((32, 32, 3), np.uint8)
        lab[..., 2] = 255  # magenta-ish palette image saved as RGB
        lab[..., 0] = 255
        lab[:5, :5] = 0
        cv2.imwrite(str(lp), lab)
    rep = D.check(tmp_path)
    assert not rep["ok"]
    paths = {e["path"] for e in rep["errors"]}
    assert str(ip) in paths or str(lp) in paths, rep["errors"]
    assert len(rep["errors"]) == 1, rep["errors"]  # the good pair is not flagged
    problem = rep["errors"][0]["problem"]
    key = {"unreadable_image": "unreadable image", "unreadable_label": "unreadable label",
           "missing_label": "no label", "size_mismatch": "size mismatch", "bad_values": "outside",
           "colour_label": "colour"}[case]
    assert key in problem


def test_check_warns_on_255_only_pal_label(tmp_path):
    _write(tmp_path, "train", "a", _img(), _lab(value=255))
    rep = D.check(tmp_path)
    assert rep["ok"]  # 255 is valid (ignore) but almost certainly a 0/255 mask in the wrong folder
    assert any("0/255 mask" in w["problem"] for w in rep["warnings"])


def test_plain_masks_layout_and_tasks(tmp_path):
    _write(tmp_path, "train", "a", _img(), _lab(value=255), label_dir="masks", sub="sdxl")
    _write(tmp_path, "train", "b", _img(), _lab(value=255), label_dir="masks", sub="inpaint")
    rep = D.check(tmp_path)
    assert rep["ok"], rep["errors"]
    disc = D.discover(tmp_path, "train")
    assert disc.layout == "mask"
    assert sorted(s.task for s in disc.samples) == ["inpaint", "sdxl"]
    lab = D.read_label(disc.samples[0].label, "mask")
    assert set(np.unique(lab)) == {0, 1}
    # masks without split folders: every image in every split, with a warning
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    cv2.imwrite(str(flat / "images" / "x.png"), _img())
    cv2.imwrite(str(flat / "masks" / "x.png"), _lab(value=255))
    d2 = D.discover(flat, "val")
    assert len(d2.samples) == 1 and d2.warnings
    bad = _lab(value=255)
    bad[0, 0] = 100
    cv2.imwrite(str(flat / "masks" / "x.png"), bad)
    assert not D.check(flat, ["train"])["ok"]


def test_per_task_root_layout(tmp_path):
    _write(tmp_path / "taskA", "test", "a", _img(), _lab())
    _write(tmp_path / "taskB", "test", "b", _img(), _lab())
    disc = D.discover(tmp_path, "test")
    assert disc.layout.startswith("per-task")
    assert sorted(s.task for s in disc.samples) == ["taskA", "taskB"]


def test_no_dataset_is_an_error(tmp_path):
    rep = D.check(tmp_path)
    assert not rep["ok"] and "no data set found" in rep["errors"][0]["problem"]


def test_random_crop_respects_cat_max_ratio():
    label = np.zeros((200, 200), np.uint8)
    label[150:200, 150:200] = 1  # artifact in one corner only
    img = np.zeros((200, 200, 3), np.uint8)
    hits = 0
    for seed in range(20):
        _, lab = random_crop(img, label, np.random.default_rng(seed), 64, 0.75)
        vals, cnt = np.unique(lab, return_counts=True)
        hits += len(cnt) > 1 and cnt.max() / cnt.sum() < 0.75
    # uniform crops would satisfy the ratio in ~5 % of draws; ten retries raise it a lot
    assert hits >= 5
    _, lab = random_crop(img, label, np.random.default_rng(0), 64, 1.0)
    assert lab.shape == (64, 64)


def test_pad_values_and_pipeline_shapes():
    img, lab = pad_to(np.full((10, 12, 3), 7, np.uint8), np.ones((10, 12), np.uint8), 16)
    assert img.shape == (16, 16, 3) and img[12:, :].max() == 0 and img[:10, :12].min() == 7
    assert (lab[10:] == 255).all() and (lab[:, 12:] == 255).all() and (lab[:10, :12] == 1).all()
    pipe = TrainPipeline(scale=64, crop_size=48)
    a = pipe(_img(40, 60), _lab(40, 60), np.random.default_rng(3))
    b = pipe(_img(40, 60), _lab(40, 60), np.random.default_rng(3))
    assert a[0].shape == (48, 48, 3) and a[1].shape == (48, 48)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # deterministic per seed


def test_photometric_distortion_changes_colour_not_labels_and_is_opt_in():
    from comfyui_pal.training.transforms import photometric_distortion

    rng = np.random.default_rng(0)
    img = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    outs = [photometric_distortion(img, np.random.default_rng(s)) for s in range(12)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, img) for o in outs) >= 9  # 4 steps at 1/2 each: rarely none
    hsv = [cv2.cvtColor(o, cv2.COLOR_RGB2HSV)[..., 1].mean() for o in outs]
    assert max(hsv) - min(hsv) > 10  # saturation moves
    assert np.array_equal(photometric_distortion(img, np.random.default_rng(5)), outs[5])  # seeded
    off, on = TrainPipeline(scale=64, crop_size=48), TrainPipeline(scale=64, crop_size=48, photometric=True)
    a = off(_img(40, 60), _lab(40, 60), np.random.default_rng(3))
    b = on(_img(40, 60), _lab(40, 60), np.random.default_rng(3))
    assert np.array_equal(a[1], b[1])  # its draws come after crop and flip: same crop, label untouched
    assert not np.array_equal(a[0], b[0])


def test_sampler_resumes_and_shards():
    full = iter(D.IterSampler(10, 3, seed=1))
    batches = [next(full) for _ in range(8)]
    resumed = iter(D.IterSampler(10, 3, seed=1, start=5))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    r0 = iter(D.IterSampler(10, 2, seed=1, rank=0, world=2))
    r1 = iter(D.IterSampler(10, 2, seed=1, rank=1, world=2))
    pos0 = {p for _ in range(5) for _, p in next(r0)}
    pos1 = {p for _ in range(5) for _, p in next(r1)}
    assert not pos0 & pos1 and len(pos0 | pos1) == 20
    # each epoch is a permutation: 10 consecutive positions cover every image once
    idx = [i for b in batches for i, _ in b][:10]
    assert sorted(idx) == list(range(10))


# --------------------------------------------------------------------------- synth


def test_every_artifact_type_changes_pixels_under_its_mask():
    pool = S.BasePool(dead_leaves_ratio=1.0)
    for t in S.ARTIFACT_TYPES:
        rng = np.random.default_rng(5)
        base, _ = pool.sample(rng, 96)
        out, lab, applied = S.inject(base, rng, [t], 1, pool)
        assert applied == [t], t
        assert set(np.unique(lab)) <= {0, 1, 255}
        core = lab == 1
        assert core.sum() > 16, t
        diff = np.abs(out.astype(int) - base.astype(int)).mean(axis=2)
        assert diff[core].mean() > 3, t
        far = cv2.dilate((lab > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        if t != "seam":  # a seam's pasted patch interior is changed but labelled only along the seam
            assert diff[far].mean() < 1.0, t  # nothing changes away from the labelled region


@pytest.mark.parametrize("palette_p", [1.0, 0.0])
def test_blotch_takes_its_colour_from_the_picture(palette_p):
    # Grey and blue only: a colour from this palette keeps R == G, a random colour does not.
    img = np.zeros((96, 96, 3), np.float32)
    img[:, :48] = (0, 0, 200)
    img[:, 48:] = (100, 100, 100)
    gaps = []
    for seed in range(12):
        out, alpha = S.art_blotch(img, np.random.default_rng(seed), None, 96, palette_p=palette_p)
        gaps.append(float(np.abs(out[..., 0] - out[..., 1])[alpha > 0.5].max()))
    if palette_p == 1.0:
        assert max(gaps) < 1e-3
    else:
        assert max(gaps) > 20


def test_synth_is_deterministic_and_excludes(tmp_path):
    cfg = S.SynthConfig(out=str(tmp_path / "a"), n_train=3, n_val=1, seed=3, size=64, exclude=("warp", "seam"),
                        skimage_names=("camera",))
    S.generate(cfg)
    cfg2 = S.SynthConfig(**{**vars(cfg), "out": str(tmp_path / "b")})
    S.generate(cfg2)
    for sub in ("images/train/train_00000.jpg", "labels/train/train_00002.png", "labels/val/val_00000.png"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()
    meta = json.loads((tmp_path / "a" / "synth_meta.json").read_text())
    used = {a for v in meta["images"].values() for a in v["artifacts"]}
    assert not used & {"warp", "seam"}
    assert D.check(tmp_path / "a")["ok"]
    with pytest.raises(ValueError, match="unknown artifact"):
        S.SynthConfig(out="x", exclude=("nope",)).active_types()


def test_synth_by_type_writes_task_folders(tmp_path):
    cfg = S.SynthConfig(out=str(tmp_path), n_train=0, n_val=0, n_test=4, seed=1, size=64, by_type=True,
                        types=("blotch", "fill"), clean_ratio=0.0, skimage_names=())
    S.generate(cfg)
    disc = D.discover(tmp_path, "test")
    assert sorted({s.task for s in disc.samples}) == ["blotch", "fill"]


def test_user_folder_bases(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), _img(80, 100))
    pool = S.BasePool(skimage_names=(), dead_leaves_ratio=0.0, folders=(str(folder),))
    img, name = pool.sample(np.random.default_rng(0), 48)
    assert img.shape == (48, 48, 3) and name == "p.png"


def test_vector_art_bases_are_clean_vivid_deterministic_and_opt_in():
    cfg = S.SynthConfig(out="unused", size=96, clean_ratio=1.0, skimage_names=("astronaut",), dead_leaves_ratio=0.0,
                        vector_ratio=1.0)
    pool = S.BasePool(("astronaut",), 0.0, (), 0.0, 1.0)
    img, label, info = S.make_sample(cfg, pool, "train", 5, list(S.ARTIFACT_TYPES))
    again, _, info2 = S.make_sample(cfg, pool, "train", 5, list(S.ARTIFACT_TYPES))
    assert info["source"].startswith("vector_art:") and info == info2 and np.array_equal(img, again)
    assert not label.any()
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
    assert np.median(sat) > 60  # vivid colour, the case the starter confused with artifacts


def test_depth_of_field_is_a_clean_effect_deterministic_by_seed():
    pool = S.BasePool(("astronaut",), 0.0, (), 0.0)
    cfg = S.SynthConfig(out="unused", size=96, clean_ratio=1.0, dof_ratio=1.0, skimage_names=("astronaut",),
                        dead_leaves_ratio=0.0)
    img, label, info = S.make_sample(cfg, pool, "train", 3, list(S.ARTIFACT_TYPES))
    again, label2, info2 = S.make_sample(cfg, pool, "train", 3, list(S.ARTIFACT_TYPES))
    assert np.array_equal(img, again) and info == info2 and info["clean_effect"].startswith("dof:")
    assert not label.any()  # photographic blur is labelled clean
    plain, _, pinfo = S.make_sample(S.SynthConfig(out="unused", size=96, clean_ratio=1.0, skimage_names=("astronaut",),
                                                  dead_leaves_ratio=0.0), pool, "train", 3, list(S.ARTIFACT_TYPES))
    assert "clean_effect" not in pinfo and not np.array_equal(plain, img)
    # the blur lowers local detail (Laplacian energy) where it applies
    lap = [float(np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean()) for x in (plain, img)]
    assert lap[1] < lap[0]
    # with artifacts injected afterwards, their pixels are still labelled
    cfg_art = S.SynthConfig(out="unused", size=96, clean_ratio=0.0, dof_ratio=1.0, skimage_names=("astronaut",),
                            dead_leaves_ratio=0.0, types=("fill",), artifacts_per_image=(1, 1))
    _, lab_art, _ = S.make_sample(cfg_art, pool, "train", 0, ["fill"])
    assert (lab_art == 1).any()


def test_png_share_is_written_losslessly_found_by_discover_and_opt_in(tmp_path):
    from comfyui_pal.training.data import discover, load_sample

    base = dict(n_train=4, n_val=0, size=64, skimage_names=("astronaut",), dead_leaves_ratio=0.0,
                clean_ratio=0.0, types=("fill",), artifacts_per_image=(1, 1))
    S.generate(S.SynthConfig(out=str(tmp_path / "png"), png_ratio=1.0, **base))
    S.generate(S.SynthConfig(out=str(tmp_path / "jpg"), **base))
    pngs = sorted((tmp_path / "png" / "images" / "train").iterdir())
    assert [p.suffix for p in pngs] == [".png"] * 4
    assert all(p.suffix == ".jpg" for p in (tmp_path / "jpg" / "images" / "train").iterdir())
    pool = S.BasePool(("astronaut",), 0.0, (), 0.0)
    samples = discover(tmp_path / "png", "train").samples
    assert len(samples) == 4 and all(s.label is not None for s in samples)
    for i, s in enumerate(sorted(samples, key=lambda s: s.name)):
        want, want_label, info = S.make_sample(S.SynthConfig(out="unused", png_ratio=1.0, **base), pool, "train", i,
                                               ["fill"])
        img, label = load_sample(s)
        assert np.array_equal(img, want) and np.array_equal(label, want_label)  # lossless: the exact pixels
        assert info["format"] == "png" and info["jpeg_quality"] is None
    # the format draw comes after every other one: pixels, labels and sources match the JPEG data set,
    # so a data set made before the option regenerates unchanged
    for i in range(4):
        a, la, ia = S.make_sample(S.SynthConfig(out="unused", **base), pool, "train", i, ["fill"])
        b, lb, ib = S.make_sample(S.SynthConfig(out="unused", png_ratio=1.0, **base), pool, "train", i, ["fill"])
        assert np.array_equal(a, b) and np.array_equal(la, lb) and "format" not in ia
        assert {k: v for k, v in ib.items() if k not in ("format", "jpeg_quality")} == \
            {k: v for k, v in ia.items() if k != "jpeg_quality"}


@pytest.mark.parametrize("flag", ["--dof-ratio", "--clean-ratio", "--procedural-ratio", "--vector-ratio",
                                  "--blotch-palette", "--png-ratio"])
def test_synth_share_out_of_range_is_a_clear_error_and_writes_nothing(tmp_path, capsys, flag):
    from comfyui_pal.cli import main

    assert main(["synth", str(tmp_path / "out"), "--n-train", "1", "--n-val", "0", flag, "1.5"]) == 2
    assert f"{flag} 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
