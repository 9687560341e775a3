"""Every host exposes the one option schema: same defaults, ranges and steps in ComfyUI, A1111 and the CLI.

A host may hide an option or reword its tooltip, never redefine its default, range or step. This walks
what each host actually generates (ComfyUI INPUT_TYPES of every node, the A1111 script's argument specs
and UI widgets, the `pal fix` argparse flags) and compares it with core/options.py.
"""

from __future__ import annotations

import argparse

import pytest

from comfyui_pal.core import options as O

# Node inputs that share a name with a schema option but are another concept, kept by name because saved
# API-format workflows address inputs by name (v0.1.0). Each needs a reason; nothing else may differ.
NOT_THE_SCHEMA_OPTION = {
    ("PALSortByPAR", "order"): "sort direction of the batch, not the region order",
    ("PALDetect", "dilation"): "grows or shrinks (negative) the output MASK, not the pre-split dilation",
}


def _comfy_widgets():
    from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS

    comfy_names = {o.name for o in O.for_host("comfy")}
    for node_name, cls in NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                if name in comfy_names and (node_name, name) not in NOT_THE_SCHEMA_OPTION:
                    yield node_name, name, entry


def test_exemptions_are_real_inputs():
    from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS

    for node_name, name in NOT_THE_SCHEMA_OPTION:
        spec = NODE_CLASS_MAPPINGS[node_name].INPUT_TYPES()
        assert name in {**spec.get("required", {}), **spec.get("optional", {})}, (node_name, name)


def test_comfy_inputs_match_the_schema():
    seen = set()
    for node_name, name, (kind, spec) in _comfy_widgets():
        want_kind, want = O.comfy_input(name)
        assert kind == want_kind, (node_name, name)
        for key in ("default", "min", "max", "step"):
            assert spec.get(key) == want.get(key), (node_name, name, key, spec.get(key), want.get(key))
        seen.add(name)
    # The fix options every host shares are really on the ComfyUI side.
    assert {"threshold", "zoom", "size", "dilation", "min_area", "max_regions", "denoise", "par_guard",
            "rounds", "color_match"} <= seen


def test_a1111_arguments_match_the_schema():
    # The widgets themselves: tests/test_a1111_extension.py::test_ui_is_generated_from_the_option_schema.
    from comfyui_pal.a1111 import args as A

    assert sorted(A.ARG_NAMES) == sorted(O.names("a1111"))
    for name, default, label in A.ARG_SPECS:
        o = O.get(name, "a1111")
        assert (default, label) == (o.default, o.label or o.name), name


def test_cli_flags_match_the_schema():
    from comfyui_pal.cli import build_parser

    parser = build_parser()
    fix = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["fix"]
    by_dest = {a.dest: a for a in fix._actions}
    for o in O.for_host("cli"):
        assert o.name in by_dest, o.name
        assert by_dest[o.name].default == o.default, o.name


@pytest.mark.parametrize("name", sorted({o.name for o in O.OPTIONS if len(o.hosts) > 1}))
def test_shared_option_defaults_agree_across_hosts(name):
    """The same number reaches every host that shows the option (e.g. min_area was 16 / 64 / 0)."""
    from comfyui_pal.a1111 import args as A
    from comfyui_pal.cli import build_parser

    o = O.get(name)
    got = {}
    if "comfy" in o.hosts:
        got.update({f"comfy:{n}": spec["default"] for n, k, (_t, spec) in _comfy_widgets() if k == name})
    if "a1111" in o.hosts:
        got["a1111"] = A.DEFAULTS[name]
    if "cli" in o.hosts:
        fix = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["fix"]
        got["cli"] = next(a.default for a in fix._actions if a.dest == name)
    assert got and set(got.values()) == {o.default}, got
