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
- ``{"op": "crop_foreground", "margin": int | [mx, my, mz], "allow_smaller": bool,
  "channel_indices": [c, ...] | None}``: ``CropForegroundd`` (box of voxels > 0 in any of
  the channels, grown by ``margin`` voxels; where the grown box leaves the image it is
  clipped when ``allow_smaller``, else — MONAI >= 1.5's default, ``False`` here too — the
  image is padded with zeros to hold it); recorded as ``"crop"`` (``start``/``stop`` may
  lie outside the input grid: the padding).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidIntensityError
from medcnn.preprocess._orient import check_orientation_code, plan_reorient
from medcnn.preprocess._resample import _resample_volume
from medcnn.volume import Geometry, Volume, nonzero_extent

__all__ = ["MONAI_OPS", "check_monai_ops", "monai_forward", "monai_spacing_geometry", "crop_regions"]

#: Operation names and their accepted keys.
MONAI_OPS: dict[str, tuple[str, ...]] = {
    "orientation": ("axcodes",),
    "spacing": ("pixdim", "order"),
    "scale_range": ("a_min", "a_max", "b_min", "b_max", "clip"),
    "normalize": ("nonzero", "channel_wise"),
    "crop_foreground": ("margin", "allow_smaller", "channel_indices"),
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
            m = d.get("margin", 0)
            m = [m] * 3 if isinstance(m, (int, float)) and not isinstance(m, bool) else m
            if (not isinstance(m, (list, tuple)) or len(m) != 3
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v) for v in m)):
                raise ConfigError.expected("crop_foreground margin: an integer >= 0 or 3 of them", repr(d.get("margin")))
            d["margin"] = [int(v) for v in m]
            if not isinstance(d.get("allow_smaller", False), bool):
                raise ConfigError.expected("crop_foreground allow_smaller true or false", repr(d["allow_smaller"]))
            d["allow_smaller"] = bool(d.get("allow_smaller", False))
            ci = d.get("channel_indices")
            if ci is not None:
                ci = [ci] if isinstance(ci, int) and not isinstance(ci, bool) else ci
                if not isinstance(ci, (list, tuple)) or not ci or any(
                        isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in ci):
                    raise ConfigError.expected("crop_foreground channel_indices: channel numbers >= 0 or null",
                                               repr(d.get("channel_indices")))
                ci = [int(c) for c in ci]
            d["channel_indices"] = ci
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


def _crop_foreground(data: np.ndarray, geom: Geometry, op: Mapping[str, Any], steps: list[dict[str, Any]],
                     source: str | None) -> tuple[np.ndarray, Geometry]:
    """MONAI's ``CropForeground`` (``generate_spatial_bounding_box`` with ``select_fn=is_positive``,
    then crop, zero-padding where the box leaves the image unless ``allow_smaller``)."""
    idx = op.get("channel_indices")
    if idx is not None and max(idx) >= data.shape[0]:
        raise ConfigError.expected(f"crop_foreground channel_indices below {data.shape[0]} (channels)", repr(idx),
                                   path=source)
    box = nonzero_extent((data if idx is None else data[idx]).__gt__(0).any(axis=0))
    if box is None:
        raise InvalidIntensityError.expected("some voxels > 0 to crop to (CropForegroundd)", "none", path=source)
    lo = [a - m for (a, _b), m in zip(box, op["margin"])]
    hi = [b + m for (_a, b), m in zip(box, op["margin"])]
    if op.get("allow_smaller", False):
        lo, hi = [max(0, v) for v in lo], [min(n, v) for v, n in zip(hi, geom.shape)]
    if lo == [0, 0, 0] and list(hi) == list(geom.shape):
        return data, geom
    box_geom = Geometry(tuple(b - a for a, b in zip(lo, hi)), geom.spacing,
                        tuple(float(v) for v in geom.index_to_world(lo)[0]), geom.direction, source=geom.source)
    out = np.zeros((data.shape[0],) + box_geom.shape, dtype=np.float32)
    inside, in_box = crop_regions(lo, hi, geom.shape)
    out[(slice(None),) + in_box] = data[(slice(None),) + inside]
    steps.append({"step": "crop", "rule": "monai", "start": lo, "stop": hi, "geometry_before": geom.to_dict(),
                  "geometry_after": box_geom.to_dict()})
    return out, box_geom


def crop_regions(start: Sequence[int], stop: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], ...]:
    """``(in the grid, in the box)``: the slices of the part of the box ``start <= index < stop``
    (which may reach outside a grid of ``shape``: padding) that lies inside the grid."""
    inside = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, shape))
    in_box = tuple(slice(max(a, 0) - a, min(b, n) - a) for a, b, n in zip(start, stop, shape))
    return inside, in_box


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
            data, geom = _crop_foreground(data, geom, op, steps, source)
    return data.astype(np.float32, copy=False), geom, steps
