"""PAL Auto-Fix for AUTOMATIC1111 / Forge: detect perceptual artifacts after generation, inpaint
each region with a nested img2img pass on a zoomed crop, write PAR into the infotext, and
optionally rank the batch by PAR.

A thin adapter: detection, components, crop plan and compositing are the host-free core of
this repo (`comfyui_pal.models` / `comfyui_pal.core`); only the sampler is A1111's.
Nothing here imports ComfyUI.

API (`alwayson_scripts`): {"PAL Auto-Fix": {"args": [...]}} in the order of ARG_SPECS below;
missing trailing args keep their defaults. Never reorder ARG_SPECS, only append.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path

import numpy as np
from modules import paths, processing, script_callbacks, scripts, shared
from PIL import Image

TITLE = "PAL Auto-Fix"
PACKAGE = "comfyui_pal"
# A1111 loads this file by path with the extension folder first on sys.path; the folder's own
# name (e.g. "comfyui-pal") is not importable, so the package is mapped by location (below).
EXT_DIR = Path(__file__).resolve().parent.parent

SAME_SAMPLER = "Use same sampler"
DEFAULT_MODEL = "Default"
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt")
# Infotext keys this script owns; cleared per image so one image's values never leak into the next.
INFOTEXT_KEYS = ("PAL PAR", "PAL PAR after", "PAL regions", "PAL model", "PAL threshold", "PAL zoom",
                 "PAL denoise", "PAL guard")

# (name, default, label). The API contract: index in this list == position in "args".
ARG_SPECS = [
    ("enabled", False, "Enable PAL Auto-Fix"),
    ("model", DEFAULT_MODEL, "Detector model"),
    ("threshold", 0.5, "Artifact threshold"),
    ("zoom", 1.5, "Crop zoom (crop side / region side)"),
    ("inpaint_size", 0, "Inpaint size (0 = generation size)"),
    ("dilation", -1, "Mask dilation px (-1 = official, scaled)"),
    ("min_area", 64, "Min region area (px)"),
    ("max_regions", 8, "Max regions (0 = all)"),
    ("denoising_strength", 0.4, "Denoising strength"),
    ("mask_blur", 4, "Mask blur"),
    ("steps", 0, "Steps (0 = same)"),
    ("cfg_scale", 0.0, "CFG scale (0 = same)"),
    ("sampler", SAME_SAMPLER, "Sampler"),
    ("prompt", "", "Prompt (empty = main; [PROMPT] inserts it)"),
    ("negative_prompt", "", "Negative prompt (empty = main; [PROMPT] inserts it)"),
    ("par_guard", False, "PAR guard: keep a region's fix only if its PAR went down"),
    ("rounds", 1, "Rounds (detect + fix repeats)"),
    ("score_only", False, "Only score, don't fix"),
    ("rank_batch", False, "Rank batch by PAR (lowest first)"),
    ("max_par", 0.0, "Drop images above this PAR from the result (0 = keep all)"),
]
ARG_NAMES = [s[0] for s in ARG_SPECS]

SETTINGS = {  # key: (default, label)
    "pal_default_model": ("pal-starter", "Detector used when the script's model is 'Default' (file in models/pal, path or registry name)"),
    "pal_device": ("auto", "Detector device"),
    "pal_keep_loaded": (True, "Keep the detector in memory between generations"),
    "pal_allow_download": (True, "Allow downloading registry models into models/pal"),
    "pal_trust_torchscript": (False, "Allow TorchScript (.pt) detector files (runs code from the file)"),
    "pal_color_match": (False, "Match colour/tone of each fixed crop to its surroundings"),
}


# ----------------------------------------------------------------------------- package import
def _package():
    """`comfyui_pal`: an already imported one (e.g. pip-installed and used elsewhere), else this
    extension's folder registered under that name.

    The root __init__.py is deliberately not executed: it is the ComfyUI node-pack entry point and
    A1111 needs only the host-free `core` and `models` sub-packages, which import normally.
    """
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, EXT_DIR / "__init__.py", submodule_search_locations=[str(EXT_DIR)]
        )
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pkg
    return pkg


def _core(name: str):
    """Import a core/models sub-module lazily, so a missing dependency is reported at generation
    time (with the fix) instead of hiding the script's UI."""
    _package()
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ImportError as e:
        raise RuntimeError(
            f"{TITLE}: cannot import {PACKAGE}.{name} ({e}). Run the extension's install.py with the "
            f"webui's Python, or: \"{sys.executable}\" -m pip install -r \"{EXT_DIR / 'requirements.txt'}\""
        ) from e


# ----------------------------------------------------------------------------- settings & models
def opt(key: str):
    # opts.data.get works in API-only mode (--nowebui), where on_ui_settings never ran.
    return shared.opts.data.get(key, SETTINGS[key][0])


def models_dir(create: bool = False) -> Path:
    d = Path(paths.models_path) / "pal"
    if create:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only install: only the bundled model and explicit paths work
            pass
    return d


def local_models() -> list[str]:
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(f.name for f in d.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES)


def registry_models() -> list[str]:
    try:
        return sorted(_core("models.hub").get_registry())
    except Exception:  # hub missing or registry unreadable: the dropdown still lists local files
        return []


def model_choices() -> list[str]:
    seen, out = set(), []
    for name in [DEFAULT_MODEL, *local_models(), *registry_models()]:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def resolve_model(choice: str):
    """UI/API model value -> what load_detector takes (a path or a registry name)."""
    name = (choice or "").strip()
    if name in ("", DEFAULT_MODEL):
        name = str(opt("pal_default_model") or "pal-starter")
    local = models_dir() / name
    if local.is_file():
        return local
    if Path(name).expanduser().is_file():
        return Path(name).expanduser()
    try:
        hub = _core("models.hub")
    except RuntimeError:
        return name  # load_detector still knows the bundled default
    return Path(hub.resolve(name, download=bool(opt("pal_allow_download")), models_dir=models_dir(create=True)))


def detector_device():
    use_cpu = getattr(shared.cmd_opts, "use_cpu", None) or []
    if "all" in use_cpu or "pal" in use_cpu:
        return "cpu"
    dev = str(opt("pal_device") or "auto")
    return None if dev == "auto" else dev


_lock = threading.Lock()
_cache: dict = {"key": None, "det": None}


def get_detector(choice: str):
    """Load lazily on first use and keep one detector cached (module global)."""
    source = resolve_model(choice)
    key = (str(source), detector_device(), bool(opt("pal_trust_torchscript")))
    with _lock:
        if _cache["key"] != key:
            _cache["det"] = None  # free the old one before loading the next
            det = _core("models").load_detector(
                source, device=key[1], trust_torchscript=key[2]
            )
            _cache.update(key=key, det=det)
        return _cache["det"]


def unload_detector():
    with _lock:
        _cache.update(key=None, det=None)


# ----------------------------------------------------------------------------- arguments
def _coerce(name, value, default, pos):
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            return int(round(float(value)))
        if isinstance(default, float):
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{TITLE}: argument {pos} ({name}) = {value!r} is not a {type(default).__name__}; "
            f"see the README for the alwayson_scripts argument order"
        ) from None


def parse_args(args) -> dict:
    """Positional script args (UI or API) -> dict; missing or None values take the defaults."""
    if len(args) > len(ARG_SPECS):
        raise ValueError(f"{TITLE}: got {len(args)} args, expected at most {len(ARG_SPECS)}: {ARG_NAMES}")
    a = {}
    for pos, (name, default, _label) in enumerate(ARG_SPECS):
        v = args[pos] if pos < len(args) and args[pos] is not None else default
        a[name] = _coerce(name, v, default, pos)
    checks = [
        (0.0 < a["threshold"] < 1.0, "threshold must be between 0 and 1"),
        (a["zoom"] >= 1.0, "zoom must be >= 1"),
        (a["inpaint_size"] == 0 or (a["inpaint_size"] >= 64 and a["inpaint_size"] % 8 == 0),
         "inpaint_size must be 0 or a multiple of 8 >= 64"),
        (0.0 <= a["denoising_strength"] <= 1.0, "denoising_strength must be between 0 and 1"),
        (a["rounds"] >= 1, "rounds must be >= 1"),
        (a["max_regions"] >= 0 and a["min_area"] >= 0 and a["mask_blur"] >= 0 and a["steps"] >= 0,
         "max_regions, min_area, mask_blur and steps must be >= 0"),
        (a["max_par"] >= 0.0, "max_par must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"{TITLE}: {msg}")
    return a


# ----------------------------------------------------------------------------- nested img2img
def _image_index(p, pp) -> int:
    idx = getattr(pp, "index", None)  # Forge passes it
    if idx is None:
        idx = getattr(p, "iteration", 0) * getattr(p, "batch_size", 1) + getattr(p, "batch_index", 0)
    return int(idx)


def _pick(values, i, fallback):
    if isinstance(values, (list, tuple)) and 0 <= i < len(values):
        return values[i]
    return fallback


def _prompt(override: str, main: str) -> str:
    if not override.strip():
        return main
    return override.replace("[PROMPT]", main)


def working_size(p, a) -> int:
    if a["inpaint_size"]:
        return a["inpaint_size"]
    side = min(int(getattr(p, "width", 512) or 512), int(getattr(p, "height", 512) or 512))
    return max(64, side // 8 * 8)


def _accepted_kwargs(cls, kwargs: dict) -> dict:
    """Drop kwargs an older/forked processing class does not take (e.g. `scheduler` before 1.9)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def img2img_pass(p, index: int, crop: Image.Image, mask: Image.Image, a: dict, seed_offset: int) -> Image.Image | None:
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
        sampler_name=getattr(p, "sampler_name", None) if a["sampler"] in ("", SAME_SAMPLER) else a["sampler"],
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
        denoising_strength=a["denoising_strength"],
        do_not_save_samples=True,
        do_not_save_grid=True,
        override_settings={},
        extra_generation_params=dict(getattr(p, "extra_generation_params", None) or {}),
    )
    cls = processing.StableDiffusionProcessingImg2Img
    p2 = cls(**_accepted_kwargs(cls, kwargs))
    p2.cached_c = [None, None]
    p2.cached_uc = [None, None]
    # No other always-on scripts inside the nested pass (ControlNet, ADetailer, ... and this one).
    p2.scripts = None
    p2.script_args = []
    p2._pal_nested = True
    try:
        res = processing.process_images(p2)
    finally:
        p2.close()
    images = getattr(res, "images", None) or []
    return images[0] if images else None


def _interrupted() -> bool:
    st = getattr(shared, "state", None)
    return bool(getattr(st, "interrupted", False) or getattr(st, "skipped", False))


def make_a1111_inpainter(p, index: int, a: dict, counter: list):
    """The core's inpainter protocol (crops [N,S,S,3] 0..1, masks [N,S,S]) -> crops, one nested
    img2img pass per crop; a crop whose pass fails or is interrupted comes back unchanged."""

    def inpaint(crops: np.ndarray, masks: np.ndarray) -> np.ndarray:
        out = np.array(crops, dtype=np.float32, copy=True)
        st = getattr(shared, "state", None)
        if st is not None and hasattr(st, "job_count"):
            st.job_count += len(out)
        for k in range(len(out)):
            if _interrupted() or not masks[k].any():
                continue
            s = out.shape[1]
            crop = Image.fromarray(np.clip(np.rint(crops[k] * 255.0), 0, 255).astype(np.uint8))
            mask = Image.fromarray((np.asarray(masks[k]) > 0.5).astype(np.uint8) * 255, mode="L")
            try:
                res = img2img_pass(p, index, crop, mask, a, seed_offset=counter[0])
            except Exception as e:  # e.g. NansException: keep the other regions' fixes
                print(f"[{TITLE}] inpaint pass for region {counter[0] + 1} failed: {e}", file=sys.stderr)
                res = None
            counter[0] += 1
            if res is not None:
                res = res.convert("RGB")
                if res.size != (s, s):
                    res = res.resize((s, s), Image.LANCZOS)
                out[k] = np.asarray(res, dtype=np.float32) / 255.0
        return out

    return inpaint


# ----------------------------------------------------------------------------- the fix
def autofix(image: np.ndarray, det, a: dict, inpaint, size: int) -> dict:
    """Detect -> components -> crop plan -> `inpaint` -> composite (PAR guard, rounds) via the
    core's fix_image. Returns {"image", "par_before", "par_after", "regions", "rejected", "report"}.
    PAR is the official one (threshold 0.5 on the 512x512 map); `threshold` picks the regions."""
    cur = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    if a["score_only"]:
        d = det.detect(cur)
        return {"image": cur, "par_before": float(d.par), "par_after": None, "regions": 0, "rejected": 0,
                "report": None}
    fix = _core("core.fix")
    inpainter = _core("core.inpainters").CallableInpainter(inpaint, name="a1111-img2img")
    res = fix.fix_image(
        cur, det, inpainter, zoom=a["zoom"], size=size, threshold=a["threshold"],
        dilate="auto" if a["dilation"] < 0 else a["dilation"], min_area=a["min_area"],
        max_regions=a["max_regions"] or 10**6, color_match=bool(opt("pal_color_match")),
        guard=a["par_guard"], rounds=a["rounds"],
    )
    r = res.report
    return {"image": res.image, "par_before": r["par_before"], "par_after": r["par_after"],
            "regions": r["n_kept"], "rejected": r["n_crops"] - r["n_kept"], "report": r}


# ----------------------------------------------------------------------------- the script
class PALAutoFixScript(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        tab = "img2img" if is_img2img else "txt2img"

        def eid(name):
            return f"pal_autofix_{tab}_{name}"

        try:
            from modules.ui_components import InputAccordion
        except ImportError:  # webui < 1.7: plain accordion plus a checkbox
            InputAccordion = None
        try:
            from modules import sd_samplers
            samplers = [SAME_SAMPLER] + [s.name for s in sd_samplers.all_samplers]
        except Exception:
            samplers = [SAME_SAMPLER]

        d = {n: dflt for n, dflt, _ in ARG_SPECS}
        lab = {n: label for n, _, label in ARG_SPECS}

        def build_inner():
            c = {}
            with gr.Row():
                c["model"] = gr.Dropdown(label=lab["model"], choices=model_choices(), value=d["model"],
                                         allow_custom_value=True, elem_id=eid("model"))
                c["threshold"] = gr.Slider(label=lab["threshold"], minimum=0.05, maximum=0.95, step=0.05,
                                           value=d["threshold"], elem_id=eid("threshold"))
            with gr.Row():
                c["zoom"] = gr.Slider(label=lab["zoom"], minimum=1.0, maximum=3.0, step=0.1, value=d["zoom"],
                                      elem_id=eid("zoom"))
                c["inpaint_size"] = gr.Slider(label=lab["inpaint_size"], minimum=0, maximum=2048, step=64,
                                              value=d["inpaint_size"], elem_id=eid("inpaint_size"))
            with gr.Row():
                c["dilation"] = gr.Slider(label=lab["dilation"], minimum=-1, maximum=64, step=1,
                                          value=d["dilation"], elem_id=eid("dilation"))
                c["min_area"] = gr.Slider(label=lab["min_area"], minimum=0, maximum=4096, step=16,
                                          value=d["min_area"], elem_id=eid("min_area"))
                c["max_regions"] = gr.Slider(label=lab["max_regions"], minimum=0, maximum=32, step=1,
                                             value=d["max_regions"], elem_id=eid("max_regions"))
            with gr.Row():
                c["denoising_strength"] = gr.Slider(label=lab["denoising_strength"], minimum=0.0, maximum=1.0,
                                                    step=0.01, value=d["denoising_strength"],
                                                    elem_id=eid("denoising_strength"))
                c["mask_blur"] = gr.Slider(label=lab["mask_blur"], minimum=0, maximum=64, step=1,
                                           value=d["mask_blur"], elem_id=eid("mask_blur"))
            with gr.Row():
                c["steps"] = gr.Slider(label=lab["steps"], minimum=0, maximum=150, step=1, value=d["steps"],
                                       elem_id=eid("steps"))
                c["cfg_scale"] = gr.Slider(label=lab["cfg_scale"], minimum=0.0, maximum=30.0, step=0.5,
                                           value=d["cfg_scale"], elem_id=eid("cfg_scale"))
                c["sampler"] = gr.Dropdown(label=lab["sampler"], choices=samplers, value=d["sampler"],
                                           elem_id=eid("sampler"))
            c["prompt"] = gr.Textbox(label=lab["prompt"], lines=2, value=d["prompt"], elem_id=eid("prompt"))
            c["negative_prompt"] = gr.Textbox(label=lab["negative_prompt"], lines=2, value=d["negative_prompt"],
                                              elem_id=eid("negative_prompt"))
            with gr.Row():
                c["par_guard"] = gr.Checkbox(label=lab["par_guard"], value=d["par_guard"], elem_id=eid("par_guard"))
                c["rounds"] = gr.Slider(label=lab["rounds"], minimum=1, maximum=4, step=1, value=d["rounds"],
                                        elem_id=eid("rounds"))
                c["score_only"] = gr.Checkbox(label=lab["score_only"], value=d["score_only"],
                                              elem_id=eid("score_only"))
            with gr.Row():
                c["rank_batch"] = gr.Checkbox(label=lab["rank_batch"], value=d["rank_batch"],
                                              elem_id=eid("rank_batch"))
                c["max_par"] = gr.Slider(label=lab["max_par"], minimum=0.0, maximum=1.0, step=0.005,
                                         value=d["max_par"], elem_id=eid("max_par"))
            return c

        if InputAccordion is not None:
            with InputAccordion(False, label=TITLE, elem_id=eid("enabled")) as enabled:
                comps = build_inner()
        else:
            with gr.Accordion(TITLE, open=False):
                enabled = gr.Checkbox(label=ARG_SPECS[0][2], value=False, elem_id=eid("enabled"))
                comps = build_inner()
        comps["enabled"] = enabled
        self.infotext_fields = [(comps["threshold"], "PAL threshold"), (comps["zoom"], "PAL zoom"),
                                (comps["denoising_strength"], "PAL denoise")]
        return [comps[n] for n in ARG_NAMES]

    def process(self, p, *args):
        if getattr(p, "_pal_nested", False):
            return
        p._pal_scores = {}  # image index -> final PAR, for batch ranking in postprocess()

    def postprocess_image(self, p, pp, *args):
        if getattr(p, "_pal_nested", False):
            return
        a = parse_args(args)
        if not a["enabled"]:
            return
        params = p.extra_generation_params
        for k in INFOTEXT_KEYS:
            params.pop(k, None)
        index = _image_index(p, pp)
        det = get_detector(a["model"])
        counter = [0]
        image = np.asarray(pp.image.convert("RGB"))
        info = autofix(image, det, a, make_a1111_inpainter(p, index, a, counter), working_size(p, a))

        params["PAL PAR"] = f"{info['par_before']:.4f}"
        params["PAL model"] = Path(str(a["model"])).name if a["model"] != DEFAULT_MODEL else str(opt("pal_default_model"))
        params["PAL threshold"] = a["threshold"]
        final = info["par_before"]
        if not a["score_only"]:
            params["PAL regions"] = info["regions"]
            if info["regions"]:
                params["PAL PAR after"] = f"{info['par_after']:.4f}"
                params["PAL zoom"] = a["zoom"]
                params["PAL denoise"] = a["denoising_strength"]
                final = info["par_after"]
                pp.image = Image.fromarray(info["image"])
            if a["par_guard"]:
                params["PAL guard"] = f"{info['rejected']} rejected"
        scores = getattr(p, "_pal_scores", None)
        if scores is None:
            scores = p._pal_scores = {}
        scores[index] = final

    def postprocess(self, p, processed, *args):
        if getattr(p, "_pal_nested", False):
            return
        a = parse_args(args)
        try:
            if a["enabled"] and (a["rank_batch"] or a["max_par"] > 0):
                rank_processed(processed, getattr(p, "_pal_scores", {}), a["rank_batch"], a["max_par"])
        finally:
            if not opt("pal_keep_loaded"):
                unload_detector()


def rank_processed(processed, scores: dict, rank: bool, max_par: float) -> None:
    """Reorder (and, only when max_par > 0, filter) the result's images by PAR, lowest first.

    Runs after saving: files on disk are all kept; only the gallery / API order changes. A grid
    (images before index_of_first_image) and images beyond the scored ones stay where they are.
    """
    start = int(getattr(processed, "index_of_first_image", 0) or 0)
    n = len(scores)
    if n == 0 or sorted(scores) != list(range(n)) or len(processed.images) < start + n:
        print(f"[{TITLE}] batch ranking skipped: {n} scores do not match {len(processed.images) - start} images",
              file=sys.stderr)
        return
    order, _ = _core("core.par").rank_by_par([scores[i] for i in range(n)],
                                             max_par=max_par if max_par > 0 else None)
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
    if order and isinstance(infotexts, list) and len(infotexts) > start:
        processed.info = infotexts[start]  # what the UI shows for the first image
    seeds = getattr(processed, "all_seeds", None)
    if order and isinstance(seeds, list) and len(seeds) >= len(order):
        processed.seed = seeds[0]


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
    @app.get("/pal/v1/args")
    def pal_args():
        """The alwayson_scripts argument order with defaults, and the selectable models."""
        return {"title": TITLE, "args": [{"index": i, "name": n, "default": dflt, "label": lab}
                                         for i, (n, dflt, lab) in enumerate(ARG_SPECS)],
                "models": model_choices()}


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
