"""Patch sampling with foreground oversampling, and MONAI data augmentation.

Randomness is always drawn from generators seeded by ``(seed, rank, step)``: a run that
resumes from a checkpoint at step ``s`` draws exactly the patches and augmentations the
uninterrupted run would have drawn, with no generator state to save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medcnn.train.datasets import PreparedCase, slice_axis

__all__ = ["AugmentConfig", "PatchSampler", "build_augmentation", "augment_batch", "step_seed", "IGNORE_INDEX"]

#: Label value that encodes "ignore" while a label patch travels through spatial augmentation.
IGNORE_INDEX = 255


def step_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed derived from ``seed`` and ``parts`` (rank, step, ...)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(p) & 0xFFFFFFFF for p in parts]])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class AugmentConfig:
    """Augmentation switches (probabilities per sample; angles in degrees)."""

    enabled: bool = True
    rotate_deg: float = field(default=15.0, metadata={"help": "max rotation (degrees); 3D: about every axis"})
    rotate_prob: float = 0.2
    zoom: tuple[float, float] = (0.85, 1.25)
    zoom_prob: float = 0.2
    flip_axes: tuple[int, ...] = field(default=(), metadata={"help": (
        "patch axes to mirror with p=0.5 (model grid, e.g. 0 = left-right in RAS); recorded in the bundle as "
        "its mirror_axes, the axes test-time augmentation uses with --tta / tta_axes='trained'")})
    noise_std: float = 0.1
    noise_prob: float = 0.1
    smooth_sigma: tuple[float, float] = (0.5, 1.0)
    smooth_prob: float = 0.1
    scale_intensity: float = 0.25
    scale_prob: float = 0.15
    shift_intensity: float = 0.1
    shift_prob: float = 0.15
    gamma: tuple[float, float] = (0.7, 1.5)
    gamma_prob: float = 0.15


class PatchSampler:
    """Random patches from prepared cases, a fraction centred on foreground (nnU-Net style).

    For ``spatial_dims == 2`` each case is a stack of 2D slices along its coarsest axis;
    a patch is a 2D crop of one slice.

    Args:
        cases: prepared cases (image ``(C, X, Y, Z)``).
        patch_size: 2 or 3 ints (voxels).
        fg_fraction: probability that a patch is centred on a labelled voxel (class drawn
            uniformly among the classes present in the case).
    """

    def __init__(self, cases: Sequence[PreparedCase], patch_size: Sequence[int], *, spatial_dims: int,
                 fg_fraction: float = 1 / 3, n_classes: int, max_fg_points: int = 20000) -> None:
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} does not have {spatial_dims} values")
        self.patch = tuple(int(p) for p in patch_size)
        self.spatial_dims = spatial_dims
        self.fg_fraction = float(fg_fraction)
        self.n_classes = n_classes
        self.items: list[dict[str, Any]] = []
        rng = np.random.default_rng(0)
        for c in cases:
            img, lab, ign = c.image, c.label, c.ignore
            if spatial_dims == 2:
                axis = slice_axis(c.spacing)
                img = np.moveaxis(img, 1 + axis, -1)
                lab = np.moveaxis(lab, axis, -1)
                ign = np.moveaxis(ign, axis, -1)
            fg = {}
            for k in range(1, n_classes):
                pts = np.argwhere((lab == k) & ~ign)
                if len(pts) > max_fg_points:
                    pts = pts[rng.choice(len(pts), max_fg_points, replace=False)]
                if len(pts):
                    fg[k] = pts
            valid_z = np.flatnonzero((~ign).any(axis=(0, 1))) if spatial_dims == 2 else None
            if valid_z is not None and len(valid_z) == 0:
                continue  # nothing annotated in this case
            self.items.append({"image": img, "label": lab, "ignore": ign, "fg": fg,
                               "annotated": c.annotated, "valid_z": valid_z})

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, rng: np.random.Generator, batch_size: int, *, item_ids: Sequence[int] | None = None
               ) -> dict[str, np.ndarray]:
        """A batch: image ``(B, C, *P)`` float32, label ``(B, *P)`` int64 with ``IGNORE_INDEX``
        where ignored, annotated ``(B, K)`` bool."""
        pool = list(item_ids) if item_ids is not None else list(range(len(self.items)))
        images, labels, annotated = [], [], []
        for _ in range(batch_size):
            it = self.items[pool[int(rng.integers(len(pool)))]]
            lab, ign, img = it["label"], it["ignore"], it["image"]
            full = lab.shape  # (X, Y, Z)
            use_fg = bool(it["fg"]) and rng.random() < self.fg_fraction
            if use_fg:
                cls = list(it["fg"])[int(rng.integers(len(it["fg"])))]
                pts = it["fg"][cls]
                centre = pts[int(rng.integers(len(pts)))]
            else:
                centre = np.array([int(rng.integers(s)) for s in full])
                if it["valid_z"] is not None:  # 2D: only slices with annotated voxels
                    centre[2] = int(it["valid_z"][int(rng.integers(len(it["valid_z"])))])
            if self.spatial_dims == 2:
                z = int(centre[2])
                img, lab, ign = img[..., z], lab[..., z], ign[..., z]
                centre = centre[:2]
            starts = []
            for d, (p, s) in enumerate(zip(self.patch, lab.shape)):
                jitter = int(rng.integers(-(p // 4), p // 4 + 1)) if use_fg else 0
                start = int(centre[d]) - p // 2 + jitter
                lo, hi = min(0, s - p), max(0, s - p)
                if not use_fg:
                    start = int(rng.integers(lo, hi + 1))
                starts.append(int(np.clip(start, lo, hi)))
            x = _crop(img, starts, self.patch, lead=1, fill=0.0)
            y = _crop(lab, starts, self.patch, lead=0, fill=0)
            m = _crop(ign, starts, self.patch, lead=0, fill=True)
            y = np.where(m, IGNORE_INDEX, y)
            images.append(x)
            labels.append(y)
            annotated.append(it["annotated"])
        return {"image": np.stack(images).astype(np.float32), "label": np.stack(labels).astype(np.int64),
                "annotated": np.stack(annotated).astype(bool)}


def _crop(arr: np.ndarray, starts: Sequence[int], size: Sequence[int], *, lead: int, fill: Any) -> np.ndarray:
    """Crop ``arr[..., start:start+size]`` per spatial axis, padding with ``fill`` outside."""
    spatial = arr.shape[lead:]
    out = np.full(arr.shape[:lead] + tuple(size), fill, dtype=arr.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for st, sz, s in zip(starts, size, spatial):
        a, b = max(st, 0), min(st + sz, s)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - st, a - st + max(0, b - a)))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def build_augmentation(cfg: AugmentConfig, *, spatial_dims: int):
    """A MONAI ``Compose`` over ``{"image": (C, *P), "label": (1, *P)}`` (``None`` if disabled)."""
    if not cfg.enabled:
        return None
    from monai import transforms as T

    interp = "bilinear" if spatial_dims == 2 else "trilinear"
    rad = math.radians(cfg.rotate_deg)
    rot_kw = {"range_x": rad} if spatial_dims == 2 else {"range_x": rad, "range_y": rad, "range_z": rad}
    keys = ["image", "label"]
    ts: list[Any] = []
    if cfg.rotate_prob > 0 and cfg.rotate_deg > 0:
        ts.append(T.RandRotated(keys, prob=cfg.rotate_prob, mode=("bilinear", "nearest"),
                                padding_mode="zeros", keep_size=True, **rot_kw))
    if cfg.zoom_prob > 0:
        ts.append(T.RandZoomd(keys, prob=cfg.zoom_prob, min_zoom=cfg.zoom[0], max_zoom=cfg.zoom[1],
                              mode=(interp, "nearest"), keep_size=True))
    for ax in cfg.flip_axes:
        ts.append(T.RandFlipd(keys, prob=0.5, spatial_axis=int(ax)))
    if cfg.noise_prob > 0:
        ts.append(T.RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std))
    if cfg.smooth_prob > 0:
        s = cfg.smooth_sigma
        ts.append(T.RandGaussianSmoothd("image", prob=cfg.smooth_prob, sigma_x=s, sigma_y=s, sigma_z=s))
    if cfg.scale_prob > 0:
        ts.append(T.RandScaleIntensityd("image", factors=cfg.scale_intensity, prob=cfg.scale_prob))
    if cfg.shift_prob > 0:
        ts.append(T.RandShiftIntensityd("image", offsets=cfg.shift_intensity, prob=cfg.shift_prob))
    if cfg.gamma_prob > 0:
        ts.append(T.RandAdjustContrastd("image", prob=cfg.gamma_prob, gamma=cfg.gamma))
    return T.Compose(ts)


def augment_batch(batch: dict[str, np.ndarray], aug: Any, *, seed: int) -> dict[str, np.ndarray]:
    """Apply ``aug`` sample by sample, seeded with ``seed`` (label keeps ``IGNORE_INDEX``)."""
    if aug is None:
        return batch
    import torch
    from monai.data import set_track_meta
    from monai.data import get_track_meta

    track = get_track_meta()
    set_track_meta(False)
    try:
        aug.set_random_state(seed=seed)
        images, labels = [], []
        for x, y in zip(batch["image"], batch["label"]):
            out = aug({"image": torch.from_numpy(x), "label": torch.from_numpy(y[None].astype(np.float32))})
            images.append(np.asarray(out["image"], dtype=np.float32))
            labels.append(np.rint(np.asarray(out["label"])[0]).astype(np.int64))
    finally:
        set_track_meta(track)
    return {**batch, "image": np.stack(images), "label": np.stack(labels)}
