"""RT Structure Sets (RTSTRUCT): closed planar contours rasterised onto an image grid.

Rule (documented in docs/dicom.md): a voxel belongs to an ROI when its *centre* lies
inside the ROI's contours on that voxel's slice, by the even-odd rule over *all* the
ROI's contours on the slice (a contour inside another cuts a hole, a contour inside the
hole adds an island again). A centre exactly on an edge counts on the low-index side
only (half-open ``[min, max)`` in voxel index space), so two ROIs sharing an edge never
both claim a voxel. Contour points are taken to the reference grid's voxel indices; a
contour whose points are not on one slice plane of that grid (within 5 % of the slice
spacing) or that lies outside its slices is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.errors import AnnotationError, DicomSeriesError
from medcnn.io._itk import LPS_TO_RAS
from medcnn.volume import Volume

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Largest distance of a contour point from its slice plane, as a fraction of the slice spacing.
PLANE_TOL_FRACTION = 0.05
#: Voxel-index coordinates are rounded to this many decimals so that edges meant to pass
#: exactly through voxel centres are not moved to either side by floating-point noise.
_INDEX_DECIMALS = 6
#: The referenced series is looked for in at most this many folders beside the annotation's.
MAX_SIBLING_FOLDERS = 16


def referenced_series_uid(ds: Any) -> str | None:
    """SeriesInstanceUID of the image series an RTSTRUCT's contours were drawn on."""
    for fr in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        for st in getattr(fr, "RTReferencedStudySequence", []) or []:
            for se in getattr(st, "RTReferencedSeriesSequence", []) or []:
                uid = getattr(se, "SeriesInstanceUID", None)
                if uid:
                    return str(uid)
    return None


def roi_table(ds: Any, path: Path) -> list[tuple[int, str, list[Any]]]:
    """``[(roi_number, roi_name, contours), ...]`` in StructureSetROISequence order."""
    names = [(int(r.ROINumber), str(getattr(r, "ROIName", "") or f"ROI {r.ROINumber}"))
             for r in getattr(ds, "StructureSetROISequence", []) or []]
    if not names:
        raise AnnotationError.expected("an RTSTRUCT with at least one ROI (StructureSetROISequence)",
                                       "no ROIs", path=path)
    contours: dict[int, list[Any]] = {}
    for rc in getattr(ds, "ROIContourSequence", []) or []:
        contours.setdefault(int(rc.ReferencedROINumber), []).extend(getattr(rc, "ContourSequence", []) or [])
    return [(num, name, contours.get(num, [])) for num, name in names]


def select_rois(table: list[tuple[int, str, list[Any]]], roi: Sequence[str] | None, path: Path):
    if not roi:
        return table
    by_name = {row[1]: row for row in table}
    missing = [r for r in roi if r not in by_name]
    if missing:
        raise AnnotationError.expected(f"ROI names among {[r[1] for r in table]}", f"{missing}", path=path)
    return [by_name[r] for r in roi]


def _slice_edges(points_ij: np.ndarray) -> np.ndarray:
    """Closed polygon ``(N, 2)`` → edges ``(N, 4)`` as ``(i0, j0, i1, j1)``."""
    return np.concatenate([points_ij, np.roll(points_ij, -1, axis=0)], axis=1)


def fill_even_odd(edges: np.ndarray, shape_ij: tuple[int, int]) -> np.ndarray:
    """Voxel centres ``(i, j)`` (integers) inside the union of edges by the even-odd rule.

    Args:
        edges: ``(E, 4)`` float array of ``(i0, j0, i1, j1)`` in voxel-index units.
        shape_ij: grid size ``(I, J)``.

    Returns:
        ``(I, J)`` bool mask. A centre on an edge is inside on the low-index side only.
    """
    ni, nj = shape_ij
    mask = np.zeros((ni, nj), dtype=bool)
    if len(edges) == 0:
        return mask
    i0, j0, i1, j1 = edges.T
    jmin = max(int(np.ceil(min(j0.min(), j1.min()))), 0)
    jmax = min(int(np.floor(max(j0.max(), j1.max()))), nj - 1)
    centres = np.arange(ni, dtype=np.float64)
    for j in range(jmin, jmax + 1):
        crosses = (j0 > j) != (j1 > j)  # half-open in j: the edge's upper end is excluded
        if not crosses.any():
            continue
        a0, b0, a1, b1 = i0[crosses], j0[crosses], i1[crosses], j1[crosses]
        xs = np.sort(a0 + (j - b0) * (a1 - a0) / (b1 - b0))
        # centres with an odd number of crossings strictly to their right are inside
        right = len(xs) - np.searchsorted(xs, centres, side="right")
        mask[:, j] = (right % 2) == 1
    return mask


def rasterise_rtstruct(ds: Any, reference: Volume, *, path: Path, roi: Sequence[str] | None = None) -> Volume:
    """Label map of an RTSTRUCT dataset on ``reference``'s grid.

    Returns:
        label Volume ``(I, J, K)`` uint8/uint16; ROIs get labels 1..N in file order (or in
        the order of ``roi``); ``meta["label_names"]`` = ``{str(label): roi_name}``.
        Where ROIs overlap, the voxel takes the label of the smallest ROI (fewest voxels),
        so nested structures stay visible; ``meta["overlap_voxels"]`` counts such voxels.
    """
    g = reference.geometry
    ni, nj, nk = g.shape
    dz = g.spacing[2]
    chosen = select_rois(roi_table(ds, path), roi, path)
    masks: list[np.ndarray] = []
    for _, name, contours in chosen:
        closed = [c for c in contours if str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR")) == "CLOSED_PLANAR"]
        if not closed:
            kinds = sorted({str(getattr(c, "ContourGeometricType", "?")) for c in contours})
            raise AnnotationError.expected(
                f"closed planar contours for ROI {name!r}",
                f"{'no contours' if not contours else 'only ' + ', '.join(kinds) + ' contours'} (an empty ROI)",
                path=path, hint="choose other ROIs with roi=[...] (CLI: --roi NAME)")
        per_slice: dict[int, list[np.ndarray]] = {}
        for c in closed:
            pts = np.asarray([float(v) for v in c.ContourData], dtype=np.float64)
            if pts.size < 9 or pts.size % 3:
                raise AnnotationError.expected(f"at least 3 points (x, y, z triples) per contour of ROI {name!r}",
                                               f"{pts.size} values", path=path)
            ijk = g.world_to_index(pts.reshape(-1, 3) @ LPS_TO_RAS.T)
            k = ijk[:, 2]
            kr = int(np.round(np.median(k)))
            off_mm = float(np.max(np.abs(k - kr))) * dz
            if off_mm > PLANE_TOL_FRACTION * dz:
                raise AnnotationError.expected(
                    f"contours of ROI {name!r} on the slice planes of the reference series "
                    f"({reference.source or 'reference'})",
                    f"a contour {off_mm:.3f} mm off the nearest slice plane (slice spacing {dz:.3f} mm)",
                    path=path, hint="is this the series the structure set was drawn on? "
                                    "Contours between or across slices cannot be rasterised slice by slice")
            if not 0 <= kr < nk:
                z = np.round(pts.reshape(-1, 3)[0], 2).tolist()
                raise AnnotationError.expected(
                    f"contours of ROI {name!r} on one of the {nk} slices of the reference series",
                    f"a contour at {z} mm (LPS) on slice index {kr}, which the series does not have",
                    path=path, hint="a slice of the image series is probably missing")
            per_slice.setdefault(kr, []).append(np.round(ijk[:, :2], _INDEX_DECIMALS))
        mask = np.zeros(g.shape, dtype=bool)
        for k, polys in per_slice.items():
            edges = np.concatenate([_slice_edges(p) for p in polys])
            mask[:, :, k] = fill_even_odd(edges, (ni, nj))
        if not mask.any():
            raise AnnotationError.expected(f"ROI {name!r} to cover at least one voxel centre",
                                           "contours enclosing no voxel centre (an empty ROI)", path=path)
        masks.append(mask)
    return _paint(masks, [name for _, name, _ in chosen], reference, path, {"annotation": "rtstruct"})


def _paint(masks: list[np.ndarray], names: list[str], reference: Volume, path: Path, meta: dict,
           values: Sequence[int] | None = None) -> Volume:
    """One label map from boolean masks: label ``values[n]`` (default n + 1); overlaps go to
    the smallest mask."""
    values = list(values) if values is not None else list(range(1, len(masks) + 1))
    dtype = np.uint8 if max(values, default=0) < 256 else np.uint16
    out = np.zeros(reference.geometry.shape, dtype=dtype)
    count = np.zeros(reference.geometry.shape, dtype=np.uint16) if len(masks) > 1 else None
    for n in sorted(range(len(masks)), key=lambda n: -int(masks[n].sum())):
        out[masks[n]] = values[n]
        if count is not None:
            count += masks[n]
    meta = {**meta, "label_names": {str(v): nm for v, nm in zip(values, names)}}
    if count is not None:
        meta["overlap_voxels"] = int((count > 1).sum())
    geometry = reference.geometry.with_source(str(path))
    return Volume(out, geometry, "label", None, None, meta)


def referenced_frame_of_reference(ds: Any) -> str | None:
    for fr in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        uid = getattr(fr, "FrameOfReferenceUID", None)
        if uid:
            return str(uid)
    uid = getattr(ds, "FrameOfReferenceUID", None)
    return str(uid) if uid else None


def find_referenced_series(path: Path, series_uid: str | None,
                           frame_of_reference_uid: str | None = None) -> tuple[Path, str] | None:
    """``(folder, series_uid)`` of the image series an annotation refers to: in the
    annotation's folder, or one of the (at most 16) folders beside it (``.../mask/RS.dcm``
    finds ``.../image/``). Matched by SeriesInstanceUID; failing that, by the one series sharing
    the annotation's FrameOfReferenceUID (a re-exported copy of the series the contours were
    drawn on; the slice-plane checks still apply). ``None`` when absent."""
    from medcnn.io._dicom import _read_headers

    parent = path.parent
    siblings = sorted(p for p in parent.parent.iterdir() if p.is_dir() and p != parent)
    # beside it means a case folder (image/, mask/...), not a whole archive of patients
    candidates = [parent] + (siblings if len(siblings) <= MAX_SIBLING_FOLDERS else [])
    by_frame: dict[str, Path] = {}
    for folder in candidates:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            headers, _ = _read_headers(folder)
        for _, ds in headers:
            uid = str(getattr(ds, "SeriesInstanceUID", ""))
            if series_uid and uid == series_uid:
                return folder, uid
            if frame_of_reference_uid and str(getattr(ds, "FrameOfReferenceUID", "")) == frame_of_reference_uid:
                by_frame.setdefault(uid, folder)
    if len(by_frame) == 1:
        uid, folder = next(iter(by_frame.items()))
        return folder, uid
    return None


def missing_series_error(path: Path, what: str, series_uid: str | None) -> DicomSeriesError:
    return DicomSeriesError.expected(
        f"the image series the {what} refers to (SeriesInstanceUID {series_uid or 'not recorded'}) in its folder "
        "or a folder beside it, or given as reference",
        "no such series", path=path, hint="pass the image series folder with reference=... (CLI: --reference DIR)")
