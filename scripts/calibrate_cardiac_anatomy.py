"""Calibration of the anatomical plausibility flags LV_NOT_ENCLOSED and RV_NOT_ADJACENT on
the experts' reference label maps.

Every reference map of ACDC (80 patients x ED/ES = 160 maps, labels 1 LV blood pool, 2 LV
myocardium, 3 RV blood pool, real voxel spacing) and of Sunnybrook (4 patients x ED/ES = 8
maps, LV blood pool and myocardium; the ES maps carry no myocardium, so the enclosure check
does not apply to them) goes through :func:`medcnn.measure.anatomy.anatomy_statistics`, the
code behind the flags. Printed per statistic: how many maps it applies to, min / median /
95th percentile / max, and the map with the largest value; then each tolerance of
:mod:`medcnn.measure.cardiac` with its margin over the largest reference value (tolerance /
largest value; the tolerance itself when every reference is 0), and how many reference maps
each flag fires on (must be 0). Exit code 1 when any reference map would be flagged.

The statistics (in plane, on the short-axis slices; docs/metrics.md):

* ``lv_open_fraction``: median over the LV slices of the fraction of the blood pool's outer
  one-pixel ring that is background (``LV_OPEN_FRACTION``); ``lv_open_fraction_max`` the most
  open single slice (not a flag criterion: basal slices may open);
* ``lv_detached_fraction``: share of the blood-pool volume in components with no myocardium
  within ``DETACHED_DISTANCE_MM`` (``LV_DETACHED_FRACTION``); ``lv_component_distance_mm``
  the largest distance (mm) of a component to the myocardium;
* ``rv_lv_distance_mm``: median over the slices holding both of the smallest RV-LV distance
  in mm (``RV_LV_GAP_MM``); ``rv_lv_distance_max_mm`` the largest per-slice distance.

Usage::

    python scripts/calibrate_cardiac_anatomy.py [--data DIR] [--markdown]

Reads the shared data through ``--data``, ``MEDCNN_DATA`` or ``../shared/data``; about 10 s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcnn._testing import shared_data_dir  # noqa: E402

STATISTICS = ("lv_open_fraction", "lv_open_fraction_max", "lv_detached_fraction", "lv_component_distance_mm",
              "rv_lv_distance_mm", "rv_lv_distance_max_mm")


def reference_maps(data: Path) -> list[dict]:
    """``{"dataset", "patient", "phase", "group", "path"}`` of every expert map (ACDC, Sunnybrook)."""
    out = []
    for name in ("acdc", "sunnybrook"):
        meta = data / name / "dataset.json"
        if not meta.is_file():
            raise SystemExit(f"calibrate_cardiac_anatomy: {meta}: expected the dataset.json of the shared data, "
                             "got nothing at that path (set MEDCNN_DATA or --data)")
        for e in json.loads(meta.read_text())["training"]:
            out.append({"dataset": name, "patient": e["patient"], "phase": e["phase"], "group": e.get("group", "HF"),
                        "path": meta.parent / e["label"]})
    return out


def measure(maps: list[dict]) -> list[dict]:
    """Each map's statistics and flags (``codes``), as :func:`medcnn.measure.cardiac.anatomy_qc` gives them."""
    from medcnn.io import read_volume
    from medcnn.measure import CardiacLabels
    from medcnn.measure.anatomy import anatomy_statistics
    from medcnn.measure.cardiac import anatomy_qc

    rows = []
    for m in maps:
        vol = read_volume(m["path"], kind="label")
        labels = CardiacLabels() if m["dataset"] == "acdc" else CardiacLabels(rv_blood=None)
        st = anatomy_statistics(np.asarray(vol.array), vol.spacing, lv_blood=labels.lv_blood, lv_myo=labels.lv_myo,
                                rv_blood=labels.rv_blood)
        codes = [f.code for f in anatomy_qc(vol, labels=labels, phase=m["phase"])]
        rows.append({**m, **st.to_dict(), "codes": codes,
                     "in_plane_mm": min(s for i, s in enumerate(vol.spacing) if i != st.slice_axis)})
    return rows


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: MEDCNN_DATA, ../shared/data)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = p.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None:
        print("calibrate_cardiac_anatomy: expected the shared data folder, got none (set MEDCNN_DATA or --data)",
              file=sys.stderr)
        return 2
    from medcnn.measure.anatomy import DETACHED_DISTANCE_MM
    from medcnn.measure.cardiac import LV_DETACHED_FRACTION, LV_OPEN_FRACTION, RV_LV_GAP_MM

    rows = measure(reference_maps(Path(data)))
    sep = " | " if args.markdown else "  "
    print(f"{len(rows)} expert maps: " + ", ".join(
        f"{d} {sum(r['dataset'] == d for r in rows)}" for d in ("acdc", "sunnybrook")))
    head = ["statistic", "maps", "min", "median", "p95", "max", "largest at"]
    print(("| " if args.markdown else "") + sep.join(head) + (" |" if args.markdown else ""))
    if args.markdown:
        print("|" + "---|" * len(head))
    largest: dict[str, float] = {}
    for k in STATISTICS:
        vals = [(r[k], r) for r in rows if not math.isnan(r[k])]
        x = np.array([v for v, _ in vals], dtype=np.float64)
        worst = max(vals, key=lambda t: t[0])[1]
        largest[k] = float(x.max())
        cells = [k, str(len(x)), _fmt(x.min()), _fmt(float(np.median(x))), _fmt(float(np.percentile(x, 95))),
                 _fmt(x.max()), f"{worst['dataset']} {worst['patient']} {worst['phase']}"]
        print(("| " if args.markdown else "") + sep.join(cells) + (" |" if args.markdown else ""))
    spacing = np.array([r["in_plane_mm"] for r in rows])
    print(f"in-plane pixel spacing of the maps: {spacing.min():.3f}-{spacing.max():.3f} mm "
          "(touching structures are one pixel spacing apart)")

    def margin(tol: float, key: str) -> str:
        if largest[key] == 0:
            return f"{tol:g} above the largest reference value (every reference is 0)"
        return f"{tol / largest[key]:.1f}x the largest reference value ({largest[key]:.3g})"

    print("\nchosen tolerances (medcnn.measure.cardiac / medcnn.measure.anatomy):")
    print(f"  LV_OPEN_FRACTION = {LV_OPEN_FRACTION:g}: margin {margin(LV_OPEN_FRACTION, 'lv_open_fraction')}; "
          f"the most open single slice of any map: {largest['lv_open_fraction_max']:.3f}")
    print(f"  LV_DETACHED_FRACTION = {LV_DETACHED_FRACTION:g}: margin "
          f"{margin(LV_DETACHED_FRACTION, 'lv_detached_fraction')}")
    print(f"  DETACHED_DISTANCE_MM = {DETACHED_DISTANCE_MM:g} mm: margin "
          f"{margin(DETACHED_DISTANCE_MM, 'lv_component_distance_mm')} component distance")
    print(f"  RV_LV_GAP_MM = {RV_LV_GAP_MM:g} mm: margin {margin(RV_LV_GAP_MM, 'rv_lv_distance_mm')} (median); "
          f"{margin(RV_LV_GAP_MM, 'rv_lv_distance_max_mm')} per-slice distance")
    fired = [(r, c) for r in rows for c in r["codes"]]
    for code in ("LV_NOT_ENCLOSED", "RV_NOT_ADJACENT"):
        hits = [f"{r['dataset']} {r['patient']} {r['phase']}" for r, c in fired if c == code]
        print(f"  {code}: fires on {len(hits)} of {len(rows)} expert maps" + (f": {', '.join(hits)}" if hits else ""))
    return 1 if fired else 0


if __name__ == "__main__":
    raise SystemExit(main())
