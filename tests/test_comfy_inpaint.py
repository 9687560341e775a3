"""PAL Auto Fix's inpaint modes, run through host.ComfySampler with ComfyUI-layout stand-ins.

`nodes` is a stand-in module for ComfyUI's nodes.py (VAEEncode, SetLatentNoiseMask,
InpaintModelConditioning, VAEEncodeForInpaint, common_ksampler) that behaves as documented there
(VAEEncodeForInpaint and InpaintModelConditioning grey the masked pixels before encoding). The VAE
is a spy: it records every pixel batch it encodes, so the tests can say which pixels the latent the
sampler starts from was encoded from. With COMFY_DIR set (a ComfyUI checkout, see
shared/tools/comfy_host), the same checks also run against ComfyUI's real nodes.py.
"""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS as NODES
from comfyui_pal.pal_nodes import host
from comfyui_pal.pal_nodes.model import PalModel


# ----------------------------------------------------------------------------- stand-ins
class SpyVAE:
    downscale_ratio = 8

    def __init__(self):
        self.encoded = {}  # id(latent) -> the pixels it was encoded from

    def encode(self, pixels):
        px = pixels[..., :3].clone()
        lat = F.avg_pool2d(px.movedim(-1, 1), 8)  # [N,3,H/8,W/8]
        lat = torch.cat([lat, lat[:, :1]], 1)  # 4 "latent" channels
        self.encoded[id(lat)] = px
        return lat

    def decode(self, samples):
        return F.interpolate(samples[:, :3], scale_factor=8, mode="nearest").movedim(1, -1)


def _grey(pixels, mask):
    m = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]), size=pixels.shape[1:3], mode="bilinear")
    keep = (1.0 - m.round())[:, 0, ..., None]
    return (pixels - 0.5) * keep + 0.5, m


def fake_nodes_module(calls):
    """ComfyUI nodes.py stand-in (documented behaviour, not its code)."""
    nodes = types.ModuleType("nodes")

    class VAEEncode:
        def encode(self, vae, pixels):
            calls.append("VAEEncode")
            return ({"samples": vae.encode(pixels[..., :3])},)

    class SetLatentNoiseMask:
        def set_mask(self, samples, mask):
            calls.append("SetLatentNoiseMask")
            s = dict(samples)
            s["noise_mask"] = mask.reshape(-1, 1, *mask.shape[-2:])
            return (s,)

    class VAEEncodeForInpaint:
        def encode(self, vae, pixels, mask, grow_mask_by=6):
            calls.append("VAEEncodeForInpaint")
            greyed, m = _grey(pixels, mask)
            return ({"samples": vae.encode(greyed), "noise_mask": m.round()},)

    class InpaintModelConditioning:
        def encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
            calls.append("InpaintModelConditioning")
            greyed, m = _grey(pixels, mask)
            concat, orig = vae.encode(greyed), vae.encode(pixels)
            out = {"samples": orig}
            if noise_mask:
                out["noise_mask"] = m
            cond = lambda c: [[t, {**d, "concat_latent_image": concat, "concat_mask": m}] for t, d in c]  # noqa: E731
            return (cond(positive), cond(negative), out)

    def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                        denoise=1.0, **kw):
        calls.append(("common_ksampler", model, seed, denoise, latent, positive))
        return ({**latent, "samples": latent["samples"]},)

    class DifferentialDiffusion:  # V3-style node: classmethod execute -> NodeOutput-like
        @classmethod
        def execute(cls, model, strength=1.0):
            calls.append("DifferentialDiffusion")
            return types.SimpleNamespace(result=(types.SimpleNamespace(model=model.model, dd=True),))

    for c in (VAEEncode, SetLatentNoiseMask, VAEEncodeForInpaint, InpaintModelConditioning):
        setattr(nodes, c.__name__, c)
    nodes.common_ksampler = common_ksampler
    nodes.NODE_CLASS_MAPPINGS = {"DifferentialDiffusion": DifferentialDiffusion}
    return nodes


def fake_model(inpaint: bool, latent="SD15"):
    fmt = type(latent, (), {"latent_channels": 4})()
    keys = ("mask", "masked_image") if inpaint else ()
    return types.SimpleNamespace(model=types.SimpleNamespace(concat_keys=keys, latent_format=fmt))


COND = [[torch.zeros(1, 77, 8), {"pooled_output": None}]]


@pytest.fixture
def comfy(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "nodes", fake_nodes_module(calls))
    return calls


def crops_and_masks(n=2, s=64):
    g = torch.Generator().manual_seed(0)
    crops = torch.rand((n, s, s, 3), generator=g)
    masks = torch.zeros((n, s, s))
    masks[:, 16:40, 20:44] = 1.0
    return crops, masks


def sampler_start(calls, vae):
    """Pixels the latent given to the (only) KSampler call was encoded from."""
    ks = [c for c in calls if isinstance(c, tuple) and c[0] == "common_ksampler"]
    assert len(ks) == 1
    return vae.encoded[id(ks[0][4]["samples"])], ks[0]


# ----------------------------------------------------------------------------- model facts
def test_inpaint_model_detection_and_auto_resolution():
    assert host.is_inpaint_model(fake_model(True)) and not host.is_inpaint_model(fake_model(False))
    # without concat keys: ComfyUI's model config (UNet in_channels vs latent channels), e.g. 9 vs 4
    cfg = types.SimpleNamespace(unet_config={"in_channels": 9}, latent_format=types.SimpleNamespace(latent_channels=4))
    assert host.is_inpaint_model(types.SimpleNamespace(model=types.SimpleNamespace(model_config=cfg)))
    cfg.unet_config["in_channels"] = 4
    assert not host.is_inpaint_model(types.SimpleNamespace(model=types.SimpleNamespace(model_config=cfg)))

    def flux(in_ch):  # Flux-style: no concat keys, the extra input is read from the channel counts
        c = types.SimpleNamespace(unet_config={"in_channels": in_ch, "out_channels": 16},
                                  latent_format=types.SimpleNamespace(latent_channels=16))
        return types.SimpleNamespace(model=types.SimpleNamespace(concat_keys=(), model_config=c))

    assert host.is_inpaint_model(flux(96))  # Fill: latent + masked image + mask
    assert not host.is_inpaint_model(flux(32))  # Canny/Depth: latent + control image, no mask
    assert not host.is_inpaint_model(flux(16))
    assert host.resolve_inpaint_mode("auto", fake_model(True)) == "inpaint model conditioning"
    assert host.resolve_inpaint_mode("auto", fake_model(False)) == "noise mask"
    assert host.resolve_inpaint_mode("VAEEncodeForInpaint", fake_model(False)) == "VAEEncodeForInpaint"
    assert host.native_size(fake_model(False, "SD15")) == 512
    assert host.native_size(fake_model(False, "SDXL")) == 1024


# ----------------------------------------------------------------------------- the VAE-encode spy
@pytest.mark.parametrize("mode,inpaint", [("noise mask", False), ("auto", False), ("auto", True),
                                          ("inpaint model conditioning", True)])
@pytest.mark.parametrize("denoise", [0.5, 1.0])
def test_sampler_starts_from_the_real_crop(comfy, mode, inpaint, denoise):
    vae = SpyVAE()
    crops, masks = crops_and_masks()
    s = host.ComfySampler(fake_model(inpaint), vae, COND, COND, 5, 4, 7.0, "euler", "normal", denoise, mode=mode)
    out = s(crops, masks, seed_offset=3)
    assert out.shape == crops.shape
    start, ks = sampler_start(comfy, vae)
    assert torch.equal(start, crops)  # exactly the crop: no grey area
    assert not bool((start[:, 16:40, 20:44] == 0.5).all())
    assert ks[2] == 8 and ks[3] == denoise
    latent = ks[4]
    assert torch.equal(latent["noise_mask"].reshape(masks.shape).round(), masks)  # only the mask is re-generated
    expected = "InpaintModelConditioning" if inpaint else "SetLatentNoiseMask"
    assert expected in comfy and "VAEEncodeForInpaint" not in comfy
    if inpaint:  # the model still gets the masked image as its extra input
        assert "concat_latent_image" in ks[5][0][1]


def test_vae_encode_for_inpaint_is_legacy_and_greys_only_at_denoise_1(comfy):
    vae = SpyVAE()
    crops, masks = crops_and_masks()
    host.ComfySampler(fake_model(True), vae, COND, COND, 0, 4, 7.0, "euler", "normal", 1.0,
                      mode="VAEEncodeForInpaint")(crops, masks)
    start, _ = sampler_start(comfy, vae)
    assert bool((start[:, 16:40, 20:44] == 0.5).all())  # legacy node at denoise 1: greyed, as designed
    comfy.clear()
    s = host.ComfySampler(fake_model(True), vae, COND, COND, 0, 4, 7.0, "euler", "normal", 0.6,
                          mode="VAEEncodeForInpaint")
    s(crops, masks)
    start, ks = sampler_start(comfy, vae)
    assert torch.equal(start, crops)  # below denoise 1 the sampler starts from the real crop
    assert "concat_latent_image" in ks[5][0][1]  # the inpainting model still sees the greyed crop
    assert any("real crop" in n for n in s.notes)


def test_soft_noise_mask_with_differential_diffusion(comfy):
    vae = SpyVAE()
    crops, masks = crops_and_masks()
    model = fake_model(False)
    s = host.ComfySampler(model, vae, COND, COND, 0, 4, 7.0, "euler", "normal", 0.5, mode="noise mask",
                          noise_mask_feather=6)
    s(crops, masks)
    assert "DifferentialDiffusion" in comfy
    _, ks = sampler_start(comfy, vae)
    assert getattr(ks[1], "dd", False)  # the patched model samples
    nm = ks[4]["noise_mask"].reshape(masks.shape)
    assert bool((nm[masks > 0] == 1).all())  # the artifact itself is fully re-generated
    soft = (nm > 0) & (nm < 1)
    assert bool(soft.any()) and not bool((soft & (masks > 0)).any())


def test_soft_mask_falls_back_where_comfy_has_no_differential_diffusion(comfy):
    sys.modules["nodes"].NODE_CLASS_MAPPINGS = {}
    s = host.ComfySampler(fake_model(False), SpyVAE(), COND, COND, 0, 4, 7.0, "euler", "normal", 0.5,
                          noise_mask_feather=6)
    assert s.feather == 0 and any("hard noise mask" in n for n in s.notes)


# ----------------------------------------------------------------------------- the node, per mode
@pytest.fixture(scope="module")
def pm(fixtures_dir) -> PalModel:
    from comfyui_pal.models.detector import load_detector

    path = str(fixtures_dir / "tiny_swin_upernet_w7.pth")
    det = load_detector(path, device="cpu", input_size=(64, 64))
    return PalModel(det, "tiny", path, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("mode,inpaint,expected", [
    ("auto", False, "SetLatentNoiseMask"), ("auto", True, "InpaintModelConditioning"),
    ("noise mask", True, "SetLatentNoiseMask"), ("inpaint model conditioning", True, "InpaintModelConditioning"),
    ("VAEEncodeForInpaint", True, "VAEEncodeForInpaint"),
])
def test_autofix_node_per_inpaint_mode(comfy, pm, mode, inpaint, expected):
    vae = SpyVAE()
    g = torch.Generator().manual_seed(5)
    img = torch.rand((2, 64, 72, 3), generator=g)
    before = img.clone()
    out = NODES["PALAutoFix"]().fix(img, pm, fake_model(inpaint), vae, COND, COND, seed=3, steps=4, denoise=0.5,
                                    threshold=0.5, size=64, min_area=1, max_regions=2, inpaint_mode=mode,
                                    crop_batch=2)
    fixed, mask, pb, pa, report, strips, overlay = out["result"]
    assert fixed.shape == img.shape and torch.equal(img, before) and bool(torch.isfinite(fixed).all())
    assert expected in comfy
    resolved = {"auto": "inpaint model conditioning" if inpaint else "noise mask"}.get(mode, mode)
    assert f"inpaint mode {resolved}" in report
    ks = [c for c in comfy if isinstance(c, tuple)]
    assert ks, "the sampler never ran (no regions found?)"
    assert [c[2] for c in ks] == [3 + k for k in range(len(ks))]  # seed + 1000 * round + chunk
    for c in ks:  # every chunk at denoise < 1 starts from real crop pixels
        assert not bool((vae.encoded[id(c[4]["samples"])] == 0.5).all(dim=-1).any())
    assert strips.ndim == 4 and overlay.shape[0] == 2
    assert out["ui"]["pal_par"] == pa


def test_autofix_size_auto_uses_model_native_size_capped_by_image(comfy, pm):
    img = torch.rand((1, 96, 96, 3), generator=torch.Generator().manual_seed(5))
    report = NODES["PALAutoFix"]().fix(img, pm, fake_model(False), SpyVAE(), COND, COND, size=0, min_area=1,
                                       threshold=0.5)["result"][4]
    assert "working size 96" in report and "size auto: 96" in report


# ----------------------------------------------------------------------------- real ComfyUI nodes.py
@pytest.fixture(scope="module")
def real_nodes():
    comfy_dir = os.environ.get("COMFY_DIR")
    if not comfy_dir or not os.path.isfile(os.path.join(comfy_dir, "nodes.py")):
        pytest.skip("COMFY_DIR not set: real ComfyUI nodes.py check runs locally only")
    before = set(sys.modules)
    sys.path.insert(0, comfy_dir)
    try:
        from comfy.cli_args import args

        args.cpu = True
        import nodes  # noqa: F401

        yield sys.modules["nodes"]
    finally:
        sys.path.remove(comfy_dir)
        for name in set(sys.modules) - before:  # leave no ComfyUI behind for the other tests
            del sys.modules[name]


@pytest.mark.parametrize("mode,inpaint", [("noise mask", False), ("auto", False),
                                          ("inpaint model conditioning", True)])
def test_real_comfy_nodes_start_from_the_real_crop(real_nodes, monkeypatch, mode, inpaint):
    seen = []
    monkeypatch.setattr(real_nodes, "common_ksampler",
                        lambda model, seed, steps, cfg, sn, sc, pos, neg, latent, denoise=1.0, **kw:
                        (seen.append(latent) or (latent,)))
    vae = SpyVAE()
    crops, masks = crops_and_masks()
    host.ComfySampler(fake_model(inpaint), vae, COND, COND, 0, 4, 7.0, "euler", "normal", 0.5, mode=mode)(crops, masks)
    assert torch.equal(vae.encoded[id(seen[0]["samples"])], crops)
