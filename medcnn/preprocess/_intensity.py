"""Intensity checks and normalisation (CT window + z-score, MR foreground z-score)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidIntensityError
from medcnn.volume import Volume

__all__ = ["normalise", "check_finite", "ct_statistics", "MODALITIES", "check_modality", "MR_FOREGROUNDS",
           "check_mr_foreground", "describe_mr_foreground", "border_background", "mr_foreground_mask"]

#: Accepted per-channel modality names ("none" = cast to float32 only).
MODALITIES = ("CT", "MR", "none")

#: Where an MR channel's z-score statistics come from (``PreprocessSpec.mr_foreground``):
#: the voxels of the case's foreground ("the brain" of a skull-stripped scan).
MR_FOREGROUNDS = {
    "nonzero": "each MR channel's own non-zero voxels",
    "nonzero_any": "voxels non-zero in any input channel (the brain of a skull-stripped scan, zero outside)",
    "border_mode": "voxels differing, in any input channel, from that channel's most frequent value on the "
                   "image border (a constant non-zero background, e.g. scans already z-scored by their provider)",
}
#: ``border_mode`` needs this share of a channel's border voxels to hold its most frequent value.
BORDER_MODE_MIN_FRACTION = 0.5


def check_mr_foreground(value: str | None) -> str | None:
    """Canonical ``mr_foreground`` (``None`` for the default ``"nonzero"``)."""
    if value is None or value == "nonzero":
        return None
    if value not in MR_FOREGROUNDS:
        raise ConfigError.expected(f"mr_foreground among {sorted(MR_FOREGROUNDS)}", repr(value))
    return str(value)


def describe_mr_foreground(value: str | None) -> str:
    """One sentence: which voxels an MR channel's z-score statistics come from."""
    return MR_FOREGROUNDS[check_mr_foreground(value) or "nonzero"]


def border_background(array: np.ndarray, *, source: str | None = None) -> float:
    """The most frequent value on the border (the six faces) of a 3D array: the constant
    background of a scan whose outside is not zero.

    Raises:
        InvalidIntensityError: fewer than half of the border voxels hold that value (no
            constant background: the rule does not apply to this scan).
    """
    a = np.asarray(array)
    faces = [a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]]
    border = np.concatenate([f.ravel() for f in faces])
    values, counts = np.unique(border, return_counts=True)
    k = int(np.argmax(counts))
    share = counts[k] / border.size
    if share < BORDER_MODE_MIN_FRACTION:
        raise InvalidIntensityError.expected(
            f"a constant background on the image border (its most frequent value on at least "
            f"{BORDER_MODE_MIN_FRACTION:.0%} of the border voxels) for mr_foreground 'border_mode'",
            f"value {float(values[k]):g} on {share:.1%} of them", path=source,
            hint="use mr_foreground 'nonzero_any' (zero background) or 'nonzero'")
    return float(values[k])


def mr_foreground_mask(arrays: Sequence[np.ndarray], rule: str, *, sources: Sequence[str | None] = ()
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """The case's foreground for ``mr_foreground`` ``"nonzero_any"`` or ``"border_mode"``.

    Args:
        arrays: the input channels, 3D, one grid.
        rule: ``"nonzero_any"`` (non-zero in any channel) or ``"border_mode"`` (differing
            from the channel's :func:`border_background` in any channel).
        sources: file of each channel, named in errors.

    Returns:
        ``(mask (I, J, K) bool, record)``; the record names the rule and, for
        ``border_mode``, each channel's background value.

    Raises:
        InvalidIntensityError: an empty foreground, or no constant border background.
    """
    srcs = list(sources) + [None] * (len(arrays) - len(sources))
    mask = np.zeros(np.shape(arrays[0]), dtype=bool)
    info: dict[str, Any] = {"mr_foreground": rule, "description": describe_mr_foreground(rule)}
    if rule == "nonzero_any":
        for a in arrays:
            mask |= np.not_equal(a, 0)
    elif rule == "border_mode":
        backgrounds = []
        for a, src in zip(arrays, srcs):
            bg = border_background(a, source=src)
            backgrounds.append(bg)
            mask |= np.not_equal(a, bg)  # bg is one of the array's own values: exact
        info["background_values"] = backgrounds
    else:
        raise ConfigError.expected("mr_foreground 'nonzero_any' or 'border_mode'", repr(rule))
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise InvalidIntensityError.expected(f"some foreground voxels ({describe_mr_foreground(rule)})",
                                             "none", path=srcs[0], hint="An empty or blank scan cannot be normalised")
    info["foreground_voxels"] = n
    return mask, info


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
    # one read pass, no full-size temporary: a float64 sum of finite values is finite
    # (float32 input cannot overflow it; a float64 overflow falls through to the count)
    if np.isfinite(np.sum(arr, dtype=np.complex128 if arr.dtype.kind == "c" else np.float64)):
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


def _constant_error_at(source: str | None, value: float, n: int, where: str) -> InvalidIntensityError:
    return InvalidIntensityError.expected(
        f"varying intensities {where}", f"a constant value {value:g} in all {n} voxels", path=source,
        hint="An empty or blank scan cannot be normalised; check the file")


def _normalise_array(volume: Volume, modality: str, *, window: Sequence[float] | None = None,
                     mean: float | None = None, std: float | None = None,
                     mask: Volume | np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    if volume.leading_axis is not None:
        raise ValueError("expected a 3D volume to normalise; normalise each frame/channel separately")
    modality = check_modality(modality)
    check_finite(volume)
    out = np.empty(volume.geometry.shape, dtype=np.float32)
    info = _normalise_into(np.asarray(volume.array), out, modality, window=window, mean=mean, std=std,
                           mask=_mask_array(mask, volume), source=volume.source)
    return out, info


def _mean_std(x: np.ndarray, n: int, select: np.ndarray | None = None) -> tuple[float, float]:
    """Mean and standard deviation (float64) of ``n`` values of ``x``: all of them, or those
    where ``select`` is true. When ``select`` only drops zeros it may be passed as
    ``None`` with the count of non-zeros: the sums are the same.

    One read pass (sum and sum of squares, float64 accumulators); when the variance is
    small against the squared mean (cancellation could cost more than 1e-10 of it) the
    exact two-pass formula over the selected values is used instead.
    """
    total = float(np.sum(x, dtype=np.float64))
    axes = "abcdefgh"[:x.ndim]
    squares = float(np.einsum(f"{axes},{axes}->", x, x, dtype=np.float64))
    m = total / n
    var = squares / n - m * m
    if var > 0 and squares / n <= 1e6 * var:
        return m, float(np.sqrt(var))
    sel = x if select is None and n == x.size else x[select if select is not None else np.not_equal(x, 0)]
    return float(np.mean(sel, dtype=np.float64)), float(np.std(sel, dtype=np.float64))


def _normalise_into(src: np.ndarray, out: np.ndarray, modality: str, *, window: Sequence[float] | None,
                    mean: float | None, std: float | None, mask: np.ndarray | None,
                    source: str | None) -> dict[str, Any]:
    """Normalise ``src`` (any strides and dtype, finite) into the float32 array ``out`` of
    the same shape (see :func:`normalise`); returns the step's record.

    One pass writes ``out`` (give it ``src``'s memory layout, see
    :func:`medcnn.preprocess._separable.empty_spatial_like`, and every pass reads memory
    in order); statistics accumulate in float64 without a float64 copy of the volume;
    the arithmetic is float32 (within 1 ulp of float64 arithmetic rounded to float32).
    """
    info: dict[str, Any] = {"step": "normalise", "modality": modality}
    if modality == "none":
        np.copyto(out, src, casting="unsafe")
        return info
    if modality == "CT":
        np.copyto(out, src, casting="unsafe")
        if window is not None:
            lo, hi = (float(w) for w in window)
            if not lo < hi:
                raise ConfigError.expected("a CT window (low, high) with low < high", f"{tuple(window)}")
            np.clip(out, lo, hi, out=out)
            info["window"] = [lo, hi]
        n = out.size if mask is None else int(np.count_nonzero(mask))
        if n == 0:
            raise InvalidIntensityError.expected("a non-empty normalisation mask", "an empty mask", path=source)
        if mean is None or std is None:
            if mask is None:
                m, s = _mean_std(out, n)
            else:
                sel = out[mask]
                m, s = _mean_std(sel, n)
                del sel
            info["stats_from"] = "volume"
        else:
            m, s = float(mean), float(std)
            if not np.isfinite(s) or s <= 0 or not np.isfinite(m):
                raise ConfigError.expected("a finite CT mean and a std > 0", f"mean {mean!r}, std {std!r}")
            info["stats_from"] = "dataset"
        if s <= 1e-12 * max(1.0, abs(m)):
            raise _constant_error_at(source, m, n, "after the CT window" if window is not None else "in the scan")
        np.subtract(out, np.float32(m), out=out)
        np.divide(out, np.float32(s), out=out)
        info.update(mean=m, std=s)
        return info
    # MR: z-score inside the foreground (mask, else non-zero voxels); outside set to 0
    if mask is None:
        fg = np.not_equal(src, 0)
        n_fg = int(np.count_nonzero(fg))
        info["foreground"] = "nonzero"
        if n_fg == 0:
            raise _constant_error_at(source, 0.0, src.size, "in the scan")
        m, s = _mean_std(src, n_fg, None if n_fg == src.size else fg)
    else:
        fg = mask
        n_fg = int(np.count_nonzero(fg))
        info["foreground"] = "mask"
        if n_fg == 0:
            raise InvalidIntensityError.expected("a non-empty normalisation mask", "an empty mask", path=source)
        sel = src[fg]
        m, s = _mean_std(sel, n_fg)
        del sel
    if s <= 1e-12 * max(1.0, abs(m)):
        raise _constant_error_at(source, m, n_fg, "inside the foreground")
    np.subtract(src, np.float32(m), out=out, casting="unsafe")
    np.divide(out, np.float32(s), out=out)
    if n_fg != out.size:
        np.copyto(out, 0.0, where=~fg)
    info.update(mean=m, std=s, foreground_voxels=n_fg)
    return info


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
