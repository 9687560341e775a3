"""The ComfyUI loader's precision 'auto' on the CPU follows the detector's one rule (resolve_dtype)."""

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("archs,expected", [(frozenset(), torch.float32),
                                            (frozenset({"SwinTransformer"}), torch.bfloat16)])
def test_loader_auto_on_cpu_is_the_detectors_choice(fixtures_dir, monkeypatch, archs, expected):
    from comfyui_pal.models import clear_cache
    from comfyui_pal.models import detector as dmod
    from comfyui_pal.pal_nodes import model as M

    monkeypatch.setattr(dmod, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(dmod, "BF16_CPU_ARCHS", archs)
    clear_cache()
    try:
        pm = M.load(str(fixtures_dir / "tiny_swin_upernet_w12.pth"), "cpu", "auto", offload=False)
        assert pm.dtype == expected and pm.detector.dtype == expected
        assert M.load(str(fixtures_dir / "tiny_swin_upernet_w12.pth"), "cpu", "fp32", offload=False).dtype \
            == torch.float32  # an explicit choice wins
    finally:
        clear_cache()
