"""Paths the project's own docs and docstrings point to exist, inside the repository.

A reference is a path-looking token ending in a file extension, in a .md file or a .py file, that
starts with one of the repo's top-level folders (``models/weights/pal-starter.md``) or with ``./`` /
``../`` (resolved from the file that says it). ``shared/`` (the steering notes) is outside the
project, so a reference to it is stale for every user of the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_REF = re.compile(
    r"(?<![\w/.-])((?:\.\.?/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)+"
    r"\.(?:md|py|json|sh|safetensors|pth|js|toml|txt|png|jpg))(?![\w/])"
)
# Paths that name a host's folder, not one of ours (ComfyUI's models/pal download folder).
HOST_PATHS = ("models/pal/",)


def _files() -> list[Path]:
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, text=True)
    names = r.stdout.split() if r.returncode == 0 else [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")]
    return [ROOT / n for n in names
            if n.endswith((".md", ".py")) and not n.startswith("tests/fixtures/") and (ROOT / n).is_file()
            and n != "tests/test_references.py"]  # its own examples are stale on purpose


def stale_references(files, root: Path = ROOT) -> list[str]:
    tops = {p.name for p in root.iterdir() if not p.name.startswith(".")} | {"shared"}
    out = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in _REF.finditer(line):
                ref = m.group(1)
                if ref.startswith(("./", "../")):
                    target = (f.parent / ref).resolve()
                elif ref.split("/")[0] in tops and not ref.startswith(HOST_PATHS):
                    target = (root / ref).resolve()
                else:
                    continue
                if not (target.is_relative_to(root) and target.exists()):
                    out.append(f"{f.relative_to(root)}:{i}: {ref}")
    return out


def test_docs_and_docstrings_point_at_files_that_exist():
    stale = stale_references(_files())
    assert not stale, "references to files that do not exist in the repository:\n" + "\n".join(stale)


def test_the_scan_finds_a_stale_reference(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "real.md").write_text("x")
    doc = tmp_path / "models" / "a.py"
    doc.write_text('"""See models/real.md and models/weights/README.md; ../shared/docs/x.md."""\n')
    assert stale_references([doc], tmp_path) == ["models/a.py:1: models/weights/README.md",
                                                 "models/a.py:1: ../shared/docs/x.md"]
