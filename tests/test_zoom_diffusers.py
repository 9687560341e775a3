"""The diffusers inpainter end to end with a tiny randomly initialised SD inpaint pipeline (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers not installed: pip install 'comfyui-pal[diffusers]'")
pytest.importorskip("transformers", reason="transformers not installed (the SD inpaint pipelines need it)")

import torch  # noqa: E402

from comfyui_pal.core.fix import fix_image  # noqa: E402
from comfyui_pal.core.inpainters import DiffusersInpainter, dtype_kwarg, make_inpainter  # noqa: E402

pytestmark = pytest.mark.slow


def _byte_unicode_chars() -> list[str]:
    # GPT-2/CLIP byte-to-unicode table: 256 printable characters, one per byte.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tiny_tokenizer(tmp):
    from transformers import CLIPTokenizer

    chars = _byte_unicode_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=514, max_position_embeddings=77,
    ))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    tok = _tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scene(h=96, w=112):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1).astype(np.uint8)
    img[40:52, 50:66] = (255, 0, 255)  # the "artifact"
    m = np.zeros((h, w), bool)
    m[40:52, 50:66] = True
    return img, m


def test_diffusers_fix_end_to_end(tiny_pipe):
    torch.set_num_threads(1)
    img, m = _scene()
    inp = DiffusersInpainter(pipe=tiny_pipe, prompt="a clean photo", negative_prompt="artifacts",
                             steps=2, guidance=2.0, seed=7)
    res = fix_image(img, m, inp, size=64, min_side=32, color_match=True)
    assert res.report["status"] == "fixed" and res.report["inpainter"].startswith("diffusers:")
    out = res.image
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out[m], img[m])  # the region was regenerated
    untouched = res.changed == 0
    assert untouched.sum() > 0.5 * untouched.size
    assert np.array_equal(out[untouched], img[untouched])  # the rest is bit-identical
    again = fix_image(img, m, inp, size=64, min_side=32, color_match=True)
    assert np.array_equal(again.image, out)  # seeded: reproducible


def test_diffusers_from_local_folder(tiny_pipe, tmp_path):
    torch.set_num_threads(1)
    folder = tmp_path / "tiny-sd-inpaint"
    tiny_pipe.save_pretrained(folder, safe_serialization=True)
    inp = make_inpainter(f"diffusers:{folder}", steps=1, guidance=1.0, seed=0, device="cpu", pipeline="sd")
    crops = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    masks = np.zeros((2, 64, 64), np.float32)
    masks[0, 16:48, 16:48] = 1  # crop 1 has nothing to fill: returned unchanged, not sent to the pipe
    out = inp.inpaint(crops, masks)
    assert out.shape == crops.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out[1], crops[1])
    assert not np.allclose(out[0], crops[0])


def test_dtype_keyword_comes_from_the_public_version():
    # before: decided by probing the private diffusers.utils.deprecation_utils._TORCH_DTYPE_DEPRECATION_MESSAGE
    import diffusers

    assert dtype_kwarg("0.39.0") == "torch_dtype" and dtype_kwarg("0.30.3") == "torch_dtype"
    assert dtype_kwarg("0.40.0") == "dtype" and dtype_kwarg("1.2.0") == "dtype"
    assert dtype_kwarg(diffusers.__version__) in ("dtype", "torch_dtype")
