"""PAL Auto-Fix for AUTOMATIC1111 / Forge: the Script class only (like ADetailer's scripts/!adetailer.py).

Detect perceptual artifacts after generation, inpaint each region with a nested img2img pass on a
zoomed crop, write PAR into the infotext, optionally rank the batch by PAR. The webui glue lives
in ``comfyui_pal.a1111`` (host.py: settings, models, nested pass, ranking, routes; ui.py: the
panel; args.py: positional order, dict form, infotext keys), the rest in the host-free core.

API: ``"alwayson_scripts": {"PAL Auto-Fix": {"args": [{"enabled": true, "threshold": 0.4}]}}``
(by name), or positional in ``comfyui_pal.a1111.args.ARG_ORDER``. ``GET /pal/v1/schema`` lists both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from modules import script_callbacks, scripts

PACKAGE = "comfyui_pal"
# A1111 loads this file by path with the extension folder first on sys.path; the folder's own
# name (e.g. "comfyui-pal") is not importable, so the package is mapped by location.
EXT_DIR = Path(__file__).resolve().parent.parent


def _package():
    """`comfyui_pal`: an already imported one (e.g. pip-installed), else this extension's folder under
    that name. The root __init__.py (the ComfyUI entry point) is deliberately not executed."""
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, EXT_DIR / "__init__.py", submodule_search_locations=[str(EXT_DIR)]
        )
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pkg
    return pkg


_package()
host = importlib.import_module(f"{PACKAGE}.a1111.host")
pal_args = importlib.import_module(f"{PACKAGE}.a1111.args")
pal_ui = importlib.import_module(f"{PACKAGE}.a1111.ui")


class PALAutoFixScript(scripts.Script):
    def title(self):
        return pal_args.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        components, self.infotext_fields = pal_ui.build(is_img2img)
        self.paste_field_names = pal_ui.paste_field_names()
        return components

    def before_process(self, p, *args):
        host.before_process(p, args)

    def before_process_batch(self, p, *args, **kwargs):
        host.before_process_batch(p)

    def process(self, p, *args):
        host.process(p, args)

    def postprocess_image(self, p, pp, *args):
        host.postprocess_image(p, pp, args)

    def postprocess(self, p, processed, *args):
        host.postprocess(p, processed, args)


script_callbacks.on_ui_settings(host.on_ui_settings)
script_callbacks.on_app_started(host.on_app_started)
