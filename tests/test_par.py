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
