"""Volume uncertainty intervals from a model's own probabilities (and TTA views).

For a predicted structure (label ``v``) with final label mask ``M`` (after postprocessing)
and class probability ``p`` on the same grid:

* **Kept band** ``R``: the connected components (26-connectivity) of ``(p >= 0.25) | M``
  that touch ``M``. Probability outside ``R`` belongs to blobs that postprocessing removed
  or that never became a label (e.g. a faint second structure); counting it would widen the
  interval with volume the result does not contain.
* ``volume_ml`` = ``|M|`` x voxel volume (the primary volume, unchanged).
* ``volume_soft_ml`` = sum of ``p`` over ``R`` x voxel volume (the expected volume if each
  voxel of the band counts with its probability).
* ``volume_prob_low_ml`` = ``|M & (p >= 0.75)|`` x voxel volume: the confident core.
* ``volume_prob_high_ml`` = ``|R|`` x voxel volume: the label plus the whole uncertain
  boundary band (``p >= 0.25``) around it.
* With test-time augmentation, ``volume_tta_min_ml`` / ``volume_tta_max_ml``: the smallest
  and largest volume of the structure in the individual mirrored views (voxels of ``R``
  that the view's own probabilities label ``v``, by the same argmax/threshold rule as the
  prediction).
* ``volume_low_ml`` = min(prob low, TTA min, ``volume_ml``); ``volume_high_ml`` = max(prob
  high, TTA max, ``volume_ml``).

**What the interval means.** It is a *sensitivity band*: how much the volume would change
if the boundary voxels the model is unsure about (0.25 <= p < 0.75) went one way or the
other, or if the scan were mirrored. It is **not** a confidence interval: models are often
over-confident, so the true volume can lie outside it. How often it contains the reference
volume on held-out cases is measured per shipped model by
``benchmarks/calibrate_volume_intervals.py`` (``docs/volume_intervals.md``).

Probabilities may be float (0..1) or quantised uint8 (``round(p x 255)``, as the
Segmenter stores them: 1 byte per voxel); thresholds are then applied to the quantised
values (an error of at most 1/510 in ``p``).

Ejection fraction: EF = (EDV - ESV) / EDV increases with EDV and decreases with ESV, so
the exact extremes over the two intervals are EF_low = 1 - ESV_high / EDV_low and
EF_high = 1 - ESV_low / EDV_high (:func:`ef_interval_percent`). Both ends are then clipped
to what is physically possible, 0-100 % (an ESV interval reaching above the EDV interval
would otherwise give a negative lower end, e.g. "-30 % to 62 %" for an uncertain RV);
volume ends are >= 0 mL by construction (voxel counts). The clipping is stated in
:data:`INTERVAL_METHOD` and the column definitions.

Imports numpy, pandas and cc3d only (no torch).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, DimensionError
from medcnn.volume import Volume

__all__ = [
    "volume_interval",
    "volume_intervals",
    "ef_interval_percent",
    "cardiac_intervals",
    "INTERVAL_COLUMNS",
    "INTERVAL_METHOD",
    "LOW_THRESHOLD",
    "HIGH_THRESHOLD",
]

#: Probability at or above which a voxel is in the confident core (lower bound).
LOW_THRESHOLD = 0.75
#: Probability at or above which a voxel is in the uncertain band (upper bound).
HIGH_THRESHOLD = 0.25

INTERVAL_METHOD = (f"volume interval from the model's probabilities p: low = label voxels with p >= {LOW_THRESHOLD}, "
                   f"high = connected components (26) of (p >= {HIGH_THRESHOLD} or label) that touch the final label, "
                   "soft = sum of p over those components; with TTA widened to the smallest/largest volume of the "
                   "mirrored views (each view's own labels within those components); volume ends >= 0 mL, EF interval "
                   "ends clipped to 0-100 %. A sensitivity band, not a confidence "
                   "interval: see docs/volume_intervals.md for how often it contains the reference volume")

#: Column meanings (units in the names).
INTERVAL_COLUMNS: dict[str, str] = {
    "volume_low_ml": "lower end of the volume interval in mL: min(confident core, smallest TTA view volume, "
                     "volume_ml)",
    "volume_high_ml": "upper end of the volume interval in mL: max(label + uncertain band, largest TTA view volume, "
                      "volume_ml)",
    "volume_soft_ml": "soft volume in mL: sum of the class probability over the kept band x voxel volume",
    "volume_prob_low_ml": f"volume in mL of the label's voxels with probability >= {LOW_THRESHOLD} (confident core)",
    "volume_prob_high_ml": f"volume in mL of the connected components of (p >= {HIGH_THRESHOLD} or label) touching "
                           "the label (label + uncertain band)",
    "volume_tta_min_ml": "smallest volume in mL over the mirrored TTA views (empty without TTA)",
    "volume_tta_max_ml": "largest volume in mL over the mirrored TTA views (empty without TTA)",
    "interval_method": "how the volume interval was computed",
    "lv_edv_low_ml": "lower end of the EDV interval (mL)", "lv_edv_high_ml": "upper end of the EDV interval (mL)",
    "lv_esv_low_ml": "lower end of the ESV interval (mL)", "lv_esv_high_ml": "upper end of the ESV interval (mL)",
    "lv_ef_low_percent": "lowest EF (%) over the EDV and ESV intervals: 100 x (1 - ESV_high / EDV_low), clipped to "
                         "0-100 %",
    "lv_ef_high_percent": "highest EF (%) over the EDV and ESV intervals: 100 x (1 - ESV_low / EDV_high), clipped "
                          "to 0-100 %",
    "rv_edv_low_ml": "lower end of the RV EDV interval (mL)", "rv_edv_high_ml": "upper end of the RV EDV interval (mL)",
    "rv_esv_low_ml": "lower end of the RV ESV interval (mL)", "rv_esv_high_ml": "upper end of the RV ESV interval (mL)",
    "rv_ef_low_percent": "lowest RV EF (%) over the RV EDV and ESV intervals, clipped to 0-100 %",
    "rv_ef_high_percent": "highest RV EF (%) over the RV EDV and ESV intervals, clipped to 0-100 %",
}


def _kept_band(band: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Union of the 26-connected components of ``band | mask`` that contain a voxel of ``mask``."""
    import cc3d

    both = np.ascontiguousarray(band | mask)
    if not mask.any():
        return np.zeros_like(mask)
    comp = cc3d.connected_components(both.view(np.uint8), connectivity=26)
    ids = np.unique(comp[mask])
    ids = ids[ids > 0]
    return np.isin(comp, ids)


def volume_interval(
    labels: Volume,
    label: int,
    probability: np.ndarray,
    *,
    view_labels: Sequence[np.ndarray] = (),
    scale: float | None = None,
) -> dict[str, Any]:
    """Volume interval of one structure (see the module docstring).

    Args:
        labels: final label map ``(I, J, K)`` (after postprocessing).
        label: the structure's label value.
        probability: its class probability ``(I, J, K)`` on the same grid (the prediction's,
            TTA-averaged when TTA is on); float in [0, 1] or uint8.
        view_labels: with TTA, each mirrored view's own label map ``(I, J, K)`` (before
            postprocessing) on the same grid.
        scale: value of one probability unit (default 1/255 for uint8 input, else 1).

    Returns:
        ``{"volume_ml", "volume_low_ml", "volume_high_ml", "volume_soft_ml",
        "volume_prob_low_ml", "volume_prob_high_ml", "volume_tta_min_ml",
        "volume_tta_max_ml", "interval_method"}``; the TTA entries are ``None`` without views.
    """
    if not isinstance(labels, Volume) or labels.leading_axis is not None:
        raise DimensionError.expected("a 3D label Volume (I, J, K)", f"{type(labels).__name__}",
                                      path=getattr(labels, "source", None))
    p = np.asarray(probability)
    shape = tuple(labels.shape)
    if p.shape != shape or any(np.shape(v) != shape for v in view_labels):
        raise DimensionError.expected(f"probabilities and view labels of shape {shape}",
                                      f"shapes {p.shape}, {[np.shape(v) for v in view_labels]}", path=labels.source)
    if scale is None:
        scale = 1.0 / 255 if p.dtype == np.uint8 else 1.0
    unit = float(scale)

    def at_least(t: float) -> np.ndarray:
        if p.dtype.kind in "ui":  # quantised: compare in integer units (round(t / unit))
            return p >= int(round(t / unit))
        return p >= t

    vox_ml = labels.geometry.voxel_volume_ml
    mask = np.asarray(labels.array) == int(label)
    kept = _kept_band(at_least(HIGH_THRESHOLD), mask)
    volume = int(mask.sum()) * vox_ml
    prob_low = int(np.count_nonzero(mask & at_least(LOW_THRESHOLD))) * vox_ml
    prob_high = int(np.count_nonzero(kept)) * vox_ml
    soft = float(p[kept].sum(dtype=np.float64)) * unit * vox_ml
    views = [int(np.count_nonzero(kept & (np.asarray(v) == int(label)))) * vox_ml for v in view_labels]
    return {"volume_ml": volume, "volume_low_ml": min([prob_low, volume] + views),
            "volume_high_ml": max([prob_high, volume] + views), "volume_soft_ml": soft,
            "volume_prob_low_ml": prob_low, "volume_prob_high_ml": prob_high,
            "volume_tta_min_ml": min(views) if views else None, "volume_tta_max_ml": max(views) if views else None,
            "interval_method": INTERVAL_METHOD}


def volume_intervals(
    probabilities: Volume,
    labels: Volume | None = None,
    *,
    label_values: Sequence[int] | None = None,
    label_names: Mapping[Any, Any] | None = None,
):
    """Volume intervals of every structure of a probability map.

    Args:
        probabilities: ``(C, I, J, K)`` probability Volume (channel ``c`` = label ``c``,
            channel 0 background), e.g. ``Segmenter.predict(..., return_probabilities=True)``
            or ``medcnn segment --probabilities``; float or uint8.
        labels: the final label map (default: argmax of ``probabilities``).
        label_values: labels to report (default 1 .. C-1).
        label_names: ``{value: name}`` for the ``label_name`` column.

    Returns:
        DataFrame, one row per label: ``label``, ``label_name`` and the keys of
        :func:`volume_interval`; ``df.attrs["columns"]`` holds the definitions.
    """
    import pandas as pd

    from medcnn.measure.labels import as_label_names, label_name

    if not isinstance(probabilities, Volume) or probabilities.leading_axis != "channel" \
            or probabilities.array.ndim != 4:
        raise DimensionError.expected("a (C, I, J, K) probability Volume", f"shape "
                                      f"{getattr(probabilities, 'shape', None)}",
                                      path=getattr(probabilities, "source", None))
    arr = np.asarray(probabilities.array)
    if labels is None:
        labels = probabilities.with_array(np.argmax(arr, axis=0).astype(np.uint16), kind="label", leading_axis=None)
    else:
        probabilities.geometry.check_matches(labels.geometry, what="probabilities and labels")
    values = list(label_values) if label_values is not None else list(range(1, arr.shape[0]))
    if any(not 0 < int(v) < arr.shape[0] for v in values):
        raise ConfigError.expected(f"label values between 1 and {arr.shape[0] - 1} (probability channels)",
                                   f"{values}")
    names = as_label_names(label_names)
    rows = [{"label": int(v), "label_name": label_name(names, int(v)), **volume_interval(labels, int(v), arr[int(v)])}
            for v in values]
    df = pd.DataFrame(rows)
    df.attrs["columns"] = dict(INTERVAL_COLUMNS)
    return df


def ef_interval_percent(edv_low_ml: float, edv_high_ml: float, esv_low_ml: float,
                        esv_high_ml: float) -> tuple[float, float]:
    """Exact EF range (%) over EDV in [edv_low, edv_high] and ESV in [esv_low, esv_high]:
    ``(100 (1 - ESV_high / EDV_low), 100 (1 - ESV_low / EDV_high))``, each end clipped to
    the physically possible 0-100 % (an EF below 0 would mean the ventricle grows in
    systole); NaN where an EDV end is not positive."""
    lo = 100.0 * (1.0 - esv_high_ml / edv_low_ml) if edv_low_ml > 0 else float("nan")
    hi = 100.0 * (1.0 - esv_low_ml / edv_high_ml) if edv_high_ml > 0 else float("nan")
    return _clip_percent(lo), _clip_percent(hi)


def _clip_percent(value: float) -> float:
    """``value`` clipped to [0, 100] (NaN stays NaN)."""
    return value if value != value else min(100.0, max(0.0, value))


def cardiac_intervals(ed: Mapping[int, Mapping[str, Any]], es: Mapping[int, Mapping[str, Any]], *, lv_blood: int,
                      rv_blood: int | None = None) -> dict[str, float | None]:
    """EDV/ESV/EF interval columns from per-label interval rows at ED and ES.

    Args:
        ed, es: ``{label: row}`` with ``volume_low_ml`` / ``volume_high_ml`` (from
            :func:`volume_interval`).
        lv_blood, rv_blood: label values of the blood pools.

    Returns:
        ``lv_edv_low_ml`` ... ``lv_ef_high_percent`` (and ``rv_*`` with an RV); ``None``
        where a phase has no interval for the label.
    """
    out: dict[str, float | None] = {}
    for prefix, lab in (("lv", lv_blood), ("rv", rv_blood)):
        if lab is None:
            continue
        a, b = ed.get(lab), es.get(lab)
        if a is None or b is None or a.get("volume_low_ml") is None or b.get("volume_low_ml") is None:
            continue
        e_lo, e_hi = max(0.0, float(a["volume_low_ml"])), max(0.0, float(a["volume_high_ml"]))
        s_lo, s_hi = max(0.0, float(b["volume_low_ml"])), max(0.0, float(b["volume_high_ml"]))
        ef_lo, ef_hi = ef_interval_percent(e_lo, e_hi, s_lo, s_hi)
        out.update({f"{prefix}_edv_low_ml": e_lo, f"{prefix}_edv_high_ml": e_hi, f"{prefix}_esv_low_ml": s_lo,
                    f"{prefix}_esv_high_ml": s_hi, f"{prefix}_ef_low_percent": ef_lo,
                    f"{prefix}_ef_high_percent": ef_hi})
    return out
