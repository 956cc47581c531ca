"""medcnn: 3D CNN segmentation of CT/MRI and the measurements people publish.

Importing ``medcnn`` is cheap: it pulls in numpy only. ``medcnn.volume``, ``medcnn.io``,
``medcnn.measure``, ``medcnn.metrics`` and ``medcnn.report`` never import torch;
``medcnn.models``, ``medcnn.inference`` and ``medcnn.train`` do.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from medcnn.errors import MedcnnError
from medcnn.volume import Geometry, Volume

try:
    __version__ = _metadata.version("medcnn")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0+src"

__all__ = ["Geometry", "Volume", "MedcnnError", "__version__", "read_volume", "write_volume"]


def __getattr__(name: str):
    # Lazy re-exports so `import medcnn` stays light.
    if name in ("read_volume", "write_volume"):
        from medcnn import io

        return getattr(io, name)
    raise AttributeError(f"module 'medcnn' has no attribute {name!r}")
