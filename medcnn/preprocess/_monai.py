"""MONAI bundle preprocessing, as an ordered list of operations (``PreprocessSpec(monai=[...])``).

MONAI bundles apply their transforms in the order the config lists them (intensity
scaling *after* resampling, for example), so models imported from MONAI bundles
(``medcnn models import``) carry their own list, run in order by :func:`monai_forward`:

- ``{"op": "orientation", "axcodes": "RAS"}``: ``Orientationd`` (lossless permutation/flips,
  recorded as ``"reorient"``);
- ``{"op": "spacing", "pixdim": [sx, sy, sz], "order": 1}``: ``Spacingd`` — MONAI's output
  grid (:func:`monai_spacing_geometry`) keeps the direction and has the new spacing; values are interpolated (order 1 = bilinear,
  0 = nearest) with edge values extended (MONAI's ``border`` padding); recorded as
  ``"resample"``, undone linearly for probabilities like MONAI's ``Invertd``;
- ``{"op": "scale_range", "a_min", "a_max", "b_min", "b_max", "clip"}``: ``ScaleIntensityRanged``;
- ``{"op": "normalize", "nonzero": bool, "channel_wise": bool}``: ``NormalizeIntensityd``
  (mean/std over the non-zero voxels when ``nonzero``, population std, 0 → 1);
- ``{"op": "crop_foreground", "margin": int}``: ``CropForegroundd`` (box of voxels > 0
  in any channel, grown by ``margin``, within the image); recorded as ``"crop"``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidIntensityError
from medcnn.preprocess._orient import check_orientation_code, plan_reorient
from medcnn.preprocess._resample import _resample_volume
from medcnn.volume import Geometry, Volume, nonzero_extent

__all__ = ["MONAI_OPS", "check_monai_ops", "monai_forward", "monai_spacing_geometry"]

#: Operation names and their accepted keys.
MONAI_OPS: dict[str, tuple[str, ...]] = {
    "orientation": ("axcodes",),
    "spacing": ("pixdim", "order"),
    "scale_range": ("a_min", "a_max", "b_min", "b_max", "clip"),
    "normalize": ("nonzero", "channel_wise"),
    "crop_foreground": ("margin",),
}


def check_monai_ops(ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate a ``PreprocessSpec.monai`` list; returns a normalised copy."""
    if not isinstance(ops, (list, tuple)):
        raise ConfigError.expected("a list of MONAI preprocessing operations", type(ops).__name__)
    out = []
    for op in ops:
        name = op.get("op") if isinstance(op, Mapping) else None
        if name not in MONAI_OPS:
            raise ConfigError.expected(f"a MONAI operation among {', '.join(MONAI_OPS)}", repr(name))
        unknown = sorted(set(op) - {"op"} - set(MONAI_OPS[name]))
        if unknown:
            raise ConfigError.expected(f"keys {list(MONAI_OPS[name])} for {name}", f"unknown {unknown}")
        d = dict(op)
        if name == "orientation":
            d["axcodes"] = check_orientation_code(d.get("axcodes", "RAS"))
        elif name == "spacing":
            px = [float(v) for v in d["pixdim"]]
            if len(px) != 3 or any(not np.isfinite(v) or v < 0 for v in px):
                raise ConfigError.expected("pixdim of 3 values >= 0 (0: keep)", repr(d["pixdim"]))
            d["pixdim"], d["order"] = px, int(d.get("order", 1))
            if d["order"] not in (0, 1):
                raise ConfigError.expected("spacing order 0 (nearest) or 1 (bilinear)", repr(d["order"]))
        elif name == "scale_range":
            for k in ("a_min", "a_max"):
                d[k] = float(d[k])
            for k in ("b_min", "b_max"):
                d[k] = None if d.get(k) is None else float(d[k])
            d["clip"] = bool(d.get("clip", False))
        elif name == "normalize":
            d["nonzero"], d["channel_wise"] = bool(d.get("nonzero", False)), bool(d.get("channel_wise", False))
        elif name == "crop_foreground":
            d["margin"] = int(d.get("margin", 0))
        out.append(d)
    return out


def monai_spacing_geometry(geometry: Geometry, pixdim: Sequence[float]) -> Geometry:
    """The grid MONAI's ``Spacing`` produces (``monai.data.utils.compute_shape_offset`` with
    ``scale_extent=False``): same direction, spacing ``pixdim`` (0 keeps an axis),
    ``round(extent / new + 1)`` voxels; voxel (0, 0, 0) stays where it was when an input
    corner is the lowest one in every output axis (within 1e-8), otherwise — e.g. for the
    not quite orthogonal float32 affine of an oblique NIfTI file — the grid is centred on
    MONAI's centre (index ``shape / 2``)."""
    in_aff = geometry.affine
    old = np.asarray(geometry.spacing, float)
    new = np.where(np.asarray(pixdim, float) > 0, np.asarray(pixdim, float), old)
    # MONAI's zoom_affine: the rotation of the affine's QR (Cholesky) factorisation, scaled
    rzs = in_aff[:3, :3]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    out_aff = np.eye(4)
    out_aff[:3, :3] = (rzs @ np.linalg.inv(zs)) @ np.diag(np.sign(np.diag(zs)) * new)
    shape = np.asarray(geometry.shape, float)
    corners = np.asarray(np.meshgrid(*[(0.0, d - 1.0) for d in shape], indexing="ij")).reshape(3, -1)
    corners = np.concatenate([corners, np.ones_like(corners[:1])])
    dist = (np.linalg.solve(out_aff, in_aff) @ corners)[:3]
    out_shape = np.round(np.ptp(dist, axis=1) + 1.0).astype(int)
    world = in_aff @ corners
    offset = None
    for i in range(corners.shape[1]):
        if np.allclose(np.min(dist - dist[:, i:i + 1], 1), 0.0, rtol=1e-3):
            offset = world[:3, i]
            break
    if offset is None:
        offset = in_aff[:3, :3] @ (shape / 2.0) + in_aff[:3, 3] - out_aff[:3, :3] @ (out_shape / 2.0)
    return Geometry(tuple(int(max(s, 1)) for s in out_shape), tuple(float(v) for v in new),
                    tuple(float(v) for v in offset), geometry.direction, source=geometry.source)


def _scale_range(a: np.ndarray, op: Mapping[str, Any]) -> np.ndarray:
    a = a.astype(np.float32, copy=True)
    lo, hi = np.float32(op["a_min"]), np.float32(op["a_max"])
    if hi - lo == 0:
        return a - lo + (np.float32(op["b_min"] or 0.0))
    a = (a - lo) / (hi - lo)
    if op["b_min"] is not None and op["b_max"] is not None:
        a = a * np.float32(op["b_max"] - op["b_min"]) + np.float32(op["b_min"])
        if op["clip"]:
            np.clip(a, op["b_min"], op["b_max"], out=a)
    return a


def _normalize_nonzero(data: np.ndarray, nonzero: bool) -> np.ndarray:
    """MONAI's NormalizeIntensity of one array (float32, population std, std 0 → 1)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).clone()
    if nonzero:
        sl = t != 0
        if not bool(sl.any()):
            return t.numpy()
        m = t[sl]
        mean, std = torch.mean(m).item(), torch.std(m, unbiased=False).item()
        t[sl] = (m - mean) / (std if std != 0.0 else 1.0)
    else:
        mean, std = torch.mean(t).item(), torch.std(t, unbiased=False).item()
        t = (t - mean) / (std if std != 0.0 else 1.0)
    return t.numpy()


def monai_forward(arrays: Sequence[np.ndarray], geometry: Geometry, ops: Sequence[Mapping[str, Any]], *,
                  source: str | None = None) -> tuple[np.ndarray, Geometry, list[dict[str, Any]]]:
    """Run the operations in order on channels on ``geometry``.

    Returns:
        ``(data, model_geometry, steps)``: float32 ``(C, X, Y, Z)``, its grid, the record steps.
    """
    data = np.stack([np.asarray(a, dtype=np.float32) for a in arrays])
    geom = geometry
    steps: list[dict[str, Any]] = []
    for op in ops:
        name = op["op"]
        if name == "orientation":
            plan = plan_reorient(geom, op["axcodes"])
            if not plan.is_identity:
                data = plan.apply(data)
                steps.append(plan.to_dict())
                geom = plan.output_geometry
        elif name == "spacing":
            target = monai_spacing_geometry(geom, op["pixdim"])
            if target.shape != geom.shape or not np.allclose(target.spacing, geom.spacing, rtol=0, atol=1e-9):
                vol = Volume(data, geom, "intensity", "channel")
                data = _resample_volume(vol, target, order=op["order"], fill=None).array.astype(np.float32)
                steps.append({"step": "resample", "rule": "monai", "order": op["order"], "separate_axis": None,
                              "anisotropic_order": None, "geometry_before": geom.to_dict(),
                              "geometry_after": target.to_dict()})
                geom = target
        elif name == "scale_range":
            data = np.stack([_scale_range(c, op) for c in data])
            steps.append({"step": "normalise", "rule": "monai", **op})
        elif name == "normalize":
            if op["channel_wise"]:
                data = np.stack([_normalize_nonzero(c, op["nonzero"]) for c in data])
            else:
                data = _normalize_nonzero(data, op["nonzero"])
            steps.append({"step": "normalise", "rule": "monai", **op})
        elif name == "crop_foreground":
            box = nonzero_extent((data > 0).any(axis=0))
            if box is None:
                raise InvalidIntensityError.expected("some voxels > 0 to crop to (CropForegroundd)",
                                                     "none", path=source)
            m = op["margin"]
            box = tuple((max(0, a - m), min(n, b + m)) for (a, b), n in zip(box, geom.shape))
            if any(b != (0, s) for b, s in zip(box, geom.shape)):
                cropped = geom.crop([b[0] for b in box], [b[1] for b in box])
                region = (slice(None),) + tuple(slice(a, b) for a, b in box)
                data = np.ascontiguousarray(data[region])
                steps.append({"step": "crop", "rule": "monai", "start": [b[0] for b in box],
                              "stop": [b[1] for b in box], "geometry_before": geom.to_dict(),
                              "geometry_after": cropped.to_dict()})
                geom = cropped
    return data.astype(np.float32, copy=False), geom, steps
