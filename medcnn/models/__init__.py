"""Networks and model bundles (imports torch and MONAI).

- :func:`build_network` builds a MONAI network from a JSON-able spec
  (``{"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, ...}``).
- :func:`plan_dynunet` / :func:`dynunet_spec` plan nnU-Net-like anisotropic DynUNets.
- :func:`save_bundle` / :func:`load_bundle` write and verify bundles (safetensors weights +
  ``bundle.json``); loading never unpickles.
- :mod:`medcnn.models.importers` translates nnU-Net v2 result folders and MONAI bundles
  into bundles, once (``medcnn models import``).
"""

from __future__ import annotations

from medcnn.models.bundle import CONVERT_HINT, Bundle, load_bundle, save_bundle, sniff_model_file, update_bundle
from medcnn.models.registry import (
    NETWORK_NAMES,
    build_network,
    dynunet_spec,
    network_patch_divisor,
    plan_dynunet,
    validate_network_spec,
)

__all__ = [
    "NETWORK_NAMES",
    "build_network",
    "validate_network_spec",
    "network_patch_divisor",
    "plan_dynunet",
    "dynunet_spec",
    "Bundle",
    "save_bundle",
    "update_bundle",
    "load_bundle",
    "sniff_model_file",
    "CONVERT_HINT",
]
