"""Label volumes in mL from label maps and probability maps.

Definitions (stated again in every table's ``method`` column):

* **volume_ml** = voxel count x voxel volume. The voxel volume is the product of the three
  spacings in mm^3, divided by 1000 to give mL (1 mL = 1 cm^3 = 1000 mm^3). This is what
  PyRadiomics calls ``VoxelVolume`` (in mm^3) and what clinical tools report as
  "segmented volume". For a probability map the hard voxel count is that of the argmax
  over channels (or of ``p >= threshold`` when a threshold is given).
* **soft_volume_ml** (probability maps only) = sum over voxels of the class probability x
  voxel volume / 1000: the expected volume under the model's probabilities, which does not
  depend on a threshold and is less sensitive to boundary voxels.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medcnn.errors import DimensionError, InvalidIntensityError
from medcnn.measure._common import count_values, iter_slabs, label_array
from medcnn.measure.labels import as_label_names, label_name
from medcnn.volume import Volume

__all__ = [
    "label_volumes",
    "probability_volumes",
    "METHOD_VOXEL_COUNT",
    "METHOD_SOFT",
    "VOLUME_COLUMNS",
]

METHOD_VOXEL_COUNT = "voxel count x voxel volume (mm^3) / 1000"
METHOD_SOFT = "sum of probabilities x voxel volume (mm^3) / 1000"

#: Column -> meaning and unit, for table headers.
VOLUME_COLUMNS: dict[str, str] = {
    "label": ("label value (integer in the label map; channel index for probability maps); for a region "
              "(regions=) the labels it unites joined by '+', e.g. '1+2+4'"),
    "label_name": "structure name from the label table ('label_<v>' when unnamed)",
    "voxel_count": "number of voxels with this label (argmax / thresholded for probability maps)",
    "voxel_volume_mm3": "volume of one voxel in mm^3 (product of the spacings)",
    "volume_ml": f"label volume in mL = {METHOD_VOXEL_COUNT}",
    "soft_volume_ml": f"probability maps only: soft volume in mL = {METHOD_SOFT}",
    "frame": "cine label series only: frame index (0-based)",
    "time_ms": "cine label series only: frame trigger time in ms",
    "method": "how volume_ml (and soft_volume_ml) were computed",
}


def _check_regions(regions: Mapping[str, Sequence[int]] | None, source: Any) -> dict[str, list[int]]:
    """``{name: sorted distinct labels > 0}`` or ConfigError naming the region."""
    from medcnn.errors import ConfigError

    out: dict[str, list[int]] = {}
    for name, members in dict(regions or {}).items():
        ok = (isinstance(members, (list, tuple, np.ndarray)) and len(members) > 0
              and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in members))
        if not str(name).strip() or not ok:
            raise ConfigError.expected("regions as {name: [label values > 0, ...]}",
                                       f"{name!r}: {members!r}", path=source)
        out[str(name)] = sorted({int(v) for v in members})
    return out


def _selected(values: np.ndarray, names: Mapping[int, str], labels: Sequence[int] | None,
              include_background: bool) -> list[int]:
    if labels is not None:
        return sorted({int(v) for v in labels})
    chosen = set(int(v) for v in values.tolist()) | set(names)
    if not include_background:
        chosen.discard(0)
    return sorted(chosen)


def label_volumes(
    volume: Volume,
    *,
    label_names: Mapping[Any, Any] | None = None,
    labels: Sequence[int] | None = None,
    include_background: bool = False,
    threshold: float | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Volume of every label in mL.

    Args:
        volume: a label map ``(I, J, K)``; a cine label series ``(T, I, J, K)`` with
            ``leading_axis="time"`` (one row per frame and label); or a probability map
            ``(C, I, J, K)`` with ``kind="probability"`` and ``leading_axis="channel"``
            (delegates to :func:`probability_volumes`).
        label_names: ``{value: name}`` (or ``{name: value}``), e.g. from
            :func:`medcnn.measure.load_label_table`.
        labels: report exactly these label values (absent ones get 0 mL). Default: every
            label present (in any frame of a cine series: every frame then has a row for
            it) plus every label named in ``label_names``, without 0.
        include_background: also report label 0 when ``labels`` is not given.
        threshold: probability maps only, see :func:`probability_volumes`.
        regions: label maps only: named unions of labels reported after the labels, e.g.
            BraTS ``{"whole tumour": [1, 2, 4], "tumour core": [1, 4], "enhancing": [4]}``.
            A region row has ``label`` = ``"1+2+4"`` and ``label_name`` = its name; its
            volume counts every voxel holding any of its labels once.

    Returns:
        DataFrame with columns ``label``, ``label_name``, ``voxel_count``,
        ``voxel_volume_mm3``, ``volume_ml`` (mL), ``method`` (plus ``frame``/``time_ms``
        for cine, ``soft_volume_ml`` for probability maps). ``df.attrs["columns"]``
        describes every column with its unit.
    """
    region_sets = _check_regions(regions, volume.source)
    if volume.kind == "probability" or volume.leading_axis == "channel":
        if region_sets:
            from medcnn.errors import ConfigError

            raise ConfigError.expected("regions= with a label map", "a probability map", path=volume.source,
                                       hint="Reduce it to labels first (medcnn.postprocess.argmax_labels)")
        return probability_volumes(volume, label_names=label_names, labels=labels,
                                   include_background=include_background, threshold=threshold)
    names = as_label_names(label_names)
    arr = label_array(volume, allow_time=True)
    voxel_ml = volume.voxel_volume_ml
    voxel_mm3 = float(np.prod(volume.spacing))
    frames = [(None, arr)] if volume.leading_axis is None else list(enumerate(arr))
    per_frame = [count_values(a) for _, a in frames]
    # one set of labels for every frame: a label absent from some frames gets 0 mL rows there
    present = np.unique(np.concatenate([v for v, _ in per_frame])) if per_frame else np.array([], np.int64)
    chosen = _selected(present, names, labels, include_background)
    rows = []
    for (t, _), (values, counts) in zip(frames, per_frame):
        lookup = dict(zip(values.tolist(), counts.tolist()))
        base: dict[str, Any] = {} if t is None else {
            "frame": t, "time_ms": volume.frame_times_ms[t] if volume.frame_times_ms else np.nan}
        entries = [(v, label_name(names, v), int(lookup.get(v, 0)), METHOD_VOXEL_COUNT) for v in chosen]
        entries += [("+".join(map(str, members)), rname,
                     int(sum(lookup.get(v, 0) for v in members)),  # labels are disjoint: counts add up
                     f"union of labels {', '.join(map(str, members))}: {METHOD_VOXEL_COUNT}")
                    for rname, members in region_sets.items()]
        for label, lname, n, method in entries:
            rows.append({**base, "label": label, "label_name": lname, "voxel_count": n,
                         "voxel_volume_mm3": voxel_mm3, "volume_ml": n * voxel_ml, "method": method})
    cols = (["frame", "time_ms"] if volume.leading_axis == "time" else []) + [
        "label", "label_name", "voxel_count", "voxel_volume_mm3", "volume_ml", "method"]
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["columns"] = {c: VOLUME_COLUMNS[c] for c in cols}
    df.attrs["source"] = volume.source
    return df


def probability_volumes(
    volume: Volume,
    *,
    label_names: Mapping[Any, Any] | None = None,
    labels: Sequence[int] | None = None,
    include_background: bool = False,
    threshold: float | None = None,
    atol: float = 1e-3,
) -> pd.DataFrame:
    """Hard and soft volume (mL) of each channel of a probability map.

    Args:
        volume: ``kind="probability"``, ``leading_axis="channel"``, array ``(C, I, J, K)``
            of probabilities in [0, 1]; channel ``c`` is label ``c`` (channel 0 is taken
            as background and skipped unless ``include_background``).
        label_names, labels: as in :func:`label_volumes` (labels are channel indices).
        threshold: ``None``: the hard label of a voxel is the argmax over channels
            (mutually exclusive classes, softmax output). A number: voxels with
            ``p >= threshold`` count for that channel (independent sigmoid outputs).
        atol: tolerance on the [0, 1] range check.

    Returns:
        DataFrame like :func:`label_volumes` plus ``soft_volume_ml`` (mL).

    Raises:
        DimensionError: not a (C, I, J, K) channel volume.
        InvalidIntensityError: NaN/inf or values outside [0, 1].
    """
    if volume.leading_axis != "channel":
        raise DimensionError.expected("a probability map (C, I, J, K) with leading_axis='channel'",
                                      f"leading_axis={volume.leading_axis!r}, shape {volume.shape}", path=volume.source)
    names = as_label_names(label_names)
    arr = volume.array
    if arr.dtype.kind not in "fiub":
        raise InvalidIntensityError.expected("numeric probabilities", f"dtype {arr.dtype}", path=volume.source)
    n_ch = arr.shape[0]
    voxel_ml = volume.voxel_volume_ml
    soft = np.zeros(n_ch, dtype=np.float64)
    hard = np.zeros(n_ch, dtype=np.int64)
    per_index = int(np.prod(arr.shape[2:]))
    for sl in iter_slabs(arr.shape[1], per_index * n_ch):
        chunk = arr[:, sl]
        if chunk.dtype.kind == "f" and not np.all(np.isfinite(chunk)):
            raise InvalidIntensityError.expected("finite probabilities", "NaN or infinite values", path=volume.source)
        lo, hi = float(chunk.min()), float(chunk.max())
        if lo < -atol or hi > 1 + atol:
            raise InvalidIntensityError.expected(
                "probabilities in [0, 1]", f"values from {lo:g} to {hi:g}", path=volume.source,
                hint="Are these logits? Apply softmax/sigmoid first")
        soft += chunk.reshape(n_ch, -1).sum(axis=1, dtype=np.float64)
        if threshold is None:
            hard += np.bincount(np.argmax(chunk, axis=0).ravel(), minlength=n_ch)
        else:
            hard += np.count_nonzero((chunk >= threshold).reshape(n_ch, -1), axis=1)
    if labels is not None:
        chosen = sorted({int(v) for v in labels})
        bad = [c for c in chosen if not 0 <= c < n_ch]
        if bad:
            raise DimensionError.expected(f"channel indices 0..{n_ch - 1}", f"labels {bad}", path=volume.source)
    else:
        chosen = list(range(0 if include_background else 1, n_ch))
    hard_how = "argmax over channels" if threshold is None else f"p >= {threshold:g}"
    method = f"volume_ml: {hard_how}, {METHOD_VOXEL_COUNT}; soft_volume_ml: {METHOD_SOFT}"
    rows = [dict(label=c, label_name=label_name(names, c), voxel_count=int(hard[c]),
                 voxel_volume_mm3=float(np.prod(volume.spacing)), volume_ml=int(hard[c]) * voxel_ml,
                 soft_volume_ml=float(soft[c]) * voxel_ml, method=method) for c in chosen]
    cols = ["label", "label_name", "voxel_count", "voxel_volume_mm3", "volume_ml", "soft_volume_ml", "method"]
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["columns"] = {c: VOLUME_COLUMNS[c] for c in cols}
    df.attrs["source"] = volume.source
    return df
