import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


class _CheckoutIsNotATestPackage:
    """The checkout's root holds ComfyUI's node-pack entry point (__init__.py), so pytest would make it a
    test Package: import it under the folder's own name ("main", "ComfyUI-PAL", or a stdlib name such as
    "email", shadowing it) and put the checkout's *parent* on sys.path (sibling ComfyUI custom-node packs
    become importable during tests). Collect the root as a plain folder instead; the package is tested
    as what it is, the installed ``comfyui_pal``. Registered as a plugin (not a conftest hook) because
    the root directory's collector is created before this folder's conftest hooks apply."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path.resolve() == ROOT and (path / "__init__.py").is_file():
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    config.pluginmanager.register(_CheckoutIsNotATestPackage(), "comfyui-pal-checkout-is-not-a-package")
    # CI machines have 2 cores; more threads than that only adds contention.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
