"""Report figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

* :func:`overlay_png` -- for each (title, scan, labels) row: three orthogonal slices
  (axial, coronal, sagittal; for thick-slice stacks the acquired plane first) through the
  centroid of the labelled structure with every label's contour drawn on the scan.
* :func:`volume_curve_png` -- volume (mL) against time (ms) for cine series, with the
  end-diastolic and end-systolic frames marked.

Display orientation: the array axes are permuted and flipped (no resampling) so that the
closest world axes are R, A, S; axial and coronal views are shown in radiological
convention (patient's right on the viewer's left), superior up, anterior up in axial
views. Pixel aspect follows the voxel spacing, so anisotropic scans are not distorted.
An oblique scan is shown in its own slice planes (closest to the named ones).
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

from medcnn.volume import Geometry, Volume

__all__ = ["overlay_png", "volume_curve_png", "display_arrays", "structure_centroid", "label_colour",
           "LABEL_COLOURS"]

#: Contour colours by label value (cycled); chosen to be distinguishable on grey scans.
LABEL_COLOURS = ("#ff3b30", "#34c759", "#ffcc00", "#0a84ff", "#ff9f0a", "#bf5af2", "#64d2ff", "#ff2d55")
_WORLD = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def label_colour(label: int) -> str:
    """Contour colour of a label value in :func:`overlay_png` (cycled :data:`LABEL_COLOURS`):
    with the cardiac labels 1 LV blood pool red, 2 LV myocardium green, 3 RV blood pool yellow."""
    return LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]


def display_arrays(geometry: Geometry, *arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    """Permute/flip 3D arrays on ``geometry`` to (R, A, S)-ordered axes for display.

    Returns:
        The reoriented arrays (views) and the spacing (mm) along the new axes.
    """
    perm = [0, 0, 0]
    flips = []
    for axis, letter in enumerate(geometry.orientation):
        world, sign = _WORLD[letter]
        perm[world] = axis
        if sign < 0:
            flips.append(world)
    out = []
    for a in arrays:
        t = np.transpose(a, perm)
        for w in flips:
            t = np.flip(t, axis=w)
        out.append(t)
    spacing = tuple(float(geometry.spacing[perm[w]]) for w in range(3))
    return out, spacing  # type: ignore[return-value]


def structure_centroid(labels: np.ndarray) -> tuple[int, int, int] | None:
    """Rounded mean index of the non-zero voxels of a 3D array (``None`` when empty)."""
    idx = np.nonzero(labels)
    if idx[0].size == 0:
        return None
    return tuple(int(round(float(np.mean(i)))) for i in idx)  # type: ignore[return-value]


def _window(arr: np.ndarray) -> tuple[float, float]:
    a = np.asarray(arr)
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
    if finite.size == 0:
        return 0.0, 1.0
    if finite.size > 2_000_000:
        finite = finite[:: finite.size // 1_000_000]
    lo, hi = np.percentile(finite, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _draw_view(ax, img: np.ndarray, lab: np.ndarray, aspect: float, window: tuple[float, float],
               labels: Sequence[int], *, invert_x: bool, title: str) -> None:
    ax.imshow(img.T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest")
    if labels:
        from matplotlib.colors import to_rgba

        rgba = np.zeros(lab.T.shape + (4,), dtype=np.float32)
        for v in labels:
            rgba[lab.T == v] = to_rgba(label_colour(v), alpha=0.28)
        ax.imshow(rgba, origin="lower", aspect=aspect, interpolation="nearest")
    if min(lab.shape) >= 2:
        for v in labels:
            m = (lab == v)
            if m.any() and not m.all():
                ax.contour(m.T.astype(np.float32), levels=[0.5], colors=[label_colour(v)], linewidths=1.2,
                           origin="lower")
    if invert_x:
        ax.invert_xaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_png(
    rows: Sequence[tuple[str, Volume, Volume]],
    *,
    label_names: Mapping[int, str] | None = None,
    dpi: int = 80,
) -> bytes:
    """PNG of three orthogonal slices per row, label contours on the scan.

    Args:
        rows: ``(title, scan, labels)`` triples; ``scan`` and ``labels`` are 3D volumes
            ``(I, J, K)`` on the same grid (checked). The slices go through the centroid of
            the non-zero labels (the grid centre when there are none).
        label_names: label value -> name for the legend.
        dpi: resolution of the PNG.

    Returns:
        PNG file bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    fig = Figure(figsize=(10.5, 3.4 * max(1, len(rows)) + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    all_labels: set[int] = set()
    for r, (title, scan, labels) in enumerate(rows):
        scan.geometry.check_matches(labels.geometry, what="scan and label map", atol_mm=1e-3)
        lab_arr = np.asarray(labels.array)
        (img, lab), sp = display_arrays(scan.geometry, np.asarray(scan.array), lab_arr)
        present = sorted(int(v) for v in np.unique(lab) if v != 0)
        all_labels.update(present)
        c = structure_centroid(lab)
        note = ""
        if c is None:
            c = tuple(s // 2 for s in lab.shape)
            note = " (no structure found)"
        window = _window(img)
        views = [
            (f"axial z={c[2]}", img[:, :, c[2]], lab[:, :, c[2]], sp[1] / sp[0], True),
            (f"coronal y={c[1]}", img[:, c[1], :], lab[:, c[1], :], sp[2] / sp[0], True),
            (f"sagittal x={c[0]}", img[c[0], :, :], lab[c[0], :, :], sp[2] / sp[1], False),
        ]
        # thick-slice stacks (e.g. cardiac short axis): the acquired plane first, the
        # reconstructed ones after it
        normals = (2, 1, 0)
        coarse = int(np.argmax(sp))
        if max(sp) > 1.5 * min(sp) and normals[0] != coarse:
            first = normals.index(coarse)
            views = [views[first]] + [v for i, v in enumerate(views) if i != first]
        for v, (vt, im2, lb2, aspect, inv) in enumerate(views):
            ax = fig.add_subplot(len(rows), 3, r * 3 + v + 1)
            _draw_view(ax, im2, lb2, aspect, window, present, invert_x=inv, title=f"{title}: {vt}{note}")
    if all_labels:
        handles = [Line2D([0], [0], color=label_colour(v), lw=2) for v in sorted(all_labels)]
        fig.legend(handles, [f"{v}: {names.get(v, f'label_{v}')}" for v in sorted(all_labels)],
                   loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.1 if all_labels else 0.02, wspace=0.04,
                        hspace=0.18)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def volume_curve_png(
    times_ms: Sequence[float],
    curves_ml: Mapping[str, Sequence[float]],
    *,
    ed_index: int | None = None,
    es_index: int | None = None,
    title: str = "LV volume over the cardiac cycle",
    colours: Mapping[str, str] | None = None,
    dpi: int = 80,
) -> bytes:
    """PNG of volume curves (mL) against time (ms), ED/ES frames marked.

    Args:
        times_ms: time of each frame in ms (frame indices may be passed when unknown).
        curves_ml: name -> volume in mL per frame (same length as ``times_ms``).
        ed_index, es_index: frame indices of end-diastole / end-systole.
        colours: curve name -> colour (e.g. :func:`label_colour` of the structure's label, so
            a curve has the colour of the structure's overlay contour); default cycled
            :data:`LABEL_COLOURS`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(times_ms, dtype=np.float64)
    fig = Figure(figsize=(6.0, 3.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, vals) in enumerate(curves_ml.items()):
        ax.plot(t, np.asarray(vals, dtype=np.float64), marker="o", ms=3, lw=1.5, label=name,
                color=(colours or {}).get(name, LABEL_COLOURS[i % len(LABEL_COLOURS)]))
    for idx, name, style in ((ed_index, "ED", "--"), (es_index, "ES", ":")):
        if idx is not None and 0 <= idx < len(t):
            ax.axvline(t[idx], color="k", ls=style, lw=1)
            ax.annotate(name, (t[idx], 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                        fontsize=8)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("volume (mL)")
    ax.set_title(title, fontsize=10, pad=14)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()
