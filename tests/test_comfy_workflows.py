"""Example workflows: committed files match build.py, and every node/link validates against
the pack's INPUT_TYPES/RETURN_TYPES and the hard-coded core node table (ComfyUI v0.3.64)."""

from __future__ import annotations

import importlib.util
import json

import pytest


@pytest.fixture(scope="module")
def build(repo_root):
    spec = importlib.util.spec_from_file_location("pal_examples_build", repo_root / "example_workflows" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def specs(build):
    return build.node_specs()


def _api_files(repo_root):
    return sorted((repo_root / "example_workflows" / "api").glob("*.json"))


def test_committed_files_are_current(build):
    for path, text in build.build().items():
        assert path.is_file(), f"{path.name} missing: run python example_workflows/build.py"
        assert path.read_text() == text, f"{path.name} is stale: run python example_workflows/build.py"


def test_template_folder_layout(repo_root):
    ui = sorted(p.name for p in (repo_root / "example_workflows").glob("*.json"))
    assert ui == ["01_detect_and_score.json", "02_txt2img_zoom_inpaint.json", "03_batch_sort_best_k.json",
                  "04_txt2img_autofix.json"]
    for name in ui:
        assert (repo_root / "example_workflows" / "api" / name).is_file()


def _compatible(out_t, in_t):
    return in_t == "*" or out_t == "*" or out_t in in_t.split(",") or (in_t == "COMBO" and out_t == "COMBO")


@pytest.mark.parametrize("name", ["01_detect_and_score", "02_txt2img_zoom_inpaint", "02_zoom_inpaint_standin",
                                  "03_batch_sort_best_k", "04_txt2img_autofix"])
def test_api_workflow_validates(repo_root, specs, name):
    from comfyui_pal.pal_nodes import NODE_CLASS_MAPPINGS

    wf = json.loads((repo_root / "example_workflows" / "api" / f"{name}.json").read_text())
    assert any(specs[n["class_type"]].get("output_node") for n in wf.values()), "no output node"
    for nid, node in wf.items():
        cls = node["class_type"]
        assert cls in specs, f"{nid}: unknown node type {cls}"
        spec = {n: (t, w) for n, t, w in specs[cls]["inputs"]}
        pal = NODE_CLASS_MAPPINGS.get(cls)
        required = pal.INPUT_TYPES()["required"] if pal else spec
        for req in required:
            assert req in node["inputs"], f"{nid} {cls}: missing required input {req}"
        for iname, v in node["inputs"].items():
            assert iname in spec, f"{nid} {cls}: unknown input {iname}"
            t, is_widget = spec[iname]
            if isinstance(v, list):
                src = wf[v[0]]
                outs = specs[src["class_type"]]["outputs"]
                assert v[1] < len(outs), f"{nid}.{iname}: {src['class_type']} has no output {v[1]}"
                assert _compatible(outs[v[1]], t), f"{nid}.{iname}: {outs[v[1]]} -> {t}"
            else:
                assert is_widget, f"{nid} {cls}: socket input {iname} needs a link"
                if pal:  # check PAL widget values like ComfyUI's validation
                    sect = "required" if iname in pal.INPUT_TYPES()["required"] else "optional"
                    decl = pal.INPUT_TYPES()[sect][iname]
                    if isinstance(decl[0], list) and iname != "model_name":
                        assert v in decl[0], f"{nid}.{iname}={v!r} not in {decl[0]}"
                    opts = decl[1]
                    if "min" in opts:
                        assert opts["min"] <= v <= opts["max"], f"{nid}.{iname}={v} out of range"
    images = [n["inputs"]["image"] for n in wf.values() if n["class_type"] == "LoadImage"]
    for im in images:
        assert (repo_root / "example_workflows" / "api" / im).is_file(), f"input image {im} not committed"


@pytest.mark.parametrize("name", ["01_detect_and_score", "02_txt2img_zoom_inpaint", "03_batch_sort_best_k",
                                  "04_txt2img_autofix"])
def test_ui_workflow_links_are_consistent(repo_root, specs, name):
    wf = json.loads((repo_root / "example_workflows" / f"{name}.json").read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_link_id"] == len(wf["links"]) and wf["last_node_id"] == max(nodes)
    for lid, src, sslot, dst, dslot, t in wf["links"]:
        s, d = nodes[src], nodes[dst]
        assert s["type"] in specs and d["type"] in specs
        assert specs[s["type"]]["outputs"][sslot] == t
        assert lid in s["outputs"][sslot]["links"]
        assert d["inputs"][dslot]["link"] == lid and _compatible(t, d["inputs"][dslot]["type"])
    for n in wf["nodes"]:
        spec = specs[n["type"]]
        n_widgets = sum(1 for _, _, w in spec["inputs"] if w) + len(spec.get("control_after_generate", [])) \
            + (1 if n["type"] == "LoadImage" else 0)
        linked_widgets = sum(1 for i in n["inputs"] if "widget" in i)
        assert len(n["widgets_values"]) == n_widgets - linked_widgets, n["type"]
