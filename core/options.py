"""The one option schema: every user-facing fix/detect option, defined once for every host.

Like ADetailer's ``args.py``: each option has its name, type, default, range, step, help text and
the hosts that show it. The ComfyUI ``INPUT_TYPES`` (:func:`comfy_input`), the A1111 script's
arguments, UI and API schema (:func:`for_host`, :func:`validate`, :func:`json_schema`) and the
CLI's argparse flags (:func:`add_cli_arguments`) are generated from it. Hosts may hide options and
choose their order, never redefine them.

A name may appear once per host: ``steps`` means "0 = same as the generation" in A1111 and is a
plain sampler step count in ComfyUI, so the two are separate options with disjoint hosts.

Host-free: no torch, no ComfyUI, no A1111.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HOSTS = frozenset({"comfy", "a1111", "cli"})
ALL = HOSTS

INPAINT_MODES = ("auto", "noise mask", "inpaint model conditioning", "VAEEncodeForInpaint")


class OptionError(ValueError):
    """A bad option value; the message names the option, the value, what is allowed and the fix."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # "bool" | "int" | "float" | "str" | "choice"
    default: Any
    help: str
    label: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple = ()
    hosts: frozenset = ALL
    aliases: tuple = ()
    auto: Any = None  # the value meaning "auto" (chosen by the host or the model), if any
    multiple_of: int | None = None  # besides `auto`, the value must be a multiple of this
    extra: Mapping = field(default_factory=dict)  # host-only widget hints, e.g. ComfyUI "multiline"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value):
        """value (str/number/bool from a UI, an API or a CLI) -> this option's type, checked."""
        try:
            if self.kind == "bool":
                if isinstance(value, str):
                    v = value.strip().lower()
                    if v not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError
                    return v in ("1", "true", "yes", "on")
                if not isinstance(value, (bool, int, float)):
                    raise ValueError
                return bool(value)
            if self.kind == "int":
                if isinstance(value, bool):
                    raise ValueError
                f = float(value)
                if f != int(f):
                    raise ValueError
                v = int(f)
            elif self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                v = float(value)
                if v != v or v in (float("inf"), float("-inf")):
                    raise ValueError
            elif self.kind == "choice":
                v = str(value)
                if v not in self.choices:
                    raise OptionError(self.name, f"{self.name} = {value!r} is not one of {list(self.choices)}; "
                                                 f"pick one of those")
                return v
            else:
                return "" if value is None else str(value)
        except (TypeError, ValueError, OverflowError):
            raise OptionError(self.name, f"{self.name} = {value!r} is not {_article(self.kind)}; "
                                         f"{self.describe()}") from None
        if self.auto is not None and v == self.auto:
            return v
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise OptionError(self.name, f"{self.name} = {value!r} is out of range; {self.describe()}")
        if self.multiple_of and v % self.multiple_of:
            raise OptionError(self.name, f"{self.name} = {value!r} is not a multiple of {self.multiple_of}; "
                                         f"{self.describe()}")
        return v

    def describe(self) -> str:
        """The allowed values, in words (for errors and help)."""
        if self.kind == "choice":
            return f"use one of {list(self.choices)}"
        if self.kind == "bool":
            return "use true or false"
        parts = []
        if self.min is not None or self.max is not None:
            parts.append(f"use a value from {_num(self.min)} to {_num(self.max)}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.auto is not None:
            parts.append(f"or {_num(self.auto)} for auto")
        return ", ".join(parts) or f"use {_article(self.kind)}"


def _article(kind: str) -> str:
    return {"int": "a whole number", "float": "a number", "bool": "true/false", "str": "text"}.get(kind, kind)


def _num(x) -> str:
    return "any" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


C, A, L = "comfy", "a1111", "cli"


def _h(*hosts) -> frozenset:
    return frozenset(hosts)


OPTIONS: tuple[Option, ...] = (
    # --- detection
    Option("threshold", "float", 0.5, "Artifact probability threshold: a pixel is artifact when its probability "
           "is above this (0.5 = the official argmax, so PAR matches the paper).",
           "Artifact threshold", min=0.01, max=0.99, step=0.01),
    # --- regions and crops (core.crop.plan_crops)
    Option("zoom", "float", 1.5, "Crop side = zoom x the region's longest side (1.5 = the paper).",
           "Crop zoom", min=1.0, max=4.0, step=0.05),
    Option("size", "int", 0, "Working size every crop is resized to for inpainting; 0 = auto: the generation "
           "size in A1111, the model's native size in ComfyUI Auto Fix (1024 for SDXL-class models, else 512), "
           "512 elsewhere.", "Inpaint size (0 = auto)", min=16, max=4096, step=8, auto=0, multiple_of=8,
           aliases=("inpaint_size",)),
    Option("min_side", "int", 64, "Smallest crop side in image pixels.", "Min crop side", min=8, max=4096,
           step=8, hosts=_h(L)),
    Option("overflow", "choice", "fit", "A crop larger than the image: shrink it to fit (the report says the rule "
           "was capped) or reflect-pad the image.", "Overflow", choices=("fit", "pad"), hosts=_h(L)),
    Option("dilation", "int", -1, "Grow the mask by this many pixels before splitting it into regions; -1 = auto "
           "(the official 5x5 kernel x5 at 512 scale, scaled to the image); 0 = off.", "Mask dilation px",
           min=0, max=512, step=1, auto=-1, aliases=("dilate",)),
    Option("min_area", "int", 16, "Ignore regions with fewer artifact pixels than this (before dilation).",
           "Min region area (px)", min=0, max=1 << 20, step=1),
    Option("max_regions", "int", 8, "Fix at most this many regions per image per round; 0 = all.", "Max regions",
           min=0, max=256, step=1),
    Option("order", "choice", "area", "Which regions first: largest area, or highest PAR contribution.",
           "Region order", choices=("area", "score")),
    Option("merge_overlap", "float", 0.0, "Merge regions whose crops overlap by at least this fraction; 0 = off.",
           "Merge overlap", min=0.0, max=1.0, step=0.05, hosts=_h(C, L)),
    # --- blending and refinement (core.composite / core.fix)
    Option("feather", "int", -1, "Blend fade width in image pixels when pasting a crop back; -1 = auto "
           "(~ crop side / 16).", "Feather px", min=0, max=512, step=1, auto=-1, hosts=_h(C, L)),
    Option("color_match", "bool", False, "Match each patch's colour and tone (Lab mean/std) to the ring around it.",
           "Colour match"),
    Option("par_guard", "bool", False, "Re-detect after fixing and keep a region's fix only if its artifact "
           "ratio went down.", "PAR guard", aliases=("guard",)),
    Option("rounds", "int", 1, "Detect-and-fix passes, each on the previous result.", "Rounds", min=1, max=8,
           step=1),
    # --- the host's inpainting sampler
    Option("denoise", "float", 0.5, "How much of each crop's masked area is re-generated (1 = from scratch).",
           "Denoising strength", min=0.0, max=1.0, step=0.01, hosts=_h(C, A), aliases=("denoising_strength",)),
    Option("inpaint_mode", "choice", "auto", "How crops are conditioned: auto = inpaint-model conditioning for "
           "inpainting models (9-channel UNet), else noise mask; noise mask = VAE-encode the real crop and "
           "re-generate only the mask (any checkpoint, any denoise); inpaint model conditioning = ComfyUI's "
           "InpaintModelConditioning; VAEEncodeForInpaint = legacy, greys the mask, inpainting checkpoints at "
           "denoise 1 only.", "Inpaint mode", choices=INPAINT_MODES, hosts=_h(C)),
    Option("seed", "int", 0, "Noise seed; round r and crop chunk k use seed + 1000 * r + k.", "Seed", min=0,
           max=0xFFFFFFFFFFFFFFFF, hosts=_h(C)),
    Option("steps", "int", 20, "Sampler steps.", "Steps", min=1, max=10000, step=1, hosts=_h(C)),
    Option("cfg", "float", 7.0, "Classifier-free guidance scale.", "CFG", min=0.0, max=100.0, step=0.1,
           hosts=_h(C)),
    Option("crop_batch", "int", 4, "Crops sampled together (lower = less memory).", "Crop batch", min=1, max=64,
           step=1, hosts=_h(C)),
    Option("grow_mask_by", "int", 6, "Latent mask growth (VAEEncodeForInpaint mode only).", "Grow mask by",
           min=0, max=64, step=1, hosts=_h(C)),
    Option("noise_mask_feather", "int", 0, "Soft noise mask: fade the re-generated area out over this many "
           "working pixels around the mask, with ComfyUI's Differential Diffusion (where it exists); 0 = hard "
           "mask.", "Noise mask feather", min=0, max=256, step=1, hosts=_h(C)),
    Option("preview", "bool", True, "Show preview images on the node (sizes are capped).", "Preview",
           hosts=_h(C)),
    # --- A1111: the nested img2img pass and batch handling
    Option("enabled", "bool", False, "Run PAL Auto-Fix on every generated image.", "Enable PAL Auto-Fix",
           hosts=_h(A)),
    Option("model", "str", "Default", "Detector: 'Default' (the setting), a file in models/pal, a path, a registry "
           "name or hf:owner/repo.", "Detector model", hosts=_h(A)),
    Option("mask_blur", "int", 4, "img2img mask blur of the nested inpaint pass.", "Mask blur", min=0, max=64,
           step=1, hosts=_h(A)),
    Option("steps", "int", 0, "Steps of the inpaint pass; 0 = same as the generation.", "Steps (0 = same)",
           min=0, max=150, step=1, hosts=_h(A)),
    Option("cfg_scale", "float", 0.0, "CFG scale of the inpaint pass; 0 = same as the generation.",
           "CFG scale (0 = same)", min=0.0, max=30.0, step=0.5, hosts=_h(A)),
    Option("sampler", "str", "Use same sampler", "Sampler of the inpaint pass.", "Sampler", hosts=_h(A)),
    Option("prompt", "str", "", "Prompt of the inpaint pass; empty = the main prompt; [PROMPT] inserts it.",
           "Prompt", hosts=_h(A)),
    Option("negative_prompt", "str", "", "Negative prompt; empty = the main one; [PROMPT] inserts it.",
           "Negative prompt", hosts=_h(A)),
    Option("score_only", "bool", False, "Only score (PAR in the infotext), don't fix.", "Only score, don't fix",
           hosts=_h(A)),
    Option("rank_batch", "bool", False, "Rank the batch by PAR, lowest first.", "Rank batch by PAR", hosts=_h(A)),
    Option("max_par", "float", 0.0, "Drop images above this PAR from the result; 0 = keep all. When every image "
           "is above it, the lowest-PAR one is kept and its infotext says so (never an empty result).",
           "Max PAR (0 = keep all)", min=0.0, max=1.0, step=0.005, hosts=_h(A)),
    Option("skip_img2img", "bool", False, "img2img only: fix the input image itself, without a first img2img pass "
           "(like ADetailer's skip img2img); not with an inpaint mask.", "PAL only: skip img2img", hosts=_h(A)),
    Option("save_before", "bool", False, "Also save the image as it was before the fix (suffix -pal-before), next to "
           "the output.", "Save the image before the fix", hosts=_h(A)),
    Option("save_previews", "bool", False, "Save a before/after preview with the artifact overlay and the crop boxes "
           "(suffix -pal-preview), next to the output.", "Save before/after previews", hosts=_h(A)),
)


def _index() -> dict[tuple[str, str], Option]:
    idx: dict[tuple[str, str], Option] = {}
    for o in OPTIONS:
        for host in o.hosts:
            for n in (o.name, *o.aliases):
                if (n, host) in idx:
                    raise RuntimeError(f"option schema: {n!r} defined twice for host {host!r}")
                idx[(n, host)] = o
    return idx


_BY_HOST = _index()


def _check_host(host: str) -> None:
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; use one of {sorted(HOSTS)}")


def get(name: str, host: str | None = None) -> Option:
    """The option called ``name`` (or an alias). Without a host, only names shared by all hosts that show
    them are unambiguous."""
    if host is not None:
        _check_host(host)
        try:
            return _BY_HOST[(name, host)]
        except KeyError:
            raise OptionError(name, f"unknown option {name!r} for {host}; valid: {names(host)}") from None
    found = list({id(o): o for (n, _h2), o in _BY_HOST.items() if n == name}.values())
    if len(found) == 1:
        return found[0]
    if not found:
        raise OptionError(name, f"unknown option {name!r}; valid: {sorted({o.name for o in OPTIONS})}")
    raise OptionError(name, f"option {name!r} differs per host; pass host=")


def for_host(host: str) -> list[Option]:
    _check_host(host)
    return [o for o in OPTIONS if host in o.hosts]


def names(host: str) -> list[str]:
    return [o.name for o in for_host(host)]


def defaults(host: str) -> dict:
    return {o.name: o.default for o in for_host(host)}


def validate(values: Mapping, host: str, *, fill: bool = True) -> dict:
    """Values by name (aliases accepted) -> canonical names, coerced and checked. ``None`` means the default.

    Unknown names raise :class:`OptionError` listing the valid ones; ``fill`` adds defaults for the rest.
    """
    _check_host(host)
    out: dict = dict(defaults(host)) if fill else {}
    for key, value in values.items():
        o = _BY_HOST.get((str(key), host))
        if o is None:
            raise OptionError(str(key), f"unknown option {key!r}; valid names: {names(host)}")
        out[o.name] = o.default if value is None else o.coerce(value)
    return out


# ----------------------------------------------------------------------------- host generators
_COMFY_TYPES = {"bool": "BOOLEAN", "int": "INT", "float": "FLOAT", "str": "STRING"}


def comfy_input(name: str, **extra) -> tuple:
    """One ComfyUI ``INPUT_TYPES`` entry, e.g. ``("FLOAT", {"default": 0.5, "min": 0.01, ...})``."""
    o = get(name, "comfy")
    spec: dict = {"default": o.default}
    if o.kind in ("int", "float"):
        lo = o.min if o.auto is None or o.min is None else min(o.min, o.auto)
        spec.update(min=lo, max=o.max)
        if o.step is not None:
            spec["step"] = o.step
    spec["tooltip"] = o.help
    spec.update(o.extra)
    spec.update(extra)
    if o.kind == "choice":
        return (list(o.choices), spec)
    return (_COMFY_TYPES[o.kind], spec)


def comfy_inputs(option_names: Iterable[str], **extra_by_name) -> dict:
    return {n: comfy_input(n, **extra_by_name.get(n, {})) for n in option_names}


def _cli_type(o: Option):
    def parse(text: str):
        if o.auto is not None and text == "auto":
            return o.auto
        try:
            return o.coerce(text)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = o.kind  # argparse shows it in "invalid <name> value"
    return parse


def add_cli_arguments(parser, option_names: Iterable[str]) -> None:
    """Add ``--kebab-case`` flags (aliases too) for these options, help and defaults from the schema."""
    for n in option_names:
        o = get(n, "cli")
        flags = [o.flag, *("--" + a.replace("_", "-") for a in o.aliases)]
        help_text = f"{o.help} ({_cli_default(o)})"
        if o.kind == "bool":
            parser.add_argument(*flags, dest=o.name, action=argparse.BooleanOptionalAction, default=o.default,
                                help=help_text)
        elif o.kind == "choice":
            parser.add_argument(*flags, dest=o.name, choices=o.choices, default=o.default, help=help_text)
        else:
            parser.add_argument(*flags, dest=o.name, type=_cli_type(o), default=o.default, help=help_text,
                                metavar=o.kind.upper() if o.auto is None else f"{o.kind.upper()}|auto")


def _cli_default(o: Option) -> str:
    if o.auto is not None and o.default == o.auto:
        return "default: auto"
    return f"default: {o.default}"


def cli_values(namespace, option_names: Iterable[str]) -> dict:
    return validate({n: getattr(namespace, get(n, "cli").name) for n in option_names}, "cli", fill=False)


def json_schema(host: str) -> dict:
    """Names, types, defaults and ranges, e.g. for A1111's ``GET /pal/v1/schema``."""
    rows = []
    for o in for_host(host):
        row = {"name": o.name, "type": o.kind, "default": o.default, "label": o.label or o.name,
               "help": o.help}
        for k in ("min", "max", "step", "auto", "multiple_of"):
            if getattr(o, k) is not None:
                row[k] = getattr(o, k)
        if o.choices:
            row["choices"] = list(o.choices)
        if o.aliases:
            row["aliases"] = list(o.aliases)
        rows.append(row)
    return {"host": host, "options": rows}
