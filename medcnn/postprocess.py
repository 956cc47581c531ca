"""From network outputs to clean label maps: argmax/threshold, components, holes.

All functions take and return :class:`~medcnn.volume.Volume` objects; sizes are in mL,
computed from the geometry's voxel volume, so rules mean the same on any spacing.
This module imports numpy, scipy and cc3d only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, DimensionError, InvalidLabelError
from medcnn.volume import Volume

__all__ = [
    "LabelRule",
    "PostprocessSpec",
    "argmax_labels",
    "threshold_labels",
    "argmax_array",
    "threshold_array",
    "postprocess",
    "keep_largest_component",
    "remove_small_components",
    "fill_holes",
]

_CONNECTIVITIES = (6, 18, 26)


def _label_dtype(max_value: int) -> type:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return dt
    raise InvalidLabelError.expected("label values below 2**32", f"maximum {max_value}")


def _check_probability(prob: Volume) -> np.ndarray:
    if prob.leading_axis != "channel" or prob.array.ndim != 4:
        raise DimensionError.expected("a (C, I, J, K) probability Volume with leading_axis='channel'",
                                      f"shape {prob.shape}, leading_axis={prob.leading_axis!r}", path=prob.source)
    return prob.array


def _label_values(label_values: Sequence[int] | None, n: int, default_start: int, source: str | None) -> list[int]:
    if label_values is None:
        return list(range(default_start, default_start + n))
    vals = [int(v) for v in label_values]
    if len(vals) != n:
        raise DimensionError.expected(f"{n} label values (one per channel)", f"{len(vals)}", path=source)
    if any(v < 0 for v in vals):
        raise InvalidLabelError.expected("non-negative label values", f"{vals}", path=source)
    return vals


def argmax_array(prob: np.ndarray, *, label_values: Sequence[int] | None = None) -> np.ndarray:
    """:func:`argmax_labels` on a bare ``(C, ...)`` array (any trailing shape): the most
    probable channel's label value, ties to the lower channel (as ``np.argmax``).

    ``C`` element-wise passes instead of ``np.argmax(axis=0)``: no int64 temporary."""
    arr = np.asarray(prob)
    vals = _label_values(label_values, arr.shape[0], 0, None)
    dtype = _label_dtype(max(vals))
    idx = np.zeros(arr.shape[1:], dtype=_label_dtype(arr.shape[0] - 1))
    best = arr[0].copy()
    for c in range(1, arr.shape[0]):
        win = arr[c] > best
        idx[win] = c
        np.maximum(best, arr[c], out=best)
    if vals == list(range(arr.shape[0])) and idx.dtype == dtype:
        return idx
    return np.asarray(vals, dtype=dtype)[idx]


def threshold_array(prob: np.ndarray, threshold: float = 0.5, *,
                    label_values: Sequence[int] | None = None) -> np.ndarray:
    """:func:`threshold_labels` on a bare ``(C, ...)`` array (any trailing shape)."""
    arr = np.asarray(prob)
    vals = _label_values(label_values, arr.shape[0], 1, None)
    out = np.zeros(arr.shape[1:], dtype=_label_dtype(max(vals + [0])))
    for c, v in enumerate(vals):
        out[arr[c] > threshold] = v
    return out


def argmax_labels(prob: Volume, *, label_values: Sequence[int] | None = None) -> Volume:
    """Softmax-style probabilities → label map (voxel takes the most probable channel).

    Args:
        prob: ``(C, I, J, K)`` probabilities (or logits), ``leading_axis="channel"``;
            channel 0 is usually background.
        label_values: label written for each channel (default ``0 .. C-1``).

    Returns:
        ``(I, J, K)`` label Volume, uint8 (uint16/uint32 if values need it); ties go to the
        lower channel.
    """
    arr = _check_probability(prob)
    _label_values(label_values, arr.shape[0], 0, prob.source)
    return Volume(argmax_array(arr, label_values=label_values), prob.geometry, "label", None, None, prob.meta)


def threshold_labels(prob: Volume, threshold: float = 0.5, *, label_values: Sequence[int] | None = None) -> Volume:
    """Sigmoid / multi-label probabilities → one label map.

    Channel ``c`` (no background channel) marks label ``label_values[c]`` (default
    ``c + 1``) where its probability is ``> threshold``. Channels are applied in order, so
    a later channel overwrites an earlier one: list nested regions from outer to inner
    (e.g. BraTS whole tumour, tumour core, enhancing tumour).

    Returns:
        ``(I, J, K)`` label Volume (uint8 unless values need more).
    """
    arr = _check_probability(prob)
    _label_values(label_values, arr.shape[0], 1, prob.source)
    return Volume(threshold_array(arr, threshold, label_values=label_values), prob.geometry, "label", None, None,
                  prob.meta)


@dataclass(frozen=True)
class LabelRule:
    """Per-label override of :class:`PostprocessSpec`; ``None`` fields inherit the spec."""

    keep_largest: bool | None = None
    fill_holes: bool | None = None
    min_component_ml: float | None = None
    fill_holes_per_slice: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class PostprocessSpec:
    """Clean-up rules applied to every non-zero label, with per-label overrides.

    Attributes:
        keep_largest: keep only the largest connected component of each label.
        fill_holes: fill background cavities fully enclosed by a label (never overwrites
            another label).
        min_component_ml: remove components smaller than this volume (mL).
        fill_holes_per_slice: fill holes in 2D slices (perpendicular to ``slice_axis``)
            instead of in 3D — for thick-slice data where 3D cavities leak between slices.
        slice_axis: array axis for per-slice filling; ``None`` = the coarsest-spacing axis.
        connectivity: 6, 18 or 26 (3D neighbourhood for components).
        per_label: ``{label: LabelRule}`` overrides.
        keep_largest_groups: label groups, applied first and in order: keep only the
            largest connected component of the union of each group's labels (others
            become 0), as nnU-Net's ``remove_all_but_largest_component_from_segmentation``
            (a group of one label is that label's largest component).
    """

    keep_largest: bool = False
    fill_holes: bool = False
    min_component_ml: float = 0.0
    fill_holes_per_slice: bool = False
    slice_axis: int | None = None
    connectivity: int = 26
    per_label: dict[int, LabelRule] = field(default_factory=dict)
    keep_largest_groups: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        groups = []
        for g in self.keep_largest_groups:
            g = (g,) if isinstance(g, int) else tuple(g)
            if not g or any(isinstance(v, bool) or int(v) != v or int(v) <= 0 for v in g):
                raise ConfigError.expected("keep_largest_groups: non-empty lists of labels > 0", repr(g))
            groups.append(tuple(int(v) for v in g))
        object.__setattr__(self, "keep_largest_groups", tuple(groups))
        if self.connectivity not in _CONNECTIVITIES:
            raise ConfigError.expected(f"connectivity in {_CONNECTIVITIES}", repr(self.connectivity))
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ConfigError.expected("slice_axis 0, 1, 2 or None", repr(self.slice_axis))
        rules = {}
        for k, r in dict(self.per_label).items():
            if isinstance(r, Mapping):
                r = LabelRule(**r)
            if not isinstance(r, LabelRule):
                raise ConfigError.expected("a LabelRule per label", f"{type(r).__name__} for label {k}")
            if int(k) <= 0:
                raise ConfigError.expected("per-label rules for labels > 0", f"label {k}")
            rules[int(k)] = r
        for m in [self.min_component_ml] + [r.min_component_ml for r in rules.values() if r.min_component_ml is not None]:
            if not np.isfinite(m) or m < 0:
                raise ConfigError.expected("min_component_ml >= 0", repr(m))
        object.__setattr__(self, "per_label", rules)

    def rule(self, label: int) -> LabelRule:
        """The effective rule for ``label`` (overrides merged onto the defaults)."""
        r = self.per_label.get(int(label), LabelRule())
        return LabelRule(
            keep_largest=self.keep_largest if r.keep_largest is None else r.keep_largest,
            fill_holes=self.fill_holes if r.fill_holes is None else r.fill_holes,
            min_component_ml=self.min_component_ml if r.min_component_ml is None else r.min_component_ml,
            fill_holes_per_slice=self.fill_holes_per_slice if r.fill_holes_per_slice is None else r.fill_holes_per_slice,
        )

    @property
    def is_noop(self) -> bool:
        return not self.keep_largest_groups and all(not (r.keep_largest or r.fill_holes or (r.min_component_ml or 0) > 0)
                   for r in [self.rule(0)] + [self.rule(k) for k in self.per_label])

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("per_label", "keep_largest_groups")}
        d["per_label"] = {str(k): r.to_dict() for k, r in sorted(self.per_label.items())}
        if self.keep_largest_groups:  # only when set: older bundles keep their spec hash
            d["keep_largest_groups"] = [list(g) for g in self.keep_largest_groups]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError.expected(f"postprocessing keys among {sorted(known)}", f"unknown {unknown}")
        kw = dict(d)
        if "per_label" in kw:
            per = {}
            for k, r in dict(kw["per_label"]).items():
                bad = sorted(set(r) - {f.name for f in fields(LabelRule)})
                if bad:
                    raise ConfigError.expected("LabelRule keys keep_largest/fill_holes/min_component_ml/"
                                               "fill_holes_per_slice", f"unknown {bad} for label {k}")
                per[int(k)] = LabelRule(**r)
            kw["per_label"] = per
        return cls(**kw)


# ---------------------------------------------------------------------------- binary operations
def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    import cc3d

    cc = cc3d.connected_components(mask.astype(np.uint8, copy=False), connectivity=connectivity)
    return cc, np.bincount(cc.ravel())


def _keep_largest(mask: np.ndarray, connectivity: int) -> np.ndarray:
    cc, counts = _components(mask, connectivity)
    if counts.size <= 2:  # zero or one component
        return mask
    counts[0] = 0
    return cc == int(np.argmax(counts))


def _remove_small(mask: np.ndarray, min_ml: float, voxel_ml: float, connectivity: int) -> np.ndarray:
    cc, counts = _components(mask, connectivity)
    # a component of n voxels holds n * voxel_ml mL; keep it unless that is below min_ml
    # (relative tolerance 1e-9 so a component of exactly min_ml is kept despite rounding)
    keep = counts * voxel_ml >= min_ml * (1 - 1e-9)
    keep[0] = False
    return keep[cc]


def _fill(mask: np.ndarray, per_slice_axis: int | None) -> np.ndarray:
    from scipy import ndimage

    if per_slice_axis is None:
        return ndimage.binary_fill_holes(mask)
    out = np.empty_like(mask)
    for s in range(mask.shape[per_slice_axis]):
        idx = (slice(None),) * per_slice_axis + (s,)
        out[idx] = ndimage.binary_fill_holes(mask[idx])
    return out


def _check_labels(labels: Volume) -> np.ndarray:
    if labels.leading_axis is not None or labels.array.ndim != 3:
        raise DimensionError.expected("a 3D label Volume (I, J, K)", f"shape {labels.shape}", path=labels.source,
                                      hint="postprocess each frame separately (volume.frame(t))")
    arr = labels.array
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise InvalidLabelError.expected("an integer label map", f"dtype {arr.dtype}", path=labels.source)
    return arr


def keep_largest_component(labels: Volume, *, labels_to_process: Sequence[int] | None = None,
                           connectivity: int = 26) -> Volume:
    """Keep the largest connected component of each label (others become 0)."""
    return postprocess(labels, PostprocessSpec(connectivity=connectivity, per_label={
        int(v): LabelRule(keep_largest=True) for v in _present(labels, labels_to_process)}))


def remove_small_components(labels: Volume, min_component_ml: float, *,
                            labels_to_process: Sequence[int] | None = None, connectivity: int = 26) -> Volume:
    """Remove components smaller than ``min_component_ml`` (mL, from the voxel volume)."""
    return postprocess(labels, PostprocessSpec(connectivity=connectivity, per_label={
        int(v): LabelRule(min_component_ml=min_component_ml) for v in _present(labels, labels_to_process)}))


def fill_holes(labels: Volume, *, labels_to_process: Sequence[int] | None = None, per_slice: bool = False,
               slice_axis: int | None = None) -> Volume:
    """Fill background cavities enclosed by each label (3D, or per 2D slice)."""
    return postprocess(labels, PostprocessSpec(slice_axis=slice_axis, per_label={
        int(v): LabelRule(fill_holes=True, fill_holes_per_slice=per_slice)
        for v in _present(labels, labels_to_process)}))


def _present(labels: Volume, which: Sequence[int] | None) -> list[int]:
    if which is not None:
        return [int(v) for v in which if int(v) != 0]
    vals = np.unique(_check_labels(labels))
    return [int(v) for v in vals if v != 0]


def postprocess(labels: Volume, spec: PostprocessSpec) -> Volume:
    """Clean a label map label by label.

    For every non-zero label, with its effective :meth:`PostprocessSpec.rule`, in order:
    remove components smaller than ``min_component_ml`` (n voxels x voxel volume < limit)
    → keep the largest component → fill enclosed background holes (3D, or per slice).
    Removed voxels become background (0); hole filling only claims background voxels.

    Args:
        labels: 3D integer label Volume ``(I, J, K)``.
        spec: the rules.

    Returns:
        New label Volume, same geometry and dtype.
    """
    from scipy import ndimage

    arr = _check_labels(labels)
    out = arr.copy()
    if spec.is_noop:
        return labels.with_array(out, kind="label")
    for group in spec.keep_largest_groups:
        mask = np.isin(out, group)
        if mask.any():
            out[mask & ~_keep_largest(mask, spec.connectivity)] = 0
    arr = out.copy()
    values = np.unique(arr)
    values = values[values != 0]
    boxes = ndimage.find_objects(arr.astype(np.int64, copy=False)) if values.size else []
    axis = spec.slice_axis if spec.slice_axis is not None else int(np.argmax(labels.spacing))
    for v in values:
        rule = spec.rule(int(v))
        if not (rule.keep_largest or rule.fill_holes or (rule.min_component_ml or 0) > 0):
            continue
        # work inside the label's bounding box, padded by one voxel so holes touching
        # the box edge are not mistaken for enclosed ones
        box = boxes[int(v) - 1]
        region = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, arr.shape))
        sub = out[region]
        mask = sub == v
        new = mask
        if rule.min_component_ml and rule.min_component_ml > 0:
            new = _remove_small(new, rule.min_component_ml, labels.voxel_volume_ml, spec.connectivity)
        if rule.keep_largest:
            new = _keep_largest(new, spec.connectivity)
        if rule.fill_holes:
            filled = _fill(new, axis if rule.fill_holes_per_slice else None)
            new = new | (filled & (sub == 0))
        sub[mask & ~new] = 0
        sub[new & ~mask] = v
    return labels.with_array(out, kind="label")
