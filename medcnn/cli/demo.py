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

``medcnn demo --tumour`` (``make demo-tumour``) is the tumour counterpart: the four-sequence
region model ``brain-tumour-mri-4seq`` on BraTS 2018 cases of the shared data (FLAIR, T1,
T1ce, T2 with the experts' labels), printing per case the whole tumour, tumour core and
enhancing tumour volumes in mL beside the experts' and their Dice, with what the model's
data-use record says about these patients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcnn.cli._options import add_threads_option

__all__ = ["register", "run", "demo_cases", "case_line", "count_cases", "tumour_cases", "tumour_line"]

DEFAULT_MODEL = "cardiac-cine-mri"
TUMOUR_MODEL = "brain-tumour-mri-4seq"
#: BraTS 2018 cases of the tumour demo (one from CBICA, one from TCIA).
TUMOUR_CASES = ("Brats18_CBICA_ABM_1", "Brats18_TCIA02_135_1")
TUMOUR_REGIONS = (("whole_tumour", "WT"), ("tumour_core", "TC"), ("enhancing_tumour", "ET"))


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the batch job on sample cardiac scans from the shared data",
                       description="Segment the Sunnybrook cine DICOM series and ED/ES pairs with the default "
                                   "cardiac model and write an EF report (needs the shared data: $MEDCNN_DATA "
                                   "or ../shared/data). The demo says what the model's data-use record says "
                                   "about these patients (trained on, or used to shape its recipe).")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--model", default=None,
                   help=f"model name or bundle path (default {DEFAULT_MODEL}; with --tumour {TUMOUR_MODEL})")
    p.add_argument("--tumour", action="store_true",
                   help=f"the tumour demo: {TUMOUR_MODEL} on BraTS 2018 cases (whole tumour, core, enhancing volumes)")
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


def tumour_cases(data: Path, out: Path, case_ids: tuple[str, ...] = TUMOUR_CASES) -> Path | None:
    """A manifest (written to ``out``) of the tumour demo's BraTS 2018 cases: one column per
    sequence (FLAIR, T1, T1ce, T2) and the experts' label map; ``None`` if none is there."""
    from medcnn.report.tables import write_text

    root = data / "brats2018"
    lines = ["case_id,FLAIR,T1,T1ce,T2,label"]
    for cid in case_ids:
        files = [root / cid / f"{cid}_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2", "seg")]
        if all(f.is_file() for f in files):
            lines.append(",".join([cid, *map(str, files)]))
    if len(lines) == 1:
        return None
    manifest = out / "demo_tumour_cases.csv"
    write_text(manifest, "\n".join(lines) + "\n")
    return manifest


def tumour_line(rec: dict) -> str:
    """The tumour demo's line for one case: whole tumour, tumour core and enhancing tumour
    volumes (mL), with the experts' volume and the Dice where the case has a reference."""
    names = {r for r, _ in TUMOUR_REGIONS}
    rows = {v["label_name"]: v for v in rec.get("volumes") or [] if v.get("label_name") in names}
    parts = []
    for name, short in TUMOUR_REGIONS:
        v = rows.get(name)
        if v is None:
            continue
        part = f"{short} {v['volume_ml']:6.1f} mL"
        if v.get("reference_volume_ml") is not None:
            part += f" (experts {v['reference_volume_ml']:6.1f}, Dice {v['dice']:.2f})"
        parts.append(part)
    return f"  {rec['case_id']:<22} " + "  ".join(parts)


def count_cases(scans: list[str]) -> tuple[int, int]:
    """(cine DICOM series, ED/ES pairs) among the demo's inputs (a manifest row is one pair)."""
    n_cine = sum(1 for s in scans if Path(s).is_dir())
    n_pairs = sum(max(0, len(Path(s).read_text(encoding="utf-8").strip().splitlines()) - 1)
                  for s in scans if s.endswith(".csv"))
    return n_cine, n_pairs


def _bundle_json(model: str) -> dict:
    """The model's bundle.json (name or path), ``{}`` when it has none (a single-file bundle)."""
    import json

    from medcnn.models.defaults import resolve_model

    path = resolve_model(model)
    meta_file = path / "bundle.json" if path.is_dir() else None
    if meta_file is None or not meta_file.is_file():
        return {}
    return json.loads(meta_file.read_text(encoding="utf-8"))


def _data_use(model: str) -> dict:
    """The model's ``provenance.data_use`` record (case ids per role), ``{}`` if it has none."""
    return (_bundle_json(model).get("provenance") or {}).get("data_use") or {}


def _bundle_facts(model: str) -> tuple[bool, set[str], set[str]]:
    """(does the model segment the RV, the patient ids it was trained on, the patient ids that
    chose or shaped its recipe) from its bundle.json."""
    labels = {str(v) for v in (_bundle_json(model).get("labels") or {}).values()}
    use = _data_use(model)
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
    from medcnn.batch import run_batch

    data = shared_data_dir()
    if args.model is None:
        args.model = TUMOUR_MODEL if args.tumour else DEFAULT_MODEL
    if args.tumour:
        return _run_tumour(args, data)
    out = _start(args, data, "sunnybrook")
    if out is None:
        return 2
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


def _start(args: argparse.Namespace, data: Path | None, folder: str) -> Path | None:
    """The output folder (created) once the shared data's ``folder`` and the model are there;
    else ``None`` after one line on stderr saying what is missing."""
    from medcnn.batch import resolve_model
    from medcnn.errors import MedcnnError

    if data is None or not (data / folder).is_dir():
        print(f"medcnn demo: the shared sample data was not found: set MEDCNN_DATA to the folder holding "
              f"{folder}/ (see the README), or place it at ../shared/data beside the checkout", file=sys.stderr)
        return None
    try:
        resolve_model(args.model)
    except MedcnnError as exc:
        print(f"medcnn demo: the model {args.model!r} is not available ({exc}); train it or pass --model PATH",
              file=sys.stderr)
        return None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run_tumour(args: argparse.Namespace, data: Path | None) -> int:
    from medcnn.batch import run_batch

    out = _start(args, data, "brats2018")
    if out is None:
        return 2
    manifest = tumour_cases(data, out)
    if manifest is None:
        print(f"medcnn demo --tumour: none of {', '.join(TUMOUR_CASES)} found under {data / 'brats2018'}",
              file=sys.stderr)
        return 2
    n_cases = len(manifest.read_text(encoding="utf-8").strip().splitlines()) - 1
    print(f"medcnn demo: {args.model} on {n_cases} BraTS 2018 case(s) from {data / 'brats2018'} (FLAIR, T1, T1ce, "
          f"T2 with the experts' labels) -> {out}", file=sys.stderr)
    use = _data_use(args.model)
    result = run_batch([str(manifest)], model=args.model, out=out, mode="tumour", workers=args.workers,
                       device=args.device, threads=args.threads, progress=args.progress,
                       title=f"medcnn demo: glioma regions on {n_cases} BraTS 2018 case(s)")
    print(result.summary_line + f" ({n_cases} case(s))")
    ids = {str(r["case_id"]) for r in result.records if r.get("status") == "ok"}
    trained = ids & set(use.get("training") or [])
    shaped = ids & set(list(use.get("selection") or []) + list(use.get("recipe_selection") or []))
    if trained:
        print(f"note: {args.model} was trained on these cases ({len(trained)} of {len(ids)}): the figures below are "
              f"a training-set regression check, not a validation; its cross-validation figures: "
              f"medcnn models show {args.model}")
    elif shaped:
        print(f"note: {args.model} was not trained on these cases but {len(shaped)} of {len(ids)} shaped its recipe: "
              f"the figures below are a selection figure (medcnn models show {args.model})")
    print("volumes in mL (voxel count x voxel volume); regions: WT = labels 1+2+4, TC = 1+4, ET = 4")
    for r in result.records:
        if r.get("status") == "ok":
            print(tumour_line(r))
    print(f"report: {result.report_files['html'].resolve()}")
    return result.exit_code
