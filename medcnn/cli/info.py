"""``medcnn info SCAN...``: geometry and intensity facts of scans (never patient identifiers)."""

from __future__ import annotations

import argparse
import json

import numpy as np

__all__ = ["register", "describe"]


def register(sub) -> None:
    p = sub.add_parser("info", help="print shape, spacing, orientation, origin, direction and intensity range",
                       description="Print the geometry and intensity facts of each scan. "
                                   "Patient names and IDs are never printed.")
    p.add_argument("scans", nargs="+", help="NIfTI/NRRD/MHA/MHD files or DICOM folders")
    p.add_argument("--series", help="DICOM series UID, index or description when a folder holds several")
    p.add_argument("--json", action="store_true", help="print one JSON object per scan")
    p.set_defaults(func=run)


def describe(volume) -> dict:
    """Facts about a Volume as a JSON-friendly dict (units in the key names)."""
    g = volume.geometry
    arr = volume.array
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    vals = arr[finite] if finite is not None else arr
    d = {
        "path": g.source,
        "format": volume.meta.get("format"),
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "spacing_mm": [round(s, 6) for s in g.spacing],
        "orientation": g.orientation,
        "origin_mm": [round(o, 4) for o in g.origin],
        "direction": [[round(v, 6) for v in row] for row in g.direction],
        "voxel_volume_ml": g.voxel_volume_ml,
        "intensity_min": float(vals.min()) if vals.size else None,
        "intensity_max": float(vals.max()) if vals.size else None,
        "world_convention": "RAS+ mm",
    }
    if finite is not None and not finite.all():
        d["non_finite_voxels"] = int((~finite).sum())
    if volume.leading_axis == "time":
        d["frames"] = int(arr.shape[0])
        if volume.frame_times_ms:
            d["frame_times_ms"] = [round(t, 3) for t in volume.frame_times_ms]
    for k in ("Modality", "SeriesDescription", "affine_source", "n_files"):
        if k in volume.meta:
            d[k.lower()] = volume.meta[k]
    if volume.read_notes:  # e.g. a NIfTI header read by the rule for inconsistent headers (docs/io.md)
        d["qc_flags"] = [{"code": n["code"], "message": n["message"]} for n in volume.read_notes]
    return d


def run(args: argparse.Namespace) -> int:
    from medcnn.io import read_volume

    for scan in args.scans:
        info = describe(read_volume(scan, series=args.series))
        if args.json:
            print(json.dumps(info))
            continue
        print(f"{info['path']}")
        for k, v in info.items():
            if k == "path":
                continue
            if k == "direction":
                v = "  ".join(str(r) for r in v)
            print(f"  {k:<18} {v}")
    return 0
