"""scripts/pal_autofix.py loaded the way AUTOMATIC1111 loads extension scripts, against a stand-in.

`tests/a1111_stub/` is a minimal stand-in for A1111's `modules` package and Gradio (NOT the real
webui; see tests/a1111_stub/README.md). It imitates exactly: modules.scripts.Script /
AlwaysVisible / PostprocessImageArgs / basedir and the script loader
(script_loading.load_module: spec_from_file_location(basename, path) with the extension folder
prepended to sys.path); modules.processing.StableDiffusionProcessingImg2Img (v1.10.1 init fields,
records kwargs) / Processed / process_images (fake sampler: flat colour inside the mask);
modules.shared.opts(.data, .add_option) / OptionInfo / cmd_opts.use_cpu / state;
modules.script_callbacks.on_ui_settings / on_app_started; modules.paths.models_path;
modules.sd_samplers.all_samplers; modules.ui_components.InputAccordion; and the gradio
components the UI builds.

Detectors: most tests use a *masked stand-in* detector (artifact = pure magenta pixels) so the
mask, the crops and the effect of the fix are controlled; one test runs the real tiny fixture
checkpoint through load_detector.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "a1111_stub"
SCRIPT = ROOT / "scripts" / "pal_autofix.py"
MAGENTA = (255, 0, 255)


@pytest.fixture
def a1111(tmp_path, monkeypatch):
    """Put the stand-in first on sys.path, load scripts/pal_autofix.py like A1111, clean up after."""
    saved = {k: v for k, v in sys.modules.items() if k == "modules" or k.startswith(("modules.", "gradio"))}
    for k in list(saved):
        del sys.modules[k]
    monkeypatch.syspath_prepend(str(STUB))
    from modules import paths, processing, script_callbacks, scripts, shared

    paths.models_path = str(tmp_path / "models")
    processing.created.clear()
    processing.processed_calls.clear()
    shared.opts.data.clear()
    shared.cmd_opts.use_cpu = ["all"]  # like --use-cpu all: keep the detector on the CPU
    mod = scripts.load_module(str(SCRIPT), str(ROOT))
    ns = SimpleNamespace(mod=mod, processing=processing, shared=shared, scripts=scripts,
                         callbacks=script_callbacks, paths=paths, script=mod.PALAutoFixScript())
    yield ns
    mod.unload_detector()
    for k in [k for k in sys.modules if k == "modules" or k.startswith(("modules.", "gradio"))]:
        del sys.modules[k]
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
        outpath_samples="out", outpath_grids="grids", tiling=False,
    )
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def args_for(mod, **over):
    vals = {n: d for n, d, _ in mod.ARG_SPECS}
    vals.update(enabled=True, min_area=0, inpaint_size=64)
    vals.update(over)
    return [vals[n] for n in mod.ARG_NAMES]


def artifact_image(h=96, w=128, boxes=((10, 10, 18, 18), (90, 60, 100, 72))):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = MAGENTA
    return img


# ----------------------------------------------------------------------------- loading & UI
def test_loads_like_a1111_and_registers(a1111):
    s = a1111.script
    assert isinstance(s, a1111.scripts.Script)
    assert s.title() == "PAL Auto-Fix"
    assert s.show(False) is a1111.scripts.AlwaysVisible and s.show(True) is a1111.scripts.AlwaysVisible
    assert a1111.mod.on_ui_settings in a1111.callbacks.callbacks_ui_settings
    # The core is imported lazily (first use), from this repo.
    crop = a1111.mod._core("core.crop")
    assert Path(crop.__file__).resolve().is_relative_to(ROOT)


def test_ui_returns_components_in_documented_order(a1111, tmp_path):
    (Path(a1111.paths.models_path) / "pal").mkdir(parents=True)
    (Path(a1111.paths.models_path) / "pal" / "mine.safetensors").write_bytes(b"")
    comps = a1111.script.ui(False)
    mod = a1111.mod
    assert len(comps) == len(mod.ARG_SPECS) == 20
    from modules.ui_components import InputAccordion

    assert isinstance(comps[0], InputAccordion) and comps[0].value is False
    for comp, (name, default, label) in zip(comps, mod.ARG_SPECS):
        assert comp.value == default, name
        if name != "enabled":
            assert comp.label == label, name
    assert mod.ARG_NAMES == [
        "enabled", "model", "threshold", "zoom", "inpaint_size", "dilation", "min_area", "max_regions",
        "denoising_strength", "mask_blur", "steps", "cfg_scale", "sampler", "prompt", "negative_prompt",
        "par_guard", "rounds", "score_only", "rank_batch", "max_par",
    ]
    assert "mine.safetensors" in comps[1].choices and comps[1].choices[0] == "Default"
    assert comps[12].choices[0] == mod.SAME_SAMPLER and "Euler a" in comps[12].choices
    # API defaults: A1111 fills missing alwayson args with each component's .value (api.py
    # init_default_script_args), some forks with None; both must parse to the documented defaults.
    assert mod.parse_args([c.value for c in comps]) == mod.parse_args([]) == mod.parse_args([None] * 20)
    ids = [c.elem_id for c in comps]
    assert len(set(ids)) == len(ids)


def test_parse_args_api_defaults_coercion_and_errors(a1111):
    mod = a1111.mod
    a = mod.parse_args([True])  # API: missing trailing args keep the defaults
    assert a["enabled"] is True and a["zoom"] == 1.5 and a["max_regions"] == 8
    a = mod.parse_args(["true", "Default", "0.3", 2, None, "-1", "10", 3.0])
    assert a["threshold"] == 0.3 and a["zoom"] == 2.0 and a["inpaint_size"] == 0 and a["max_regions"] == 3
    with pytest.raises(ValueError, match=r"argument 2 \(threshold\)"):
        mod.parse_args([True, "Default", "high"])
    with pytest.raises(ValueError, match="zoom"):
        mod.parse_args([True, "Default", 0.5, 0.5])
    with pytest.raises(ValueError, match="at most 20"):
        mod.parse_args([True] * 21)


# ----------------------------------------------------------------------------- postprocess_image
def test_postprocess_image_one_pass_per_component_with_right_crop_and_mask(a1111, monkeypatch):
    mod, processing = a1111.mod, a1111.processing
    det = MagentaDetector()
    monkeypatch.setattr(mod, "get_detector", lambda choice: det)
    img = artifact_image()
    p = make_p()
    pp = a1111.scripts.PostprocessImageArgs(Image.fromarray(img))
    args = args_for(mod, denoising_strength=0.55, mask_blur=3, steps=12, prompt="fix [PROMPT]")
    a1111.script.process(p, *args)
    a1111.script.postprocess_image(p, pp, *args)

    # Expected plan from the core with the same options -> 2 components, 2 passes.
    from comfyui_pal.core.crop import extract_crops, plan_crops

    plan = plan_crops([img], [det.detect(img).prob], zoom=1.5, size=64, threshold=0.5, dilate="auto", min_area=0,
                      max_regions=8)
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
        crop = np.asarray(kw["init_images"][0])
        mask = np.asarray(kw["mask"])
        assert crop.shape == (64, 64, 3) and mask.shape == (64, 64)
        np.testing.assert_allclose(crop / 255.0, crops[k], atol=1 / 255 + 1e-6)
        np.testing.assert_array_equal(mask > 127, masks[k] > 0.5)
        assert (mask > 127).any()

    out = np.asarray(pp.image)
    params = p.extra_generation_params
    assert params["Existing"] == "x"
    assert float(params["PAL PAR"]) == pytest.approx((img == MAGENTA).all(-1).mean(), abs=1e-4)
    assert float(params["PAL PAR after"]) == 0.0 and params["PAL regions"] == 2
    # The artifact pixels were replaced by the fake sampler's colour; far-away pixels are untouched.
    assert (out[10:18, 10:18] == processing.FAKE_FILL).all()
    assert (out[60:72, 90:100] == processing.FAKE_FILL).all()
    np.testing.assert_array_equal(out[40:50, 40:70], img[40:50, 40:70])
    assert p._pal_scores == {0: 0.0}


def test_image_without_components_is_untouched(a1111, monkeypatch):
    mod = a1111.mod
    monkeypatch.setattr(mod, "get_detector", lambda choice: MagentaDetector())
    img = artifact_image(boxes=())
    original = Image.fromarray(img)
    pp = a1111.scripts.PostprocessImageArgs(original)
    p = make_p()
    p.extra_generation_params["PAL PAR after"] = "stale from the previous image"
    a1111.script.postprocess_image(p, pp, *args_for(mod))
    assert pp.image is original
    np.testing.assert_array_equal(np.asarray(pp.image), img)
    assert a1111.processing.created == []
    params = p.extra_generation_params
    assert params["PAL PAR"] == "0.0000" and params["PAL regions"] == 0
    assert "PAL PAR after" not in params


def test_disabled_nested_and_score_only(a1111, monkeypatch):
    mod = a1111.mod
    det = MagentaDetector()
    monkeypatch.setattr(mod, "get_detector", lambda choice: det)
    img = artifact_image()
    # Disabled: the detector is never even loaded.
    p, pp = make_p(), a1111.scripts.PostprocessImageArgs(Image.fromarray(img))
    a1111.script.postprocess_image(p, pp, *args_for(mod, enabled=False))
    assert det.calls == 0 and "PAL PAR" not in p.extra_generation_params
    # Inside our own nested pass: nothing (no recursion).
    p._pal_nested = True
    a1111.script.postprocess_image(p, pp, *args_for(mod))
    assert det.calls == 0
    # Score only: PAR written, image and sampler untouched.
    p = make_p()
    a1111.script.postprocess_image(p, pp, *args_for(mod, score_only=True))
    assert det.calls == 1 and float(p.extra_generation_params["PAL PAR"]) > 0
    assert "PAL regions" not in p.extra_generation_params and a1111.processing.created == []
    np.testing.assert_array_equal(np.asarray(pp.image), img)


def test_par_guard_rejects_a_fix_that_does_not_help(a1111, monkeypatch):
    mod, processing = a1111.mod, a1111.processing
    monkeypatch.setattr(processing, "FAKE_FILL", MAGENTA)  # the "fix" paints more artifact
    monkeypatch.setattr(mod, "get_detector", lambda choice: MagentaDetector())
    img = artifact_image(boxes=((10, 10, 18, 18),))
    p, pp = make_p(), a1111.scripts.PostprocessImageArgs(Image.fromarray(img))
    a1111.script.postprocess_image(p, pp, *args_for(mod, par_guard=True))
    assert len(processing.created) == 1
    np.testing.assert_array_equal(np.asarray(pp.image), img)
    assert p.extra_generation_params["PAL regions"] == 0
    assert p.extra_generation_params["PAL guard"] == "1 rejected"


def test_batch_index_picks_prompt_and_seed(a1111, monkeypatch):
    mod = a1111.mod
    monkeypatch.setattr(mod, "get_detector", lambda choice: MagentaDetector())
    p = make_p(batch_size=3, batch_index=2)
    pp = a1111.scripts.PostprocessImageArgs(Image.fromarray(artifact_image(boxes=((5, 5, 9, 9),))))
    a1111.script.postprocess_image(p, pp, *args_for(mod))
    kw = a1111.processing.created[0].kwargs
    assert kw["prompt"] == "a cat 2" and kw["seed"] == 1002
    assert set(p._pal_scores) == {2}


def test_accepted_kwargs_for_older_webui(a1111):
    class OldImg2Img:  # e.g. webui 1.8: no `scheduler`
        def __init__(self, prompt="", steps=20, mask=None):
            pass

    out = a1111.mod._accepted_kwargs(OldImg2Img, {"prompt": "x", "scheduler": "Karras", "mask": None})
    assert out == {"prompt": "x", "mask": None}


# ----------------------------------------------------------------------------- ranking
def test_rank_processed_orders_by_par_keeps_grid_and_drops_only_when_asked(a1111):
    mod, processing = a1111.mod, a1111.processing
    imgs = [Image.new("RGB", (4, 4), (i, i, i)) for i in range(4)]  # 0 = grid

    def proc():
        pr = processing.Processed(None, list(imgs), infotexts=["grid", "i0", "i1", "i2"])
        pr.index_of_first_image = 1
        pr.all_seeds, pr.all_prompts = [10, 11, 12], ["p0", "p1", "p2"]
        return pr

    scores = {0: 0.30, 1: 0.01, 2: 0.10}
    pr = proc()
    mod.rank_processed(pr, scores, rank=True, max_par=0.0)
    assert pr.images == [imgs[0], imgs[2], imgs[3], imgs[1]]
    assert pr.infotexts == ["grid", "i1", "i2", "i0"] and pr.all_seeds == [11, 12, 10]
    assert pr.all_prompts == ["p1", "p2", "p0"] and pr.info == "i1" and pr.seed == 11
    pr = proc()
    mod.rank_processed(pr, scores, rank=False, max_par=0.2)
    assert pr.images == [imgs[0], imgs[2], imgs[3]] and pr.all_seeds == [11, 12]  # image 0 (PAR .3) dropped
    pr = proc()
    mod.rank_processed(pr, {0: 0.5}, rank=True, max_par=0.0)  # mismatch: left alone
    assert pr.images == imgs


def test_postprocess_ranks_through_the_script(a1111, monkeypatch):
    mod, processing = a1111.mod, a1111.processing
    monkeypatch.setattr(mod, "get_detector", lambda choice: MagentaDetector())
    p = make_p(batch_size=2)
    args = args_for(mod, score_only=True, rank_batch=True)
    a1111.script.process(p, *args)
    outs = []
    for i, boxes in enumerate([((0, 0, 30, 30),), ((0, 0, 5, 5),)]):
        p.batch_index = i
        pp = a1111.scripts.PostprocessImageArgs(Image.fromarray(artifact_image(boxes=boxes)))
        a1111.script.postprocess_image(p, pp, *args)
        outs.append(pp.image)
    pr = processing.Processed(p, list(outs), infotexts=["a", "b"])
    a1111.script.postprocess(p, pr, *args)
    assert pr.images == [outs[1], outs[0]] and pr.infotexts == ["b", "a"]


# ----------------------------------------------------------------------------- settings, models, API
def test_settings_read_with_opts_data_get_in_api_mode(a1111):
    mod, shared = a1111.mod, a1111.shared
    # --nowebui: on_ui_settings never ran, options are absent; defaults must still work.
    assert mod.opt("pal_default_model") == "pal-starter" and mod.opt("pal_keep_loaded") is True
    mod.on_ui_settings()
    assert set(mod.SETTINGS) <= set(shared.opts.data_labels)
    assert shared.opts.data_labels["pal_device"].section == ("pal", "PAL Auto-Fix")
    shared.opts.data["pal_device"] = "cpu"
    shared.cmd_opts.use_cpu = []
    assert mod.detector_device() == "cpu"
    shared.opts.data["pal_device"] = "auto"
    assert mod.detector_device() is None
    shared.cmd_opts.use_cpu = ["pal"]
    assert mod.detector_device() == "cpu"


def test_model_folder_and_resolution(a1111, tmp_path):
    mod = a1111.mod
    d = mod.models_dir(create=True)
    assert d == Path(a1111.paths.models_path) / "pal" and d.is_dir()
    (d / "a.pth").write_bytes(b"x")
    (d / "notes.txt").write_text("x")
    assert mod.local_models() == ["a.pth"]
    assert mod.resolve_model("a.pth") == d / "a.pth"
    a1111.shared.opts.data["pal_default_model"] = "a.pth"
    assert mod.resolve_model("Default") == d / "a.pth"
    assert mod.resolve_model(str(d / "a.pth")) == d / "a.pth"


def test_api_route_lists_argument_order(a1111):
    routes = {}

    class App:
        def get(self, path):
            def deco(fn):
                routes[path] = fn
                return fn
            return deco

    a1111.mod.on_app_started(None, App())
    body = routes["/pal/v1/args"]()
    assert [a["name"] for a in body["args"]] == a1111.mod.ARG_NAMES
    assert body["args"][0] == {"index": 0, "name": "enabled", "default": False, "label": "Enable PAL Auto-Fix"}
    json.dumps(body)


def test_real_tiny_detector_end_to_end(a1111, fixtures_dir, request):
    """Lazy load of a real (random-weight) fixture checkpoint from models/pal, then a fix."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core CI: one thread is faster than two contending
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    mod = a1111.mod
    d = mod.models_dir(create=True)
    shutil.copy(fixtures_dir / "tiny_swin_upernet_w7.pth", d / "tiny.pth")
    assert mod._cache["det"] is None  # nothing loaded at import
    img = artifact_image()
    p, pp = make_p(), a1111.scripts.PostprocessImageArgs(Image.fromarray(img))
    a1111.script.postprocess_image(p, pp, *args_for(mod, model="tiny.pth", max_regions=2))
    det = mod._cache["det"]
    assert det is not None and str(det.device) == "cpu"
    params = p.extra_generation_params
    par = det.detect(img).par
    assert float(params["PAL PAR"]) == pytest.approx(par, abs=1e-4) and params["PAL model"] == "tiny.pth"
    n = params["PAL regions"]
    assert len(a1111.processing.created) >= n and len(a1111.processing.created) <= 2
    assert mod.get_detector("tiny.pth") is det  # cached, not reloaded


# ----------------------------------------------------------------------------- isolation from hosts
def test_copied_extension_imports_its_own_core_and_nothing_from_comfyui(tmp_path):
    """A fresh interpreter, the extension copied to extensions/comfyui-pal (not an importable name):
    the script maps the folder to `comfyui_pal`, never runs the ComfyUI entry point, and reuses an
    already imported `comfyui_pal` (pip-installed) instead of loading a second copy."""
    ext = tmp_path / "extensions" / "comfyui-pal"
    ext.mkdir(parents=True)
    for name in ("__init__.py", "scripts", "core", "models", "pal_nodes"):
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
        crop = mod._core("core.crop")
        print(json.dumps({{
            "crop": crop.__file__,
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
            assert info["pal_nodes"] is False  # the ComfyUI entry point was not executed
        else:
            assert Path(info["pkg"][0]).resolve() == ROOT


def test_registry_model_not_present_without_download_names_the_folder(a1111, monkeypatch, tmp_path):
    mod = a1111.mod
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("PAL_MODELS_DIR", raising=False)
    a1111.shared.opts.data["pal_allow_download"] = False
    assert "pal4vst-unified" in mod.model_choices()
    with pytest.raises(ValueError) as e:
        mod.resolve_model("pal4vst-unified")
    assert str(mod.models_dir()) in str(e.value)  # says where to put the file
