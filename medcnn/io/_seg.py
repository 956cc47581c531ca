"""DICOM Segmentation objects (SEG): binary, fractional and labelmap, read with pydicom.

Each frame is one plane of one segment (binary / fractional) or of all segments
(labelmap), placed by its ImagePositionPatient. The grid comes from the SEG itself
(orientation, pixel spacing, frame positions; slices the SEG leaves out because they are
empty are zero); with a reference volume the frames must lie on the reference grid and
the result is on that grid. Fractional segments count where the fraction is >= 0.5.
Binary / fractional segments become label = segment number, or the label value medcnn
recorded in each Segment Description when it wrote the SEG (or 1..n in the order of
``roi`` when segments are chosen by name); overlapping segments give the voxel to the
smallest segment. The region segments medcnn adds (unions of labels, Segment Description
``"medcnn region of labels 1+2+4"``) overlap the label segments and are left out of the
label map unless asked for by name (``roi``); the regions they declare come back as
``meta["regions"]`` (``{segment label: [label values]}``, :func:`seg_regions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.errors import AnnotationError, GeometryMismatchError
from medcnn.io._itk import LPS_TO_RAS, lps_to_ras_geometry
from medcnn.io._rtstruct import _paint
from medcnn.volume import Volume

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: Segment Description (0062,0006) medcnn writes for each segment (``"medcnn label value 4"``),
#: so label maps whose labels are not 1..N (BraTS 1, 2, 4) come back with their own values.
LABEL_VALUE_PREFIX = "medcnn label value "
#: Segment Description of a region segment (a union of labels, overlapping the label segments).
REGION_PREFIX = "medcnn region of labels "
#: Tolerance (mm) for frame positions on the slice grid and for in-plane offsets.
_POS_TOL_MM = 0.01


def _group(ds: Any, frame: Any, name: str) -> Any | None:
    """Functional group item ``name`` of one frame (per-frame first, then shared)."""
    for holder in (frame, (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]):
        if holder is not None and name in holder:
            seq = holder[name].value
            if seq:
                return seq[0]
    return None


def read_seg(ds: Any, *, path: Path, reference: Volume | None = None, roi: Sequence[str] | None = None) -> Volume:
    """Label map of a SEG dataset (with pixel data). See the module docstring for the rules."""
    seg_type = str(getattr(ds, "SegmentationType", "BINARY")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise AnnotationError.expected("SegmentationType BINARY, FRACTIONAL or LABELMAP", repr(seg_type), path=path)
    segments = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", "") or f"segment {s.SegmentNumber}")
                for s in getattr(ds, "SegmentSequence", []) or []}
    if not segments:
        raise AnnotationError.expected("a SEG with at least one segment (SegmentSequence)", "none", path=path)
    frames = list(getattr(ds, "PerFrameFunctionalGroupsSequence", []) or [])
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if len(frames) != n_frames:
        raise AnnotationError.expected(
            f"per-frame functional groups for each of the {n_frames} frames",
            f"{len(frames)} (DimensionOrganizationType {getattr(ds, 'DimensionOrganizationType', '?')})", path=path,
            hint="tiled (whole-slide) segmentations are not volumes")
    rows, cols = int(ds.Rows), int(ds.Columns)
    iop, spacing_rc, positions, seg_numbers = None, None, [], []
    for n, fr in enumerate(frames):
        po = _group(ds, fr, "PlaneOrientationSequence")
        pm = _group(ds, fr, "PixelMeasuresSequence")
        pp = _group(ds, fr, "PlanePositionSequence")
        if po is None or pm is None or pp is None:
            raise AnnotationError.expected("plane orientation, pixel measures and plane position for every frame",
                                           f"frame {n + 1} without them", path=path)
        o = np.asarray([float(v) for v in po.ImageOrientationPatient])
        s = np.asarray([float(v) for v in pm.PixelSpacing])
        if iop is None:
            iop, spacing_rc = o, s
            slice_gap = float(getattr(pm, "SpacingBetweenSlices", 0) or 0)
        elif not (np.allclose(o, iop, atol=1e-4) and np.allclose(s, spacing_rc, atol=1e-6)):
            raise AnnotationError.expected("one orientation and pixel spacing for all frames",
                                           f"frame {n + 1} differs", path=path)
        positions.append([float(v) for v in pp.ImagePositionPatient])
        if seg_type != "LABELMAP":
            si = _group(ds, fr, "SegmentIdentificationSequence")
            if si is None:
                raise AnnotationError.expected("a referenced segment number for every frame",
                                               f"frame {n + 1} without one", path=path)
            seg_numbers.append(int(si.ReferencedSegmentNumber))
    assert iop is not None and spacing_rc is not None
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.asarray(positions)
    along = pos @ normal

    if reference is not None:
        geometry = reference.geometry
        r = geometry
        ijk = r.world_to_index(pos @ LPS_TO_RAS.T)
        direction_lps = LPS_TO_RAS @ r.direction_matrix
        same_dirs = np.allclose(direction_lps[:, 0], row_dir, atol=1e-4) and np.allclose(
            direction_lps[:, 1], col_dir, atol=1e-4)
        same_pixels = (cols, rows) == r.shape[:2] and np.allclose((spacing_rc[1], spacing_rc[0]), r.spacing[:2],
                                                                  atol=1e-4)
        inplane_off = np.abs(ijk[:, :2]) * np.asarray(r.spacing[:2])
        k_off = np.abs(ijk[:, 2] - np.round(ijk[:, 2])) * r.spacing[2]
        ks = np.round(ijk[:, 2]).astype(int)
        if not (same_dirs and same_pixels and inplane_off.max() <= _POS_TOL_MM and k_off.max() <= _POS_TOL_MM
                and ks.min() >= 0 and ks.max() < r.shape[2]):
            got = (f"{cols}x{rows} pixels of {spacing_rc[1]:.4g}x{spacing_rc[0]:.4g} mm, orientation "
                   f"{np.round(iop, 4).tolist()}, frames up to {max(inplane_off.max(), k_off.max()):.3g} mm off "
                   f"the grid, slice indices {ks.min()}..{ks.max()} of {r.shape[2]}")
            raise GeometryMismatchError.expected(
                f"SEG frames on the grid of the reference {reference.source or ''} "
                f"({r.shape[0]}x{r.shape[1]}x{r.shape[2]}, spacing {tuple(round(v, 4) for v in r.spacing)} mm)",
                got, path=path, hint="the SEG was made on another series or grid; pass the series it references")
    else:
        uniq = np.unique(np.round(along, 3))
        dz = slice_gap if slice_gap > 0 else (float(np.min(np.diff(uniq))) if len(uniq) > 1 else
                                             float(getattr(_group(ds, frames[0], "PixelMeasuresSequence"),
                                                           "SliceThickness", 1.0) or 1.0))
        base = int(np.argmin(along))
        steps = (along - along[base]) / dz
        inplane = pos - pos[base] - np.outer(along - along[base], normal)
        if np.max(np.abs(steps - np.round(steps))) * dz > _POS_TOL_MM or np.max(np.abs(inplane)) > _POS_TOL_MM:
            raise AnnotationError.expected(
                f"frames on one stack of slices {dz:.4g} mm apart along the slice normal",
                "frames off that grid", path=path, hint="pass the image series it was made on as reference")
        ks = np.round(steps).astype(int)
        geometry = lps_to_ras_geometry(pos[base], np.column_stack([row_dir, col_dir, normal]),
                                       (float(spacing_rc[1]), float(spacing_rc[0]), dz),
                                       (cols, rows, int(ks.max()) + 1), source=str(path))

    try:
        px = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for broken pixel data
        from medcnn.errors import CorruptFileError

        raise CorruptFileError.expected("decodable SEG pixel data", f"{type(exc).__name__}: {exc}", path=path) from None
    px = px.reshape(n_frames, rows, cols)
    shape = geometry.shape
    ref_vol = Volume(np.zeros(shape, np.uint8), geometry.with_source(str(path)), "label")
    meta: dict[str, Any] = {"annotation": "seg", "segmentation_type": seg_type}
    if not roi and seg_regions(ds):
        meta["regions"] = seg_regions(ds)

    if seg_type == "LABELMAP":
        wanted = _default_segments(ds, segments) if not roi else _by_name(segments, roi, path)
        out = np.zeros(shape, dtype=np.uint16 if px.max(initial=0) > 255 else np.uint8)
        for n in range(n_frames):
            out[:, :, ks[n]] = px[n].T
        present = set(np.unique(out).tolist()) - {0}
        unknown = present - set(segments)
        if unknown:
            raise AnnotationError.expected(f"pixel values among the segment numbers {sorted(segments)}",
                                           f"{sorted(unknown)}", path=path)
        masks = [out == s for s in wanted]
    else:
        threshold = 1
        if seg_type == "FRACTIONAL":
            threshold = 0.5 * float(getattr(ds, "MaximumFractionalValue", 255) or 255)
        wanted = _default_segments(ds, segments) if not roi else _by_name(segments, roi, path)
        masks = []
        for s in wanted:
            m = np.zeros(shape, dtype=bool)
            for n in np.flatnonzero(np.asarray(seg_numbers) == s):
                m[:, :, ks[n]] |= (px[n] >= threshold).T
            masks.append(m)
    values = wanted if not roi else list(range(1, len(wanted) + 1))
    if not roi:  # label values medcnn recorded when it wrote the SEG (labels that were not 1..N)
        recorded = _recorded_values(ds)
        if recorded is not None:
            values = [recorded[s] for s in wanted]
    for s, m in zip(wanted, masks):
        if roi and not m.any():
            raise AnnotationError.expected(f"segment {segments[s]!r} to cover at least one voxel",
                                           "an empty segment", path=path)
    return _paint(masks, [segments[s] for s in wanted], ref_vol, path, meta, values=values)


def seg_regions(ds: Any) -> dict[str, list[int]]:
    """``{segment label: [label values]}`` of the region segments medcnn wrote into a SEG
    (Segment Description ``"medcnn region of labels 1+2+4"``), in segment order; ``{}``
    when there are none (a malformed description is skipped: it is not one of medcnn's)."""
    out: dict[str, list[int]] = {}
    for s in getattr(ds, "SegmentSequence", []) or []:
        text = str(getattr(s, "SegmentDescription", "") or "")
        key = text[len(REGION_PREFIX):]
        parts = key.split("+")
        if not text.startswith(REGION_PREFIX) or not all(p.isdigit() and int(p) > 0 for p in parts):
            continue
        name = str(getattr(s, "SegmentLabel", "") or f"segment {s.SegmentNumber}")
        out[name] = sorted({int(p) for p in parts})
    return out


def _default_segments(ds: Any, segments: dict[int, str]) -> list[int]:
    """Every segment but medcnn's region segments (when label segments remain)."""
    regions = {int(s.SegmentNumber) for s in getattr(ds, "SegmentSequence", []) or []
               if str(getattr(s, "SegmentDescription", "") or "").startswith(REGION_PREFIX)}
    return [n for n in segments if n not in regions] or list(segments)


def _recorded_values(ds: Any) -> dict[int, int] | None:
    """``{segment number: label value}`` from medcnn's Segment Descriptions, when every
    (non-region) segment has one and the values are distinct; else ``None``."""
    out = {}
    for s in getattr(ds, "SegmentSequence", []) or []:
        text = str(getattr(s, "SegmentDescription", "") or "")
        if text.startswith(REGION_PREFIX):
            continue
        tail = text[len(LABEL_VALUE_PREFIX):]
        if not text.startswith(LABEL_VALUE_PREFIX) or not tail.isdigit() or int(tail) == 0:
            return None
        out[int(s.SegmentNumber)] = int(tail)
    return out if out and len(set(out.values())) == len(out) else None


def _by_name(segments: dict[int, str], roi: Sequence[str], path: Path) -> list[int]:
    by_name = {v: k for k, v in segments.items()}
    missing = [r for r in roi if r not in by_name]
    if missing:
        raise AnnotationError.expected(f"segment labels among {list(segments.values())}", f"{missing}", path=path)
    return [by_name[r] for r in roi]
