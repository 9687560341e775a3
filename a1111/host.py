"""PAL Auto-Fix in AUTOMATIC1111 / Forge: everything that talks to the webui's ``modules``.

``scripts/pal_autofix.py`` keeps only the ``Script`` class and calls into this module. Detection,
regions, crop plan, compositing, ranking and the option schema are the host-free core
(``comfyui_pal.core``); models are resolved and cached only through ``comfyui_pal.models``
(``resolve`` / ``load_cached`` / ``list_models``). Only the sampler (a nested img2img pass per crop)
and the bookkeeping on ``p`` / ``Processed`` are A1111's. Nothing here imports ComfyUI.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from copy import copy
from pathlib import Path

import numpy as np
from modules import paths, processing, shared
from PIL import Image

from ..core import options as O
from ..core.imageio import to_float01, to_uint8
from . import args as A

TITLE = A.TITLE
PACKAGE = __name__.split(".")[0]
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt")
LOG = f"[{TITLE}]"

SETTINGS = {  # key: (default, label)
    "pal_default_model": ("pal-starter", "Detector used when the script's model is 'Default' (file in models/pal, "
                                         "path, registry name or hf:owner/repo)"),
    "pal_device": ("auto", "Detector device. auto = the webui's device; precision is the detector's auto: "
                   "fp16/bf16 on GPU, fp32 on CPU unless the CPU has native bf16 and the architecture "
                   "passed the bf16 agreement check (README, Performance)"),
    "pal_keep_loaded": (True, "Keep the detector in memory between generations"),
    "pal_allow_download": (True, "Allow downloading models (registry names, hf: references) into models/pal. "
                           "pal4vst-* are research weights by the PAL4VST authors, fetched from their Google "
                           "Drive (~0.5 GB); no licence given: check with them before commercial use"),
    "pal_trust_torchscript": (False, "Allow TorchScript (.pt) detector files (runs code from the file)"),
    "pal_color_match": (False, "Always match colour/tone of fixed crops (same as the script's 'Colour match')"),
    "pal_nested_scripts": ("", "Always-on scripts allowed inside PAL's nested inpaint passes: comma-separated "
                               "titles or file names, e.g. 'ControlNet, soft_inpainting' (empty = none)"),
}


def _core(name: str):
    """A core/models sub-module, imported on first use so a missing dependency is reported at
    generation time (with the fix) instead of hiding the script's UI."""
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ImportError as e:
        ext = Path(__file__).resolve().parent.parent
        raise RuntimeError(
            f"{TITLE}: cannot import {PACKAGE}.{name} ({e}). Run the extension's install.py with the webui's "
            f"Python, or: \"{sys.executable}\" -m pip install -r \"{ext / 'requirements.txt'}\""
        ) from e


# ----------------------------------------------------------------------------- settings & models
def opt(key: str):
    # opts.data.get works in API-only mode (--nowebui), where on_ui_settings may not have run.
    return shared.opts.data.get(key, SETTINGS[key][0])


def models_dir(create: bool = False) -> Path:
    d = Path(paths.models_path) / "pal"
    if create:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only install: the bundled model and explicit paths still work
            pass
    return d


def local_models() -> list[str]:
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(f.name for f in d.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES)


def model_choices() -> list[str]:
    try:
        registered = [row["name"] for row in _core("models").list_models(model_dirs=[models_dir()])]
    except Exception:  # hub missing or registry unreadable: the dropdown still lists local files
        registered = []
    return list(dict.fromkeys([A.DEFAULT_MODEL, *local_models(), *registered]))


def model_ref(choice: str) -> str:
    name = (choice or "").strip()
    if name in ("", A.DEFAULT_MODEL):
        name = str(opt("pal_default_model") or "pal-starter")
    return name


def resolve_model(choice: str) -> Path:
    """UI/API model value -> a local checkpoint, through the one resolver (downloads only when allowed)."""
    return Path(_core("models").resolve(model_ref(choice), model_dirs=[models_dir(create=True)],
                                        download=bool(opt("pal_allow_download"))))


def detector_device():
    use_cpu = getattr(shared.cmd_opts, "use_cpu", None) or []
    if "all" in use_cpu or "pal" in use_cpu:
        return "cpu"
    dev = str(opt("pal_device") or "auto")
    return None if dev == "auto" else dev


def get_detector(choice: str):
    """Loaded on first use; kept in the models' shared cache."""
    return _core("models").load_cached(
        model_ref(choice), device=detector_device(), dtype="auto", model_dirs=[models_dir(create=True)],
        download=bool(opt("pal_allow_download")), trust_torchscript=bool(opt("pal_trust_torchscript")),
    )


def unload_detector():
    _core("models").clear_cache()


# ----------------------------------------------------------------------------- p / image helpers
def is_nested(p) -> bool:
    return bool(getattr(p, "_pal_nested", False))


def image_index(p, pp) -> int:
    idx = getattr(pp, "index", None)  # Forge and A1111 >= 1.10 pass it
    if idx is None:
        idx = getattr(p, "iteration", 0) * getattr(p, "batch_size", 1) + getattr(p, "batch_index", 0)
    return int(idx)


def _pick(values, i, fallback):
    if isinstance(values, (list, tuple)) and values:
        return values[i] if 0 <= i < len(values) else values[i % len(values)]
    return fallback


def _prompt(override: str, main: str) -> str:
    if not override.strip():
        return main
    return override.replace("[PROMPT]", main)


def working_size(image_size: tuple[int, int], a: dict) -> int:
    """size 0 = auto: the image's own (shorter) side, i.e. the final size also under hires fix."""
    if a["size"]:
        return int(a["size"])
    return max(64, min(int(image_size[0]), int(image_size[1])) // 8 * 8)


def accepted_kwargs(cls, kwargs: dict) -> dict:
    """Drop kwargs an older/forked processing class does not take (e.g. `scheduler` before 1.9)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def plain_generation_params(params) -> dict:
    """The parent's extra_generation_params without callables: those (e.g. hires fix's "Hires prompt")
    read attributes of the parent (``all_hr_prompts``) that a nested img2img pass does not have."""
    return {k: v for k, v in dict(params or {}).items() if not callable(v) and not str(k).startswith("PAL ")}


def _allowed_names() -> set[str]:
    return {n.strip().lower() for n in str(opt("pal_nested_scripts") or "").split(",") if n.strip()}


def nested_script_runner(p):
    """A copy of p's script runner with only the allow-listed always-on scripts (never this one), or None."""
    allowed = _allowed_names()
    runner = getattr(p, "scripts", None)
    if not allowed or runner is None:
        return None
    keep = []
    for s in getattr(runner, "alwayson_scripts", []) or []:
        try:
            title = str(s.title()).strip().lower()
        except Exception:
            title = ""
        stem = Path(str(getattr(s, "filename", "") or "")).stem.lower()
        if title == TITLE.lower():
            continue
        if title in allowed or (stem and stem in allowed):
            keep.append(s)
    if not keep:
        return None
    r = copy(runner)
    r.alwayson_scripts = keep
    r.callback_map = {}  # the parent's ordered-callback cache is keyed by list length only: own cache
    return r


def _interrupted() -> bool:
    st = getattr(shared, "state", None)
    return bool(getattr(st, "interrupted", False) or getattr(st, "skipped", False)
                or getattr(st, "stopping_generation", False))


# ----------------------------------------------------------------------------- nested img2img
def img2img_pass(p, index: int, crop: Image.Image, mask: Image.Image, a: dict, seed_offset: int):
    """One nested inpaint on an S x S crop (inpaint_full_res=False: the crop already is the zoom)."""
    size = crop.width
    seed = int(_pick(getattr(p, "all_seeds", None), index, getattr(p, "seed", -1)))
    subseed = int(_pick(getattr(p, "all_subseeds", None), index, getattr(p, "subseed", -1)))
    kwargs = dict(
        sd_model=getattr(p, "sd_model", None),
        outpath_samples=getattr(p, "outpath_samples", None),
        outpath_grids=getattr(p, "outpath_grids", None),
        prompt=_prompt(a["prompt"], _pick(getattr(p, "all_prompts", None), index, getattr(p, "prompt", ""))),
        negative_prompt=_prompt(a["negative_prompt"], _pick(getattr(p, "all_negative_prompts", None), index,
                                                            getattr(p, "negative_prompt", ""))),
        seed=seed + seed_offset if seed >= 0 else seed,
        subseed=subseed,
        subseed_strength=getattr(p, "subseed_strength", 0),
        sampler_name=getattr(p, "sampler_name", None) if a["sampler"] in ("", A.SAME_SAMPLER) else a["sampler"],
        scheduler=getattr(p, "scheduler", "Automatic"),
        steps=a["steps"] or getattr(p, "steps", 20),
        cfg_scale=a["cfg_scale"] or getattr(p, "cfg_scale", 7.0),
        width=size,
        height=size,
        batch_size=1,
        n_iter=1,
        restore_faces=False,
        tiling=getattr(p, "tiling", False),
        init_images=[crop],
        mask=mask,
        mask_blur=a["mask_blur"],
        inpainting_fill=1,  # "original": the artifact is a flawed version of the right content
        inpaint_full_res=False,
        resize_mode=0,
        denoising_strength=a["denoise"],
        do_not_save_samples=True,
        do_not_save_grid=True,
        override_settings={},
        extra_generation_params=plain_generation_params(getattr(p, "extra_generation_params", None)),
    )
    cls = processing.StableDiffusionProcessingImg2Img
    p2 = cls(**accepted_kwargs(cls, kwargs))
    p2.cached_c = [None, None]
    p2.cached_uc = [None, None]
    runner = nested_script_runner(p)
    p2.scripts = runner  # None = no other always-on script in the nested pass (the default)
    if runner is not None:
        p._pal_nested_titles = [str(s.title()) for s in runner.alwayson_scripts]
    p2.script_args = list(getattr(p, "script_args", None) or []) if runner is not None else []
    p2._pal_nested = True
    try:
        res = processing.process_images(p2)
    finally:
        p2.close()
    images = getattr(res, "images", None) or []
    return images[0] if images else None


def make_inpainter(p, index: int, a: dict, done: list):
    """The core's inpainter protocol (crops [N,S,S,3] 0..1, masks [N,S,S]) -> crops, one nested img2img
    pass per crop. ``done`` gets one bool per crop (in the fix report's order): False when the pass was
    skipped (interrupt) or failed, so the infotext counts only regions that were really inpainted."""

    def inpaint(crops: np.ndarray, masks: np.ndarray) -> np.ndarray:
        out = np.array(crops, dtype=np.float32, copy=True)
        st = getattr(shared, "state", None)
        if st is not None and hasattr(st, "job_count"):
            st.job_count += len(out)
        for k in range(len(out)):
            if _interrupted() or not masks[k].any():
                done.append(False)
                continue
            s = out.shape[1]
            crop = Image.fromarray(to_uint8(crops[k]))
            mask = Image.fromarray((np.asarray(masks[k]) > 0.5).astype(np.uint8) * 255, mode="L")
            try:
                res = img2img_pass(p, index, crop, mask, a, seed_offset=sum(done))
            except Exception as e:  # e.g. NansException: keep the other regions' fixes
                print(f"{LOG} inpaint pass for region {len(done) + 1} failed: {type(e).__name__}: {e}",
                      file=sys.stderr)
                res = None
            done.append(res is not None)
            if res is not None:
                res = res.convert("RGB")
                if res.size != (s, s):
                    res = res.resize((s, s), Image.LANCZOS)
                out[k] = to_float01(np.asarray(res))
        return out

    return inpaint


# ----------------------------------------------------------------------------- the fix
def autofix(image: np.ndarray, det, a: dict, inpaint, size: int, done: list | None = None) -> dict:
    """Detect -> regions -> crop plan -> ``inpaint`` -> composite (PAR guard, rounds) via core.fix.
    Returns {"image", "par_before", "par_after", "regions", "rejected", "skipped", "mask", "report"}."""
    cur = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    if a["score_only"]:
        d = det.detect(cur)
        return {"image": cur, "par_before": float(d.par), "par_after": None, "regions": 0, "rejected": 0,
                "skipped": 0, "mask": None, "report": None}
    fix = _core("core.fix")
    inpainter = _core("core.inpainters").CallableInpainter(inpaint, name="a1111-img2img")
    values = {k: a[k] for k in ("threshold", "zoom", "size", "dilation", "min_area", "max_regions", "order",
                                "color_match", "par_guard", "rounds")}
    values["color_match"] = bool(a["color_match"] or opt("pal_color_match"))
    res = fix.fix_image(cur, det, inpainter, fix.FixOptions.from_schema(values, size=size))
    r = res.report
    done = list(done or [])
    crops = r["crops"]
    ran = [done[j] if j < len(done) else False for j in range(len(crops))] if done or crops else []
    regions = sum(1 for c, d in zip(crops, ran) if c["kept"] and d)
    rejected = sum(1 for c, d in zip(crops, ran) if d and not c["kept"])
    return {"image": res.image, "par_before": r["par_before"], "par_after": r["par_after"], "regions": regions,
            "rejected": rejected, "skipped": sum(1 for d in ran if not d), "mask": res.mask, "report": r}


def _error(p, params: dict, index: int, err: Exception, *, expected: bool) -> None:
    """Report a failure in the image's infotext (so API clients see it); the generation is kept."""
    msg = str(err) if expected else f"{type(err).__name__}: {err}"
    msg = " ".join(msg.split())
    if not msg.startswith(TITLE):
        msg = f"{TITLE}: {msg}"
    params["PAL error"] = msg
    print(f"{LOG} image {index + 1}: error, image left as generated: {msg}", file=sys.stderr)
    if not expected:
        traceback.print_exc()


def _is_user_error(e: Exception) -> bool:
    if isinstance(e, (ValueError, FileNotFoundError, PermissionError)):
        return True  # OptionError, ModelNotAvailableError (ValueError), CheckpointError, ...
    return type(e).__name__ in ("CheckpointError", "ModelNotAvailableError")


def _check_sampler(a: dict) -> None:
    if a["sampler"] in ("", A.SAME_SAMPLER):
        return
    try:
        from modules import sd_samplers

        names = [s.name for s in sd_samplers.all_samplers]
        aliases = {al for s in sd_samplers.all_samplers for al in (getattr(s, "aliases", None) or [])}
    except Exception:
        return
    if names and a["sampler"] not in names and a["sampler"] not in aliases:
        raise O.OptionError("sampler", f"{TITLE}: sampler = {a['sampler']!r} is not a sampler of this webui; use "
                                       f"{A.SAME_SAMPLER!r} or one of {names}")


# ----------------------------------------------------------------------------- skip img2img
SKIP_SAMPLING = {"steps": 1, "sampler_name": "Euler", "width": 64, "height": 64}  # cheapest first pass


def before_process(p, args) -> None:
    """skip_img2img: make the img2img pass as cheap as possible; its result is replaced by the input."""
    if is_nested(p) or not A.raw_enabled(args):
        return
    try:
        a = A.parse_args(args)
    except ValueError:
        return  # reported per image in postprocess_image
    if not (a["enabled"] and a["skip_img2img"]) or not getattr(p, "init_images", None):
        return  # txt2img: nothing to skip
    if getattr(p, "image_mask", None) is not None:
        p._pal_skip_note = "skip img2img ignored: it does not work with an inpaint mask (img2img ran normally)"
        return
    p._pal_skip = {k: getattr(p, k, None) for k in SKIP_SAMPLING}
    _apply_skip(p)


def _apply_skip(p) -> None:
    for k, v in SKIP_SAMPLING.items():
        setattr(p, k, v)


def _restore_skip(p) -> None:
    for k, v in getattr(p, "_pal_skip", {}).items():
        setattr(p, k, v)


def before_process_batch(p) -> None:
    if getattr(p, "_pal_skip", None):
        _apply_skip(p)  # postprocess_image of the previous batch restored the real values


def skip_source(p, index: int) -> Image.Image | None:
    if not getattr(p, "_pal_skip", None):
        return None
    return _pick(getattr(p, "init_images", None), index, None)


# ----------------------------------------------------------------------------- previews
def _save(p, image: Image.Image, index: int, suffix: str) -> str | None:
    try:
        from modules import images

        seed = _pick(getattr(p, "all_seeds", None), index, getattr(p, "seed", -1))
        prompt = _pick(getattr(p, "all_prompts", None), index, getattr(p, "prompt", ""))
        ext = shared.opts.data.get("samples_format", "png")
        path = getattr(p, "outpath_samples", None) or str(Path(paths.models_path).parent / "outputs")
        out = images.save_image(image, path, "", seed, prompt, ext, info=None, p=p, suffix=suffix)
        return out[0] if isinstance(out, (tuple, list)) else out
    except Exception as e:  # a preview must never cost the generation
        print(f"{LOG} could not save the {suffix} image: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def save_previews(p, index: int, a: dict, before: np.ndarray, info: dict) -> list[str]:
    saved = []
    if a["save_before"]:
        saved.append(_save(p, Image.fromarray(before), index, "-pal-before"))
    if a["save_previews"] and info.get("report") is not None:
        fix_vis = _core("core.par").fix_vis  # the CLI's _fix_vis.png picture: one implementation
        vis = fix_vis(before, np.asarray(info["image"]), np.asarray(info["mask"]), info["report"]["crops"])
        saved.append(_save(p, Image.fromarray(vis), index, "-pal-preview"))
    return [s for s in saved if s]


# ----------------------------------------------------------------------------- per image
def process(p, args) -> None:
    if is_nested(p):
        return
    p._pal_scores = {}  # image index -> final PAR, for batch ranking in postprocess()


def postprocess_image(p, pp, args) -> None:
    if is_nested(p):
        return
    params = p.extra_generation_params
    for k in [k for k in params if str(k).startswith("PAL ")]:
        params.pop(k, None)  # one image's values never leak into the next
    if not A.raw_enabled(args):
        return
    index = image_index(p, pp)
    t0 = time.perf_counter()
    try:
        a = A.parse_args(args)
        _check_sampler(a)
    except ValueError as e:
        _error(p, params, index, e, expected=True)
        return
    if not a["enabled"]:
        return
    if getattr(p, "_pal_skip_note", None):
        params["PAL note"] = p._pal_skip_note
    source = skip_source(p, index)
    if source is not None:
        _restore_skip(p)  # the nested pass and the infotext use the real steps/sampler/size
        pp.image = source.convert("RGB")
    params.update(A.infotext_params(a))
    params["PAL model"] = Path(model_ref(a["model"])).name if not model_ref(a["model"]).startswith("hf:") \
        else model_ref(a["model"])
    try:
        det = get_detector(a["model"])
        image = np.asarray(pp.image.convert("RGB"))
        done: list = []
        size = working_size(pp.image.size, a)
        info = autofix(image, det, a, make_inpainter(p, index, a, done), size, done)
    except Exception as e:  # the options stay in the infotext next to the error
        _error(p, params, index, e, expected=_is_user_error(e))
        return

    params["PAL PAR"] = f"{info['par_before']:.4f}"
    final = info["par_before"]
    line = f"{LOG} image {index + 1}: PAR {info['par_before']:.4f}"
    if not a["score_only"]:
        params["PAL regions"] = info["regions"]
        if info["regions"]:
            params["PAL PAR after"] = f"{info['par_after']:.4f}"
            final = info["par_after"]
            pp.image = Image.fromarray(info["image"])
            line += f" -> {info['par_after']:.4f}"
        if a["par_guard"]:
            params["PAL guard"] = f"{info['rejected']} rejected"
        if info["skipped"]:
            params["PAL note"] = f"interrupted: {info['skipped']} of {len(info['report']['crops'])} regions not inpainted"
        line += f", {info['regions']} region(s) fixed" + (f", {info['rejected']} rejected" if a["par_guard"] else "")
        if info["skipped"]:
            line += f", {info['skipped']} skipped (interrupted)"
    else:
        line += " (score only)"
    saved = save_previews(p, index, a, image, info) if (a["save_before"] or a["save_previews"]) else []
    scores = getattr(p, "_pal_scores", None)
    if scores is None:
        scores = p._pal_scores = {}
    scores[index] = final
    line += f" ({time.perf_counter() - t0:.1f} s)"
    if getattr(p, "_pal_nested_titles", None):
        line += f"; nested passes ran with: {', '.join(p._pal_nested_titles)}"
    if saved:
        line += f"; saved {', '.join(saved)}"
    print(line)


def postprocess(p, processed, args) -> None:
    if is_nested(p):
        return
    try:
        _restore_skip(p)
        if not A.raw_enabled(args):
            return
        try:
            a = A.parse_args(args)
        except ValueError:
            return  # already reported in every image's infotext
        if a["enabled"] and (a["rank_batch"] or a["max_par"] > 0):
            rank_processed(processed, getattr(p, "_pal_scores", {}), a["rank_batch"], a["max_par"])
    finally:
        if not opt("pal_keep_loaded"):
            unload_detector()


def _append_infotext(text: str, entry: str) -> str:
    return f"{text}, {entry}" if text else entry


def rank_processed(processed, scores: dict, rank: bool, max_par: float) -> None:
    """Reorder (and, only when max_par > 0, filter) the result's images by PAR, lowest first.

    Never returns an empty result: when every image is above ``max_par``, the lowest-PAR one is
    kept and its infotext gets a ``PAL note`` saying so. Runs after saving: files on disk are all
    kept; only the gallery / API order changes. A grid (images before index_of_first_image) and
    images beyond the scored ones stay where they are.
    """
    start = int(getattr(processed, "index_of_first_image", 0) or 0)
    n = len(scores)
    if n == 0 or sorted(scores) != list(range(n)) or len(processed.images) < start + n:
        print(f"{LOG} batch ranking skipped: {n} scores do not match {len(processed.images) - start} images",
              file=sys.stderr)
        return
    pars = [scores[i] for i in range(n)]
    order, _ = _core("core.par").rank_by_par(pars, max_par=max_par if max_par > 0 else None)
    note = None
    if not order:
        best = _core("core.par").rank_by_par(pars)[0][0]
        order = [best]
        text = f"every image was above max PAR {max_par:g}; kept the lowest-PAR one ({pars[best]:.4f})"
        note = f"PAL note: {quote_infotext(text)}"
        print(f"{LOG} every image is above max PAR {max_par:g}: kept the lowest-PAR one ({pars[best]:.4f}) "
              "instead of returning nothing")
    if not rank:  # only filtering was asked for: keep the generation order
        order.sort()

    def reorder(lst, offset):
        if isinstance(lst, list) and len(lst) >= offset + n:
            lst[offset:offset + n] = [lst[offset + i] for i in order]

    reorder(processed.images, start)
    infotexts = getattr(processed, "infotexts", None)
    reorder(infotexts, start)  # parallel to images (grid first when there is one)
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        lst = getattr(processed, name, None)
        if isinstance(lst, list) and len(lst) == n:  # per generated image, no grid entry
            reorder(lst, 0)
    if note and isinstance(infotexts, list) and len(infotexts) > start:
        infotexts[start] = _append_infotext(infotexts[start], note)
        img = processed.images[start]
        if isinstance(getattr(img, "info", None), dict) and "parameters" in img.info:
            img.info["parameters"] = infotexts[start]  # what the API's PNG carries
    if isinstance(infotexts, list) and len(infotexts) > start:
        processed.info = infotexts[start]  # what the UI shows for the first image
    seeds = getattr(processed, "all_seeds", None)
    if isinstance(seeds, list) and seeds:
        processed.seed = seeds[0]


def quote_infotext(text: str) -> str:
    """A1111's infotext_utils.quote: JSON-quote values with a comma, colon or newline."""
    import json

    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


# ----------------------------------------------------------------------------- settings / routes
def on_ui_settings():
    section = ("pal", TITLE)
    for key, (default, label) in SETTINGS.items():
        if key == "pal_device":
            import gradio as gr

            info = shared.OptionInfo(default, label, gr.Dropdown, {"choices": ["auto", "cpu", "cuda", "mps"]},
                                     section=section)
        else:
            info = shared.OptionInfo(default, label, section=section)
        shared.opts.add_option(key, info)


def on_app_started(_demo, app):
    @app.get("/pal/v1/schema")
    def pal_schema():
        """Names, types, defaults, ranges and the positional order: generated from core/options.py."""
        body = A.schema()
        body["models"] = model_choices()
        body["settings"] = {k: {"default": d, "label": lab} for k, (d, lab) in SETTINGS.items()}
        return body

    @app.get("/pal/v1/args")
    def pal_args():
        """The alwayson_scripts positional order with defaults (kept for older clients; see /schema)."""
        return {"title": TITLE, "args": [{"index": i, "name": n, "default": d, "label": lab}
                                         for i, (n, d, lab) in enumerate(A.ARG_SPECS)],
                "models": model_choices()}
