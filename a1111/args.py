"""PAL Auto-Fix script arguments for AUTOMATIC1111 / Forge: positional order, dict form, infotext keys.

Host-free (imports neither A1111 nor torch): every option is defined once in ``core/options.py``;
this module only fixes the *positional order* A1111's ``alwayson_scripts`` API uses, parses the two
accepted forms and maps options to infotext keys (for writing and for "paste parameters").

API args, either form:
- by name (first and only element a dict): ``{"args": [{"enabled": true, "threshold": 0.4}]}``;
  canonical names and the schema's aliases (``inpaint_size``, ``denoising_strength``, ...) are
  accepted, unknown names are an error that lists the valid ones;
- positional, in ``ARG_ORDER``: ``{"args": [true, "Default", 0.4]}``; missing trailing args keep
  their defaults. Never reorder ``ARG_ORDER``, only append (saved API calls depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..core import options as O

HOST = "a1111"
TITLE = "PAL Auto-Fix"
SAME_SAMPLER = O.get("sampler", HOST).default
DEFAULT_MODEL = O.get("model", HOST).default

# The positional API contract (index = position in "args"). The first 20 are the original order.
ARG_ORDER: tuple[str, ...] = (
    "enabled", "model", "threshold", "zoom", "size", "dilation", "min_area", "max_regions", "denoise",
    "mask_blur", "steps", "cfg_scale", "sampler", "prompt", "negative_prompt", "par_guard", "rounds",
    "score_only", "rank_batch", "max_par",
    # appended later
    "color_match", "order", "skip_img2img", "save_before", "save_previews",
)

if sorted(ARG_ORDER) != sorted(O.names(HOST)):  # the schema is the definition; this is only an order
    raise RuntimeError(f"A1111 ARG_ORDER {sorted(ARG_ORDER)} != schema options for a1111 {sorted(O.names(HOST))}")

OPTIONS: tuple[O.Option, ...] = tuple(O.get(n, HOST) for n in ARG_ORDER)
# (name, default, label): generated from the schema, kept for callers of the old ARG_SPECS.
ARG_SPECS: list[tuple] = [(o.name, o.default, o.label or o.name) for o in OPTIONS]
ARG_NAMES: list[str] = list(ARG_ORDER)
DEFAULTS: dict = {o.name: o.default for o in OPTIONS}

# Infotext keys. Options are written only when they differ from the default (plus model and
# threshold, always), so pasting restores exactly what ran. "PAL guard" doubles as a result field
# ("N rejected"): its presence means par_guard was on.
INFOTEXT: dict[str, str] = {
    "model": "PAL model", "threshold": "PAL threshold", "zoom": "PAL zoom", "size": "PAL size",
    "dilation": "PAL dilation", "min_area": "PAL min area", "max_regions": "PAL max regions",
    "denoise": "PAL denoise", "mask_blur": "PAL mask blur", "steps": "PAL steps", "cfg_scale": "PAL CFG scale",
    "sampler": "PAL sampler", "prompt": "PAL prompt", "negative_prompt": "PAL negative prompt",
    "par_guard": "PAL guard", "rounds": "PAL rounds", "score_only": "PAL score only",
    "rank_batch": "PAL rank batch", "max_par": "PAL max PAR", "color_match": "PAL colour match",
    "order": "PAL order", "skip_img2img": "PAL skip img2img", "save_before": "PAL save before",
    "save_previews": "PAL save previews",
}
ALWAYS_WRITTEN = ("model", "threshold")
# Result fields (not options). Every key starting with "PAL " is cleared per image.
RESULT_KEYS = ("PAL PAR", "PAL PAR after", "PAL regions", "PAL error", "PAL note")
MARKER_KEYS = ("PAL PAR", "PAL error")  # a pasted infotext with one of these came from a PAL run


def _enabled_value(raw) -> bool:
    try:
        return bool(O.get("enabled", HOST).coerce(raw))
    except O.OptionError:
        return True  # unreadable: treat as "on", so the bad value is reported instead of ignored


def raw_enabled(args: Sequence) -> bool:
    """Whether the user meant to run (read without validating the rest, so errors can be reported)."""
    if not args:
        return False
    first = args[0]
    if isinstance(first, Mapping):
        for key in ("enabled", *O.get("enabled", HOST).aliases):
            if key in first:
                return _enabled_value(first[key])
        return False
    return first is not None and _enabled_value(first)


def parse_args(args: Sequence) -> dict:
    """Script args (UI or API, positional or one dict) -> canonical names, validated, defaults filled.

    Raises ``core.options.OptionError`` (a ValueError) naming the argument, the value and the fix.
    """
    args = list(args)
    if args and isinstance(args[0], Mapping):
        # The webui pads the rest of the script's slots with the UI defaults: only the dict counts.
        try:
            return O.validate(dict(args[0]), HOST)
        except O.OptionError as e:
            raise O.OptionError(e.name, f"{TITLE}: {e} (args by name; GET /pal/v1/schema lists them)") from None
    if len(args) > len(ARG_ORDER):
        raise O.OptionError("args", f"{TITLE}: got {len(args)} positional args, expected at most {len(ARG_ORDER)}: "
                                    f"{list(ARG_ORDER)}")
    values = {}
    for pos, value in enumerate(args):
        if value is None:
            continue
        o = OPTIONS[pos]
        try:
            values[o.name] = o.coerce(value)
        except O.OptionError as e:
            raise O.OptionError(o.name, f"{TITLE}: argument {pos} ({o.name}): {e} (positional order: "
                                        "GET /pal/v1/schema)") from None
    return O.validate(values, HOST)


def _text(o: O.Option, value) -> str:
    if o.kind == "float":
        return f"{float(value):g}"
    return str(value)


def infotext_params(a: Mapping) -> dict:
    """The options of one run as infotext entries: non-default ones, plus model and threshold."""
    out = {}
    for o in OPTIONS:
        if o.name == "enabled" or o.name not in a:
            continue
        v = a[o.name]
        if o.name in ALWAYS_WRITTEN or v != o.default:
            out[INFOTEXT[o.name]] = "on" if o.name == "par_guard" else _text(o, v)
    return out


def restore_value(name: str, params: Mapping):
    """What "paste parameters" should put into option ``name``'s component, from a parsed infotext.

    None (leave the component alone) for infotexts without PAL fields; the default for an option
    the infotext does not mention (it was written only when different); the written value otherwise.
    """
    if not any(k in params for k in MARKER_KEYS):
        return None
    o = O.get(name, HOST)
    if name == "enabled":
        return True
    key = INFOTEXT[name]
    if name == "par_guard":
        return key in params
    if key not in params:
        return o.default
    try:
        return o.coerce(params[key])
    except O.OptionError:
        return None  # a hand-edited value: keep what the UI has


def schema() -> dict:
    """``GET /pal/v1/schema``: the schema's A1111 options, in positional order, with the infotext keys."""
    rows = {r["name"]: r for r in O.json_schema(HOST)["options"]}
    options = []
    for i, name in enumerate(ARG_ORDER):
        row = dict(rows[name], index=i)
        row["infotext"] = INFOTEXT.get(name)
        options.append(row)
    return {
        "title": TITLE,
        "host": HOST,
        "positional_order": list(ARG_ORDER),
        "options": options,
        "forms": {
            "by_name": {"alwayson_scripts": {TITLE: {"args": [{"enabled": True, "threshold": 0.5}]}}},
            "positional": {"alwayson_scripts": {TITLE: {"args": [True, DEFAULT_MODEL, 0.5]}}},
        },
        "result_infotext": list(RESULT_KEYS),
    }
