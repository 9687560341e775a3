"""Stand-in for `modules.scripts` (v1.10.1 names and call signatures; bodies are no-ops)."""

import importlib.util
import os
import sys

AlwaysVisible = object()


class PostprocessImageArgs:
    def __init__(self, image, index=None):  # Forge / A1111 1.10 pass the image index
        self.image = image
        self.index = index


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def elem_id(self, item_id):
        return f"script_{'img2img' if self.is_img2img else 'txt2img'}_{self.title().lower()}_{item_id}"


current_basedir = os.path.dirname(__file__)


def basedir():
    return current_basedir


def load_module(path, ext_dir):
    """What `modules.scripts.load_scripts` + `script_loading.load_module` do for one file."""
    global current_basedir
    saved = sys.path
    try:
        sys.path = [ext_dir] + sys.path
        current_basedir = ext_dir
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path = saved
        current_basedir = os.path.dirname(__file__)


class ScriptRunner:
    """The parts of `modules.scripts.ScriptRunner` the nested pass touches: `alwayson_scripts`, the
    ordered-callback cache `callback_map`, and `process(p)` calling each script with its arg slice."""

    def __init__(self, alwayson_scripts=()):
        self.alwayson_scripts = list(alwayson_scripts)
        self.callback_map = {}

    def process(self, p):
        for s in self.alwayson_scripts:
            s.process(p, *p.script_args[s.args_from:s.args_to])
