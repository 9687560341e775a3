"""Every PAL node's FUNCTION called with real tensors in ComfyUI layouts, without ComfyUI installed.

The PAL model is the tiny random-weight fixture checkpoint (through load_detector), so PAR values
are arbitrary but deterministic; tests assert behaviour (shapes, routing, validation, no mutation).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS as NODES
from comfyui_pal.pal_nodes import host
from comfyui_pal.pal_nodes.model import PalModel
from comfyui_pal.pal_nodes.nodes_zoom import PalStitch


@pytest.fixture(scope="module")
def pm(fixtures_dir) -> PalModel:
    from comfyui_pal.models.detector import load_detector

    # 64x64 working size instead of the checkpoint's 512 keeps each forward pass ~10 ms on CPU.
    path = str(fixtures_dir / "tiny_swin_upernet_w7.pth")
    det = load_detector(path, device="cpu", input_size=(64, 64))
    return PalModel(det, "tiny", path, torch.device("cpu"), torch.float32)


def rand_image(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, h, w, 3), generator=g)


def blob_mask(b, h, w, boxes):
    m = torch.zeros((b, h, w))
    for i, (x0, y0, x1, y1) in boxes:
        m[i, y0:y1, x0:x1] = 1.0
    return m


def result(out):
    return out["result"] if isinstance(out, dict) else out


# ----------------------------------------------------------------------------- loader
def test_loader_caches_per_instance_and_module(fixtures_dir):
    node = NODES["PALModelLoader"]()
    path = str(fixtures_dir / "tiny_swin_upernet_w7.pth")
    (a,) = node.load(path, "cpu", "fp32")
    (b,) = node.load(path, "cpu", "fp32")
    assert a is b
    (c,) = NODES["PALModelLoader"]().load(path, "cpu", "fp32")
    assert c.detector is a.detector  # module-level cache: the network is loaded once
    assert c.dtype == torch.float32 and str(c.device) == "cpu"


def test_loader_lists_registry_names_without_comfy(monkeypatch, tmp_path):
    from comfyui_pal.models import hub, list_models, registry

    names = NODES["PALModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert names == [r["name"] for r in list_models()] and "pal-starter" in names
    # no fallback hides a broken registry: the names come from it, or the listing fails loudly
    bad = tmp_path / "registry.json"
    bad.write_text('{"models": {"pal-starter": {"source": "bundled"}}}')
    monkeypatch.setattr(registry, "BUILTIN_REGISTRY", bad)
    with pytest.raises(hub.RegistryError, match="needs a 'path'"):
        NODES["PALModelLoader"].INPUT_TYPES()


def test_loader_unknown_name_raises_clear_error():
    with pytest.raises(ValueError, match="no-such-model"):
        NODES["PALModelLoader"]().load("no-such-model", "cpu", "auto")


# ----------------------------------------------------------------------------- detect / score
def test_detect_batch_odd_size_outputs_and_no_mutation(pm):
    img = rand_image(2, 37, 53)
    before = img.clone()
    out = NODES["PALDetect"]().detect(pm, img, 0.5, 2)
    mask, heat, pars = out["result"]
    assert mask.shape == heat.shape == (2, 37, 53)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    assert 0 <= heat.min() and heat.max() <= 1
    assert len(pars) == 2 and all(0 <= p <= 1 for p in pars)
    assert torch.equal(img, before)
    assert out["ui"]["pal_par"] == pars and isinstance(out["ui"]["text"], list)
    # dilation grows the mask, erosion shrinks it
    grown = NODES["PALDetect"]().detect(pm, img, 0.5, 3)["result"][0]
    shrunk = NODES["PALDetect"]().detect(pm, img, 0.5, -3)["result"][0]
    assert grown.sum() >= mask.sum() >= shrunk.sum()
    assert bool((grown >= mask).all()) and bool((shrunk <= mask).all())


def test_detect_par_matches_cli_definition_at_working_size(pm):
    img = rand_image(1, 64, 64, seed=3)
    pars = NODES["PALDetect"]().detect(pm, img, 0.5, 0, preview=False)["result"][2]
    det = pm.detector.detect(img[0].numpy())
    assert abs(pars[0] - det.par) < 0.01


def test_score_from_mask_and_from_model(pm):
    img = rand_image(3, 40, 60)
    m = blob_mask(3, 40, 60, [(0, (0, 0, 30, 40)), (2, (0, 0, 6, 10))])  # 50%, 0%, 2.5%
    pars, report = result(NODES["PALScore"]().score(img, 0.5, mask=m))
    assert pars == pytest.approx([0.5, 0.0, 0.025])
    assert "image 2" in report
    pars2, _ = result(NODES["PALScore"]().score(img, 0.5, pal_model=pm))
    assert len(pars2) == 3
    with pytest.raises(ValueError, match="pal_model or a mask"):
        NODES["PALScore"]().score(img, 0.5)


def test_score_handles_loadimage_64x64_empty_mask_and_hw_mask(pm):
    img = rand_image(1, 100, 80)
    pars, report = result(NODES["PALScore"]().score(img, 0.5, mask=torch.zeros(1, 64, 64)))
    assert pars == [0.0] and "64x64" in report
    hw = torch.zeros(100, 80)
    hw[:50] = 1
    assert result(NODES["PALScore"]().score(img, 0.5, mask=hw))[0] == [0.5]


def test_bad_shapes_give_clear_errors(pm):
    img = rand_image(2, 32, 32)
    with pytest.raises(ValueError, match="3 masks for 2 images"):
        NODES["PALScore"]().score(img, 0.5, mask=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="IMAGE-shaped"):
        NODES["PALScore"]().score(img, 0.5, mask=torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="IMAGE"):
        NODES["PALDetect"]().detect(pm, torch.zeros(2, 32, 32), 0.5, 0)


# ----------------------------------------------------------------------------- sort
def test_sort_batch_with_precomputed_pars_top_k_and_max_par():
    img = torch.stack([torch.full((8, 8, 3), v) for v in (0.1, 0.2, 0.3, 0.4)])
    out = NODES["PALSortByPAR"]().sort([img], ["ascending (fewest artifacts first)"], [2], [0.35], [0.5],
                                       pars=[0.3, 0.1, 0.4, 0.2])
    images, pars, idx, rejected, report = out["result"]
    assert idx == [1, 3] and pars == [0.1, 0.2]
    assert len(images) == 1 and images[0].shape == (2, 8, 8, 3)  # same size -> one batch
    assert torch.allclose(images[0][:, 0, 0, 0], torch.tensor([0.2, 0.4]))
    assert len(rejected) == 1 and rejected[0].shape[0] == 2  # nothing silently dropped
    assert "2 kept, 2 rejected of 4" in report


def test_sort_list_of_different_sizes_with_model(pm):
    imgs = [rand_image(2, 30, 40, 1), rand_image(1, 50, 20, 2)]
    out = NODES["PALSortByPAR"]().sort(imgs, ["descending (most artifacts first)"], [0], [1.0], [0.5],
                                       pal_model=[pm])
    images, pars, idx, rejected, _ = out["result"]
    assert sorted(idx) == [0, 1, 2] and pars == sorted(pars, reverse=True)
    assert len(images) == 3 and all(t.shape[0] == 1 for t in images)  # mixed sizes -> list
    assert host.is_blocked(rejected)  # empty side blocks its branch instead of an empty list
    assert images[idx.index(2)].shape == (1, 50, 20, 3)


def test_sort_errors():
    img = rand_image(2, 8, 8)
    with pytest.raises(ValueError, match="1 pars for 2 images"):
        NODES["PALSortByPAR"]().sort([img], ["ascending (fewest artifacts first)"], [0], [1.0], [0.5], pars=[0.1])
    with pytest.raises(ValueError, match="pal_model or pars"):
        NODES["PALSortByPAR"]().sort([img], ["ascending (fewest artifacts first)"], [0], [1.0], [0.5])


# ----------------------------------------------------------------------------- zoom crop / composite
def test_zoom_crop_batch_and_composite_roundtrip_identity_outside():
    img = rand_image(2, 90, 130)
    before = img.clone()
    m = blob_mask(2, 90, 130, [(0, (10, 10, 20, 22)), (0, (100, 60, 115, 80)), (1, (50, 40, 60, 50))])
    crops, cmasks, stitch = result(NODES["PALZoomCrop"]().crop(img, m, 1.5, 64, 1, 8, 0, 4))
    assert crops.shape == (3, 64, 64, 3) and cmasks.shape == (3, 64, 64)
    assert isinstance(stitch, PalStitch) and stitch.plan.n_active == 3
    assert [c.image_index for c in stitch.plan.crops] == [0, 0, 1]
    grey = torch.full_like(crops, 0.5)  # stand-in for an inpainting chain
    out, alpha, overlay = result(NODES["PALComposite"]().paste(img, grey, stitch, -1, False))
    assert overlay.shape[0] == 2 and overlay.shape[-1] == 3  # before | after per image
    assert out.shape == img.shape and alpha.shape == (2, 90, 130)
    assert torch.equal(img, before)
    untouched = alpha == 0
    assert torch.equal(out[untouched], img[untouched])  # bit-identical outside the blend
    assert torch.allclose(out[0, 15, 15], torch.tensor(0.5))  # the artifact itself is replaced


def test_composite_overlay_of_channel_last_views():
    # VAEDecode returns a movedim view (not C-contiguous): the overlay's cv2 drawing must still work
    img = torch.rand((1, 3, 64, 80)).movedim(1, -1)
    assert not img.is_contiguous()
    m = blob_mask(1, 64, 80, [(0, (20, 20, 30, 30))])
    crops, _, stitch = result(NODES["PALZoomCrop"]().crop(img, m, 1.5, 64, 1, 8, 0, -1))
    out, _, overlay = result(NODES["PALComposite"]().paste(img, crops.movedim(-1, 1).movedim(1, -1), stitch))
    assert overlay.shape[0] == 1 and out.shape == img.shape


def test_zero_components_placeholder_passes_image_through():
    img = rand_image(2, 64, 80)
    crops, cmasks, stitch = result(NODES["PALZoomCrop"]().crop(img, torch.zeros(1, 64, 64), 1.5, 64, 16, 8, -1, -1))
    assert crops.shape == (1, 64, 64, 3) and float(cmasks.sum()) == 0.0
    assert stitch.placeholder and stitch.plan.crops[0].skip
    out, alpha, _ = result(NODES["PALComposite"]().paste(img, torch.rand_like(crops), stitch, -1, False))
    assert torch.equal(out, img) and float(alpha.sum()) == 0.0


def test_composite_validation_messages():
    img = rand_image(1, 64, 64)
    m = blob_mask(1, 64, 64, [(0, (20, 20, 30, 30))])
    crops, _, stitch = result(NODES["PALZoomCrop"]().crop(img, m, 1.5, 64, 1, 8, 0, -1))
    node = NODES["PALComposite"]()
    with pytest.raises(ValueError, match="inpainted has 2 crops but PAL Zoom Crop made 1"):
        node.paste(img, torch.cat([crops, crops]), stitch, -1, False)
    with pytest.raises(ValueError, match="2 images but the stitch plan was made for 1"):
        node.paste(torch.cat([img, img]), crops, stitch, -1, False)
    with pytest.raises(ValueError, match="image 0 is 65x64"):
        node.paste(rand_image(1, 64, 65), crops, stitch, -1, False)
    with pytest.raises(ValueError, match="square"):
        node.paste(img, torch.rand(1, 64, 48, 3), stitch, -1, False)
    with pytest.raises(TypeError, match="PAL Zoom Crop"):
        node.paste(img, crops, {"plan": 1}, -1, False)
    # a square crop of another size (e.g. an upscaler in between) is resized, not refused
    out = result(node.paste(img, torch.rand(1, 128, 128, 3), stitch, -1, True))[0]
    assert out.shape == img.shape


def test_zoom_crop_resizes_mismatched_mask_with_note():
    img = rand_image(1, 80, 80)
    m = torch.zeros(1, 40, 40)
    m[0, 10:20, 10:20] = 1
    out = NODES["PALZoomCrop"]().crop(img, m, 1.5, 64, 1, 8, 0, -1)
    assert "resized" in out["ui"]["text"][0]
    box = out["result"][2].plan.crops[0].component_bbox
    assert box == [20, 20, 40, 40]


# ----------------------------------------------------------------------------- auto fix
def test_autofix_with_standin_sampler_guard_and_rounds(pm):
    # Stand-in for ComfyUI's VAEEncodeForInpaint + common_ksampler + VAE decode: fills the masked
    # area with the crop's mean colour (a real run uses host.ComfySampler inside ComfyUI).
    calls = []

    def sampler(crops, masks, seed_offset=0):
        calls.append((crops.shape, seed_offset))
        mean = crops.mean(dim=(1, 2), keepdim=True)
        return torch.where(masks[..., None] > 0, mean.expand_as(crops), crops)

    img = rand_image(2, 64, 72, seed=5)
    before = img.clone()
    node = NODES["PALAutoFix"]()
    out = node.fix(img, pm, None, None, None, None, seed=1, threshold=0.5, size=64, min_area=1, max_regions=2,
                   rounds=2, par_guard=True, crop_batch=1, sampler=sampler)
    fixed, mask, par_before, par_after, report, strips, overlay = out["result"]
    assert fixed.shape == img.shape and mask.shape == (2, 64, 72)
    n_crops = sum(s[0] for s, _ in calls)
    assert strips.shape == (n_crops, 64, 2 * 64 + 2, 3)  # before | after per crop
    assert overlay.shape[0] == 2 and overlay.shape[1] == 64  # before | after per image
    assert torch.equal(img, before)
    assert len(par_before) == len(par_after) == 2
    assert all(a <= b + 1e-9 for a, b in zip(par_after, par_before))  # the guard never makes PAR worse
    assert calls and all(s[0] == 1 for s, _ in calls)  # crop_batch=1 chunks
    assert len({off for _, off in calls}) == len(calls)  # distinct seeds per chunk/round
    assert "image 1" in report


def test_autofix_without_comfy_sampler_says_so(pm):
    img = rand_image(1, 64, 64, seed=5)
    with pytest.raises(RuntimeError, match="only available inside ComfyUI"):
        NODES["PALAutoFix"]().fix(img, pm, None, None, None, None, threshold=0.5, size=64, min_area=1)


# ----------------------------------------------------------------------------- host adapter
def _fake_folder_paths(tmp_path, existing=None):
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.supported_pt_extensions = {".pth", ".safetensors", ".pt"}
    fp.folder_names_and_paths = {} if existing is None else existing
    (tmp_path / "models" / "pal").mkdir(parents=True)
    (tmp_path / "models" / "pal" / "mine.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "pal" / "README.txt").write_text("not a model")

    def get_filename_list(key):
        paths, exts = fp.folder_names_and_paths[key]
        out = []
        for p in paths:
            import os

            if os.path.isdir(p):
                out += [f for f in sorted(os.listdir(p)) if not exts or os.path.splitext(f)[1] in exts]
        return out

    fp.get_filename_list = get_filename_list
    fp.get_full_path = lambda key, name: None
    fp.get_folder_paths = lambda key: list(fp.folder_names_and_paths[key][0])
    fp.get_temp_directory = lambda: str(tmp_path / "temp")
    return fp


def test_register_folder_fresh_and_over_user_yaml_entry(tmp_path, monkeypatch):
    fp = _fake_folder_paths(tmp_path)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    host.register_model_folder()
    assert host.list_local_models() == ["mine.safetensors"]
    # extra_model_paths.yaml created `pal` first, with an empty extension set (= list everything)
    user_dir = str(tmp_path / "elsewhere")
    fp.folder_names_and_paths = {"pal": ([user_dir], set())}
    host.register_model_folder()
    paths, exts = fp.folder_names_and_paths["pal"]
    assert paths[0] == user_dir and paths[1].endswith("pal") and ".safetensors" in exts
    assert host.list_local_models() == ["mine.safetensors"]  # README.txt no longer listed
    names = NODES["PALModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert names[0] == "mine.safetensors" and "pal-starter" in names
    # previews go to ComfyUI's temp dir as {"filename","subfolder","type"}
    ui = host.save_previews([np.zeros((4, 4, 3), np.uint8)])
    assert ui[0]["type"] == "temp" and (tmp_path / "temp" / ui[0]["filename"]).is_file()


def test_progress_and_interrupt_use_comfy_when_loaded(pm, monkeypatch):
    updates = []

    class PB:
        def __init__(self, total, node_id=None):
            self.total, self.node_id = total, node_id

        def update(self, n):
            updates.append((self.node_id, n))

    class Interrupted(Exception):
        pass

    state = {"stop": False}

    def check():
        if state["stop"]:
            raise Interrupted()

    cu = types.ModuleType("comfy.utils")
    cu.ProgressBar = PB
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = check
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda: None
    monkeypatch.setitem(sys.modules, "comfy.utils", cu)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    img = rand_image(2, 32, 32)
    NODES["PALDetect"]().detect(pm, img, 0.5, 0, preview=False, unique_id="7")
    assert updates == [("7", 2)]
    state["stop"] = True
    with pytest.raises(Interrupted):
        NODES["PALDetect"]().detect(pm, img, 0.5, 0, preview=False, unique_id="7")


def test_loader_applies_a_checkpoints_operating_point(tmp_path):
    """PAL Model Loader -> the stored calibration (artifact logit bias) is what the nodes run at."""
    from tiny_models import TINY

    from comfyui_pal.models.checkpoint import save_safetensors
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(dict(TINY))
    path = save_safetensors(model.state_dict(), model.config, tmp_path / "cal.safetensors",
                            calibration={"artifact_logit_bias": -3.0})
    (cal,) = NODES["PALModelLoader"]().load(str(path), "cpu", "fp32")
    assert cal.detector.artifact_logit_bias == -3.0
    from comfyui_pal.models.detector import load_detector

    raw = load_detector(path, device="cpu", calibration=False)
    img = rand_image(1, 40, 48)
    assert torch.all(cal.detector.prob_maps(img) < raw.prob_maps(img))
    # PAR through a node, at a threshold the raw network clears on part of the image
    t = float(np.median(raw.detect(img[0].numpy()).prob_work))
    pars_cal, _ = result(NODES["PALScore"]().score(img, t, pal_model=cal))
    assert pars_cal[0] < raw.detect(img[0].numpy()).par_at(t)
