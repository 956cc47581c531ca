"""Shared pytest fixtures: real data lookup and awkward synthetic geometries."""

from __future__ import annotations

import numpy as np
import pytest

from medcnn._testing import require_shared_data
from medcnn.volume import Geometry

#: fails the run loudly when the suite or one test exceeds its time budget (see the module)
pytest_plugins = ("budget_plugin",)


@pytest.fixture
def shared_data():
    """Root of the real annotated scans (skips when absent)."""
    return require_shared_data()


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Awkward geometries: anisotropic spacing, oblique directions, non-zero origins, flips.
AWKWARD_GEOMETRIES = {
    "ras_aniso": Geometry((17, 13, 7), (0.7, 1.3, 4.5), (-12.5, 40.25, 3.0)),
    "lps_flip": Geometry((11, 9, 8), (1.1, 0.9, 2.0), (100.0, -50.0, 7.5),
                         tuple(map(tuple, np.diag([-1.0, -1.0, 1.0])))),
    "oblique": Geometry((12, 10, 6), (0.8, 0.8, 6.5), (5.0, -7.0, 11.0),
                        tuple(map(tuple, rotation(0.3, -0.2, 0.5)))),
    "permuted": Geometry((8, 14, 10), (2.0, 1.0, 1.5), (-3.0, 2.0, -1.0),
                         tuple(map(tuple, np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)))),
}


@pytest.fixture(params=sorted(AWKWARD_GEOMETRIES))
def awkward_geometry(request) -> Geometry:
    return AWKWARD_GEOMETRIES[request.param]


def _single_torch_thread():
    """Small networks run fastest on one thread, and stay fast on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: per test: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``
one_torch_thread = pytest.fixture(_single_torch_thread, name="one_torch_thread")
#: once per module (real-data tests whose fixtures are module-scoped)
one_torch_thread_module = pytest.fixture(_single_torch_thread, scope="module", name="one_torch_thread_module")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests are collected everywhere and skipped, with the reason, without CUDA."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                                       "run `make gpu-check` on a GPU machine")
        for item in gpu_items:
            item.add_marker(skip)
