"""``medcnn demo --out DIR``: the daily batch job on sample scans of the shared data.

Runs the default cardiac bundle on the Sunnybrook cine DICOM folder (EF from the whole
cardiac cycle) and on the four Sunnybrook ED/ES NIfTI pairs (with the experts' contours as
reference, so the report also shows reference volumes and Dice), then prints where the
report is. The shared data is found through :func:`medcnn._testing.shared_data_dir`
(``$MEDCNN_DATA`` or ``../shared/data``); without it the command explains and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcnn.cli._options import add_threads_option

__all__ = ["register", "run", "demo_cases"]

DEFAULT_MODEL = "cardiac-cine-mri"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the batch job on sample cardiac scans from the shared data",
                       description="Segment the Sunnybrook cine DICOM series and ED/ES pairs with the default "
                                   "cardiac model and write an EF report (needs the shared data: $MEDCNN_DATA "
                                   "or ../shared/data).")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or bundle path (default {DEFAULT_MODEL})")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_threads_option(p)
    p.set_defaults(func=run)


def demo_cases(data: Path, out: Path) -> list[str]:
    """Inputs of the demo: the cine DICOM folder and a manifest of ED/ES pairs (written to ``out``)."""
    from medcnn.report.tables import write_text

    sb = data / "sunnybrook"
    scans: list[str] = []
    cine = sb / "dicom"
    if cine.is_dir():
        scans += [str(p) for p in sorted(cine.iterdir()) if p.is_dir()]
    pairs = sorted((sb / "nifti").glob("*_ED.nii.gz")) if (sb / "nifti").is_dir() else []
    lines = ["case_id,ed,es,ed_label,es_label"]
    for ed in pairs:
        pid = ed.name[: -len("_ED.nii.gz")]
        es = ed.with_name(f"{pid}_ES.nii.gz")
        if not es.is_file():
            continue
        ref_ed, ref_es = ed.with_name(f"{pid}_ED_gt.nii.gz"), ed.with_name(f"{pid}_ES_gt.nii.gz")
        lines.append(",".join([f"{pid}_pair", str(ed), str(es), str(ref_ed) if ref_ed.is_file() else "",
                               str(ref_es) if ref_es.is_file() else ""]))
    if len(lines) > 1:
        manifest = out / "demo_pairs.csv"
        write_text(manifest, "\n".join(lines) + "\n")
        scans.append(str(manifest))
    return scans


def run(args: argparse.Namespace) -> int:
    from medcnn._testing import shared_data_dir
    from medcnn.batch import resolve_model, run_batch
    from medcnn.errors import MedcnnError

    data = shared_data_dir()
    if data is None or not (data / "sunnybrook").is_dir():
        print("medcnn demo: the shared sample data was not found: set MEDCNN_DATA to the folder holding "
              "sunnybrook/ (see the README), or place it at ../shared/data beside the checkout", file=sys.stderr)
        return 2
    try:
        resolve_model(args.model)
    except MedcnnError as exc:
        print(f"medcnn demo: the model {args.model!r} is not available ({exc}); train it or pass --model PATH",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scans = demo_cases(data, out)
    if not scans:
        print(f"medcnn demo: no Sunnybrook scans found under {data / 'sunnybrook'}", file=sys.stderr)
        return 2
    print(f"medcnn demo: {args.model} on {len(scans)} input(s) from {data / 'sunnybrook'} -> {out}", file=sys.stderr)
    result = run_batch(scans, model=args.model, out=out, mode="cardiac", workers=args.workers, device=args.device,
                       threads=args.threads, progress=args.progress, title="medcnn demo: LV function from Sunnybrook cine MRI")
    print(result.summary_line)
    cardiac = [r for r in result.records if r.get("cardiac")]
    for r in cardiac:
        c = r["cardiac"]
        ef = c.get("lv_ef_percent")
        rv = c.get("rv_ef_percent")
        print(f"  {r['case_id']:<22} EDV {c.get('lv_edv_ml') or float('nan'):7.1f} mL  ESV "
              f"{c.get('lv_esv_ml') or float('nan'):7.1f} mL  EF {ef if ef is not None else float('nan'):5.1f} %"
              + (f"  RV EDV {c.get('rv_edv_ml'):7.1f} mL  ESV {c.get('rv_esv_ml'):7.1f} mL  EF {rv:5.1f} %"
                 if rv is not None else "")
              + (f"  QC: {', '.join(dict.fromkeys(f['code'] for f in r.get('qc_flags') or []))}"
                 if r.get("qc_flags") else ""))
    print(f"report: {result.report_files['html'].resolve()}")
    return result.exit_code
