"""Report figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

* :func:`overlay_png` -- for each (title, scan, labels[, reference]) row: three views through
  the labelled structure (the acquired plane first), predicted contours in the label colours
  and reference contours dashed in :data:`REFERENCE_COLOUR`; every row on the first row's
  slices (ED and ES show the same slices).
* :func:`volume_curve_png` -- volume (mL) against time (ms) for cine series, with the
  end-diastolic and end-systolic frames marked; the legend sits outside the plot.

Views are named from the scan's own direction cosines (:func:`view_names`): axial / coronal /
sagittal only when the slice plane is within :data:`PLANE_TOLERANCE_DEG` of one; an oblique
stack's acquired plane is named for what it is (``stack_plane``, e.g. "short axis") and the
other views "perpendicular to the short axis". One display convention for every view
(:data:`DISPLAY_CONVENTION`, :func:`orient_slice`): radiological, the patient's left on the
image's right, anterior (or superior) up, with the patient direction lettered at each edge.
Slices are taken from the array (no resampling); pixel aspect follows the voxel spacing.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.volume import Geometry, Volume

__all__ = ["overlay_png", "volume_curve_png", "display_arrays", "structure_centroid", "label_colour",
           "LABEL_COLOURS", "view_names", "overlay_views", "orient_slice", "slice_axis", "DISPLAY_CONVENTION",
           "REFERENCE_COLOUR", "PLANE_TOLERANCE_DEG"]

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


#: Largest angle (degrees) between a slice normal and a world axis for the slice to be named
#: axial / coronal / sagittal; beyond it the plane is named from the stack (see :func:`view_names`).
PLANE_TOLERANCE_DEG = 10.0

#: The display convention of every figure, stated in the report.
DISPLAY_CONVENTION = ("radiological display: the patient's left is on the image's right; anterior (or, in views "
                      "without an anterior-posterior axis, superior) is up; in sagittal views anterior is on the "
                      "left. Edge letters name the patient direction (R/L, A/P, S/I) at each edge of the image.")

_PLANE_BY_NORMAL = {0: "sagittal", 1: "coronal", 2: "axial"}
_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) per RAS+ world axis


def slice_axis(geometry: Geometry) -> int:
    """Array axis the stack was acquired along: the one with the coarsest spacing when it is
    more than 1.5x the finest (thick-slice stacks such as cardiac short axis), else the last (K)."""
    sp = np.asarray(geometry.spacing, dtype=np.float64)
    coarse = int(np.argmax(sp))
    return coarse if sp[coarse] > 1.5 * sp.min() else 2


def view_names(geometry: Geometry, *, stack_plane: str | None = None,
               tolerance_deg: float = PLANE_TOLERANCE_DEG) -> tuple[str, str, str]:
    """Name of the view perpendicular to each array axis (I, J, K), from the direction cosines.

    A view is "axial", "coronal" or "sagittal" only when its normal (the array axis it is
    perpendicular to) lies within ``tolerance_deg`` of the world S, A or R axis. Otherwise the
    acquired plane (perpendicular to :func:`slice_axis`) is named ``stack_plane`` (e.g.
    ``"short axis"`` for a cardiac short-axis stack; default ``"oblique acquired plane"``) and
    the two other views "perpendicular to the <stack plane>". When
    ``stack_plane`` is given it names the acquired plane even in a world-aligned header (ACDC
    short-axis stacks are stored with an axial-looking direction), with the header's plane in
    brackets.

    Returns:
        Three names, index ``a`` = the view through a slice perpendicular to array axis ``a``.
    """
    d = np.asarray(geometry.direction, dtype=np.float64)
    cos_tol = float(np.cos(np.deg2rad(tolerance_deg)))
    aligned: dict[int, str] = {}
    for a in range(3):
        n = np.abs(d[:, a])
        w = int(np.argmax(n))
        if n[w] >= cos_tol:
            aligned[a] = _PLANE_BY_NORMAL[w]
    k = slice_axis(geometry)
    if stack_plane is None and len(aligned) == 3:
        return aligned[0], aligned[1], aligned[2]
    plane = stack_plane or "oblique acquired plane"
    names = []
    for a in range(3):
        if a == k:
            names.append(plane + (f" (header: {aligned[a]})" if stack_plane and a in aligned else ""))
        else:
            names.append(f"perpendicular to the {plane}")
    return names[0], names[1], names[2]


def orient_slice(geometry: Geometry, axis: int, *arrays: np.ndarray) -> tuple[list[np.ndarray], float, dict[str, str]]:
    """Orient 2D slices (perpendicular to array ``axis``) for radiological display.

    The in-plane array axis closest to the patient's left-right axis becomes the image's
    horizontal axis, flipped so the patient's left is on the image's right; the other becomes
    the vertical axis, flipped so anterior (or superior, whichever it is closer to) is up. A
    sagittal slice (no left-right component) has superior up and anterior on the left.

    Args:
        geometry: the 3D grid of the slices.
        axis: the array axis the slices are perpendicular to.
        arrays: 2D slices ``(n_u, n_v)`` in array order (the two remaining axes, ascending).

    Returns:
        The arrays as images ``(rows, cols)`` (row 0 = top), the pixel aspect (height/width of
        one pixel, from the spacing) and the patient direction at each edge
        (``{"left", "right", "top", "bottom"}`` -> letters; two letters for an oblique
        direction, the larger component first, e.g. ``"LA"``).
    """
    d = np.asarray(geometry.direction, dtype=np.float64)
    u, v = [a for a in range(3) if a != axis]
    sp = geometry.spacing
    # horizontal axis: the in-plane axis with the larger left-right (world x) component
    if max(abs(d[0, u]), abs(d[0, v])) >= 0.5:
        h = u if abs(d[0, u]) >= abs(d[0, v]) else v
        h_sign = -1.0 if d[0, h] > 0 else 1.0  # +i towards patient's left (world -x, RAS+) goes right
        h_world = 0
    else:  # sagittal-like: anterior on the left
        h = u if abs(d[1, u]) >= abs(d[1, v]) else v
        h_sign = -1.0 if d[1, h] > 0 else 1.0  # posterior to the right
        h_world = 1
    vert = v if h == u else u
    vw = 1 if (h_world == 0 and abs(d[1, vert]) >= abs(d[2, vert])) else 2
    v_sign = 1.0 if d[vw, vert] > 0 else -1.0  # towards A (or S) goes up
    out = []
    for arr in arrays:
        a2 = np.asarray(arr)
        # a2 axes: (u, v); want (vert, h)
        img = a2.T if h == u else a2
        if h_sign < 0:
            img = img[:, ::-1]
        if v_sign > 0:  # row 0 is the top: the positive (A/S) end first
            img = img[::-1, :]
        out.append(np.ascontiguousarray(img))
    hw_dir = d[:, h] * h_sign  # world direction pointing to the image's right
    vw_dir = d[:, vert] * v_sign  # world direction pointing up

    def letter(vec: np.ndarray) -> str:  # oblique directions get two letters, largest first ("LA")
        order = np.argsort(-np.abs(vec))
        return "".join(_LETTERS[w][1 if vec[w] > 0 else 0] for i, w in enumerate(order[:2])
                       if i == 0 or abs(vec[w]) >= 0.35)

    edges = {"right": letter(hw_dir), "left": letter(-hw_dir), "top": letter(vw_dir), "bottom": letter(-vw_dir)}
    aspect = float(sp[vert]) / float(sp[h])
    return out, aspect, edges


def _draw_slice(ax, img: np.ndarray, lab: np.ndarray, ref: np.ndarray | None, aspect: float,
                window: tuple[float, float], labels: Sequence[int], ref_labels: Sequence[int],
                edges: Mapping[str, str], title: str) -> None:
    ax.imshow(img, cmap="gray", origin="upper", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest")
    if labels:
        from matplotlib.colors import to_rgba

        rgba = np.zeros(lab.shape + (4,), dtype=np.float32)
        for val in labels:
            rgba[lab == val] = to_rgba(label_colour(val), alpha=0.28)
        ax.imshow(rgba, origin="upper", aspect=aspect, interpolation="nearest")
    if min(lab.shape) >= 2:
        for val in labels:
            m = lab == val
            if m.any() and not m.all():
                # no ``origin``: contour's own origin="upper" would flip again on the inverted y axis
                ax.contour(m.astype(np.float32), levels=[0.5], colors=[label_colour(val)], linewidths=1.2)
        if ref is not None:
            for val in ref_labels:
                m = ref == val
                if m.any() and not m.all():
                    ax.contour(m.astype(np.float32), levels=[0.5], colors=[REFERENCE_COLOUR], linewidths=1.0,
                               linestyles="--")
    for pos, (x, y, ha, va) in {"left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center"),
                                "top": (0.5, 0.99, "center", "top"),
                                "bottom": (0.5, 0.01, "center", "bottom")}.items():
        ax.text(x, y, edges[pos], transform=ax.transAxes, ha=ha, va=va, fontsize=8, color="#ffd60a",
                fontweight="bold")
    ax.set_title(title, fontsize=8.5)
    ax.set_xticks([])
    ax.set_yticks([])


#: Colour of the reference (expert) contours, drawn dashed over the predicted ones.
REFERENCE_COLOUR = "#00e5ff"


def overlay_views(rows: Sequence[tuple], *, stack_plane: str | None = None) -> list[list[tuple[str, int, int]]]:
    """The three views of each :func:`overlay_png` row: ``(title, array axis, slice index)``.

    The acquired plane comes first. Every row uses the slice indices of the first row when its
    grid has the same shape (ED and ES on the same slices); they go through the centroid of
    the first row's labels (of its reference when the labels are empty, else the grid centre).
    The geometry of every label map / reference is checked against its scan.
    """
    out = []
    first: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    for row in rows:
        title, scan, labels = row[0], row[1], row[2]
        reference = row[3] if len(row) > 3 else None
        scan.geometry.check_matches(labels.geometry, what="scan and label map", atol_mm=1e-3)
        if reference is not None:
            scan.geometry.check_matches(reference.geometry, what="scan and reference label map", atol_mm=1e-3)
        lab = np.asarray(labels.array)
        note = ""
        if first is not None and lab.shape == first[1]:
            c = first[0]
        else:
            c0 = structure_centroid(lab)
            if c0 is None and reference is not None:
                c0 = structure_centroid(np.asarray(reference.array))
            if c0 is None:
                c0 = tuple(s // 2 for s in lab.shape)  # type: ignore[assignment]
                note = " (no structure found)"
            c = c0  # type: ignore[assignment]
            if first is None:
                first = (c, lab.shape)
        names = view_names(scan.geometry, stack_plane=stack_plane)
        k = slice_axis(scan.geometry)
        out.append([(f"{title}: {names[a]}\nslice {'ijk'[a]}={c[a]} of {lab.shape[a]}{note}", a, int(c[a]))
                    for a in [k] + [x for x in range(3) if x != k]])
    return out


def overlay_png(
    rows: Sequence[tuple],
    *,
    label_names: Mapping[int, str] | None = None,
    stack_plane: str | None = None,
    dpi: int = 80,
) -> bytes:
    """PNG of three views per row, label contours on the scan, shown like a viewer.

    Views are named from the scan's own geometry (:func:`view_names`: axial / coronal /
    sagittal only when the slice planes are; else the acquired ``stack_plane`` and the views
    perpendicular to it) and displayed in one convention (:data:`DISPLAY_CONVENTION`,
    radiological, :func:`orient_slice`), the acquired plane first. Every row uses the slice
    indices of the first row when the grids have the same shape (so ED and ES show the same
    slices); the indices go through the centroid of the first row's labels (the grid centre
    when there are none).

    Args:
        rows: ``(title, scan, labels)`` or ``(title, scan, labels, reference)`` tuples; ``scan``,
            ``labels`` and ``reference`` (a reference label map or ``None``) are 3D volumes
            ``(I, J, K)`` on the same grid (checked). Reference contours are drawn dashed in
            :data:`REFERENCE_COLOUR`.
        label_names: label value -> name for the legend.
        stack_plane: what the acquired plane is (``"short axis"`` for cardiac stacks).
        dpi: resolution of the PNG.

    Returns:
        PNG file bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    fig = Figure(figsize=(10.5, 3.5 * max(1, len(rows)) + 0.5), dpi=dpi)
    FigureCanvasAgg(fig)
    all_labels: set[int] = set()
    any_ref = False
    for r, (row, views) in enumerate(zip(rows, overlay_views(rows, stack_plane=stack_plane))):
        scan, labels = row[1], row[2]
        reference = row[3] if len(row) > 3 else None
        lab = np.asarray(labels.array)
        img = np.asarray(scan.array)
        ref = np.asarray(reference.array) if reference is not None else None
        any_ref = any_ref or ref is not None
        present = sorted(int(v) for v in np.unique(lab) if v != 0)
        ref_present = sorted(int(v) for v in np.unique(ref) if v != 0) if ref is not None else []
        all_labels.update(present)
        window = _window(img)
        for p, (vtitle, a, index) in enumerate(views):
            sl: list[Any] = [slice(None)] * 3
            sl[a] = index
            arrs = [img[tuple(sl)], lab[tuple(sl)]] + ([ref[tuple(sl)]] if ref is not None else [])
            oriented, aspect, edges = orient_slice(scan.geometry, a, *arrs)
            ax = fig.add_subplot(len(rows), 3, r * 3 + p + 1)
            _draw_slice(ax, oriented[0], oriented[1], oriented[2] if ref is not None else None, aspect, window,
                        present, ref_present, edges, vtitle)
    handles = [Line2D([0], [0], color=label_colour(v), lw=2) for v in sorted(all_labels)]
    texts = [f"{v}: {names.get(v, f'label_{v}')}" for v in sorted(all_labels)]
    if any_ref:
        handles.append(Line2D([0], [0], color=REFERENCE_COLOUR, lw=1.5, ls="--"))
        texts.append("reference contour")
    if handles:
        fig.legend(handles, texts, loc="lower center", ncol=min(5, len(handles)), fontsize=8, frameon=False)
    fig.text(0.5, 0.995, "radiological display: patient's left on the image's right", ha="center", va="top",
             fontsize=8, color="#52606d")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.1 if handles else 0.02, wspace=0.04,
                        hspace=0.22)
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
    fig = Figure(figsize=(7.2, 3.2), dpi=dpi)
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
    # legend outside the axes (right of the plot), never over the start of a curve
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()
