"""``medcnn demo --out DIR``: the daily batch job on sample scans of the shared data.

Runs the default cardiac bundle on the Sunnybrook cine DICOM folder (EF from the whole
cardiac cycle) and on the four Sunnybrook ED/ES NIfTI pairs (with the experts' contours as
reference, so the report also shows reference volumes and Dice), then prints how many cases
it ran, one line per case (with the experts' EF and the signed error where contours exist) and
where the report is. Whatever the bundle's data-use record says about these patients is printed
with the figures: trained on (a training-set regression check), or never trained on but
used to shape a recipe (a selection figure), or neither. The shared data is found
through :func:`medcnn._testing.shared_data_dir`
(``$MEDCNN_DATA`` or ``../shared/data``); without it the command explains and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcnn.cli._options import add_threads_option

__all__ = ["register", "run", "demo_cases", "case_line", "count_cases"]

DEFAULT_MODEL = "cardiac-cine-mri"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the batch job on sample cardiac scans from the shared data",
                       description="Segment the Sunnybrook cine DICOM series and ED/ES pairs with the default "
                                   "cardiac model and write an EF report (needs the shared data: $MEDCNN_DATA "
                                   "or ../shared/data). The demo says what the model's data-use record says "
                                   "about these patients (trained on, or used to shape its recipe).")
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


def count_cases(scans: list[str]) -> tuple[int, int]:
    """(cine DICOM series, ED/ES pairs) among the demo's inputs (a manifest row is one pair)."""
    n_cine = sum(1 for s in scans if Path(s).is_dir())
    n_pairs = sum(max(0, len(Path(s).read_text(encoding="utf-8").strip().splitlines()) - 1)
                  for s in scans if s.endswith(".csv"))
    return n_cine, n_pairs


def _bundle_facts(model: str) -> tuple[bool, set[str], set[str]]:
    """(does the model segment the RV, the patient ids it was trained on, the patient ids that
    chose or shaped its recipe) from its bundle.json."""
    import json

    from medcnn.models.defaults import resolve_model

    path = resolve_model(model)
    meta_file = path / "bundle.json" if path.is_dir() else None
    if meta_file is None or not meta_file.is_file():
        return False, set(), set()
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    labels = {str(v) for v in (meta.get("labels") or {}).values()}
    use = (meta.get("provenance") or {}).get("data_use") or {}
    patients = lambda ids: {str(t).split("_")[0] for t in ids}  # noqa: E731 - SCD0000101_ED_gt -> SCD0000101
    return ("rv_blood_pool" in labels, patients(use.get("training") or []),
            patients(list(use.get("selection") or []) + list(use.get("recipe_selection") or [])))


def _reference_ef(rec: dict) -> float | None:
    """LV EF (%) of the experts' contours of a pair case (its reference volumes), else None."""
    ref = {v.get("phase"): v.get("reference_volume_ml") for v in rec.get("volumes") or []
           if v.get("label_name") == "lv_blood_pool" or v.get("label") == 1}
    edv, esv = ref.get("ED"), ref.get("ES")
    if not edv or esv is None:
        return None
    return 100.0 * (edv - esv) / edv


def case_line(rec: dict) -> str:
    """The demo's line for one case: LV (and RV) volumes and EF, and for a pair with expert
    contours the experts' EF and the signed error (model - experts, percentage points)."""
    c = rec["cardiac"]
    nan = float("nan")
    ef = c.get("lv_ef_percent")
    rv = c.get("rv_ef_percent")
    line = (f"  {rec['case_id']:<22} EDV {c.get('lv_edv_ml') or nan:7.1f} mL  ESV {c.get('lv_esv_ml') or nan:7.1f} mL"
            f"  EF {ef if ef is not None else nan:5.1f} %")
    ref_ef = _reference_ef(rec)
    if ref_ef is not None and ef is not None:
        line += f" (experts {ref_ef:5.1f} %, {ef - ref_ef:+5.1f} points)"
    if rv is not None:
        line += f"  RV EDV {c.get('rv_edv_ml'):7.1f} mL  ESV {c.get('rv_esv_ml'):7.1f} mL  EF {rv:5.1f} %"
    return line


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
    n_cine, n_pairs = count_cases(scans)
    has_rv, trained_on, shaped = _bundle_facts(args.model)
    n_cases = n_cine + n_pairs
    print(f"medcnn demo: {args.model} on {n_cases} case(s) from {data / 'sunnybrook'} ({n_cine} cine DICOM "
          f"series, {n_pairs} ED/ES pair(s) with the experts' contours) -> {out}", file=sys.stderr)
    what = "LV and RV function" if has_rv else "LV function"
    title = f"medcnn demo: {what} on {n_cases} Sunnybrook cine MRI case(s)"
    result = run_batch(scans, model=args.model, out=out, mode="cardiac", workers=args.workers, device=args.device,
                       threads=args.threads, progress=args.progress, title=title)
    print(result.summary_line + f" ({n_cases} case(s))")
    cardiac = [r for r in result.records if r.get("cardiac")]
    patients = {str(r["case_id"]).split("_")[0] for r in cardiac}
    if patients & trained_on:
        print(f"note: {args.model} was trained on these Sunnybrook patients ({len(patients & trained_on)} of "
              f"{len(patients)}): the figures below are a training-set regression check, not a validation; "
              f"the model's validation figures: medcnn models show {args.model}")
    elif patients & shaped:
        print(f"note: {args.model} was not trained on these Sunnybrook patients; {len(patients & shaped)} of "
              f"{len(patients)} ({', '.join(sorted(patients & shaped))}) shaped its recipe, so the figures below are a "
              f"selection figure, not an external test (medcnn models show {args.model})")
    for r in cardiac:
        print(case_line(r) + (f"  QC: {', '.join(dict.fromkeys(f['code'] for f in r.get('qc_flags') or []))}"
                              if r.get("qc_flags") else ""))
    print(f"report: {result.report_files['html'].resolve()}")
    return result.exit_code
