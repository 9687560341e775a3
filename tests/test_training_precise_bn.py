"""Precise BatchNorm statistics: eval mode matches the statistics of whole working-size pictures."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from tiny_models import TINY  # noqa: E402

from comfyui_pal.models.factory import create_model  # noqa: E402
from comfyui_pal.training import loop as L  # noqa: E402
from comfyui_pal.training.data import discover  # noqa: E402
from comfyui_pal.training.precise_bn import precise_bn_, recompute_bn_stats_, working_batches  # noqa: E402
from comfyui_pal.training.state import load_state  # noqa: E402
from comfyui_pal.training.synth import SynthConfig, generate  # noqa: E402


def _bns(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pbn") / "data"
    generate(SynthConfig(out=str(root), n_train=8, n_val=0, n_test=0, seed=3, size=64,
                         skimage_names=("camera", "astronaut"), clean_ratio=0.0, by_type=False))
    return root


def _model_with_wrong_statistics():
    torch.manual_seed(0)
    model = create_model(dict(TINY))
    for bn in _bns(model.decode_head):  # what a momentum average of small crop batches can leave
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(1e-4)
    return model


def test_eval_mode_then_equals_batch_statistics_and_frozen_layers_stay():
    model = _model_with_wrong_statistics()
    model.train()
    model.backbone.eval()  # --freeze backbone_bn
    frozen = [bn.running_mean.clone() for bn in _bns(model.backbone)]
    x = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        before = model(x)
        model.train()
        model.backbone.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d):
                m.eval()
        batch_stats = model.decode_head(model.backbone(x))  # BN on this batch's own statistics
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d):
                m.train()
    assert recompute_bn_stats_(model, [x]) == 6
    # modes and momenta restored
    assert model.training and not model.backbone.training and model.decode_head.training
    assert all(bn.momentum == 0.1 for bn in _bns(model))
    model.eval()
    with torch.no_grad():
        after_feat = model.decode_head(model.backbone(x))
        after = model(x)
    # eval-mode output now follows the batch statistics (up to the unbiased-variance factor 6/5
    # on a single batch) and no longer the wrong running averages
    assert (after_feat - batch_stats).abs().max() < 0.1 * batch_stats.abs().max()
    # with the wrong statistics every ReLU after a head BN is 0: one constant logit map (the
    # "dead features" symptom the starter showed); afterwards the logits follow the picture
    assert before.std() < 1e-6 < after.std()
    assert all(torch.equal(bn.running_mean, f) for bn, f in zip(_bns(model.backbone), frozen))


def test_no_training_batchnorm_changes_nothing():
    model = _model_with_wrong_statistics().eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_bn_stats_(model, [torch.randn(2, 3, 64, 64)]) == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())


def test_working_batches_are_whole_pictures_at_the_working_size(data):
    samples = discover(str(data), "train").samples
    batches = list(working_batches(samples, {"size": [48, 40]}, 3))
    assert [tuple(b.shape) for b in batches] == [(3, 3, 48, 40), (3, 3, 48, 40), (2, 3, 48, 40)]
    model = _model_with_wrong_statistics()
    model.train()
    assert precise_bn_(model, samples, batch_size=3) == 6  # short last batch dropped


@pytest.mark.parametrize("precise, changed", [(None, True), (0, False)])
def test_trainer_saves_precise_statistics_with_a_small_batch(data, tmp_path, precise, changed):
    cfg = L.TrainConfig(data=str(data), work_dir=str(tmp_path / "w"), model=dict(TINY), max_iters=3, batch_size=2,
                        crop_size=32, scale=64, lr=1e-3, warmup_iters=1, poly_end=3, num_workers=0, threads=1,
                        log_interval=1, val_interval=0, checkpoint_interval=3, freeze="backbone_bn",
                        precise_bn=precise)
    L.train(cfg, log=lambda m: None)
    state = load_state(tmp_path / "w" / "latest.pt")
    model = create_model(json.loads(json.dumps(state["model_config"])))
    model.load_state_dict(state["model"])
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()
    model.backbone.eval()
    precise_bn_(model, L.select_few(discover(str(data), "train").samples, 8, 0), batch_size=2)
    redo = {k: v for k, v in model.state_dict().items() if "running_mean" in k}
    head = [k for k in saved if k.startswith("decode_head")]
    same = all(torch.allclose(saved[k], redo[k], atol=1e-5) for k in head)
    assert same is changed  # auto (batch 2 < 16): what precise_bn_ gives; off: the momentum average
