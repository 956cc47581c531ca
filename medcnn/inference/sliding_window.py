"""Sliding-window prediction with Gaussian blending, streamed along one axis.

The image is covered by a regular grid of windows (``roi_size``) that overlap by a
fraction ``overlap`` (see :func:`window_starts`).
Each window's logits are multiplied by a Gaussian importance map (``sigma = sigma_scale
* roi`` per axis, the same default ``sigma_scale=0.125`` as MONAI) and added into an
accumulator; the blended logits are ``accumulator / sum of weights``.

Design choices (each measured or needed for bounded memory):

* **No weight map for labels.** All classes of a voxel share the same total weight, so
  ``argmax(acc / w) == argmax(acc)`` (and ``sign`` for a single sigmoid channel): labels
  are reduced straight from the accumulator. Only when probabilities or logits are asked
  for is the total weight accumulated, as one extra accumulator channel.
* Like MONAI, the importance map is floored at ``min_weight`` (1e-3) so window corners
  still count where nothing else covers a voxel.
* **Streaming.** Windows are processed in order of their start along a *slab axis*. Once
  every window starting before ``s`` is done, voxels before ``s`` on that axis are final
  and can be reduced (to labels or probabilities) and dropped. With ``slab=True`` the
  accumulator holds only ``roi`` planes along that axis instead of the whole volume,
  with identical results.
* In-place ``addcmul_`` accumulation in float32 whatever the network's precision, one
  Gaussian map per run, and argmax in chunks so no full-volume int64 temporary exists.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import numpy as np

from medcnn.errors import ConfigError

__all__ = [
    "WindowGrid",
    "WindowResult",
    "window_starts",
    "gaussian_1d",
    "plan_windows",
    "sliding_window_inference",
    "choose_slab_axis",
    "nnunet_window_starts",
    "nnunet_gaussian",
    "PLACEMENTS",
]

#: Window placements: MONAI's (fixed step, last window moved back) and nnU-Net's
#: (``ceil((size - roi) / (roi * (1 - overlap))) + 1`` windows spread evenly).
PLACEMENTS = ("monai", "nnunet")

Output = Literal["labels", "probabilities", "logits", "probabilities_u8"]

#: Scale of the ``"probabilities_u8"`` output: probability p is stored as round(p x 255).
U8_SCALE = 255


def window_starts(size: int, roi: int, overlap: float) -> tuple[int, ...]:
    """Window starts covering ``[0, size)`` with windows of ``roi`` voxels.

    Windows step by ``int(roi * (1 - overlap))`` voxels (at least 1) from 0; the last
    window is moved back to end exactly at ``size``. This is the placement MONAI's
    ``sliding_window_inference`` uses, so a bundle validated with MONAI sees the same
    windows. ``size`` must be >= ``roi`` (pad first).
    """
    if roi > size:
        raise ValueError(f"expected roi <= size (pad first), got roi {roi} > size {size}")
    if size == roi:
        return (0,)
    step = max(int(roi * (1.0 - overlap)), 1)
    n = int(math.ceil((size - roi) / step)) + 1
    return tuple(sorted({min(i * step, size - roi) for i in range(n)}))


def nnunet_window_starts(size: int, roi: int, overlap: float) -> tuple[int, ...]:
    """nnU-Net's window starts (``compute_steps_for_sliding_window`` with step
    ``1 - overlap``): the fewest windows whose step is at most ``roi * (1 - overlap)``,
    spread evenly over ``[0, size - roi]`` and rounded."""
    if roi > size:
        raise ValueError(f"expected roi <= size (pad first), got roi {roi} > size {size}")
    step = roi * (1.0 - overlap)
    n = int(np.ceil((size - roi) / step)) + 1
    actual = (size - roi) / (n - 1) if n > 1 else 0.0
    return tuple(sorted({int(np.round(actual * i)) for i in range(n)}))


def nnunet_gaussian(roi: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """nnU-Net's importance map (float64, maximum 1): a unit impulse at ``roi // 2``
    smoothed by ``scipy.ndimage.gaussian_filter`` with ``sigma = sigma_scale * roi``
    (truncated at 4 sigma, zero outside), zeros replaced by the smallest non-zero value.

    Computed with numpy alone (no scipy on a bare GPU machine): filtering an impulse gives
    the product of the per-axis 1D kernels ``exp(-x^2 / (2 sigma^2))`` centred on the
    impulse and cut at scipy's radius ``int(4 sigma + 0.5)``; their normalisation cancels
    in the division by the maximum. Equal to scipy's to float64 rounding (tested)."""
    roi = tuple(int(r) for r in roi)
    g = np.ones(())
    for a, n in enumerate(roi):
        sigma = float(n) * float(sigma_scale)
        radius = int(4.0 * sigma + 0.5)
        x = np.arange(n, dtype=np.float64) - n // 2
        w = np.where(np.abs(x) <= radius, np.exp(-0.5 / sigma**2 * x**2), 0.0)
        shape = [1] * len(roi)
        shape[a] = n
        g = g * w.reshape(shape)
    g = np.broadcast_to(g, roi).astype(np.float64)
    g /= g.max()
    if (g == 0).any():
        g[g == 0] = g[g != 0].min()
    return g


def gaussian_1d(roi: int, sigma_scale: float = 0.125, *, mode: str = "gaussian") -> np.ndarray:
    """1D importance weights (roi,), float64: ``exp(-x^2 / (2 sigma^2))`` with ``x`` measured
    from the window centre ``(roi - 1) / 2`` and ``sigma = sigma_scale * roi``;
    ``mode="constant"`` gives ones."""
    if mode == "constant":
        return np.ones(roi)
    if mode != "gaussian":
        raise ConfigError.expected("blend mode 'gaussian' or 'constant'", repr(mode))
    if roi == 1:
        return np.ones(1)
    centre = (roi - 1) / 2.0
    sigma = max(sigma_scale * roi, 1e-6)
    return np.exp(-0.5 * ((np.arange(roi) - centre) / sigma) ** 2)


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows lie on a (padded) image.

    Attributes:
        shape: padded spatial shape the windows cover.
        roi: window size per axis (voxels).
        starts: per axis, the window start indices.
        pad: per axis, ``(before, after)`` zero padding added to reach ``shape``.
    """

    shape: tuple[int, ...]
    roi: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    pad: tuple[tuple[int, int], ...]

    @property
    def n_windows(self) -> int:
        return int(np.prod([len(s) for s in self.starts]))

    def windows(self, order_axis: int = 0) -> Iterator[tuple[int, ...]]:
        """All window start tuples, ``order_axis`` varying slowest."""
        nd = len(self.shape)
        order = [order_axis] + [a for a in range(nd) if a != order_axis]
        for combo in itertools.product(*(self.starts[a] for a in order)):
            start = [0] * nd
            for a, v in zip(order, combo):
                start[a] = v
            yield tuple(start)

    def coverage(self, axis: int, weights_1d: np.ndarray) -> np.ndarray:  # noqa: D401
        """Sum of the 1D importance weights of all windows along ``axis`` (shape[axis],)."""
        out = np.zeros(self.shape[axis])
        for s in self.starts[axis]:
            out[s:s + self.roi[axis]] += weights_1d
        return out


def plan_windows(spatial_shape: Sequence[int], roi_size: Sequence[int], overlap: float, *,
                 placement: str = "monai") -> WindowGrid:
    """Window grid for an image; axes smaller than the ROI are zero-padded symmetrically.
    ``placement``: ``"monai"`` (:func:`window_starts`) or ``"nnunet"``
    (:func:`nnunet_window_starts`)."""
    if placement not in PLACEMENTS:
        raise ConfigError.expected(f"window placement one of {', '.join(PLACEMENTS)}", repr(placement))
    if len(spatial_shape) != len(roi_size):
        raise ConfigError.expected(f"roi_size with {len(spatial_shape)} entries", f"{tuple(roi_size)}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError.expected("overlap in [0, 1)", f"{overlap}")
    roi = tuple(int(r) for r in roi_size)
    if any(r < 1 for r in roi):
        raise ConfigError.expected("positive roi_size", f"{roi}")
    pad, shape = [], []
    for n, r in zip(spatial_shape, roi):
        extra = max(r - int(n), 0)
        pad.append((extra // 2, extra - extra // 2))
        shape.append(int(n) + extra)
    fn = window_starts if placement == "monai" else nnunet_window_starts
    starts = tuple(fn(n, r, overlap) for n, r in zip(shape, roi))
    return WindowGrid(tuple(shape), roi, starts, tuple(pad))


def choose_slab_axis(grid: WindowGrid) -> int:
    """Axis along which streaming saves the most memory (largest ``size / roi``)."""
    return int(np.argmax([n / r for n, r in zip(grid.shape, grid.roi)]))


@dataclass
class WindowResult:
    """Outputs of :func:`sliding_window_inference` on the *unpadded* image grid.

    Attributes:
        labels: ``(*S)`` uint8/int16 CPU tensor, when asked for: argmax over channels for
            softmax; for sigmoid, ``logit > 0`` (one channel: label 1; several channels:
            each ``(channel, label)`` of ``paint`` in turn, later channels overwriting
            earlier ones, like :func:`medcnn.postprocess.threshold_labels`).
        probabilities: ``(K', *S)`` float32 CPU tensor (``K' = 2`` for one sigmoid channel).
        logits: ``(K, *S)`` float32 CPU tensor of blended logits, when asked for.
        probabilities_u8: ``(G, K', *S)`` uint8 CPU tensor, probabilities quantised to
            ``round(p x 255)`` (1 byte per voxel and class instead of 4), one block per
            channel group ``G`` of the predictor's output (see ``groups``), when asked for.
        n_windows: windows evaluated (each once, however many TTA flips).
        slab_axis, slab: how the accumulator was streamed.
    """

    labels: object = None
    probabilities: object = None
    logits: object = None
    probabilities_u8: object = None
    n_windows: int = 0
    slab_axis: int = 0
    slab: bool = False
    info: dict = field(default_factory=dict)


def _argmax_channels(region, dtype):
    """``argmax`` over dim 0 (ties → lowest channel, as ``torch.argmax``) by ``K`` elementwise
    passes: ~20x faster than ``torch.argmax(dim=0)`` on strided CPU tensors, no int64 temporary."""
    import torch

    best = region[0].clone()
    lab = torch.zeros(region.shape[1:], dtype=dtype, device=region.device)
    for c in range(1, region.shape[0]):
        lab.masked_fill_(region[c] > best, c)
        torch.maximum(best, region[c], out=best)
    return lab


def _label_dtype(n_classes: int):
    import torch

    return torch.uint8 if n_classes <= 256 else torch.int16


def sliding_window_inference(
    image,
    predictor: Callable,
    *,
    roi_size: Sequence[int],
    out_channels: int,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    min_weight: float = 1e-3,
    sw_batch_size: int = 1,
    outputs: Sequence[Output] = ("labels",),
    activation: Literal["softmax", "sigmoid"] | None = None,
    stitch_device=None,
    slab: bool = False,
    slab_axis: int | None = None,
    chunk_planes: int = 8,
    progress: Callable[[int, int], None] | None = None,
    groups: int = 1,
    placement: str = "monai",
    paint: Sequence[tuple[int, int]] | None = None,
    nesting_pairs: Sequence[tuple[int, int]] | None = None,
) -> WindowResult:
    """Predict a whole image window by window.

    Args:
        image: ``(C, *S)`` float tensor (S: 2 or 3 spatial axes), on any device.
        predictor: maps a ``(B, C, *roi)`` float32 batch to ``(B, K, *roi)`` logits (any
            float dtype, any device). Wrap the network with precision/TTA first
            (:func:`medcnn.inference.segmenter.make_predictor`).
        roi_size: window size in voxels per spatial axis.
        out_channels: ``K``, the number of network output channels.
        overlap: fraction of window overlap, in [0, 1).
        mode: ``"gaussian"``, ``"constant"`` or ``"nnunet"`` blending (nnU-Net's
            importance map, :func:`nnunet_gaussian`, without the ``min_weight`` floor).
        sigma_scale: Gaussian sigma as a fraction of the ROI (MONAI's default 0.125).
        min_weight: floor of the importance map (MONAI's 1e-3).
        sw_batch_size: windows per network call.
        outputs: any of ``"labels"``, ``"probabilities"``, ``"logits"``, ``"probabilities_u8"``
            (quantised probabilities of every channel group, 1 byte per voxel and class).
        activation: ``"softmax"`` (default for K >= 2) or ``"sigmoid"`` (default for K == 1).
        stitch_device: device of the accumulator (default: the image's device). Use
            ``"cpu"`` to keep a GPU's memory for the network (host stitching).
        slab: stream the accumulator: hold only ``roi`` planes along ``slab_axis``.
        slab_axis: spatial axis to stream along (default :func:`choose_slab_axis`).
        chunk_planes: planes reduced at once when writing outputs (bounds temporaries).
        groups: the predictor returns ``groups`` blocks of ``K`` channels (e.g. the TTA
            mean followed by each mirrored view); labels, probabilities and logits come from
            the first block, ``probabilities_u8`` from every block. The accumulator holds
            ``groups x K`` channels.
        placement: window placement, ``"monai"`` or ``"nnunet"`` (:func:`plan_windows`).
        paint: several sigmoid channels: ``[(channel, label)]`` in painting order
            (default: channel ``c`` writes ``c + 1``, in channel order).
        nesting_pairs: ``[(inner, outer)]`` channels of nested regions: ``info["region_nesting"]``
            then counts, per pair, the inner channel's voxels (logit > 0) and those outside
            the outer channel (:func:`medcnn.regions.nesting_violations`).

    Returns:
        :class:`WindowResult` with CPU tensors on the unpadded grid.
    """
    import torch
    import torch.nn.functional as F

    if image.ndim < 3:
        raise ValueError(f"expected image (C, *S) with 2 or 3 spatial axes, got shape {tuple(image.shape)}")
    nd = image.ndim - 1
    outputs = tuple(outputs)
    for o in outputs:
        if o not in ("labels", "probabilities", "logits", "probabilities_u8"):
            raise ConfigError.expected("outputs among labels, probabilities, logits, probabilities_u8", repr(o))
    G = int(groups)
    if G < 1:
        raise ConfigError.expected("groups >= 1", repr(groups))
    if activation is None:
        activation = "sigmoid" if out_channels == 1 else "softmax"
    if sw_batch_size < 1:
        raise ConfigError.expected("sw_batch_size >= 1", f"{sw_batch_size}")
    grid = plan_windows(image.shape[1:], roi_size, overlap, placement=placement)
    if any(b or a for b, a in grid.pad):
        flat = [v for pair in reversed(grid.pad) for v in pair]
        image = F.pad(image, flat)
    sdev = torch.device(stitch_device) if stitch_device is not None else image.device
    K = int(out_channels)
    ax = choose_slab_axis(grid) if slab_axis is None else int(slab_axis)
    size_a, roi_a = grid.shape[ax], grid.roi[ax]
    L = roi_a if slab else size_a

    # importance map (float32, on the stitch device), computed once
    if mode == "nnunet":  # (a 2D network's (1, h, w) windows get its 2D map: the unit axis only scales it)
        gmap = torch.as_tensor(nnunet_gaussian(grid.roi, sigma_scale)).to(torch.float32)
    else:
        gmap = torch.ones((), dtype=torch.float64)
        for a, r in enumerate(grid.roi):
            shape = [1] * nd
            shape[a] = r
            gmap = gmap * torch.as_tensor(gaussian_1d(r, sigma_scale, mode=mode)).reshape(shape)
        gmap = gmap.clamp(min=max(float(gmap.min()), float(min_weight))).to(torch.float32)
    gmap = gmap.to(sdev).unsqueeze(0).contiguous()  # (1, *roi)
    need_w = "probabilities" in outputs or "logits" in outputs or "probabilities_u8" in outputs
    KG = K * G

    acc_shape = [KG + int(need_w)] + list(grid.shape)
    acc_shape[1 + ax] = L
    acc = torch.zeros(acc_shape, dtype=torch.float32, device=sdev)

    # outputs live on the host, on the unpadded grid
    crop = [slice(b, n - a) for (b, a), n in zip(grid.pad, grid.shape)]
    out_shape = [c.stop - c.start for c in crop]
    n_prob = 2 if activation == "sigmoid" and K == 1 else K
    if paint is None:
        paint = [(c, c + 1) for c in range(K)]
    paint = [(int(c), int(v)) for c, v in paint]
    nesting = [[int(i), int(j), 0, 0] for i, j in (nesting_pairs or ())]
    n_labels = max(v for _, v in paint) + 1 if activation == "sigmoid" and K > 1 else max(n_prob, 2)
    labels = torch.zeros(out_shape, dtype=_label_dtype(n_labels)) if "labels" in outputs else None
    probs = torch.zeros([n_prob] + out_shape, dtype=torch.float32) if "probabilities" in outputs else None
    logits = torch.zeros([K] + out_shape, dtype=torch.float32) if "logits" in outputs else None
    probs_u8 = torch.zeros([G, n_prob] + out_shape, dtype=torch.uint8) if "probabilities_u8" in outputs else None

    def activate(blended):
        if activation == "softmax":
            return torch.softmax(blended, dim=0)
        if K == 1:
            fg = torch.sigmoid(blended[0])
            return torch.stack([1 - fg, fg])
        return torch.sigmoid(blended)

    def flush(lo: int, hi: int) -> None:
        """Reduce planes [lo, hi) (padded coordinates along ax) into the outputs."""
        for c0 in range(lo, hi, chunk_planes):
            c1 = min(c0 + chunk_planes, hi)
            # crop padding along ax
            p0, p1 = max(c0, crop[ax].start), min(c1, crop[ax].stop)
            if p0 >= p1:
                continue
            idx = [slice(None)] * (nd + 1)
            for a in range(nd):
                idx[1 + a] = crop[a]
            idx[1 + ax] = slice(p0 - lo, p1 - lo)
            region = acc[tuple(idx)]
            out_idx = [slice(None)] * nd
            out_idx[ax] = slice(p0 - crop[ax].start, p1 - crop[ax].start)
            out_idx = tuple(out_idx)
            if labels is not None:
                if K == 1:
                    lab = (region[0] > 0)
                elif activation == "sigmoid":  # regions: each channel writes its label, later wins
                    lab = torch.zeros(region.shape[1:], dtype=torch.int16, device=region.device)
                    for c, v in paint:
                        lab[region[c] > 0] = v
                else:
                    lab = _argmax_channels(region[:K], labels.dtype)
                labels[out_idx] = lab.to(labels.dtype).cpu()
            for row in nesting:  # inner / outer region voxels (logit > 0: the sign survives blending)
                inner = region[row[0]] > 0
                row[2] += int(inner.sum())
                row[3] += int((inner & ~(region[row[1]] > 0)).sum())
            if need_w:
                w = region[KG:]
                blended = region[:K] / w
                if logits is not None:
                    logits[(slice(None),) + out_idx] = blended.cpu()
                p = activate(blended) if probs is not None or probs_u8 is not None else None
                if probs is not None:
                    probs[(slice(None),) + out_idx] = p.cpu()
                if probs_u8 is not None:
                    for g in range(G):
                        pg = p if g == 0 else activate(region[g * K:(g + 1) * K] / w)
                        probs_u8[(g, slice(None)) + out_idx] = (pg * U8_SCALE).round_().to(torch.uint8).cpu()

    lo = 0
    n_done = 0
    n_total = grid.n_windows
    windows = list(grid.windows(order_axis=ax))
    for s_a, group_iter in itertools.groupby(windows, key=lambda st: st[ax]):
        group = list(group_iter)
        if s_a + roi_a > lo + L:  # streaming: planes before s_a are final
            flush(lo, s_a)
            shift = s_a - lo
            keep = L - shift
            src = [slice(None)] * (nd + 1)
            dst = [slice(None)] * (nd + 1)
            zero = [slice(None)] * (nd + 1)
            if keep > 0:
                src[1 + ax] = slice(shift, L)
                dst[1 + ax] = slice(0, keep)
                acc[tuple(dst)] = acc[tuple(src)].clone()
            zero[1 + ax] = slice(max(keep, 0), L)
            acc[tuple(zero)] = 0
            lo = s_a
        for b0 in range(0, len(group), sw_batch_size):
            batch = group[b0:b0 + sw_batch_size]
            sls = [tuple(slice(s, s + r) for s, r in zip(st, grid.roi)) for st in batch]
            x = torch.stack([image[(slice(None),) + sl] for sl in sls])
            y = predictor(x)
            if y.shape[0] != len(batch) or y.shape[1] != KG or tuple(y.shape[2:]) != grid.roi:
                raise ConfigError.expected(f"network output of shape {(len(batch), KG, *grid.roi)}",
                                           f"{tuple(y.shape)}",
                                           hint="Check out_channels and that the network keeps the ROI size")
            y = y.to(device=sdev, dtype=torch.float32)
            for b, st in enumerate(batch):
                loc = [slice(None)] + [slice(s, s + r) for s, r in zip(st, grid.roi)]
                loc[1 + ax] = slice(st[ax] - lo, st[ax] - lo + roi_a)
                if need_w:
                    acc[tuple(loc)][:KG].addcmul_(y[b], gmap)
                    acc[tuple(loc)][KG:].add_(gmap)
                else:
                    acc[tuple(loc)].addcmul_(y[b], gmap)
            n_done += len(batch)
            if progress is not None:
                progress(n_done, n_total)
    flush(lo, size_a)
    return WindowResult(labels=labels, probabilities=probs, logits=logits, probabilities_u8=probs_u8,
                        n_windows=n_total, slab_axis=ax,
                        slab=bool(slab), info={"grid_starts": [list(s) for s in grid.starts],
                                               "padded_shape": list(grid.shape),
                                               **({"region_nesting": [
                                                   {"inner_channel": i, "outer_channel": j, "inner_voxels": n,
                                                    "outside_voxels": o} for i, j, n, o in nesting]}
                                                  if nesting else {})})
