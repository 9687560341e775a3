"""Load the repo as ComfyUI does and check the node contract (mappings, INPUT_TYPES, RETURN_TYPES)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from comfyui_pal.pal_nodes import host

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def load_like_comfy(root):
    """nodes.py load_custom_node: the module name is the folder's full filesystem path."""
    name = str(root)
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # ComfyUI keeps it there: lazy relative imports in node functions need it
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pack(repo_root):
    return load_like_comfy(repo_root)


def test_pack_exports(pack, repo_root):
    assert pack.WEB_DIRECTORY in ("./web", "web")
    assert (repo_root / "web" / "pal.js").is_file()
    m, d = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(m) == {"PALModelLoader", "PALDetect", "PALScore", "PALSortByPAR", "PALZoomCrop", "PALComposite",
                      "PALAutoFix", "PALToSEGS"}
    assert set(d) == set(m) and all(v.startswith("PAL ") for v in d.values())


@pytest.mark.parametrize("node_id", ["PALModelLoader", "PALDetect", "PALScore", "PALSortByPAR", "PALZoomCrop",
                                     "PALComposite", "PALAutoFix", "PALToSEGS"])
def test_node_contract(pack, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    it = cls.INPUT_TYPES()
    assert set(it) <= {"required", "optional", "hidden"}
    assert cls.CATEGORY.startswith("PAL")
    assert callable(getattr(cls(), cls.FUNCTION))
    n = len(cls.RETURN_TYPES)
    assert isinstance(cls.RETURN_TYPES, tuple) and n
    assert len(cls.RETURN_NAMES) == n and len(cls.OUTPUT_TOOLTIPS) == n
    assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
    if hasattr(cls, "OUTPUT_IS_LIST"):
        assert len(cls.OUTPUT_IS_LIST) == n
    assert cls.DESCRIPTION
    # every input has a tooltip; widget defaults lie within min/max; combos have their default
    import inspect

    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    for sect in ("required", "optional"):
        for name, spec in it.get(sect, {}).items():
            assert name in params, f"{node_id}.{name} is not a parameter of {cls.FUNCTION}"
            opts = spec[1] if len(spec) > 1 else {}
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            t = spec[0]
            if isinstance(t, list):
                assert t and opts.get("default", t[0]) in t
            elif t in ("INT", "FLOAT") and "default" in opts:
                assert opts.get("min", -1e30) <= opts["default"] <= opts.get("max", 1e30)
    for name in it.get("hidden", {}):
        assert name in params


def test_same_classes_when_loaded_by_path(pack):
    # relative imports resolve inside the path-named package; nothing requires `comfyui_pal` installed
    assert pack.NODE_CLASS_MAPPINGS["PALDetect"].__module__.endswith("pal_nodes.nodes_detect")


def test_import_needs_neither_comfy_nor_torch(repo_root):
    code = textwrap.dedent(f"""
        import importlib.util, sys
        root = {str(repo_root)!r}
        spec = importlib.util.spec_from_file_location(root, root + "/__init__.py",
                                                      submodule_search_locations=[root])
        mod = importlib.util.module_from_spec(spec); sys.modules[root] = mod; spec.loader.exec_module(mod)
        assert len(mod.NODE_CLASS_MAPPINGS) == 8
        bad = [m for m in ("torch", "comfy", "folder_paths", "cv2") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_blocker_stand_in_without_comfy():
    b = host.execution_blocker(None)
    assert host.is_blocked(b) and not host.is_blocked([])


# Same name, another concept (kept: renaming an input breaks saved API workflows):
NOT_SCHEMA = {("PALDetect", "dilation"),  # grow/shrink of the output mask after thresholding (negative = erode)
              ("PALSortByPAR", "order")}  # sort direction of the images, not the region order


@pytest.mark.parametrize("node_id", ["PALDetect", "PALScore", "PALSortByPAR", "PALZoomCrop", "PALComposite",
                                     "PALAutoFix", "PALToSEGS"])
def test_option_inputs_come_from_the_one_schema(pack, node_id):
    """Every input named like a ComfyUI option of core/options.py is generated from it (same type, default,
    range, step, choices); nodes may only reword the tooltip or add widget hints."""
    from comfyui_pal.core import options as O

    schema = {o.name for o in O.for_host("comfy")}
    it = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    checked = 0
    for sect in ("required", "optional"):
        for name, spec in it.get(sect, {}).items():
            if name not in schema or (node_id, name) in NOT_SCHEMA:
                continue
            want = O.comfy_input(name)
            assert spec[0] == want[0], f"{node_id}.{name}: type {spec[0]} != schema {want[0]}"
            for k in ("default", "min", "max", "step"):
                assert spec[1].get(k) == want[1].get(k), f"{node_id}.{name}: {k} differs from the schema"
            checked += 1
    assert checked


def test_seed_tooltip_matches_the_code(pack):
    tip = pack.NODE_CLASS_MAPPINGS["PALAutoFix"].INPUT_TYPES()["required"]["seed"][1]["tooltip"]
    assert "seed + 1000 * r + k" in tip  # what nodes_zoom.PALAutoFix.fix does (tested in test_comfy_inpaint)


def test_every_node_has_a_help_page(pack, repo_root):
    # the frontend fetches /extensions/<pack folder>/docs/<NodeName>.md (WEB_DIRECTORY = ./web)
    for name in pack.NODE_CLASS_MAPPINGS:
        page = repo_root / "web" / "docs" / f"{name}.md"
        assert page.is_file(), f"web/docs/{name}.md missing"
        assert page.read_text().startswith(f"# {pack.NODE_DISPLAY_NAME_MAPPINGS[name]}")
