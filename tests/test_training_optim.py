"""The official paramwise optimizer rules and LR schedule (no 121M-parameter allocation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_pal.training.optim import (
    OFFICIAL_CUSTOM_KEYS,
    LRSchedule,
    param_groups,
    paramwise_rule,
    sorted_custom_keys,
)

FIX = Path(__file__).parent / "fixtures"


def _expected(name: str) -> tuple[float, float]:
    """The rules as the model reference states them, written out independently."""
    if name.startswith(("decode_head.", "auxiliary_head.")):
        return 10.0, 1.0  # heads: lr x10, decay kept (their BatchNorms are named 'bn')
    if "norm" in name:
        return 1.0, 0.0  # backbone LayerNorms: no decay
    return 1.0, 1.0  # everything else, relative_position_bias_table included


def test_key_order_is_mmengines():
    assert sorted_custom_keys(OFFICIAL_CUSTOM_KEYS) == ["pos_block", "head", "norm"]
    # 'head' wins over 'norm' for a head parameter whose name also contains 'norm'
    assert paramwise_rule("decode_head.norm.weight") == ("head", 10.0, 1.0)
    assert paramwise_rule("backbone.pos_block.0.norm.weight")[0] == "pos_block"


def test_manifest_names_follow_official_rules():
    keys = json.loads((FIX / "swin-large_upernet_unified_512x512.keys.json").read_text())["keys"]
    names = [k["key"] for k in keys if not k["key"].endswith(("running_mean", "running_var", "num_batches_tracked",
                                                                "relative_position_index"))]
    assert len(names) > 300
    for n in names:
        _, lr_mult, decay_mult = paramwise_rule(n)
        assert (lr_mult, decay_mult) == _expected(n), n
    table = [n for n in names if n.endswith("relative_position_bias_table")]
    assert len(table) == 24 and all(paramwise_rule(n)[2] == 1.0 for n in table)
    assert paramwise_rule("backbone.stages.0.downsample.norm.weight")[2] == 0.0
    assert paramwise_rule("decode_head.fpn_bottleneck.bn.weight") == ("head", 10.0, 1.0)


def test_groups_on_real_preset_built_on_meta_device(monkeypatch):
    torch = pytest.importorskip("torch")
    from comfyui_pal.models.factory import create_model

    # Swin computes its drop-path rates with linspace(...).tolist(), which a meta tensor cannot do.
    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **dict(k, device="cpu")))
    with torch.device("meta"):
        model = create_model("pal4vst-swin-b-w12", aux_head=True)
    named = list(model.named_parameters())
    manifest = json.loads((FIX / "swin-large_upernet_unified_512x512.keys.json").read_text())
    assert sum(p.numel() for _, p in named) == manifest["num_parameters"]
    groups = param_groups(named, lr=6e-5, weight_decay=0.01)
    by_name = {n: g for g in groups for n in g["names"]}
    assert len(by_name) == len(named)
    for n, _ in named:
        lr_mult, decay_mult = _expected(n)
        g = by_name[n]
        assert g["lr"] == pytest.approx(6e-5 * lr_mult), n
        assert g["weight_decay"] == pytest.approx(0.01 * decay_mult), n
    # three distinct settings: heads (6e-4, 0.01), backbone norms (6e-5, 0), rest (6e-5, 0.01)
    settings = sorted((round(g["lr"], 10), g["weight_decay"]) for g in groups)
    assert settings == [(6e-5, 0.0), (6e-5, 0.01), (6e-4, 0.01)]
    head_params = sum(p.numel() for n, p in named if n.startswith(("decode_head.", "auxiliary_head.")))
    assert head_params == manifest["num_parameters_decode_head"] + manifest["num_parameters_auxiliary_head"]


def test_frozen_parameters_are_left_out():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(2, 2)
    lin.bias.requires_grad_(False)
    groups = param_groups(lin.named_parameters(), 1e-3, 0.01)
    assert [n for g in groups for n in g["names"]] == ["weight"]


def test_lr_schedule_official_values():
    s = LRSchedule()  # warm-up 1500 from 1e-6, poly power 1 to 160000
    assert s.factor(0) == pytest.approx(1e-6)
    assert s.factor(750) == pytest.approx(0.5, rel=1e-4)
    assert s.factor(1500) == pytest.approx(1.0)
    assert s.factor(20000) == pytest.approx(1 - 18500 / 158500)  # ~0.883 where training stops
    assert s.factor(160000) == pytest.approx(0.0)
    assert s.factor(10**6) == pytest.approx(0.0)


def test_schedule_applies_per_group_multipliers():
    torch = pytest.importorskip("torch")
    from comfyui_pal.training.optim import build_optimizer

    m = torch.nn.Module()
    m.backbone = torch.nn.Linear(2, 2)
    m.decode_head = torch.nn.Linear(2, 2)
    opt = build_optimizer(m, lr=6e-5)
    LRSchedule().apply(opt, 1500, 6e-5)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([6e-5, 6e-4])


def test_class_weight_raises_the_artifact_pixels_share_of_the_loss():
    import torch

    from comfyui_pal.training.loop import seg_loss

    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 2.0  # confident "clean" everywhere
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 1  # one artifact pixel, misclassified
    label[0, 3, 3] = 255  # ignored
    plain = seg_loss({"out": logits}, label, aux_weight=0)["total"]
    weighted = seg_loss({"out": logits}, label, aux_weight=0, class_weight=(1.0, 3.0))["total"]
    assert weighted > plain
    same = seg_loss({"out": logits}, label, aux_weight=0, class_weight=(1.0, 1.0))["total"]
    assert torch.isclose(same, plain)  # unit weights = the unweighted loss (mmseg)


def test_seg_loss_honours_avg_non_ignore_with_class_weights():
    """Regression: with class weights, avg_non_ignore used to be dropped silently (torch's
    weighted mean over non-ignored pixels was used whatever the flag said)."""
    import torch
    import torch.nn.functional as F

    from comfyui_pal.training.loop import seg_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=g)
    label = torch.randint(0, 2, (2, 8, 8), generator=g)
    label[:, :3] = 255  # 48 of 128 pixels ignored
    w = torch.tensor([1.0, 3.0])
    ce = F.cross_entropy(logits, label, weight=w, ignore_index=255, reduction="none")
    for avg_non_ignore, denom in ((False, 128), (True, 80)):
        got = seg_loss({"out": logits}, label, aux_weight=0, avg_non_ignore=avg_non_ignore,
                       class_weight=(1.0, 3.0))["total"]
        assert torch.isclose(got, ce.sum() / denom), (avg_non_ignore, got)
    a = seg_loss({"out": logits}, label, aux_weight=0, avg_non_ignore=True, class_weight=(1.0, 3.0))["total"]
    b = seg_loss({"out": logits}, label, aux_weight=0, avg_non_ignore=False, class_weight=(1.0, 3.0))["total"]
    assert torch.isclose(a * 80, b * 128) and not torch.isclose(a, b)


def test_training_states_are_read_without_running_code(tmp_path):
    """--init/--resume/eval read .pt states with weights_only=True: a pickle with code is refused."""
    import pickle

    import pytest
    import torch

    from comfyui_pal.training.state import load_state

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {}, "x": Evil()}, bad)
    with pytest.raises(pickle.UnpicklingError):
        load_state(bad)


def test_dice_term_rewards_overlap_counts_false_positives_and_skips_ignored_pixels():
    import torch

    from comfyui_pal.training.loop import dice_loss, seg_loss

    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[0, 2:6, 2:6] = 1  # image 0: one artifact square; image 1: clean
    label[0, 0, :] = 255

    def logits_for(mask):  # confident logits that predict `mask` as artifact
        lg = torch.full((2, 2, 8, 8), -6.0)
        lg[:, 0] = 6.0
        lg[:, 1][mask] = 12.0
        return lg

    exact = logits_for(label == 1)
    assert float(dice_loss(exact, label)) < 0.01
    fp = (label == 1).clone()
    fp[1, :4, :4] = True  # the same hit plus a false positive on the clean picture
    assert float(dice_loss(logits_for(fp), label)) > 0.2
    miss = torch.zeros_like(fp)
    assert float(dice_loss(logits_for(miss), label)) > 0.9
    ignored = (label == 1) | (label == 255)  # "artifact" on ignored pixels costs nothing
    assert float(dice_loss(logits_for(ignored), label)) == pytest.approx(float(dice_loss(exact, label)), abs=1e-6)
    # seg_loss adds it to the CE only when asked, scaled by the weight
    plain = seg_loss({"out": logits_for(fp)}, label, aux_weight=0)
    withd = seg_loss({"out": logits_for(fp)}, label, aux_weight=0, dice_weight=0.5)
    assert "dice" not in plain and torch.isclose(withd["dice"], 0.5 * dice_loss(logits_for(fp), label))
    assert torch.isclose(withd["total"], plain["total"] + withd["dice"])
