"""Helpers for the batch / report / run-CLI tests: a tiny seeded bundle and small scans.

(Named test_batch_*.py so it lives with the batch tests; it defines no tests itself.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcnn.volume import Geometry, Volume

CARDIAC_LABELS = {0: "background", 1: "LV blood pool", 2: "LV myocardium"}
TUMOUR_LABELS = {0: "background", 1: "necrosis", 2: "oedema", 3: "enhancing tumour"}


def make_bundle(path: Path, *, labels=CARDIAC_LABELS, channels=("MRI",), seed: int = 0, mirror_axes=None) -> Path:
    """A tiny 3D UNet bundle with seeded random weights (fast on a CPU)."""
    import torch

    from medcnn.models import build_network, save_bundle
    from medcnn.preprocess import PreprocessSpec

    spec = {"name": "unet", "spatial_dims": 3, "in_channels": len(channels), "out_channels": len(labels),
            "channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(seed)
    net = build_network(spec)
    with torch.no_grad():  # make the output depend strongly on intensity so every label appears
        for p in net.parameters():
            p.mul_(3.0)
    return save_bundle(net, path, network=spec,
                       preprocess=PreprocessSpec(orientation=None, modalities=("MR",) * len(channels)),
                       roi_size=(16, 16, 8), labels=labels, channels=list(channels), overlap=0.25,
                       provenance={"task": "cardiac" if 1 in labels and "LV" in labels[1] else "tumour",
                                   "validation": {"dice_mean": 0.5, "n_cases": 3}}, mirror_axes=mirror_axes)


def blob_scan(shape=(24, 20, 8), spacing=(1.5, 1.5, 5.0), *, seed: int = 0, origin=(-10.0, 5.0, 20.0),
              radius: float = 6.0) -> Volume:
    """A bright ellipsoid on a noisy background, anisotropic spacing, non-zero origin."""
    rng = np.random.default_rng(seed)
    g = Geometry(shape, spacing, origin)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    centre = (np.asarray(shape) - 1) / 2
    d = np.sqrt((((idx - centre) * np.asarray(spacing)) ** 2).sum(-1))
    arr = 100 + 400 * (d < radius) + 150 * ((d >= radius) & (d < radius + 3)) + rng.normal(0, 20, shape)
    return Volume(arr.astype(np.float32), g)


def cine_scan(n_frames: int = 4, **kw) -> Volume:
    frames = [blob_scan(radius=5.0 + 1.5 * np.cos(2 * np.pi * t / n_frames), seed=t, **kw) for t in range(n_frames)]
    return Volume.stack(frames, leading_axis="time", frame_times_ms=[40.0 * t for t in range(n_frames)])
