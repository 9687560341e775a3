"""The one option schema (core/options.py): coercion, ranges, aliases, generators."""

import argparse

import pytest

from comfyui_pal.core import options as O
from comfyui_pal.core.fix import FixOptions


def test_each_name_once_per_host():
    for host in O.HOSTS:
        names = O.names(host)
        assert len(names) == len(set(names)), host


@pytest.mark.parametrize("name,value,expected", [
    ("threshold", "0.4", 0.4), ("zoom", 2, 2.0), ("min_area", "16", 16), ("min_area", 3.0, 3),
    ("par_guard", "true", True), ("par_guard", "off", False), ("size", 0, 0), ("size", "768", 768),
    ("dilation", -1, -1), ("order", "score", "score"),
])
def test_coerce_ok(name, value, expected):
    got = O.get(name, "cli").coerce(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name,value,words", [
    ("threshold", 1.5, "0.01 to 0.99"), ("threshold", "abc", "not a number"), ("threshold", float("nan"), "number"),
    ("min_area", 2.5, "whole number"), ("size", 100, "multiple of 8"), ("size", 8, "out of range"),
    ("dilation", -2, "out of range"), ("order", "random", "one of"), ("par_guard", "maybe", "true or false"),
    ("rounds", 0, "1 to 8"),
])
def test_coerce_errors_name_the_option_and_the_fix(name, value, words):
    with pytest.raises(O.OptionError) as e:
        O.get(name, "cli").coerce(value)
    assert e.value.name == name and name in str(e.value) and words in str(e.value)


def test_validate_aliases_unknown_and_fill():
    v = O.validate({"inpaint_size": "768", "denoising_strength": 0.3, "guard": True}, "a1111", fill=False)
    assert v == {"size": 768, "denoise": 0.3, "par_guard": True}
    with pytest.raises(O.OptionError, match="unknown option 'treshold'.*threshold"):
        O.validate({"treshold": 0.4}, "a1111")
    full = O.validate({}, "comfy")
    assert full == O.defaults("comfy") and "inpaint_mode" in full
    assert O.validate({"threshold": None}, "cli")["threshold"] == 0.5  # None = default


def test_host_specific_names_are_separate_options():
    assert O.get("steps", "a1111").default == 0 and O.get("steps", "comfy").default == 20
    with pytest.raises(O.OptionError, match="differs per host"):
        O.get("steps")
    with pytest.raises(O.OptionError, match="unknown option 'inpaint_mode' for a1111"):
        O.get("inpaint_mode", "a1111")


def test_shared_options_have_one_definition():
    # An option shown by several hosts is one object: its default and range cannot differ per host.
    for o in O.OPTIONS:
        seen = {id(O.get(o.name, h)) for h in o.hosts}
        assert seen == {id(o)}


def test_comfy_input_from_schema():
    t, spec = O.comfy_input("threshold")
    assert t == "FLOAT" and (spec["default"], spec["min"], spec["max"], spec["step"]) == (0.5, 0.01, 0.99, 0.01)
    t, spec = O.comfy_input("dilation")
    assert t == "INT" and spec["min"] == -1  # the auto sentinel is selectable
    choices, spec = O.comfy_input("inpaint_mode")
    assert choices == list(O.INPAINT_MODES) and spec["default"] == "auto"
    assert O.comfy_input("par_guard")[0] == "BOOLEAN"


def test_cli_flags_from_schema():
    p = argparse.ArgumentParser()
    names = ["threshold", "zoom", "size", "dilation", "par_guard", "order"]
    O.add_cli_arguments(p, names)
    ns = p.parse_args(["--dilate", "auto", "--guard", "--size", "1024", "--zoom", "2"])
    assert O.cli_values(ns, names) == {"threshold": 0.5, "zoom": 2.0, "size": 1024, "dilation": -1,
                                       "par_guard": True, "order": "area"}
    assert p.parse_args(["--no-par-guard"]).par_guard is False
    with pytest.raises(SystemExit):
        p.parse_args(["--threshold", "7"])


def test_fix_options_mapping_and_core_defaults_agree():
    core = FixOptions()
    for name, field in [("zoom", "zoom"), ("threshold", "threshold"), ("min_area", "min_area"),
                        ("max_regions", "max_regions"), ("order", "order"), ("rounds", "rounds"),
                        ("color_match", "color_match"), ("par_guard", "guard")]:
        assert getattr(core, field) == O.get(name, "cli").default, name
    f = FixOptions.from_schema({"size": 0, "dilation": -1, "feather": 12, "merge_overlap": 0.0, "max_regions": 0,
                       "par_guard": True}, size=1024)
    assert (f.size, f.dilate, f.feather, f.merge_overlap, f.max_regions, f.guard) == (1024, "auto", 12, None,
                                                                                      None, True)
    assert FixOptions.from_schema({"size": 0}).size == 512


def test_json_schema():
    s = O.json_schema("a1111")
    rows = {r["name"]: r for r in s["options"]}
    assert rows["threshold"]["min"] == 0.01 and rows["size"]["aliases"] == ["inpaint_size"]
    assert [r["name"] for r in s["options"]] == O.names("a1111")
