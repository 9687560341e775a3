"""ComfyUI runs every node under torch.inference_mode(), so a detector loaded there has inference-tensor
weights (no version counter). Found in a real ComfyUI run: the BatchNorm folding cache read `_version`."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("outer", ["inference_mode", "no_grad"])
def test_detector_loaded_and_run_under_inference_mode(fixtures_dir, outer):
    from comfyui_pal.models import load_detector

    path = fixtures_dir / "tiny_swin_upernet_w7.pth"
    with torch.inference_mode():
        det = load_detector(path, device="cpu", input_size=(64, 64))
        assert next(det.segmenter.parameters()).is_inference()
    ref = load_detector(path, device="cpu", input_size=(64, 64))  # normal tensors
    img = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    ctx = torch.inference_mode() if outer == "inference_mode" else torch.no_grad()
    with ctx:
        a = det.detect(img).prob
        a2 = det.detect(img).prob  # second call: the folded weights path again
    b = ref.detect(img).prob
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a, a2)
