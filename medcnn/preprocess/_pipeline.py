"""The invertible preprocessing pipeline: spec, preprocessor and its record."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, DimensionError, InvalidIntensityError
from medcnn.preprocess._intensity import (_normalise_into, check_finite, check_modality, check_mr_foreground,
                                         mr_foreground_mask)
from medcnn.preprocess._monai import check_monai_ops, crop_regions, monai_forward
from medcnn.preprocess._nnunet import check_nnunet_options, nnunet_forward, nnunet_resample_back
from medcnn.preprocess._orient import Reorient, check_orientation_code, plan_reorient
from medcnn.preprocess._separable import empty_spatial_like, labels_of_linear_resample
from medcnn.preprocess._resample import (
    _check_order,
    _is_diagonal,
    _check_spacing,
    _resample_volume,
    anisotropic_axis,
    resampled_geometry,
)
from medcnn.volume import DEFAULT_ATOL_MM, Geometry, Volume, nonzero_extent

__all__ = [
    "PreprocessSpec",
    "Preprocessor",
    "PreprocessRecord",
    "check_same_grid",
    "foreground_box",
    "CHANNEL_ATOL_MM",
]

#: Tolerance for "same grid" between input channels (float32 headers round to ~1e-5 mm).
CHANNEL_ATOL_MM = 10 * DEFAULT_ATOL_MM


@dataclass(frozen=True)
class PreprocessSpec:
    """What preprocessing a model expects; stored in model bundles (:meth:`to_dict`).

    Attributes:
        orientation: reorient by axis permutation/flip only (lossless), e.g. ``"RAS"``;
            ``None`` keeps the input's array order.
        target_spacing: spacing in mm along the (reoriented) array axes; ``None`` keeps it.
        modalities: per input channel ``"CT"``, ``"MR"`` or ``"none"``.
        ct_window: clip window in HU for CT channels (e.g. dataset 0.5/99.5 percentiles,
            see :func:`medcnn.preprocess.ct_statistics`).
        ct_mean, ct_std: dataset statistics for the CT z-score (after clipping); when
            ``None`` each volume's own statistics are used.
        crop_foreground: crop to the box of voxels that are non-zero in any channel
            (the ``mr_foreground`` mask when that is set), undone by padding in
            :meth:`PreprocessRecord.to_input_grid`.
        mr_foreground: which voxels an MR channel's z-score statistics come from (the
            brain of a brain scan; outside it the channel is set to 0), one of
            :data:`medcnn.preprocess.MR_FOREGROUNDS`: ``None``/``"nonzero"`` (default)
            each channel's own non-zero voxels; ``"nonzero_any"`` voxels non-zero in any
            channel (skull-stripped multi-sequence scans: a voxel that is 0 in one sequence
            inside the brain still counts); ``"border_mode"`` voxels differing, in any
            channel, from that channel's most frequent border value (a constant non-zero
            background, e.g. scans z-scored by their provider as in BRATS 2015).
        image_order: spline order for intensities (1 or 3 usually).
        anisotropy_threshold: nnU-Net rule; above this max/min spacing ratio the coarse
            axis is interpolated separately with ``anisotropic_order``.
        anisotropic_order: spline order along the coarse axis (1 = linear, no overshoot).
        nnunet: nnU-Net v2's rules instead of all of the above (axis order, crop to
            non-zero, per-channel normalisation, resampling; see
            :mod:`medcnn.preprocess._nnunet`), as written by ``medcnn models import``;
            ``orientation`` must then be ``None`` and ``modalities`` ``"none"``.
        monai: a MONAI bundle's preprocessing as an ordered list of operations
            (:mod:`medcnn.preprocess._monai`) instead of the fields above (same rule).
    """

    orientation: str | None = "RAS"
    target_spacing: tuple[float, float, float] | None = None
    modalities: tuple[str, ...] = ("MR",)
    ct_window: tuple[float, float] | None = None
    ct_mean: float | None = None
    ct_std: float | None = None
    crop_foreground: bool = False
    image_order: int = 3
    anisotropy_threshold: float = 3.0
    anisotropic_order: int = 1
    mr_foreground: str | None = None
    nnunet: dict[str, Any] | None = None
    monai: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.orientation is not None:
            object.__setattr__(self, "orientation", check_orientation_code(self.orientation))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", _check_spacing(self.target_spacing))
        mods = (self.modalities,) if isinstance(self.modalities, str) else tuple(self.modalities)
        if not mods:
            raise ConfigError.expected("at least one modality", "none")
        object.__setattr__(self, "modalities", tuple(check_modality(m) for m in mods))
        if self.ct_window is not None:
            w = tuple(float(v) for v in self.ct_window)
            if len(w) != 2 or not w[0] < w[1]:
                raise ConfigError.expected("ct_window (low, high) with low < high", repr(self.ct_window))
            object.__setattr__(self, "ct_window", w)
        if (self.ct_mean is None) != (self.ct_std is None):
            raise ConfigError.expected("both ct_mean and ct_std, or neither", f"ct_mean={self.ct_mean}, ct_std={self.ct_std}")
        if self.ct_std is not None and not float(self.ct_std) > 0:
            raise ConfigError.expected("ct_std > 0", repr(self.ct_std))
        for name in ("image_order", "anisotropic_order"):
            try:
                _check_order(getattr(self, name))
            except ValueError:
                raise ConfigError.expected(f"{name} between 0 and 5", repr(getattr(self, name))) from None
        if not float(self.anisotropy_threshold) >= 1:
            raise ConfigError.expected("anisotropy_threshold >= 1", repr(self.anisotropy_threshold))
        object.__setattr__(self, "mr_foreground", check_mr_foreground(self.mr_foreground))
        if self.nnunet is not None:
            object.__setattr__(self, "nnunet", check_nnunet_options(self.nnunet, len(mods)))
        if self.monai is not None:
            object.__setattr__(self, "monai", check_monai_ops(self.monai))
        if self.nnunet is not None and self.monai is not None:
            raise ConfigError.expected("nnunet or monai preprocessing, not both", "both")
        if self.nnunet is not None or self.monai is not None:
            if self.orientation is not None or self.target_spacing is not None or self.crop_foreground \
                    or any(m != "none" for m in mods) or self.mr_foreground is not None:
                raise ConfigError.expected("orientation, target_spacing and crop_foreground unset and modalities "
                                           "'none' with nnunet/monai preprocessing (their options decide them)",
                                           f"orientation={self.orientation!r}, target_spacing={self.target_spacing!r}, "
                                           f"crop_foreground={self.crop_foreground}, modalities={list(mods)}")

    @property
    def n_channels(self) -> int:
        return len(self.modalities)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        for k in ("nnunet", "monai", "mr_foreground"):  # only when set: other bundles' JSON (and spec hash) stay
            if d[k] is None:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError.expected(f"preprocessing keys among {sorted(known)}", f"unknown {unknown}")
        kw = dict(d)
        for k in ("target_spacing", "modalities", "ct_window"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def check_same_grid(channels: Sequence[Volume], *, atol_mm: float = CHANNEL_ATOL_MM) -> Geometry:
    """Check that all channels share one voxel grid and return it (the first one's).

    Raises:
        GeometryMismatchError: naming both files and what differs.
        DimensionError: a channel is not 3D.
    """
    if not channels:
        raise ValueError("expected at least one channel, got none")
    for v in channels:
        if v.leading_axis is not None:
            raise DimensionError.expected(
                "a 3D volume per channel", f"a 4D volume ({v.leading_axis}, {v.array.shape[0]})", path=v.source,
                hint="preprocess each frame separately (volume.frame(t)) or pass channels as separate volumes")
    first = channels[0].geometry
    for v in channels[1:]:
        first.check_matches(v.geometry, atol_mm=atol_mm, what="input channels")
    return first


def foreground_box(arrays: Sequence[np.ndarray]) -> tuple[tuple[int, int], ...] | None:
    """``((start, stop), ...)`` per axis of the voxels non-zero in any array, or ``None``."""
    any_nz = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        any_nz |= a != 0
    return nonzero_extent(any_nz)


def _add_time(timings: dict[str, float] | None, key: str, since: float) -> None:
    """Add the seconds since ``since`` to ``timings[key]`` (when timings are kept)."""
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - since


@dataclass
class PreprocessRecord:
    """Everything needed to bring model-grid outputs back to the input grid.

    Attributes:
        input_geometry: the grid of the input channels (outputs land exactly here).
        model_geometry: the grid of the network input/output.
        steps: JSON-able dicts, in the order applied (``"reorient"``, ``"crop"``,
            ``"normalise"``, ``"resample"``); spatial steps carry ``geometry_before`` and
            ``geometry_after``.
    """

    input_geometry: Geometry
    model_geometry: Geometry
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"input_geometry": self.input_geometry.to_dict(), "model_geometry": self.model_geometry.to_dict(),
                "steps": [dict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessRecord":
        return cls(Geometry.from_dict(d["input_geometry"]), Geometry.from_dict(d["model_geometry"]),
                   [dict(s) for s in d["steps"]])

    def step(self, name: str) -> dict[str, Any] | None:
        """The first recorded step called ``name``, or ``None``."""
        return next((s for s in self.steps if s["step"] == name), None)

    # ------------------------------------------------------------------ back to the input grid
    def to_input_grid(self, array: np.ndarray | Volume, *, kind: Literal["label", "probability", "logits"],
                      fill: float | Sequence[float] | None = None, activation: str = "softmax",
                      timings: dict[str, float] | None = None) -> Volume:
        """Bring a model-grid output back onto exactly :attr:`input_geometry`.

        Args:
            array: on :attr:`model_geometry`: labels ``(X, Y, Z)`` integer, or
                probabilities ``(C, X, Y, Z)`` float (a Volume on the model grid is accepted).
            kind: ``"label"`` (undo resampling with nearest neighbour),
                ``"probability"`` (linear per channel; argmax afterwards) or ``"logits"``
                (resampled like probabilities, then turned into probabilities with
                ``activation`` before the crop is undone: nnU-Net's export order).
            activation: for ``kind="logits"``: ``"softmax"`` over channels, or
                ``"sigmoid"`` per channel (one channel: background and foreground).
            fill: value for voxels removed by the foreground crop: default 0 for labels
                and, for probabilities, 1 in channel 0 (background) and 0 elsewhere; a
                sequence gives one value per channel.
            timings: if given, seconds per undone step are added under
                ``"to_input_grid_<step>"``.

        Returns:
            Volume with exactly ``input_geometry`` (shape, spacing, origin, direction):
            labels ``(I, J, K)`` keeping their dtype, probabilities ``(C, I, J, K)`` float32.
        """
        arr, lead, fills = self._check_model_output(array, kind, fill, activation=activation)
        arr = self._undo(arr, lead, kind, fills, self.steps, timings, activation=activation)
        if tuple(arr.shape[-3:]) != self.input_geometry.shape:  # pragma: no cover - internal consistency
            raise RuntimeError(f"internal error: got shape {arr.shape} for input grid {self.input_geometry.shape}")
        out_kind = "probability" if kind == "logits" else kind
        return Volume(np.ascontiguousarray(arr), self.input_geometry, out_kind, lead)  # type: ignore[arg-type]

    def labels_to_input_grid(self, probabilities: np.ndarray | Volume, *,
                             reduce: Callable[[np.ndarray], np.ndarray],
                             fill: float | Sequence[float] | None = None,
                             timings: dict[str, float] | None = None) -> tuple[Volume, int]:
        """The labels ``reduce(to_input_grid(probabilities, kind="probability").array)``,
        computed without full-size probabilities.

        Labels are decided on the model grid; the linear resampling back is a convex
        combination of the 2x2x2 model voxels around each input voxel, so wherever those
        share one label the input voxel takes it (a gather), and only voxels next to a
        label boundary are interpolated and reduced (see
        :func:`medcnn.preprocess._separable.labels_of_linear_resample`). Crop and
        reorientation are undone on the labels.

        Args:
            probabilities: ``(C, X, Y, Z)`` float on :attr:`model_geometry`.
            reduce: ``(C, ...) -> (...)`` integer labels, every label region convex in
                probability space (argmax with ties to the lower channel, thresholds;
                :func:`medcnn.postprocess.argmax_array`, :func:`~medcnn.postprocess.threshold_array`).
            fill: probabilities of the voxels removed by the crop (as :meth:`to_input_grid`);
                they get ``reduce(fill)``.
            timings: as in :meth:`to_input_grid` (``"to_input_grid_labels"`` for the
                model-grid labels).

        Returns:
            ``(labels (I, J, K) Volume on exactly input_geometry, number of input voxels whose
            probabilities were interpolated)``. Grids that are not axis-aligned fall back to
            resampling every voxel (the count is then the input's voxel count).
        """
        prob, lead, fills = self._check_model_output(probabilities, "probability", fill)
        t = time.perf_counter()
        labels = np.asarray(reduce(prob))
        fill_label = np.asarray(reduce(np.asarray(fills, dtype=np.float32).reshape(-1, 1, 1, 1))).reshape(-1)[0]
        _add_time(timings, "to_input_grid_labels", t)
        resamples = [i for i, st in enumerate(self.steps) if st["step"] == "resample"]
        if not resamples:
            arr = self._undo(labels, None, "label", [fill_label], self.steps, timings)
            return Volume(np.ascontiguousarray(arr), self.input_geometry, "label"), 0
        last = resamples[-1]
        st = self.steps[last]
        before, after = Geometry.from_dict(st["geometry_before"]), Geometry.from_dict(st["geometry_after"])
        transform = np.linalg.inv(after.affine) @ before.affine
        m, offset = transform[:3, :3], transform[:3, 3]
        if len(resamples) > 1 or st.get("rule") == "nnunet" or not _is_diagonal(m) or any(s["step"] not in ("resample", "crop", "reorient",
                                                                               "normalise") for s in self.steps[last:]):
            probs = self.to_input_grid(prob, kind="probability", fill=fills, timings=timings)
            t = time.perf_counter()
            out = np.asarray(reduce(probs.array))
            _add_time(timings, "to_input_grid_labels", t)
            return Volume(out, self.input_geometry, "label"), int(out.size)
        # the undone steps after the (last) resampling act on probabilities and labels alike
        arr, lead2 = prob, "channel"
        later = self.steps[last + 1:]
        if later:  # pragma: no cover - the Preprocessor resamples last
            arr = self._undo(arr, lead2, "probability", fills, later, timings)
            labels = np.asarray(reduce(arr))
        t = time.perf_counter()
        labels, n_interp = labels_of_linear_resample(arr, labels, np.diag(m), offset, before.shape, reduce)
        _add_time(timings, "to_input_grid_resample", t)
        arr = self._undo(labels, None, "label", [fill_label], self.steps[:last], timings)
        return Volume(np.ascontiguousarray(arr), self.input_geometry, "label"), n_interp

    def _check_model_output(self, array: np.ndarray | Volume, kind: str, fill: float | Sequence[float] | None,
                            *, activation: str = "softmax") -> tuple[np.ndarray, str | None, list[Any]]:
        if isinstance(array, Volume):
            self.model_geometry.check_matches(array.geometry, what="the network output and the model grid")
            array = array.array
        arr = np.asarray(array)
        if kind == "label":
            if arr.ndim != 3:
                raise DimensionError.expected("a 3D label array (X, Y, Z)", f"shape {arr.shape}")
            if arr.dtype.kind == "b":
                arr = arr.astype(np.uint8)
            if arr.dtype.kind not in "ui":
                raise ValueError(f"expected an integer label array, got dtype {arr.dtype}")
            lead = None
            fills: list[Any] = [0 if fill is None else fill]
        elif kind in ("probability", "logits"):
            if arr.ndim != 4:
                raise DimensionError.expected("a 4D probability array (C, X, Y, Z)", f"shape {arr.shape}")
            arr = arr.astype(np.float32, copy=False)
            lead = "channel"
            n = arr.shape[0] + int(kind == "logits" and activation == "sigmoid" and arr.shape[0] == 1)
            if fill is None and kind == "logits" and activation == "sigmoid" and n > 1 and arr.shape[0] == n:
                fills = [0.0] * n  # independent regions: none of them outside the crop
            elif fill is None:
                fills = [1.0] + [0.0] * (n - 1)
            elif np.ndim(fill) == 0:
                fills = [float(fill)] * n  # type: ignore[arg-type]
            else:
                fills = [float(f) for f in fill]  # type: ignore[union-attr]
                if len(fills) != n:
                    raise ValueError(f"expected {n} fill values (one per channel), got {len(fills)}")
        else:
            raise ValueError(f"expected kind 'label', 'probability' or 'logits', got {kind!r}")
        if tuple(arr.shape[-3:]) != self.model_geometry.shape:
            raise DimensionError.expected(f"an array on the model grid {self.model_geometry.shape}", f"shape {arr.shape}")
        return arr, lead, fills

    @staticmethod
    def _undo(arr: np.ndarray, lead: str | None, kind: str, fills: Sequence[Any], steps: Sequence[Mapping[str, Any]],
              timings: dict[str, float] | None, *, activation: str = "softmax") -> np.ndarray:
        """Undo ``steps`` (in reverse) on a model-grid array; ``kind="logits"`` become
        probabilities (``activation``) after the resampling is undone (nnU-Net's order)."""
        for st in reversed(steps):
            name = st["step"]
            t = time.perf_counter()
            if kind == "logits" and name != "resample":
                arr, kind = _activate(arr, activation), "probability"
            if name == "resample" and st.get("rule") == "nnunet":
                arr = nnunet_resample_back(arr, st, kind=kind)
            elif name == "resample":
                before = Geometry.from_dict(st["geometry_before"])
                after = Geometry.from_dict(st["geometry_after"])
                vol = Volume(arr, after, "probability" if kind == "logits" else kind, lead)  # type: ignore[arg-type]
                arr = _resample_volume(vol, before, order=0 if kind == "label" else 1, fill=None).array
            elif name == "crop":
                before = Geometry.from_dict(st["geometry_before"])
                shape = (arr.shape[0],) + before.shape if lead else before.shape
                out = np.empty(shape, dtype=arr.dtype)
                if lead:
                    for c in range(shape[0]):
                        out[c] = fills[c]
                else:
                    out[...] = fills[0]
                inside, in_box = crop_regions(st["start"], st["stop"], before.shape)  # a MONAI box may pad
                out[(Ellipsis,) + inside] = arr[(Ellipsis,) + in_box]
                arr = out
            elif name == "reorient":
                arr = Reorient.from_dict(st).invert(arr)
            else:
                continue
            _add_time(timings, f"to_input_grid_{name}", t)
        if kind == "logits":
            arr = _activate(arr, activation)
        return arr

    # ------------------------------------------------------------------ onto the model grid
    def to_model_grid(self, volume: Volume, *, order: int | None = None) -> Volume:
        """Apply the spatial steps (reorient, crop, resample; no normalisation) to another
        volume on the input grid, e.g. a training label map or a mask.

        Labels use per-label linear interpolation by default (``order=0``: nearest).
        """
        self.input_geometry.check_matches(volume.geometry, atol_mm=CHANNEL_ATOL_MM,
                                          what="the volume and the preprocessed image")
        vol = Volume(volume.array, self.input_geometry, volume.kind, volume.leading_axis, volume.frame_times_ms,
                     volume.meta)
        for st in self.steps:
            name = st["step"]
            if name == "reorient":
                vol = Reorient.from_dict(st).apply_volume(vol)
            elif name == "crop":
                after = Geometry.from_dict(st["geometry_after"])
                inside, in_box = crop_regions(st["start"], st["stop"], vol.geometry.shape)  # a MONAI box may pad
                boxed = np.zeros(vol.array.shape[:-3] + after.shape, dtype=vol.array.dtype)
                boxed[(Ellipsis,) + in_box] = vol.array[(Ellipsis,) + inside]
                vol = Volume(boxed, after, vol.kind, vol.leading_axis, vol.frame_times_ms, vol.meta)
            elif name == "resample":
                after = Geometry.from_dict(st["geometry_after"])
                o = order if order is not None else (st["order"] if vol.kind == "intensity" else None)
                sep = st.get("separate_axis") if vol.kind == "intensity" else None
                vol = _resample_volume(vol, after, order=o, fill=None, separate_axis=sep,
                                       anisotropic_order=st.get("anisotropic_order", 1))
        return Volume(vol.array, self.model_geometry, vol.kind, vol.leading_axis, vol.frame_times_ms, vol.meta)


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """(K, ...) float32 logits → probabilities: softmax over channels, or sigmoid (one
    channel → background and foreground channels)."""
    if activation == "softmax":
        z = logits - logits.max(axis=0, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=0, keepdims=True)
        return z.astype(np.float32, copy=False)
    if activation != "sigmoid":
        raise ValueError(f"expected activation 'softmax' or 'sigmoid', got {activation!r}")
    p = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    return np.concatenate([1 - p, p]) if p.shape[0] == 1 else p


class Preprocessor:
    """Applies a :class:`PreprocessSpec` and records how to undo it.

    Steps, in order: check grids and finiteness → reorient → crop to foreground →
    normalise each channel (on its original voxels) → resample to ``target_spacing``.
    """

    def __init__(self, spec: PreprocessSpec) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise TypeError(f"expected a PreprocessSpec, got {type(spec).__name__}")
        self.spec = spec

    def __repr__(self) -> str:
        return f"Preprocessor({self.spec!r})"

    def forward(self, channels: Volume | Sequence[Volume], *,
                timings: dict[str, float] | None = None) -> tuple[np.ndarray, PreprocessRecord]:
        """Preprocess one case.

        Args:
            channels: one 3D intensity Volume, or one per modality in ``spec.modalities``
                order, all on the same grid (a 4D ``(C, I, J, K)`` channel Volume is also
                accepted). Cine data: call once per frame.
            timings: if given, seconds per step are added under ``"preprocess_check"``,
                ``"preprocess_reorient"``, ``"preprocess_crop"``, ``"preprocess_normalise"``
                and ``"preprocess_resample"``.

        Returns:
            ``(array, record)``: float32 ``(C, X, Y, Z)`` on ``record.model_geometry``.

        Raises:
            GeometryMismatchError, DimensionError, InvalidIntensityError.
        """
        spec = self.spec
        t = time.perf_counter()
        if isinstance(channels, Volume):
            chans = channels.frames() if channels.leading_axis == "channel" else [channels]
            if channels.leading_axis == "channel":
                chans = [Volume(c.array, channels.geometry, "intensity") for c in chans]
        else:
            chans = list(channels)
        if len(chans) != spec.n_channels:
            raise DimensionError.expected(
                f"{spec.n_channels} input channel(s) for modalities {list(spec.modalities)}", f"{len(chans)}",
                path=chans[0].source if chans else None)
        geometry = check_same_grid(chans)
        for c in chans:
            check_finite(c)
        # reorientation and crop are views; normalisation writes each channel once into
        # one (C, X, Y, Z) float32 array, which is then resampled with all channels at once
        arrays = [np.asarray(c.array) for c in chans]
        if spec.nnunet is not None:
            data, geom, steps = nnunet_forward(arrays, geometry, spec.nnunet, source=geometry.source)
            return data, PreprocessRecord(geometry, geom.with_source(None), steps)
        if spec.monai is not None:
            data, geom, steps = monai_forward(arrays, geometry, spec.monai, source=geometry.source)
            return data, PreprocessRecord(geometry, geom.with_source(None), steps)
        steps: list[dict[str, Any]] = []
        geom = geometry
        _add_time(timings, "preprocess_check", t)
        t = time.perf_counter()
        if spec.orientation is not None:
            plan = plan_reorient(geometry, spec.orientation)
            if not plan.is_identity:
                arrays = [plan.apply(a, contiguous=False) for a in arrays]
                steps.append(plan.to_dict())
                geom = plan.output_geometry
        _add_time(timings, "preprocess_reorient", t)
        t = time.perf_counter()
        fg_mask, fg_info = None, {}
        if spec.mr_foreground is not None and (spec.crop_foreground or "MR" in spec.modalities):
            fg_mask, fg_info = mr_foreground_mask(arrays, spec.mr_foreground, sources=[c.source for c in chans])
        if spec.crop_foreground:
            box = foreground_box(arrays) if fg_mask is None else nonzero_extent(fg_mask)
            if box is None:
                raise InvalidIntensityError.expected(
                    "some non-zero voxels to crop to", "an image that is zero everywhere", path=geometry.source)
            if any(b != (0, s) for b, s in zip(box, geom.shape)):
                cropped = geom.crop([b[0] for b in box], [b[1] for b in box])
                region = tuple(slice(a, b) for a, b in box)
                arrays = [a[region] for a in arrays]
                fg_mask = None if fg_mask is None else fg_mask[region]
                steps.append({"step": "crop", "start": [b[0] for b in box], "stop": [b[1] for b in box],
                              "geometry_before": geom.to_dict(), "geometry_after": cropped.to_dict()})
                geom = cropped
            _add_time(timings, "preprocess_crop", t)
        t = time.perf_counter()
        data = empty_spatial_like((len(arrays),), arrays[0])  # memory order of the input: reads in order
        for i, (a, modality, src) in enumerate(zip(arrays, spec.modalities, chans)):
            info = _normalise_into(a, data[i], modality, window=spec.ct_window if modality == "CT" else None,
                                   mean=spec.ct_mean if modality == "CT" else None,
                                   std=spec.ct_std if modality == "CT" else None,
                                   mask=fg_mask if modality == "MR" else None, source=src.source)
            info["channel"] = i
            if modality == "MR" and fg_mask is not None:  # the mask's source, in the record
                info["foreground"] = spec.mr_foreground
                info["foreground_description"] = fg_info["description"]
                if "background_values" in fg_info:
                    info["background_value"] = fg_info["background_values"][i]
            steps.append(info)
        del arrays
        _add_time(timings, "preprocess_normalise", t)
        t = time.perf_counter()
        if spec.target_spacing is not None and not np.allclose(spec.target_spacing, geom.spacing, rtol=0, atol=1e-6):
            target = resampled_geometry(geom, spec.target_spacing)
            sep = anisotropic_axis(geom.spacing, spec.target_spacing, threshold=spec.anisotropy_threshold)
            separate = sep if (sep is not None and spec.image_order > spec.anisotropic_order) else None
            data = _resample_volume(Volume(data, geom, "intensity", "channel"), target, order=spec.image_order,
                                    fill=None, separate_axis=separate,
                                    anisotropic_order=spec.anisotropic_order).array
            steps.append({"step": "resample", "order": spec.image_order, "separate_axis": separate,
                          "anisotropic_order": spec.anisotropic_order if separate is not None else None,
                          "geometry_before": geom.to_dict(), "geometry_after": target.to_dict()})
            geom = target
        data = np.ascontiguousarray(data)  # a copy only where the layout differs (at model-grid size)
        if not np.isfinite(np.sum(data, dtype=np.float64)):  # pragma: no cover - guarded by the checks above
            warnings.warn("non-finite values after preprocessing", RuntimeWarning, stacklevel=2)
        _add_time(timings, "preprocess_resample" if spec.target_spacing is not None else "preprocess_normalise", t)
        return data, PreprocessRecord(geometry, geom.with_source(None), steps)

    __call__ = forward
