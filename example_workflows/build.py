"""Regenerates the example workflows (UI format here, API format in api/) from one description.

    python example_workflows/build.py

ComfyUI lists only `example_workflows/*.json` as templates, so this script and api/ are ignored
by the template browser. tests/test_comfy_workflows.py checks the committed files equal what
this produces and validates every link against the nodes' INPUT_TYPES / RETURN_TYPES.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Core ComfyUI nodes used by the examples, from nodes.py / comfy_extras at v0.3.64 (a125cd84):
# inputs in INPUT_TYPES order as (name, type, is_widget); outputs = RETURN_TYPES.
CORE_NODES = {
    "LoadImage": {"inputs": [("image", "COMBO", True)], "outputs": ["IMAGE", "MASK"]},
    "SaveImage": {"inputs": [("images", "IMAGE", False), ("filename_prefix", "STRING", True)], "outputs": [],
                  "output_node": True},
    "PreviewImage": {"inputs": [("images", "IMAGE", False)], "outputs": [], "output_node": True},
    "MaskToImage": {"inputs": [("mask", "MASK", False)], "outputs": ["IMAGE"]},
    "ImageBatch": {"inputs": [("image1", "IMAGE", False), ("image2", "IMAGE", False)], "outputs": ["IMAGE"]},
    "ImageBlur": {"inputs": [("image", "IMAGE", False), ("blur_radius", "INT", True), ("sigma", "FLOAT", True)],
                  "outputs": ["IMAGE"]},
    "PreviewAny": {"inputs": [("source", "*", False)], "outputs": [], "output_node": True},
    "CheckpointLoaderSimple": {"inputs": [("ckpt_name", "COMBO", True)], "outputs": ["MODEL", "CLIP", "VAE"]},
    "CLIPTextEncode": {"inputs": [("text", "STRING", True), ("clip", "CLIP", False)], "outputs": ["CONDITIONING"]},
    "EmptyLatentImage": {"inputs": [("width", "INT", True), ("height", "INT", True), ("batch_size", "INT", True)],
                         "outputs": ["LATENT"]},
    "KSampler": {"inputs": [("model", "MODEL", False), ("seed", "INT", True), ("steps", "INT", True),
                            ("cfg", "FLOAT", True), ("sampler_name", "COMBO", True), ("scheduler", "COMBO", True),
                            ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False),
                            ("latent_image", "LATENT", False), ("denoise", "FLOAT", True)],
                 "outputs": ["LATENT"]},
    "VAEDecode": {"inputs": [("samples", "LATENT", False), ("vae", "VAE", False)], "outputs": ["IMAGE"]},
    "VAEEncodeForInpaint": {"inputs": [("pixels", "IMAGE", False), ("vae", "VAE", False), ("mask", "MASK", False),
                                       ("grow_mask_by", "INT", True)], "outputs": ["LATENT"]},
    "VAEEncode": {"inputs": [("pixels", "IMAGE", False), ("vae", "VAE", False)], "outputs": ["LATENT"]},
    "SetLatentNoiseMask": {"inputs": [("samples", "LATENT", False), ("mask", "MASK", False)], "outputs": ["LATENT"]},
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CKPT = "v1-5-pruned-emaonly.safetensors"  # the checkpoint ComfyUI's default workflow uses
POS = "a portrait photo of an astronaut, detailed, sharp focus"
NEG = "blurry, deformed, artifacts, watermark"


def L(node, slot=0):  # a link to output `slot` of node `node`
    return [str(node), slot]


def pal_spec(cls) -> dict:
    it = cls.INPUT_TYPES()
    ins = []
    for sect in ("required", "optional"):
        for name, v in it.get(sect, {}).items():
            t = v[0] if isinstance(v[0], str) else "COMBO"
            opts = v[1] if len(v) > 1 else {}
            ins.append((name, t, t in WIDGET_TYPES and not opts.get("forceInput", False)))
    return {"inputs": ins, "outputs": list(cls.RETURN_TYPES), "output_node": getattr(cls, "OUTPUT_NODE", False),
            "control_after_generate": [n for n, v in it["required"].items()
                                       if len(v) > 1 and v[1].get("control_after_generate")]}


def node_specs() -> dict:
    """Core specs + the pack's, loading the pack by path the way ComfyUI does."""
    import importlib.util

    name = "pal_examples_pack"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "__init__.py",
                                                      submodule_search_locations=[str(HERE.parent)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    specs = {k: dict(v) for k, v in CORE_NODES.items()}
    specs["KSampler"]["control_after_generate"] = ["seed"]
    specs.update({k: pal_spec(c) for k, c in mod.NODE_CLASS_MAPPINGS.items()})
    return specs


LOADER = ("PALModelLoader", {"model_name": "pal-starter", "device": "auto", "precision": "auto", "hub_id": ""})
CROP_OPTS = {"zoom": 1.5, "size": 0, "min_area": 16, "max_regions": 8, "dilation": -1, "feather": -1}


def txt2img(batch=1, seed=42):
    return {
        "1": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "2": ("CLIPTextEncode", {"text": POS, "clip": L(1, 1)}),
        "3": ("CLIPTextEncode", {"text": NEG, "clip": L(1, 1)}),
        "4": ("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": batch}),
        "5": ("KSampler", {"model": L(1), "seed": seed, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                           "scheduler": "normal", "positive": L(2), "negative": L(3), "latent_image": L(4),
                           "denoise": 1.0}),
        "6": ("VAEDecode", {"samples": L(5), "vae": L(1, 2)}),
    }


def zoom_tail(image, inpaint):
    """PALDetect -> PALZoomCrop -> `inpaint` (dict of nodes fed by crops 13/0 and masks 13/1) -> composite."""
    g = {
        "10": LOADER,
        "11": ("PALDetect", {"pal_model": L(10), "image": image, "threshold": 0.5, "dilation": 0, "preview": True}),
        "13": ("PALZoomCrop", {"image": image, "mask": L(11), **CROP_OPTS, "threshold": 0.5, "order": "area",
                               "merge_overlap": 0.0}),
        "14": ("PreviewImage", {"images": L(13)}),
    }
    g.update(inpaint)
    g["20"] = ("PALComposite", {"image": image, "inpainted": L(19), "stitch": L(13, 2), "feather": -1,
                                "color_match": False, "preview": True})
    g["21"] = ("SaveImage", {"images": L(20), "filename_prefix": "pal_fixed"})
    g["22"] = ("PALScore", {"image": L(20), "threshold": 0.5, "pal_model": L(10)})
    return g


WORKFLOWS = {
    "01_detect_and_score": {
        "1": ("LoadImage", {"image": "pal_astronaut.png"}),
        "10": LOADER,
        "11": ("PALDetect", {"pal_model": L(10), "image": L(1), "threshold": 0.5, "dilation": 0, "preview": True}),
        "12": ("MaskToImage", {"mask": L(11)}),
        "13": ("SaveImage", {"images": L(12), "filename_prefix": "pal_mask"}),
        "14": ("MaskToImage", {"mask": L(11, 1)}),
        "15": ("SaveImage", {"images": L(14), "filename_prefix": "pal_heatmap"}),
        "16": ("PALScore", {"image": L(1), "threshold": 0.5, "mask": L(11, 1)}),
        "17": ("PreviewAny", {"source": L(16, 1)}),
    },
    "02_txt2img_zoom_inpaint": {
        **txt2img(),
        **zoom_tail(L(6), {
            # noise mask on the real crop: works with any checkpoint at any denoise (VAEEncodeForInpaint
            # would grey the mask first and needs an inpainting checkpoint at denoise 1)
            "16": ("VAEEncode", {"pixels": L(13), "vae": L(1, 2)}),
            "17": ("SetLatentNoiseMask", {"samples": L(16), "mask": L(13, 1)}),
            "18": ("KSampler", {"model": L(1), "seed": 7, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                "scheduler": "normal", "positive": L(2), "negative": L(3), "latent_image": L(17),
                                "denoise": 0.6}),
            "19": ("VAEDecode", {"samples": L(18), "vae": L(1, 2)}),
        }),
    },
    "03_batch_sort_best_k": {
        "1": ("LoadImage", {"image": "pal_astronaut.png"}),
        "2": ("LoadImage", {"image": "pal_chelsea.png"}),
        "3": ("LoadImage", {"image": "pal_coffee.png"}),
        "4": ("ImageBatch", {"image1": L(1), "image2": L(2)}),
        "5": ("ImageBatch", {"image1": L(4), "image2": L(3)}),
        "10": LOADER,
        "11": ("PALSortByPAR", {"images": L(5), "order": "ascending (fewest artifacts first)", "top_k": 2,
                                "max_par": 1.0, "threshold": 0.5, "pal_model": L(10)}),
        "12": ("SaveImage", {"images": L(11), "filename_prefix": "pal_best"}),
        "13": ("PreviewImage", {"images": L(11, 3)}),
        "14": ("PreviewAny", {"source": L(11, 4)}),
    },
    "04_txt2img_autofix": {
        **txt2img(),
        "10": LOADER,
        "11": ("PALAutoFix", {"image": L(6), "pal_model": L(10), "model": L(1), "vae": L(1, 2), "positive": L(2),
                              "negative": L(3), "seed": 7, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                              "scheduler": "normal", "denoise": 0.5, "threshold": 0.5, **CROP_OPTS,
                              "rounds": 1, "par_guard": True, "crop_batch": 4, "grow_mask_by": 6,
                              "color_match": False, "inpaint_mode": "auto", "noise_mask_feather": 0,
                              "order": "area", "merge_overlap": 0.0, "preview": True}),
        "12": ("SaveImage", {"images": L(11), "filename_prefix": "pal_autofix"}),
        "13": ("PreviewAny", {"source": L(11, 4)}),
        "14": ("PreviewImage", {"images": L(11, 5)}),
    },
}

# API-only: (2) with the diffusion part replaced by a core blur, so it runs with no checkpoint
# (headless tests / CI). The crops still go through a real IMAGE round trip between the nodes.
API_ONLY = {
    "02_zoom_inpaint_standin": {
        "1": ("LoadImage", {"image": "pal_astronaut.png"}),
        **zoom_tail(L(1), {"19": ("ImageBlur", {"image": L(13), "blur_radius": 9, "sigma": 4.0})}),
    },
}


def to_api(graph: dict) -> dict:
    return {nid: {"class_type": cls, "inputs": dict(inputs)} for nid, (cls, inputs) in graph.items()}


def to_ui(graph: dict, specs: dict) -> dict:
    ids = {nid: int(nid) for nid in graph}
    links, nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for nid, (cls, inputs) in graph.items():
        spec = specs[cls]
        for name, _t, _w in spec["inputs"]:
            v = inputs.get(name)
            if isinstance(v, list):
                src, slot = ids[v[0]], v[1]
                lid = len(links) + 1
                links.append([lid, src, slot, ids[nid], None, specs[graph[v[0]][0]]["outputs"][slot]])
                out_links.setdefault((src, slot), []).append(lid)
                in_link[(ids[nid], name)] = lid
    # column layout by dependency depth
    depth: dict[str, int] = {}

    def d(n):
        if n not in depth:
            ups = [v[0] for v in graph[n][1].values() if isinstance(v, list)]
            depth[n] = 1 + max((d(u) for u in ups), default=-1)
        return depth[n]

    rows: dict[int, int] = {}
    for order, (nid, (cls, inputs)) in enumerate(sorted(graph.items(), key=lambda kv: (d(kv[0]), int(kv[0])))):
        spec = specs[cls]
        col = d(nid)
        row = rows.get(col, 0)
        rows[col] = row + 1
        node_inputs, widgets = [], []
        for name, t, is_widget in spec["inputs"]:
            v = inputs.get(name)
            if is_widget and not isinstance(v, list):
                if name in inputs:
                    widgets.append(v)
                    if name in spec.get("control_after_generate", []):
                        widgets.append("fixed")
                continue
            if name in inputs or not is_widget:
                slot = {"name": name, "type": t, "link": in_link.get((ids[nid], name))}
                if is_widget:
                    slot["widget"] = {"name": name}
                node_inputs.append(slot)
        for i, slot in enumerate(node_inputs):
            lid = slot["link"]
            if lid is not None:
                links[lid - 1][4] = i
        if cls == "LoadImage":
            widgets.append("image")  # the upload widget's value
        nodes.append({
            "id": ids[nid], "type": cls, "pos": [40 + 340 * col, 40 + 260 * row], "size": [300, 220],
            "flags": {}, "order": order, "mode": 0, "inputs": node_inputs,
            "outputs": [{"name": t, "type": t, "links": out_links.get((ids[nid], i), []), "slot_index": i}
                        for i, t in enumerate(spec["outputs"])],
            "properties": {"Node name for S&R": cls}, "widgets_values": widgets,
        })
    return {"last_node_id": max(ids.values()), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def dump(obj) -> str:
    return json.dumps(obj, indent=1) + "\n"


def build() -> dict[Path, str]:
    specs = node_specs()
    files = {}
    for name, g in WORKFLOWS.items():
        files[HERE / f"{name}.json"] = dump(to_ui(g, specs))
        files[HERE / "api" / f"{name}.json"] = dump(to_api(g))
    for name, g in API_ONLY.items():
        files[HERE / "api" / f"{name}.json"] = dump(to_api(g))
    return files


if __name__ == "__main__":
    for path, text in build().items():
        path.write_text(text)
        print(path.relative_to(HERE.parent))
