"""Thin adapters onto ``medcnn.preprocess``, ``medcnn.models`` and ``medcnn.inference``.

Training uses exactly the preprocessing, network registry and bundle format inference uses;
these helpers only translate the training config's spelling (e.g. ``labels`` as
name → value) into those modules' arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["build_network", "make_preprocess", "save_bundle"]


def build_network(spec: Mapping[str, Any]):
    """A ``torch.nn.Module`` from a JSON network spec (``{"name": "unet", ...}``)."""
    from medcnn.models import build_network as _build

    return _build(dict(spec))


def make_preprocess(spec: Mapping[str, Any]) -> Callable[[Any], tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """``f(case) -> (image (C,X,Y,Z) float32, label (X,Y,Z) int, model-grid spacing mm)``.

    The image goes through :class:`medcnn.preprocess.Preprocessor`; the label map follows
    the same spatial steps (nearest neighbour) with ``PreprocessRecord.to_model_grid``.
    """
    from medcnn.io import read_labels_on_grid, read_volume
    from medcnn.preprocess import Preprocessor, PreprocessSpec

    pre = Preprocessor(PreprocessSpec.from_dict(dict(spec)))

    def run(case) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        channels = [read_volume(p, require_3d=True) for p in case.images]
        image, record = pre.forward(channels)
        if case.label is not None:
            # label images, RTSTRUCT (rasterised on the image grid) or SEG (decoded onto it)
            label_vol = read_labels_on_grid(case.label, channels[0])
            label_vol.geometry.check_matches(channels[0].geometry, what=f"case {case.case_id}: label vs image")
            label = np.asarray(record.to_model_grid(label_vol, order=0).array)
        else:
            label = np.zeros(image.shape[1:], np.int64)
        spacing = tuple(float(s) for s in record.model_geometry.spacing)
        return np.asarray(image, np.float32), label, spacing  # type: ignore[return-value]

    return run


def save_bundle(model, path: str | os.PathLike[str], *, network: Mapping[str, Any], preprocess: Mapping[str, Any],
                roi_size: Sequence[int], labels: Mapping[str, int], channels: Sequence[str],
                metadata: Mapping[str, Any], dtype: str = "float32", overlap: float = 0.5,
                mirror_axes: Sequence[int] | None = None, postprocess: Mapping[str, Any] | None = None,
                activation: str | None = None, regions: Mapping[str, Any] | None = None) -> Path:
    """Write a bundle with :func:`medcnn.models.save_bundle` (replacing one at ``path``).

    ``labels`` maps class name -> value (the training config's spelling); ``metadata``
    becomes the bundle's ``provenance``; ``mirror_axes`` are the patch axes the flip
    augmentation mirrored (what test-time augmentation may use). Region models pass
    ``activation="sigmoid"`` and ``regions`` (a :class:`medcnn.regions.RegionSpec` dict): the
    bundle then paints its outputs into label values exactly as an imported nnU-Net region
    model does.
    """
    from medcnn.models import save_bundle as _save

    return _save(model, path, network=dict(network), preprocess=dict(preprocess), roi_size=list(roi_size),
                 labels={int(v): str(k) for k, v in labels.items()}, channels=list(channels), overlap=overlap,
                 provenance=dict(metadata), weights_dtype=dtype, overwrite=True,
                 mirror_axes=None if mirror_axes is None else [int(a) for a in mirror_axes],
                 postprocess=None if postprocess is None else dict(postprocess), activation=activation,
                 regions=None if regions is None else dict(regions))
