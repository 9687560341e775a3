"""Run the frontend extension's JS unit tests (Node's built-in runner) as part of the suite."""

import shutil
import subprocess

import pytest


def test_web_extension_js_unit_tests(repo_root):
    node = shutil.which("node")
    if node is None:  # CI machines have Node.js; a dev box without it gets a visible skip
        pytest.skip("node is not installed: cannot run tests/web/*.test.mjs")
    files = sorted(str(p) for p in (repo_root / "tests" / "web").glob("*.test.mjs"))
    assert files, "no JS tests found"
    out = subprocess.run([node, "--test", *files], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "# fail 0" in out.stdout
