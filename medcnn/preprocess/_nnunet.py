"""nnU-Net v2's preprocessing and export rules, as a :class:`PreprocessSpec` option.

Models imported from nnU-Net (``medcnn models import``) must see exactly the arrays their
trainer saw. ``PreprocessSpec(nnunet={...})`` switches the preprocessor to these rules
(the dict is written by :mod:`medcnn.models.importers.nnunet` from ``plans.json``):

1. **Axis order.** nnU-Net works on SimpleITK's array order ``(z, y, x)``, i.e. medcnn's
   ``(I, J, K)`` reversed, then applies ``transpose_forward`` from the plans. Both are a
   lossless permutation recorded as a ``"reorient"`` step (no reorientation to RAS:
   nnU-Net does not reorient either).
2. **Crop to non-zero**: the box of voxels non-zero in any channel after filling holes
   in that mask (``scipy.ndimage.binary_fill_holes``); recorded as a ``"crop"`` step.
3. **Normalisation per channel** from the plans: ``CTNormalization`` (clip to the
   dataset's 0.5/99.5 percentiles, z-score with the dataset mean/std),
   ``ZScoreNormalization`` (the case's own mean/std, inside the non-zero mask when
   ``use_mask_for_norm``), ``NoNormalization``, ``RescaleTo01Normalization``,
   ``RGBTo01Normalization``.
4. **Resampling** to the configuration's spacing: new shape ``round(n * old / new)``;
   edge-aligned spline interpolation (``scipy.ndimage.zoom(grid_mode=True)``, edge
   values extended, output clipped to the input's range, as ``skimage.transform.resize``
   which nnU-Net calls); when the data (or else the target) spacing is anisotropic
   (max/min > 3) with one coarse axis, each slice is interpolated in-plane with order 3
   and the coarse axis with order 0 (nearest). 2D configurations keep the spacing of
   axis 0 (the slice axis).

The model grid is the edge-aligned grid of the new shape (spacing ``old * n / new``):
every voxel keeps its world position, so outputs go back through the same record.
Back to the input grid (:func:`nnunet_resample_back`), *logits* are resampled (order 1
in-plane, order 0 along a coarse axis, as nnU-Net exports), then the activation is
applied, then the crop is undone (background outside) and the axes are permuted back.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidIntensityError
from medcnn.preprocess._orient import axis_reorient
from medcnn.volume import Geometry, Volume, nonzero_extent

__all__ = [
    "NNUNET_SCHEMES",
    "check_nnunet_options",
    "nnunet_forward",
    "nnunet_resample_back",
    "nnunet_resize",
    "nnunet_separate_axis",
    "nnunet_new_shape",
]

#: Normalisation schemes (nnU-Net class names) the preprocessor implements.
NNUNET_SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")

_KEYS = {"transpose_forward", "spacing", "normalization", "anisotropy_threshold", "order_data", "order_z_data",
         "order_probabilities", "order_z_probabilities", "force_separate_z", "spatial_dims"}


def check_nnunet_options(d: Mapping[str, Any], n_channels: int) -> dict[str, Any]:
    """Validate the ``nnunet`` dict of a :class:`PreprocessSpec`; returns a normalised copy."""
    if not isinstance(d, Mapping):
        raise ConfigError.expected("a dict of nnU-Net preprocessing options", type(d).__name__)
    unknown = sorted(set(d) - _KEYS)
    missing = sorted({"transpose_forward", "spacing", "normalization"} - set(d))
    if unknown or missing:
        raise ConfigError.expected(f"nnunet preprocessing keys among {sorted(_KEYS)} (with transpose_forward, "
                                   "spacing, normalization)", f"unknown {unknown}, missing {missing}")
    out = dict(d)
    tf = [int(v) for v in out["transpose_forward"]]
    if sorted(tf) != [0, 1, 2]:
        raise ConfigError.expected("transpose_forward: a permutation of [0, 1, 2]", repr(out["transpose_forward"]))
    out["transpose_forward"] = tf
    nd = int(out.get("spatial_dims", len(out["spacing"])))
    sp = [float(v) for v in out["spacing"]]
    if nd not in (2, 3) or len(sp) != nd or any(not np.isfinite(v) or v <= 0 for v in sp):
        raise ConfigError.expected("a spacing of 2 (2D) or 3 (3D) positive values", repr(out["spacing"]))
    out["spacing"], out["spatial_dims"] = sp, nd
    norms = list(out["normalization"])
    if len(norms) != n_channels:
        raise ConfigError.expected(f"{n_channels} normalisation entries (one per channel)", f"{len(norms)}")
    for n in norms:
        if not isinstance(n, Mapping) or n.get("scheme") not in NNUNET_SCHEMES:
            raise ConfigError.expected(f"a normalisation scheme among {', '.join(NNUNET_SCHEMES)}",
                                       repr(n.get("scheme") if isinstance(n, Mapping) else n))
        if n["scheme"] == "CTNormalization" and not all(k in n for k in ("mean", "std", "lower", "upper")):
            raise ConfigError.expected("CTNormalization with mean, std, lower and upper", repr(dict(n)))
    out["normalization"] = [dict(n) for n in norms]
    out.setdefault("anisotropy_threshold", 3.0)
    for k, v in (("order_data", 3), ("order_z_data", 0), ("order_probabilities", 1), ("order_z_probabilities", 0)):
        out[k] = int(out.get(k, v))
        if not 0 <= out[k] <= 5:
            raise ConfigError.expected(f"{k} between 0 and 5", repr(out[k]))
    fs = out.get("force_separate_z")
    if fs is not None and not isinstance(fs, bool):
        raise ConfigError.expected("force_separate_z true, false or null", repr(fs))
    out["force_separate_z"] = fs
    return out


# ---------------------------------------------------------------------------- resampling
def nnunet_new_shape(shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """``round(n * old / new)`` per axis (nnU-Net's ``compute_new_shape``)."""
    return [int(round(o / n * s)) for o, n, s in zip(old_spacing, new_spacing, shape)]


def _lowres_axes(spacing: Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing, dtype=float)
    return np.where(max(sp) / sp == 1)[0]


def nnunet_separate_axis(current_spacing: Sequence[float], new_spacing: Sequence[float], *,
                         threshold: float = 3.0, force: bool | None = None) -> int | None:
    """The axis nnU-Net interpolates separately (order 0), or ``None``: the current spacing
    is tested for anisotropy (max/min > ``threshold``) first, then the new one; a coarse
    spacing shared by two or three axes means no separate axis."""
    if force is not None:
        axes = _lowres_axes(current_spacing) if force else None
    elif max(current_spacing) / min(current_spacing) > threshold:
        axes = _lowres_axes(current_spacing)
    elif max(new_spacing) / min(new_spacing) > threshold:
        axes = _lowres_axes(new_spacing)
    else:
        axes = None
    if axes is None or len(axes) != 1:
        return None
    return int(axes[0])


def _resize(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``skimage.transform.resize(arr, shape, order, mode="edge", anti_aliasing=False)`` for
    float64 input: edge-aligned zoom, output clipped to the input's range."""
    from scipy import ndimage

    factors = np.divide(arr.shape, shape)
    out = ndimage.zoom(arr, [1 / f for f in factors], order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, arr.min(), arr.max(), out=out)
    return out


def nnunet_resize(data: np.ndarray, new_shape: Sequence[int], *, order: int, separate_axis: int | None,
                  order_z: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """Resample ``(C, X, Y, Z)`` data to ``new_shape`` with nnU-Net's rule (see the module
    docstring); computed in float64 like nnU-Net, returned as ``dtype``."""
    from scipy import ndimage

    shape = np.asarray(data.shape[1:])
    new = np.asarray([int(v) for v in new_shape])
    if np.all(shape == new):
        return data.astype(dtype, copy=False)
    out = np.zeros((data.shape[0], *new), dtype=dtype)
    for c in range(data.shape[0]):
        d = data[c].astype(np.float64, copy=False)
        if separate_axis is None:
            out[c] = _resize(d, new, order)
            continue
        a = separate_axis
        plane = [int(v) for i, v in enumerate(new) if i != a]
        tmp_shape = new.copy()
        tmp_shape[a] = shape[a]
        tmp = np.zeros(tmp_shape)
        for s in range(shape[a]):
            idx = (slice(None),) * a + (s,)
            tmp[idx] = _resize(d[idx], plane, order)
        if shape[a] != new[a]:
            # order_z along the coarse axis on the edge-aligned coordinates; the fine axes
            # already have their final size, so their coordinates are the identity
            coords = np.mgrid[tuple(slice(0, int(n)) for n in new)].astype(np.float64)
            coords[a] = (shape[a] / new[a]) * (coords[a] + 0.5) - 0.5
            out[c] = ndimage.map_coordinates(tmp, coords, order=order_z, mode="nearest")
        else:
            out[c] = tmp
    return out


def _edge_aligned(geometry: Geometry, new_shape: Sequence[int]) -> Geometry:
    """The grid of ``new_shape`` voxels spanning the same outer voxel edges as ``geometry``."""
    n = np.asarray(geometry.shape, float)
    m = np.asarray(new_shape, float)
    old = np.asarray(geometry.spacing, float)
    spacing = old * n / m
    first = (0.5 * n / m - 0.5) * old  # centre of new voxel 0, in mm along each array axis
    origin = np.asarray(geometry.origin) + geometry.direction_matrix @ first
    return Geometry(tuple(int(v) for v in new_shape), tuple(float(v) for v in spacing), tuple(float(v) for v in origin),
                    geometry.direction, source=geometry.source)


# ---------------------------------------------------------------------------- normalisation
def _normalise(arr: np.ndarray, norm: Mapping[str, Any], mask: np.ndarray | None, source: str | None) -> np.ndarray:
    """nnU-Net's normalisation schemes, in float32 as nnU-Net computes them."""
    scheme = norm["scheme"]
    image = arr.astype(np.float32, copy=True)
    eps = 1e-8
    if scheme == "CTNormalization":
        np.clip(image, float(norm["lower"]), float(norm["upper"]), out=image)
        image -= float(norm["mean"])
        image /= max(float(norm["std"]), eps)
    elif scheme == "ZScoreNormalization":
        if norm.get("use_mask_for_norm") and mask is not None:
            sel = image[mask]
            mean, std = sel.mean(), sel.std()
            image[mask] = (sel - mean) / max(std, eps)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, eps)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=eps, a_max=None)
    elif scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise InvalidIntensityError.expected("RGB intensities in [0, 255] (RGBTo01Normalization)",
                                                 f"range [{image.min():g}, {image.max():g}]", path=source)
        image /= 255.0
    return image


# ---------------------------------------------------------------------------- forward / back
def nnunet_forward(arrays: Sequence[np.ndarray], geometry: Geometry, options: Mapping[str, Any], *,
                   source: str | None = None) -> tuple[np.ndarray, Geometry, list[dict[str, Any]]]:
    """Apply nnU-Net's preprocessing to channels on ``geometry`` (medcnn array order).

    Args:
        arrays: one ``(I, J, K)`` array per channel, all on ``geometry``.
        options: validated ``PreprocessSpec.nnunet`` dict (:func:`check_nnunet_options`).

    Returns:
        ``(data, model_geometry, steps)``: float32 ``(C, X, Y, Z)`` in nnU-Net's axis order,
        its grid, and the record steps (``reorient``, ``crop``, ``normalise``, ``resample``).
    """
    from scipy import ndimage

    steps: list[dict[str, Any]] = []
    # SimpleITK order (medcnn axes reversed), then transpose_forward
    perm = [2 - t for t in options["transpose_forward"]]
    plan = axis_reorient(geometry, perm)
    geom = geometry
    if not plan.is_identity:
        arrays = [plan.apply(a) for a in arrays]
        d = plan.to_dict()
        d["rule"] = "nnunet"
        steps.append(d)
        geom = plan.output_geometry
    data = np.stack([np.asarray(a, dtype=np.float32) for a in arrays])
    nonzero = np.zeros(data.shape[1:], dtype=bool)
    for c in range(data.shape[0]):
        nonzero |= data[c] != 0
    nonzero = ndimage.binary_fill_holes(nonzero)
    box = nonzero_extent(nonzero)
    if box is None:
        raise InvalidIntensityError.expected("some non-zero voxels (nnU-Net crops to them)",
                                             "an image that is zero everywhere", path=source)
    if any(b != (0, s) for b, s in zip(box, geom.shape)):
        cropped = geom.crop([b[0] for b in box], [b[1] for b in box])
        region = tuple(slice(a, b) for a, b in box)
        data = np.ascontiguousarray(data[(slice(None),) + region])
        nonzero = nonzero[region]
        steps.append({"step": "crop", "rule": "nnunet", "start": [b[0] for b in box], "stop": [b[1] for b in box],
                      "geometry_before": geom.to_dict(), "geometry_after": cropped.to_dict()})
        geom = cropped
    for c, norm in enumerate(options["normalization"]):
        data[c] = _normalise(data[c], norm, nonzero, source)
        steps.append({"step": "normalise", "rule": "nnunet", "channel": c, **{k: v for k, v in norm.items()}})
    original = list(geom.spacing)
    target = list(options["spacing"])
    if options["spatial_dims"] == 2:
        target = [original[0]] + target
    new_shape = nnunet_new_shape(geom.shape, original, target)
    if list(geom.shape) != new_shape:
        sep = nnunet_separate_axis(original, target, threshold=float(options["anisotropy_threshold"]),
                                   force=options["force_separate_z"])
        data = nnunet_resize(data, new_shape, order=options["order_data"], separate_axis=sep,
                             order_z=options["order_z_data"])
        after = _edge_aligned(geom, new_shape)
        steps.append({"step": "resample", "rule": "nnunet", "order": options["order_data"], "separate_axis": sep,
                      "target_spacing": target, "geometry_before": geom.to_dict(), "geometry_after": after.to_dict(),
                      "anisotropy_threshold": float(options["anisotropy_threshold"]),
                      "force_separate_z": options["force_separate_z"],
                      "order_probabilities": options["order_probabilities"],
                      "order_z_probabilities": options["order_z_probabilities"]})
        geom = after
    return data.astype(np.float32, copy=False), geom, steps


def nnunet_resample_back(arr: np.ndarray, step: Mapping[str, Any], *, kind: str) -> np.ndarray:
    """Undo an nnU-Net ``"resample"`` step: logits/probabilities ``(C, X, Y, Z)`` with the
    export rule (order 1, order 0 along a coarse axis, judged from the configuration's
    spacing first), labels ``(X, Y, Z)`` with nearest neighbour."""
    before = Geometry.from_dict(step["geometry_before"])
    current = list(step["target_spacing"])
    sep = nnunet_separate_axis(current, before.spacing, threshold=float(step.get("anisotropy_threshold", 3.0)),
                               force=step.get("force_separate_z"))
    if kind == "label":
        out = nnunet_resize(arr[None].astype(np.float64), before.shape, order=0, separate_axis=sep, order_z=0,
                            dtype=arr.dtype)
        return out[0]
    return nnunet_resize(arr, before.shape, order=int(step.get("order_probabilities", 1)), separate_axis=sep,
                         order_z=int(step.get("order_z_probabilities", 0)), dtype=np.float32)

