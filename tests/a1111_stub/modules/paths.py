"""Stand-in for `modules.paths` (tests set `models_path` to a tmp dir)."""

import os
import tempfile

script_path = os.path.join(tempfile.gettempdir(), "a1111_stub_webui")
models_path = os.path.join(script_path, "models")
