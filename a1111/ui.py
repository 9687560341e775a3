"""The PAL Auto-Fix panel for A1111 / Forge, generated from the option schema (core/options.py).

Component types, labels, defaults and slider ranges come from each option; only the layout (which
options share a row) and the dynamic choices (models, samplers) are decided here.
"""

from __future__ import annotations

from ..core import options as O
from . import args as A
from . import host

# Layout only: every option of the schema appears exactly once (checked below).
ROWS: tuple[tuple[str, ...], ...] = (
    ("model", "threshold"),
    ("zoom", "size"),
    ("dilation", "min_area", "max_regions", "order"),
    ("denoise", "mask_blur"),
    ("steps", "cfg_scale", "sampler"),
    ("prompt",),
    ("negative_prompt",),
    ("par_guard", "color_match", "rounds"),
    ("score_only", "rank_batch", "max_par"),
    ("skip_img2img", "save_before", "save_previews"),
)
if sorted(n for r in ROWS for n in r) != sorted(n for n in A.ARG_ORDER if n != "enabled"):
    raise RuntimeError("a1111/ui.py ROWS must list every A1111 option except 'enabled' exactly once")

MAX_SLIDER_STEPS = 4096  # wider ranges (e.g. min_area up to 1M px) get a number box instead


def slider_range(o: O.Option) -> tuple[float, float, float]:
    """(minimum, maximum, step) of the option's slider, with the 'auto' sentinel selectable."""
    lo = o.min if o.auto is None else min(o.min, o.auto)
    step = o.step if o.step is not None else (1 if o.kind == "int" else 0.01)
    return lo, o.max, step


def component(gr, o: O.Option, elem_id: str, *, is_img2img: bool, choices: dict):
    kw = dict(label=o.label or o.name, value=o.default, elem_id=elem_id)
    if o.name in choices:
        return gr.Dropdown(choices=choices[o.name], allow_custom_value=(o.name == "model"), **kw)
    if o.kind == "bool":
        if o.name == "skip_img2img":
            kw["visible"] = is_img2img
        return gr.Checkbox(**kw)
    if o.kind == "choice":
        return gr.Dropdown(choices=list(o.choices), **kw)
    if o.kind == "str":
        return gr.Textbox(lines=2, **kw)
    lo, hi, step = slider_range(o)
    if (hi - lo) / step > MAX_SLIDER_STEPS:
        return gr.Number(minimum=lo, maximum=hi, step=step, precision=0 if o.kind == "int" else None, **kw)
    return gr.Slider(minimum=lo, maximum=hi, step=step, **kw)


def samplers() -> list[str]:
    try:
        from modules import sd_samplers

        return [A.SAME_SAMPLER] + [s.name for s in sd_samplers.all_samplers]
    except Exception:
        return [A.SAME_SAMPLER]


def build(is_img2img: bool):
    """-> (components in ARG_ORDER, infotext_fields). Must run inside the script's ui()."""
    import gradio as gr

    tab = "img2img" if is_img2img else "txt2img"

    def eid(name):
        return f"pal_autofix_{tab}_{name}"

    try:
        from modules.ui_components import InputAccordion
    except ImportError:  # webui < 1.7: plain accordion plus a checkbox
        InputAccordion = None
    choices = {"model": host.model_choices(), "sampler": samplers()}
    comps = {}

    def inner():
        for row in ROWS:
            with gr.Row():
                for name in row:
                    comps[name] = component(gr, O.get(name, A.HOST), eid(name), is_img2img=is_img2img,
                                            choices=choices)

    en = O.get("enabled", A.HOST)
    if InputAccordion is not None:
        with InputAccordion(en.default, label=A.TITLE, elem_id=eid("enabled")) as enabled:
            inner()
    else:
        with gr.Accordion(A.TITLE, open=False):
            enabled = gr.Checkbox(label=en.label, value=en.default, elem_id=eid("enabled"))
            inner()
    comps["enabled"] = enabled
    return [comps[n] for n in A.ARG_ORDER], infotext_fields(comps)


def infotext_fields(comps: dict) -> list[tuple]:
    """(component, key) pairs for "paste parameters": callables so an option the infotext does not
    mention gets its default, and non-PAL infotexts leave the panel alone."""
    return [(comps[name], (lambda params, n=name: A.restore_value(n, params))) for name in A.ARG_ORDER]


def paste_field_names() -> list[str]:
    return [A.INFOTEXT[n] for n in A.ARG_ORDER if n in A.INFOTEXT]
