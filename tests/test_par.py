"""PAR, the official overlay and PAR ranking (core/par.py), shared by the CLI and both hosts."""

import numpy as np
import pytest

from comfyui_pal.core.par import overlay, par, rank_by_par


def test_par_of_each_mask_dtype():
    m = np.zeros((4, 5), bool)
    m[0, :2] = True
    assert par(m) == pytest.approx(0.1)
    assert par(m.astype(np.uint8) * 255) == pytest.approx(0.1)
    assert par(m.astype(np.uint8)) == pytest.approx(0.1)
    assert par(m.astype(np.float32) * 0.6) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="empty"):
        par(np.zeros((0, 3)))


def test_overlay_is_official_blend_and_checks_sizes():
    img = np.full((2, 2, 3), 100, np.uint8)
    m = np.array([[True, False], [False, False]])
    out = overlay(img, m)
    assert out[0, 0].tolist() == [round(0.7 * 100 + 0.3 * 255), 70, round(0.7 * 100 + 0.3 * 255)]
    assert (out[1:] == img[1:]).all() and (out[0, 1] == img[0, 1]).all()
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, np.zeros((3, 2), bool))


def test_rank_by_par_is_stable_and_filters_without_dropping():
    pars = [0.3, 0.1, 0.1, 0.5, 0.0]
    kept, rejected = rank_by_par(pars)
    assert kept == [4, 1, 2, 0, 3] and rejected == []  # ties keep input order
    kept, rejected = rank_by_par(pars, top_k=2)
    assert kept == [4, 1] and rejected == [2, 0, 3]
    kept, rejected = rank_by_par(pars, max_par=0.3)
    assert kept == [4, 1, 2, 0] and rejected == [3]
    kept, rejected = rank_by_par(pars, descending=True, max_par=0.3, top_k=1)
    assert kept == [0] and rejected == [3, 1, 2, 4]
    assert sorted(kept + rejected) == list(range(len(pars)))
    assert rank_by_par([]) == ([], [])


def _tie_and_neighbours():
    """Logit pairs around the tie l1 == l0, where p1 is exactly 0.5."""
    import torch

    l0 = torch.tensor([0.0, 1.0, -2.0, 3.0, 0.0, 0.0])
    l1 = torch.tensor([0.0, 1.0, -2.0, 3.0 + 1e-3, -1e-3, 5.0])
    return torch.stack([l0, l1])[None, :, None, :]  # [1, 2, 1, 6]


def test_one_threshold_rule_reproduces_the_official_argmax_at_half():
    """prob > 0.5 == argmax: a tie (p1 == 0.5) is not an artifact anywhere (before: par() and the
    ComfyUI mask helpers used >=, the rest >)."""
    import torch

    from comfyui_pal.core.components import find_components
    from comfyui_pal.models.detector import Detection
    from comfyui_pal.pal_nodes.tensors import mask_par, overlay_u8

    logits = _tie_and_neighbours()
    official = (logits.argmax(1)[0] == 1).numpy()  # what curate_images.py counts
    prob = torch.softmax(logits, dim=1)[0, 1]
    assert float(prob[0, 0]) == 0.5  # the tie really is exactly 0.5
    assert np.array_equal(prob.numpy() > 0.5, official)
    p = prob.numpy()
    assert par(p) == pytest.approx(official.mean())
    assert mask_par(prob) == pytest.approx(official.mean())
    det = Detection(prob=p, prob_work=p)
    assert np.array_equal(det.mask(), official) and det.par == pytest.approx(official.mean())
    cs = find_components(p, dilate=0)
    assert np.array_equal(cs.region_mask(None), official)
    img = torch.full((1, 6, 3), 0.5)
    painted = (overlay_u8(img, prob) != overlay_u8(img, torch.zeros_like(prob))).any(-1)
    assert np.array_equal(painted, official)
    # a float mask of exactly 0.5 everywhere has no artifact, like a tie everywhere
    assert par(np.full((3, 3), 0.5, np.float32)) == 0.0
