"""scripts/pal_autofix.py + comfyui_pal.a1111, loaded the way AUTOMATIC1111 loads extension scripts,
against a stand-in.

`tests/a1111_stub/` is a minimal STAND-IN for A1111's `modules` package and Gradio (NOT the real
webui; see tests/a1111_stub/README.md). It imitates: modules.scripts.Script / AlwaysVisible /
PostprocessImageArgs / ScriptRunner (alwayson_scripts, callback_map, process) and the script loader
(spec_from_file_location(basename, path) with the extension folder prepended to sys.path);
modules.processing.StableDiffusionProcessingImg2Img (v1.10.1 init fields, records kwargs) /
Processed / process_images (fake sampler: flat colour inside the mask); modules.images.save_image;
modules.shared.opts / OptionInfo / cmd_opts.use_cpu / state; modules.script_callbacks; modules.paths;
modules.sd_samplers; modules.ui_components.InputAccordion; the gradio components the UI builds.
The real check is the Forge run (../shared/tools/forge_host, results in the issue's closing note).

Detectors: most tests use a *masked stand-in* detector (artifact = pure magenta pixels) so the
mask, the crops and the effect of the fix are controlled; one test runs the real tiny fixture
checkpoint through the models' resolver and cache.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from comfyui_pal.core import options as O

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "a1111_stub"
SCRIPT = ROOT / "scripts" / "pal_autofix.py"
MAGENTA = (255, 0, 255)


def _drop_host_modules():
    for k in [k for k in sys.modules if k == "modules" or k.startswith(("modules.", "gradio", "comfyui_pal.a1111"))]:
        del sys.modules[k]


@pytest.fixture
def a1111(tmp_path, monkeypatch):
    """Put the stand-in first on sys.path, load scripts/pal_autofix.py like A1111, clean up after."""
    saved = {k: v for k, v in sys.modules.items()
             if k == "modules" or k.startswith(("modules.", "gradio", "comfyui_pal.a1111"))}
    _drop_host_modules()
    monkeypatch.syspath_prepend(str(STUB))
    from modules import images, paths, processing, script_callbacks, scripts, shared

    paths.models_path = str(tmp_path / "models")
    processing.created.clear()
    processing.processed_calls.clear()
    images.saved.clear()
    shared.opts.data.clear()
    shared.cmd_opts.use_cpu = ["all"]  # like --use-cpu all: keep the detector on the CPU
    mod = scripts.load_module(str(SCRIPT), str(ROOT))
    ns = SimpleNamespace(mod=mod, host=mod.host, args=mod.pal_args, ui=mod.pal_ui, processing=processing,
                         shared=shared, scripts=scripts, callbacks=script_callbacks, paths=paths, images=images,
                         script=mod.PALAutoFixScript(), tmp=tmp_path)
    yield ns
    from comfyui_pal.models import clear_cache

    clear_cache()
    _drop_host_modules()
    sys.modules.update(saved)


class MagentaDetector:
    """Masked stand-in for comfyui_pal's Detector: probability 1 on pure magenta pixels."""

    def __init__(self):
        self.calls = 0

    def detect(self, img):
        self.calls += 1
        a = np.asarray(img)
        prob = np.all(a[..., :3] == MAGENTA, axis=-1).astype(np.float32)
        return SimpleNamespace(prob=prob, prob_work=prob, par=float((prob > 0.5).mean()),
                               par_at=lambda t, p=prob: float((p > t).mean()))


def make_p(batch_size=1, width=128, height=96, **kw):
    n = batch_size
    p = SimpleNamespace(
        prompt="a cat", negative_prompt="blurry", all_prompts=[f"a cat {i}" for i in range(n)],
        all_negative_prompts=["blurry"] * n, all_seeds=[1000 + i for i in range(n)],
        all_subseeds=[7] * n, seed=1000, subseed=7, subseed_strength=0.0, iteration=0, batch_size=n,
        batch_index=0, width=width, height=height, steps=20, cfg_scale=7.0, sampler_name="Euler a",
        scheduler="Automatic", extra_generation_params={"Existing": "x"}, sd_model=object(),
        outpath_samples="out", outpath_grids="grids", tiling=False, scripts=None, script_args=[],
    )
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def args_for(ns, **over):
    vals = dict(ns.args.DEFAULTS)
    vals.update(enabled=True, min_area=0, size=64)
    vals.update(over)
    return [vals[n] for n in ns.args.ARG_ORDER]


def artifact_image(h=96, w=128, boxes=((10, 10, 18, 18), (90, 60, 100, 72))):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = MAGENTA
    return img


def run_image(ns, args, img=None, p=None, index=None):
    p = p or make_p()
    pp = ns.scripts.PostprocessImageArgs(Image.fromarray(artifact_image() if img is None else img), index)
    ns.script.before_process(p, *args)
    ns.script.process(p, *args)
    ns.script.postprocess_image(p, pp, *args)
    return p, pp


@pytest.fixture
def magenta(a1111, monkeypatch):
    det = MagentaDetector()
    monkeypatch.setattr(a1111.host, "get_detector", lambda choice: det)
    return det


# ----------------------------------------------------------------------------- loading, UI, schema
def test_script_keeps_only_the_script_class(a1111):
    s = a1111.script
    assert isinstance(s, a1111.scripts.Script)
    assert s.title() == "PAL Auto-Fix"
    assert s.show(False) is a1111.scripts.AlwaysVisible and s.show(True) is a1111.scripts.AlwaysVisible
    assert a1111.host.on_ui_settings in a1111.callbacks.callbacks_ui_settings
    assert a1111.host.on_app_started in a1111.callbacks.callbacks_app_started
    tree = ast.parse(SCRIPT.read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert classes == ["PALAutoFixScript"] and funcs == ["_package"]  # the rest lives in comfyui_pal.a1111
    assert Path(a1111.host.__file__).resolve() == ROOT / "a1111" / "host.py"


def test_ui_is_generated_from_the_option_schema(a1111):
    (Path(a1111.paths.models_path) / "pal").mkdir(parents=True)
    (Path(a1111.paths.models_path) / "pal" / "mine.safetensors").write_bytes(b"")
    comps = a1111.script.ui(False)
    A = a1111.args
    assert len(comps) == len(A.ARG_ORDER) == len(O.names("a1111"))
    from modules.ui_components import InputAccordion

    assert isinstance(comps[0], InputAccordion) and comps[0].value is False
    for comp, name in zip(comps, A.ARG_ORDER):
        o = O.get(name, "a1111")
        assert comp.value == o.default, name
        if name != "enabled":
            assert comp.label == o.label, name
        if o.kind in ("int", "float"):
            lo = o.min if o.auto is None else min(o.min, o.auto)
            assert (comp.minimum, comp.maximum) == (lo, o.max), name
            assert comp.kwargs["step"] == o.step, name
        if o.kind == "choice":
            assert comp.choices == list(o.choices)
    # the original 20 positions never move
    assert A.ARG_ORDER[:20] == (
        "enabled", "model", "threshold", "zoom", "size", "dilation", "min_area", "max_regions", "denoise",
        "mask_blur", "steps", "cfg_scale", "sampler", "prompt", "negative_prompt", "par_guard", "rounds",
        "score_only", "rank_batch", "max_par")
    names = dict(zip(A.ARG_ORDER, comps))
    assert "mine.safetensors" in names["model"].choices and names["model"].choices[0] == "Default"
    assert names["sampler"].choices[0] == A.SAME_SAMPLER and "Euler a" in names["sampler"].choices
    assert names["skip_img2img"].visible is False and a1111.script.ui(True)[A.ARG_ORDER.index("skip_img2img")].visible
    # API defaults: A1111 fills missing alwayson args with each component's .value, some forks with None
    assert A.parse_args([c.value for c in comps]) == A.parse_args([]) == A.parse_args([None] * len(comps)) \
        == O.defaults("a1111")
    ids = [c.elem_id for c in comps]
    assert len(set(ids)) == len(ids)
    assert len(a1111.script.infotext_fields) == len(comps)
    assert "PAL threshold" in a1111.script.paste_field_names


def test_parse_args_positional_dict_aliases_and_errors(a1111):
    A = a1111.args
    a = A.parse_args([True])  # API: missing trailing args keep the defaults
    assert a["enabled"] is True and a["zoom"] == 1.5 and a["max_regions"] == 8
    a = A.parse_args(["true", "Default", "0.3", 2, None, "-1", "10", 3.0])
    assert a["threshold"] == 0.3 and a["zoom"] == 2.0 and a["size"] == 0 and a["max_regions"] == 3
    with pytest.raises(ValueError, match=r"argument 2 \(threshold\).*'high'"):
        A.parse_args([True, "Default", "high"])
    with pytest.raises(ValueError, match=r"argument 2 \(threshold\).*1\.5.*0\.01 to 0\.99"):
        A.parse_args([True, "Default", 1.5])
    with pytest.raises(ValueError, match="at most 25"):
        A.parse_args([True] * 26)
    # by name: canonical names and the schema's aliases; the padding after the dict is ignored
    d = A.parse_args([{"enabled": True, "threshold": "0.4", "inpaint_size": 128, "denoising_strength": 0.3},
                      False, "Default", 0.5])
    assert d["threshold"] == 0.4 and d["size"] == 128 and d["denoise"] == 0.3 and d["enabled"] is True
    assert {k: v for k, v in d.items() if k not in ("threshold", "size", "denoise", "enabled")} == \
        {k: v for k, v in O.defaults("a1111").items() if k not in ("threshold", "size", "denoise", "enabled")}
    with pytest.raises(ValueError, match=r"unknown option 'treshold'.*threshold"):
        A.parse_args([{"enabled": True, "treshold": 0.4}])
    assert A.raw_enabled([{"enabled": True, "treshold": 1}]) and not A.raw_enabled([{"threshold": 1}])
    assert A.raw_enabled(["yes please"]) and not A.raw_enabled([False, "x", 9]) and not A.raw_enabled([])


def test_api_routes_schema_and_args(a1111):
    routes = {}

    class App:
        def get(self, path):
            def deco(fn):
                routes[path] = fn
                return fn
            return deco

    a1111.host.on_app_started(None, App())
    body = routes["/pal/v1/schema"]()
    json.dumps(body)
    assert body["positional_order"] == list(a1111.args.ARG_ORDER)
    by_name = {r["name"]: r for r in body["options"]}
    for row in O.json_schema("a1111")["options"]:  # the one definition, plus index and infotext key
        assert {k: by_name[row["name"]][k] for k in row} == row
    assert by_name["threshold"]["index"] == 2 and by_name["threshold"]["infotext"] == "PAL threshold"
    assert "Default" in body["models"] and "pal_nested_scripts" in body["settings"]
    old = routes["/pal/v1/args"]()
    assert [r["name"] for r in old["args"]] == list(a1111.args.ARG_ORDER)
    assert old["args"][0] == {"index": 0, "name": "enabled", "default": False, "label": "Enable PAL Auto-Fix"}


# ----------------------------------------------------------------------------- the fix
def test_one_pass_per_region_with_right_crop_and_mask(a1111, magenta, capsys):
    processing = a1111.processing
    img = artifact_image()
    args = args_for(a1111, denoise=0.55, mask_blur=3, steps=12, prompt="fix [PROMPT]")
    p, pp = run_image(a1111, args, img)

    from comfyui_pal.core.crop import extract_crops, plan_crops

    plan = plan_crops([img], [magenta.detect(img).prob], zoom=1.5, size=64, threshold=0.5, dilate="auto",
                      min_area=0, max_regions=8)
    crops, masks = extract_crops([img], plan)
    assert len(plan.crops) == 2
    assert len(processing.created) == 2 == len(processing.processed_calls)
    for k, p2 in enumerate(processing.created):
        kw = p2.kwargs
        assert kw["width"] == kw["height"] == 64 and kw["inpaint_full_res"] is False
        assert kw["denoising_strength"] == 0.55 and kw["mask_blur"] == 3 and kw["steps"] == 12
        assert kw["prompt"] == "fix a cat 0" and kw["negative_prompt"] == "blurry"
        assert kw["seed"] == 1000 + k and kw["sampler_name"] == "Euler a" and kw["cfg_scale"] == 7.0
        assert kw["do_not_save_samples"] and kw["do_not_save_grid"] and kw["batch_size"] == 1
        assert p2._pal_nested is True and p2.scripts is None and p2.closed
        crop, mask = np.asarray(kw["init_images"][0]), np.asarray(kw["mask"])
        assert crop.shape == (64, 64, 3) and mask.shape == (64, 64)
        np.testing.assert_allclose(crop / 255.0, crops[k], atol=1 / 255 + 1e-6)
        np.testing.assert_array_equal(mask > 127, masks[k] > 0.5)

    out = np.asarray(pp.image)
    params = p.extra_generation_params
    assert params["Existing"] == "x"
    assert float(params["PAL PAR"]) == pytest.approx((img == MAGENTA).all(-1).mean(), abs=1e-4)
    assert float(params["PAL PAR after"]) == 0.0 and params["PAL regions"] == 2
    assert "PAL error" not in params and "PAL note" not in params
    assert (out[10:18, 10:18] == processing.FAKE_FILL).all() and (out[60:72, 90:100] == processing.FAKE_FILL).all()
    np.testing.assert_array_equal(out[40:50, 40:70], img[40:50, 40:70])
    assert p._pal_scores == {0: 0.0}
    # a success line in the log (bug 5: it printed nothing)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[PAL Auto-Fix]")]
    assert len(line) == 1 and "image 1: PAR 0.0" in line[0] and "-> 0.0000, 2 region(s) fixed" in line[0]


def test_image_without_regions_is_untouched(a1111, magenta):
    img = artifact_image(boxes=())
    original = Image.fromarray(img)
    p = make_p()
    p.extra_generation_params["PAL PAR after"] = "stale from the previous image"
    pp = a1111.scripts.PostprocessImageArgs(original)
    a1111.script.postprocess_image(p, pp, *args_for(a1111))
    assert pp.image is original and a1111.processing.created == []
    params = p.extra_generation_params
    assert params["PAL PAR"] == "0.0000" and params["PAL regions"] == 0 and "PAL PAR after" not in params


def test_disabled_nested_and_score_only(a1111, magenta):
    img = artifact_image()
    p, pp = run_image(a1111, args_for(a1111, enabled=False), img)
    assert magenta.calls == 0 and "PAL PAR" not in p.extra_generation_params
    p._pal_nested = True
    a1111.script.postprocess_image(p, pp, *args_for(a1111))
    assert magenta.calls == 0
    p, pp = run_image(a1111, args_for(a1111, score_only=True), img)
    assert magenta.calls == 1 and float(p.extra_generation_params["PAL PAR"]) > 0
    assert "PAL regions" not in p.extra_generation_params and a1111.processing.created == []
    np.testing.assert_array_equal(np.asarray(pp.image), img)


def test_par_guard_rejects_a_fix_that_does_not_help(a1111, magenta, monkeypatch):
    monkeypatch.setattr(a1111.processing, "FAKE_FILL", MAGENTA)  # the "fix" paints more artifact
    img = artifact_image(boxes=((10, 10, 18, 18),))
    p, pp = run_image(a1111, args_for(a1111, par_guard=True), img)
    assert len(a1111.processing.created) == 1
    np.testing.assert_array_equal(np.asarray(pp.image), img)
    assert p.extra_generation_params["PAL regions"] == 0 and p.extra_generation_params["PAL guard"] == "1 rejected"


def test_batch_index_picks_prompt_and_seed(a1111, magenta):
    p = make_p(batch_size=3, batch_index=2)
    run_image(a1111, args_for(a1111), artifact_image(boxes=((5, 5, 9, 9),)), p=p)
    kw = a1111.processing.created[0].kwargs
    assert kw["prompt"] == "a cat 2" and kw["seed"] == 1002 and set(p._pal_scores) == {2}
    p = make_p(batch_size=3)  # Forge passes pp.index: it wins over iteration/batch_index
    run_image(a1111, args_for(a1111), artifact_image(boxes=((5, 5, 9, 9),)), p=p, index=1)
    assert a1111.processing.created[-1].kwargs["seed"] == 1001 and set(p._pal_scores) == {1}


def test_accepted_kwargs_for_older_webui(a1111):
    class OldImg2Img:  # e.g. webui 1.8: no `scheduler`
        def __init__(self, prompt="", steps=20, mask=None):
            pass

    out = a1111.host.accepted_kwargs(OldImg2Img, {"prompt": "x", "scheduler": "Karras", "mask": None})
    assert out == {"prompt": "x", "mask": None}


# ----------------------------------------------------------------------------- bugs from the Forge run
def test_bug2_hires_callable_generation_params_are_not_copied_into_the_nested_pass(a1111, magenta):
    """Forge logged 'Error creating infotext for key "Hires prompt"': the nested img2img got the
    parent's callables, which read p.all_hr_prompts (absent on an img2img)."""
    p = make_p()
    p.extra_generation_params.update({
        "Hires prompt": lambda **kw: kw["p"].all_hr_prompts[0],
        "Hires negative prompt": lambda **kw: kw["p"].all_hr_negative_prompts[0],
        "Hires upscale": 2.0,
    })
    run_image(a1111, args_for(a1111), p=p)
    assert a1111.processing.created
    for p2 in a1111.processing.created:
        extra = p2.kwargs["extra_generation_params"]
        assert not any(callable(v) for v in extra.values())
        assert extra["Hires upscale"] == 2.0 and extra["Existing"] == "x"
        assert not any(k.startswith("PAL ") for k in extra)
    assert callable(p.extra_generation_params["Hires prompt"])  # the parent keeps its own


def test_bug3_auto_size_is_the_image_size_under_hires_fix(a1111, magenta):
    """size 0 = auto used p.width (first pass, 64) on a 128x128 hires result."""
    p = make_p(width=64, height=64, enable_hr=True, hr_upscale_to_x=128, hr_upscale_to_y=128)
    img = artifact_image(h=128, w=128, boxes=((10, 10, 30, 30),))
    run_image(a1111, args_for(a1111, size=0), img, p=p)
    assert [c.kwargs["width"] for c in a1111.processing.created] == [128]
    assert a1111.host.working_size((200, 120), {"size": 0}) == 120
    assert a1111.host.working_size((200, 120), {"size": 256}) == 256


@pytest.mark.parametrize("args, pattern", [
    (lambda ns: args_for(ns, threshold=1.5), r"argument 2 \(threshold\): threshold = 1\.5 is out of range"),
    (lambda ns: [{"enabled": True, "treshold": 0.4}], r"unknown option 'treshold'; valid names: \["),
    (lambda ns: args_for(ns, sampler="No Such Sampler"), r"sampler = 'No Such Sampler' is not a sampler"),
])
def test_bug4_invalid_args_reach_the_client_as_pal_error(a1111, magenta, capsys, args, pattern):
    img = artifact_image()
    original = Image.fromarray(img)
    p = make_p()
    pp = a1111.scripts.PostprocessImageArgs(original)
    a = args(a1111)
    a1111.script.before_process(p, *a)
    a1111.script.process(p, *a)
    a1111.script.postprocess_image(p, pp, *a)  # must not raise: A1111 would only log it
    params = p.extra_generation_params
    assert params["PAL error"].startswith("PAL Auto-Fix: ")
    import re

    assert re.search(pattern, params["PAL error"]), params["PAL error"]
    assert "PAL PAR" not in params and pp.image is original and magenta.calls == 0
    assert "PAL error" not in str(a1111.processing.created)
    assert "image left as generated" in capsys.readouterr().err
    pr = a1111.processing.Processed(p, [pp.image], infotexts=["x"])
    a1111.script.postprocess(p, pr, *a)  # ranking is skipped quietly, the image stays
    assert pr.images == [pp.image]


def test_bug4_unknown_model_reaches_the_client(a1111, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    p, pp = run_image(a1111, args_for(a1111, model="no-such-model"))
    err = p.extra_generation_params["PAL error"]
    assert "'no-such-model' is neither an existing file nor a registered model name" in err
    assert p.extra_generation_params["PAL model"] == "no-such-model" and "PAL PAR" not in p.extra_generation_params


def test_unexpected_failure_is_reported_and_the_image_kept(a1111, monkeypatch, capsys):
    class Broken:
        def detect(self, img):
            raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(a1111.host, "get_detector", lambda choice: Broken())
    img = artifact_image()
    p, pp = run_image(a1111, args_for(a1111), img)
    assert p.extra_generation_params["PAL error"] == "PAL Auto-Fix: RuntimeError: CUDA out of memory"
    np.testing.assert_array_equal(np.asarray(pp.image), img)
    assert "Traceback" in capsys.readouterr().err  # a real bug keeps its traceback in the log


def test_bug5_interrupt_counts_only_inpainted_regions(a1111, magenta, monkeypatch):
    processing, shared = a1111.processing, a1111.shared
    real = processing.process_images

    def interrupt_after_first(p2):
        out = real(p2)
        shared.state.interrupted = True  # the user pressed Interrupt during the first pass
        return out

    monkeypatch.setattr(processing, "process_images", interrupt_after_first)
    p, pp = run_image(a1111, args_for(a1111))
    params = p.extra_generation_params
    assert len(processing.created) == 1
    assert params["PAL regions"] == 1 and params["PAL note"] == "interrupted: 1 of 2 regions not inpainted"
    shared.state.interrupted = False


def test_drop_all_keeps_the_lowest_par_image_and_says_so(a1111):
    """max_par below every image emptied the result -> Forge's Processed.js() IndexError, HTTP 500."""
    host, processing = a1111.host, a1111.processing
    imgs = [Image.new("RGB", (4, 4), (i, i, i)) for i in range(3)]
    for im in imgs:
        im.info["parameters"] = "old"
    pr = processing.Processed(None, list(imgs), infotexts=["i0", "i1", "i2"])
    pr.all_seeds, pr.all_prompts = [10, 11, 12], ["p0", "p1", "p2"]
    host.rank_processed(pr, {0: 0.30, 1: 0.20, 2: 0.25}, rank=False, max_par=0.1)
    assert pr.images == [imgs[1]] and pr.all_prompts == ["p1"] and pr.all_seeds == [11] and pr.seed == 11
    note = "PAL note: every image was above max PAR 0.1; kept the lowest-PAR one (0.2000)"
    assert pr.infotexts == [f"i1, {note}"] and pr.info == pr.infotexts[0]
    assert imgs[1].info["parameters"] == pr.infotexts[0]


def test_rank_processed_orders_by_par_keeps_grid_and_drops_only_when_asked(a1111):
    host, processing = a1111.host, a1111.processing
    imgs = [Image.new("RGB", (4, 4), (i, i, i)) for i in range(4)]  # 0 = grid

    def proc():
        pr = processing.Processed(None, list(imgs), infotexts=["grid", "i0", "i1", "i2"])
        pr.index_of_first_image = 1
        pr.all_seeds, pr.all_prompts = [10, 11, 12], ["p0", "p1", "p2"]
        return pr

    scores = {0: 0.30, 1: 0.01, 2: 0.10}
    pr = proc()
    host.rank_processed(pr, scores, rank=True, max_par=0.0)
    assert pr.images == [imgs[0], imgs[2], imgs[3], imgs[1]]
    assert pr.infotexts == ["grid", "i1", "i2", "i0"] and pr.all_seeds == [11, 12, 10]
    assert pr.all_prompts == ["p1", "p2", "p0"] and pr.info == "i1" and pr.seed == 11
    pr = proc()
    host.rank_processed(pr, scores, rank=False, max_par=0.2)
    assert pr.images == [imgs[0], imgs[2], imgs[3]] and pr.all_seeds == [11, 12]
    pr = proc()
    host.rank_processed(pr, {0: 0.5}, rank=True, max_par=0.0)  # mismatch: left alone
    assert pr.images == imgs


def test_postprocess_ranks_through_the_script(a1111, magenta):
    p = make_p(batch_size=2)
    args = args_for(a1111, score_only=True, rank_batch=True)
    a1111.script.process(p, *args)
    outs = []
    for i, boxes in enumerate([((0, 0, 30, 30),), ((0, 0, 5, 5),)]):
        p.batch_index = i
        pp = a1111.scripts.PostprocessImageArgs(Image.fromarray(artifact_image(boxes=boxes)))
        a1111.script.postprocess_image(p, pp, *args)
        outs.append(pp.image)
    pr = a1111.processing.Processed(p, list(outs), infotexts=["a", "b"])
    a1111.script.postprocess(p, pr, *args)
    assert pr.images == [outs[1], outs[0]] and pr.infotexts == ["b", "a"]


# ----------------------------------------------------------------------------- features
def test_nested_pass_script_allow_list(a1111, magenta):
    """Default: no other always-on script in the nested pass. Listed titles/file names are kept,
    with the parent's full script_args (their slices) and their own callback cache; never PAL itself."""
    seen = []

    class FakeControlNet(a1111.scripts.Script):
        filename = "/ext/sd_forge_controlnet/scripts/controlnet.py"
        args_from, args_to = 1, 2

        def title(self):
            return "ControlNet"

        def process(self, p, *args):
            seen.append((p._pal_nested, args))

    class Other(FakeControlNet):
        filename = "/ext/other/scripts/other.py"

        def title(self):
            return "Other"

    pal = a1111.script
    pal.args_from, pal.args_to = 2, 2 + len(a1111.args.ARG_ORDER)
    runner = a1111.scripts.ScriptRunner([FakeControlNet(), Other(), pal])
    runner.callback_map["script_process"] = (3, "parent cache")
    args = args_for(a1111)
    p = make_p(scripts=runner, script_args=["x", {"cn_unit": 1}, *args])
    run_image(a1111, args, p=p)
    assert all(c.scripts is None for c in a1111.processing.created) and seen == []

    a1111.shared.opts.data["pal_nested_scripts"] = " controlnet , nothing"
    a1111.processing.created.clear()
    run_image(a1111, args, p=make_p(scripts=runner, script_args=["x", {"cn_unit": 1}, *args]))
    nested = a1111.processing.created
    assert nested and all([type(s).__name__ for s in c.scripts.alwayson_scripts] == ["FakeControlNet"]
                          for c in nested)
    assert seen == [(True, ({"cn_unit": 1},))] * len(nested)
    assert nested[0].scripts.callback_map == {} and runner.callback_map["script_process"] == (3, "parent cache")
    assert len(runner.alwayson_scripts) == 3  # the parent's runner is untouched
    a1111.shared.opts.data["pal_nested_scripts"] = "other.py, Other"  # file stem or title
    assert [type(s).__name__ for s in a1111.host.nested_script_runner(p).alwayson_scripts] == ["Other"]


def test_skip_img2img_fixes_the_input_image_without_a_first_pass(a1111, magenta):
    init = Image.fromarray(artifact_image(boxes=((10, 10, 18, 18),)))
    p = make_p(width=128, height=96, steps=30, sampler_name="DPM++ 2M", init_images=[init], image_mask=None)
    args = args_for(a1111, skip_img2img=True)
    a1111.script.before_process(p, *args)
    assert (p.steps, p.sampler_name, p.width, p.height) == (1, "Euler", 64, 64)  # the cheapest first pass
    a1111.script.before_process_batch(p, *args)
    a1111.script.process(p, *args)
    sampled = Image.new("RGB", (64, 64), (1, 2, 3))  # what that pass returned: replaced by the input
    pp = a1111.scripts.PostprocessImageArgs(sampled, 0)
    a1111.script.postprocess_image(p, pp, *args)
    assert pp.image.size == (128, 96) and (p.steps, p.sampler_name, p.width, p.height) == (30, "DPM++ 2M", 128, 96)
    kw = a1111.processing.created[0].kwargs
    assert kw["steps"] == 30 and kw["sampler_name"] == "DPM++ 2M"
    out = np.asarray(pp.image)
    assert (out[10:18, 10:18] == a1111.processing.FAKE_FILL).all()
    np.testing.assert_array_equal(out[50:90, 50:120], np.asarray(init)[50:90, 50:120])
    assert p.extra_generation_params["PAL skip img2img"] == "True"
    a1111.script.before_process_batch(p, *args)  # next batch (n_iter > 1): cheap again
    assert p.steps == 1
    a1111.script.postprocess(p, a1111.processing.Processed(p, [pp.image]), *args)
    assert p.steps == 30
    # with an inpaint mask: ignored, said in the infotext; txt2img (no init images): ignored
    p = make_p(init_images=[init], image_mask=Image.new("L", (128, 96), 255))
    run_image(a1111, args, p=p)
    assert p.steps == 20 and "skip img2img ignored" in p.extra_generation_params["PAL note"]
    p = make_p()
    a1111.script.before_process(p, *args)
    assert p.steps == 20


def test_save_before_and_previews_next_to_the_output(a1111, magenta, capsys):
    img = artifact_image()
    out = a1111.tmp / "outputs" / "txt2img-images"
    p, pp = run_image(a1111, args_for(a1111, save_before=True, save_previews=True), img,
                      p=make_p(outpath_samples=str(out)))
    saved = a1111.images.saved
    assert [s[1] for s in saved] == ["-pal-before", "-pal-preview"]
    assert all(Path(s[0]).parent == out for s in saved)
    np.testing.assert_array_equal(np.asarray(Image.open(saved[0][0])), img)
    prev = np.asarray(Image.open(saved[1][0]))
    h, w = img.shape[:2]
    assert prev.shape[0] == h and prev.shape[1] > 2 * w  # before | gap | after
    right = prev[:, -w:]
    assert (right[12:16, 12:16] == a1111.processing.FAKE_FILL).all()  # the after half shows the fix
    assert saved[1][0] in capsys.readouterr().out


def test_infotext_round_trip_restores_every_pal_option(a1111, magenta):
    """What postprocess_image writes, pasted back through infotext_fields (callable keys, like A1111's
    paste), gives exactly the options that ran; a non-PAL infotext leaves the panel alone."""
    comps = a1111.script.ui(False)
    used = dict(a1111.args.DEFAULTS, enabled=True, threshold=0.3, zoom=2.0, size=128, min_area=5, denoise=0.35,
                prompt="fix, [PROMPT]: sharp", par_guard=True, rounds=2, order="score", color_match=True,
                max_par=0.2, sampler="Euler", dilation=0)
    p, pp = run_image(a1111, [used[n] for n in a1111.args.ARG_ORDER])
    params = {k: (v if isinstance(v, str) else str(v)) for k, v in p.extra_generation_params.items()}
    restored = {}
    for comp, key in a1111.script.infotext_fields:
        name = a1111.args.ARG_ORDER[comps.index(next(c for c in comps if c.elem_id == comp.elem_id))]
        restored[name] = key(params)
    expected = dict(used, model="pal-starter")  # "Default" is written as the model that ran
    assert restored == expected
    assert all(key({"Steps": "20"}) is None for _, key in a1111.script.infotext_fields)


def test_models_come_only_from_the_resolver_and_cache(a1111, monkeypatch):
    """hf: references and registry names go to comfyui_pal.models.resolve/load_cached with models/pal
    and download = the 'allow downloading' setting (#16)."""
    import comfyui_pal.models as models

    calls = []
    monkeypatch.setattr(models, "load_cached", lambda ref, **kw: calls.append((ref, kw)) or MagentaDetector(),
                        raising=False)
    monkeypatch.setattr(models, "resolve", lambda ref, **kw: calls.append((ref, kw)) or Path("/x/m.safetensors"),
                        raising=False)
    a1111.shared.opts.data["pal_allow_download"] = False
    p, _ = run_image(a1111, args_for(a1111, model="hf:me/pal-ft@v1"))
    ref, kw = calls[0]
    assert ref == "hf:me/pal-ft@v1" and kw["download"] is False and kw["device"] == "cpu"
    assert kw["model_dirs"] == [Path(a1111.paths.models_path) / "pal"]
    assert p.extra_generation_params["PAL model"] == "hf:me/pal-ft@v1" and "PAL PAR" in p.extra_generation_params
    a1111.shared.opts.data.update(pal_allow_download=True, pal_default_model="pal-starter")
    assert a1111.host.resolve_model("Default") == Path("/x/m.safetensors")
    assert calls[-1] == ("pal-starter", {"model_dirs": [Path(a1111.paths.models_path) / "pal"], "download": True})


def test_settings_read_with_opts_data_get_in_api_mode(a1111):
    host, shared = a1111.host, a1111.shared
    assert host.opt("pal_default_model") == "pal-starter" and host.opt("pal_keep_loaded") is True
    assert host.opt("pal_nested_scripts") == ""
    host.on_ui_settings()
    assert set(host.SETTINGS) <= set(shared.opts.data_labels)
    assert shared.opts.data_labels["pal_device"].section == ("pal", "PAL Auto-Fix")
    shared.opts.data["pal_device"] = "cpu"
    shared.cmd_opts.use_cpu = []
    assert host.detector_device() == "cpu"
    shared.opts.data["pal_device"] = "auto"
    assert host.detector_device() is None
    shared.cmd_opts.use_cpu = ["pal"]
    assert host.detector_device() == "cpu"


def test_model_folder_and_resolution(a1111):
    host = a1111.host
    d = host.models_dir(create=True)
    assert d == Path(a1111.paths.models_path) / "pal" and d.is_dir()
    (d / "a.pth").write_bytes(b"x")
    (d / "notes.txt").write_text("x")
    assert host.local_models() == ["a.pth"] and "a.pth" in host.model_choices()
    assert host.resolve_model("a.pth") == d / "a.pth"
    a1111.shared.opts.data["pal_default_model"] = "a.pth"
    assert host.resolve_model("Default") == d / "a.pth"
    assert host.resolve_model(str(d / "a.pth")) == d / "a.pth"


def test_registry_model_not_present_without_download_names_the_folder(a1111, monkeypatch, tmp_path):
    host = a1111.host
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("PAL_MODELS_DIR", raising=False)
    a1111.shared.opts.data["pal_allow_download"] = False
    assert "pal4vst-unified" in host.model_choices()
    with pytest.raises(ValueError) as e:
        host.resolve_model("pal4vst-unified")
    assert str(host.models_dir()) in str(e.value)  # says where to put the file


def test_real_tiny_detector_end_to_end(a1111, fixtures_dir, request):
    """Lazy load of a real (random-weight) fixture checkpoint from models/pal, then a fix."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core CI: one thread is faster than two contending
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    host = a1111.host
    d = host.models_dir(create=True)
    shutil.copy(fixtures_dir / "tiny_swin_upernet_w7.pth", d / "tiny.pth")
    img = artifact_image()
    p, pp = run_image(a1111, args_for(a1111, model="tiny.pth", max_regions=2))
    det = host.get_detector("tiny.pth")
    assert str(det.device) == "cpu"
    params = p.extra_generation_params
    assert float(params["PAL PAR"]) == pytest.approx(det.detect(img).par, abs=1e-4)
    assert params["PAL model"] == "tiny.pth" and "PAL error" not in params
    assert len(a1111.processing.created) >= params["PAL regions"] and len(a1111.processing.created) <= 2
    assert host.get_detector("tiny.pth") is det  # cached, not reloaded


# ----------------------------------------------------------------------------- isolation from hosts
def test_copied_extension_imports_its_own_core_and_nothing_from_comfyui(tmp_path):
    """A fresh interpreter, the extension copied to extensions/comfyui-pal (not an importable name):
    the script maps the folder to `comfyui_pal`, never runs the ComfyUI entry point, and reuses an
    already imported `comfyui_pal` (pip-installed) instead of loading a second copy."""
    ext = tmp_path / "extensions" / "comfyui-pal"
    ext.mkdir(parents=True)
    for name in ("__init__.py", "scripts", "a1111", "core", "models", "pal_nodes", "cli"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, ext / name, ignore=shutil.ignore_patterns("__pycache__", "weights", "*.safetensors"))
        else:
            shutil.copy(src, ext / name)
    code = textwrap.dedent(f"""
        import sys, json
        sys.path.insert(0, {str(STUB)!r})
        preimport = sys.argv[1] == "1"
        if preimport:
            import comfyui_pal  # the pip-installed copy (editable install of the repo in this venv)
        from modules import scripts
        mod = scripts.load_module({str(ext / "scripts" / "pal_autofix.py")!r}, {str(ext)!r})
        crop = mod.host._core("core.crop")
        print(json.dumps({{
            "crop": crop.__file__, "host": mod.host.__file__,
            "pkg": list(sys.modules["comfyui_pal"].__path__),
            "comfy": sorted(k for k in sys.modules if k.split(".")[0] in ("comfy", "nodes", "folder_paths",
                                                                          "comfy_api", "comfy_extras")),
            "pal_nodes": "comfyui_pal.pal_nodes" in sys.modules,
            "torch": "torch" in sys.modules,
        }}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for pre in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, pre], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert info["comfy"] == []
        if pre == "0":
            assert info["torch"] is False  # the detector (torch) is loaded lazily, not at script import
            assert Path(info["crop"]).resolve().is_relative_to(ext.resolve())
            assert Path(info["host"]).resolve().is_relative_to(ext.resolve())
            assert info["pal_nodes"] is False  # the ComfyUI entry point was not executed
        else:
            assert Path(info["pkg"][0]).resolve() == ROOT


def test_a_calibrated_checkpoint_runs_at_its_operating_point(a1111):
    """The A1111 detector (resolver + cache) applies the checkpoint's stored logit bias."""
    import torch
    from tiny_models import TINY

    from comfyui_pal.models.checkpoint import save_safetensors
    from comfyui_pal.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(dict(TINY))
    d = Path(a1111.paths.models_path) / "pal"
    d.mkdir(parents=True)
    save_safetensors(model.state_dict(), model.config, d / "cal.safetensors", calibration={"artifact_logit_bias": -3.0})
    assert "cal.safetensors" in a1111.host.model_choices()
    det = a1111.host.get_detector("cal.safetensors")
    assert det.artifact_logit_bias == -3.0
    raw = a1111.host._core("models").load_detector(d / "cal.safetensors", device="cpu", calibration=False)
    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert np.all(det.detect(img).prob_work < raw.detect(img).prob_work)
