"""Intensity checks and normalisation (CT window + z-score, MR foreground z-score)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidIntensityError
from medcnn.volume import Volume

__all__ = ["normalise", "check_finite", "ct_statistics", "MODALITIES", "check_modality"]

#: Accepted per-channel modality names ("none" = cast to float32 only).
MODALITIES = ("CT", "MR", "none")


def check_modality(modality: str) -> str:
    """Canonical spelling of a modality name (``"ct"`` → ``"CT"``, ``"MRI"`` → ``"MR"``)."""
    m = str(modality).strip()
    canon = {"CT": "CT", "MR": "MR", "MRI": "MR", "NONE": "none"}.get(m.upper())
    if canon is None:
        raise ConfigError.expected("a modality of 'CT', 'MR' or 'none'", repr(modality))
    return canon


def check_finite(volume: Volume) -> None:
    """Raise :class:`InvalidIntensityError` naming the file if any voxel is NaN or infinite."""
    arr = volume.array
    if arr.dtype.kind not in "fc":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(arr.size - finite.sum()) - n_nan
    got = ", ".join(p for p in (f"{n_nan} NaN voxels" if n_nan else "", f"{n_inf} infinite voxels" if n_inf else "") if p)
    raise InvalidIntensityError.expected("finite intensities", got, path=volume.source,
                                         hint="Replace them (e.g. np.nan_to_num) or fix the file")


def _mask_array(mask: Volume | np.ndarray | None, volume: Volume) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, Volume):
        volume.geometry.check_matches(mask.geometry, what="the image and its normalisation mask")
        m = mask.array
    else:
        m = np.asarray(mask)
        if m.shape != volume.geometry.shape:
            raise ValueError(f"expected a mask of shape {volume.geometry.shape}, got {m.shape}")
    return m.astype(bool)


def _constant_error(volume: Volume, value: float, n: int, where: str) -> InvalidIntensityError:
    return InvalidIntensityError.expected(
        f"varying intensities {where}", f"a constant value {value:g} in all {n} voxels", path=volume.source,
        hint="An empty or blank scan cannot be normalised; check the file")


def _normalise_array(volume: Volume, modality: str, *, window: Sequence[float] | None = None,
                     mean: float | None = None, std: float | None = None,
                     mask: Volume | np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    if volume.leading_axis is not None:
        raise ValueError("expected a 3D volume to normalise; normalise each frame/channel separately")
    modality = check_modality(modality)
    check_finite(volume)
    arr = np.asarray(volume.array, dtype=np.float64)
    fg = _mask_array(mask, volume)
    info: dict[str, Any] = {"step": "normalise", "modality": modality}
    if modality == "none":
        return arr.astype(np.float32), info
    if modality == "CT":
        if window is not None:
            lo, hi = (float(w) for w in window)
            if not lo < hi:
                raise ConfigError.expected("a CT window (low, high) with low < high", f"{tuple(window)}")
            np.clip(arr, lo, hi, out=arr)
            info["window"] = [lo, hi]
        sel = arr if fg is None else arr[fg]
        if sel.size == 0:
            raise InvalidIntensityError.expected("a non-empty normalisation mask", "an empty mask", path=volume.source)
        if mean is None or std is None:
            m, s = float(sel.mean()), float(sel.std())
            info["stats_from"] = "volume"
        else:
            m, s = float(mean), float(std)
            if not np.isfinite(s) or s <= 0 or not np.isfinite(m):
                raise ConfigError.expected("a finite CT mean and a std > 0", f"mean {mean!r}, std {std!r}")
            info["stats_from"] = "dataset"
        if s <= 1e-12 * max(1.0, abs(m)):
            raise _constant_error(volume, m, sel.size, "after the CT window" if window is not None else "in the scan")
        out = (arr - m) / s
        info.update(mean=m, std=s)
        return out.astype(np.float32), info
    # MR: z-score inside the foreground (mask, else non-zero voxels); outside set to 0
    if fg is None:
        fg = arr != 0
        info["foreground"] = "nonzero"
        if not fg.any():
            raise _constant_error(volume, 0.0, arr.size, "in the scan")
    else:
        info["foreground"] = "mask"
        if not fg.any():
            raise InvalidIntensityError.expected("a non-empty normalisation mask", "an empty mask", path=volume.source)
    sel = arr[fg]
    m, s = float(sel.mean()), float(sel.std())
    if s <= 1e-12 * max(1.0, abs(m)):
        raise _constant_error(volume, m, sel.size, "inside the foreground")
    out = (arr - m) / s
    if not fg.all():
        out[~fg] = 0.0
    info.update(mean=m, std=s, foreground_voxels=int(fg.sum()))
    return out.astype(np.float32), info


def normalise(volume: Volume, modality: str, *, window: Sequence[float] | None = None,
              mean: float | None = None, std: float | None = None,
              mask: Volume | np.ndarray | None = None) -> Volume:
    """Normalise intensities for a network.

    * ``"CT"``: clip to ``window`` (HU, optional), then ``(x - mean) / std`` with the
      given dataset statistics (see :func:`ct_statistics`); when ``mean``/``std`` are not
      given they are computed over this volume (inside ``mask`` if given) after clipping.
    * ``"MR"``: z-score with the mean and std of the foreground (``mask`` if given, else
      the non-zero voxels); voxels outside the foreground are set to 0.
    * ``"none"``: cast to float32 only.

    Args:
        volume: 3D intensity volume.
        modality: ``"CT"``, ``"MR"`` or ``"none"``.
        window: ``(low, high)`` clip window in the image's units (HU for CT).
        mean, std: dataset statistics for CT (after clipping).
        mask: foreground mask (Volume on the same grid, or boolean array ``(I, J, K)``).

    Returns:
        float32 Volume on the same grid; ``meta["normalisation"]`` holds what was done.

    Raises:
        InvalidIntensityError: NaN/infinite voxels, or a constant image/foreground
            (the message names the file).
        ConfigError: unknown modality, bad window or statistics.
    """
    arr, info = _normalise_array(volume, modality, window=window, mean=mean, std=std, mask=mask)
    meta = dict(volume.meta)
    meta["normalisation"] = info
    return Volume(arr, volume.geometry, "intensity", None, None, meta)


def ct_statistics(images: Iterable[Volume], labels: Iterable[Volume | None] | None = None, *,
                  percentiles: tuple[float, float] = (0.5, 99.5), max_samples_per_case: int = 100_000,
                  seed: int = 0) -> dict[str, Any]:
    """Dataset CT statistics in the nnU-Net manner, for :class:`PreprocessSpec`.

    Samples foreground intensities (``label > 0``; all voxels where no label is given) of
    every case, takes the ``percentiles`` as the clip window, then the mean and std of
    the clipped samples.

    Returns:
        ``{"ct_window": (lo, hi), "ct_mean": float, "ct_std": float}`` — pass to
        ``dataclasses.replace(spec, **stats)``.
    """
    rng = np.random.default_rng(seed)
    samples = []
    label_iter = iter(labels) if labels is not None else None
    for img in images:
        check_finite(img)
        lab = next(label_iter, None) if label_iter is not None else None
        if lab is not None:
            img.geometry.check_matches(lab.geometry, what="the image and its label map")
            vals = img.array[np.asarray(lab.array) > 0]
        else:
            vals = img.array.ravel()
        if vals.size > max_samples_per_case:
            vals = rng.choice(vals, max_samples_per_case, replace=False)
        samples.append(np.asarray(vals, dtype=np.float64))
    if not samples or sum(s.size for s in samples) == 0:
        raise InvalidIntensityError.expected("foreground voxels to compute CT statistics from", "none")
    allv = np.concatenate(samples)
    lo, hi = (float(v) for v in np.percentile(allv, percentiles))
    clipped = np.clip(allv, lo, hi)
    return {"ct_window": (lo, hi), "ct_mean": float(clipped.mean()), "ct_std": float(clipped.std())}
