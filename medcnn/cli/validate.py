"""``medcnn validate --pred DIR --ref DIR --out DIR``: metrics of predictions against references.

Pairs: files with identical names in ``--pred`` and ``--ref`` (``.nii``, ``.nii.gz``,
``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``; DICOM RTSTRUCT / SEG files as ``<case>.dcm``, an
RTSTRUCT being rasterised on the prediction's grid), or a CSV (``--pairs``) with columns
``pred``, ``ref`` and optionally ``case_id``, ``subject``, ``phase`` and a group column
(``group`` or ``--group-column``; relative paths are relative to the CSV's folder). With
folders, what exists is validated: references without a prediction (5 predictions against a
200-file reference folder) are counted once on stderr and in ``summary.json``
(``unmatched_references``), not errors. A prediction without a reference, a missing or
unreadable file in a pairs CSV, or a case that fails becomes a row with an ``error`` message
and the others continue; the exit code is then 2.

Agreement statistics (Pearson r, limits of agreement, ICC, CCC) need at least ``--min-n``
(default 5) cases or subjects; below that they are withheld with a note (bias and SD of the
differences stay). Differences of percentages (EF) are in percentage points.

Outputs (written atomically into ``--out``): ``metrics.csv`` (one row per case and
structure), ``summary.json`` (aggregates with bootstrap CIs, volume agreement,
definitions, settings, medcnn version, SHA-256 of every input file), PNG plots and a
self-contained ``report.html``.

Regions (BraTS-style validation, :mod:`medcnn.regions`): ``--regions brats`` adds one row per
case and region (``structure_kind`` ``region``): whole tumour WT = labels {1, 2, 4}, tumour
core TC = {1, 4}, enhancing tumour ET = {4} in BraTS's label convention, each the union of
its labels in both maps: Dice, HD95 (mm), predicted and reference volume (mL) and the volume
error (mL and %). ``--regions WT=1,2,4;TC=1,4;ET=4``, a JSON object or a ``.json`` file
(bundle.json, dataset.json with ``regions``) give other regions; with ``--regions`` and no
``--labels`` only the regions are evaluated. A prediction written by a medcnn region model
records the model's regions (``segment_provenance.json`` of ``medcnn segment`` or
``result.json`` of ``medcnn run`` beside the label map: its volume rows; a DICOM SEG: its
region segments): without ``--regions`` those regions are evaluated; with it, they give the
prediction's label values of the same-named regions (WT = whole tumor ...), so a model
writing nnU-Net's 1/2/3 is compared with BraTS's 1/2/4 references
(``--ignore-recorded-regions``: use the ``--regions`` values on both sides; ``--regions none``:
no regions). ``--regions brats`` scores empty regions by the BraTS rule (``--empty-policy
brats``, :mod:`medcnn.metrics.policy`) unless ``--empty-policy`` is given; ``summary.json``
states the rule (``regions.empty_region_rule``) and ``report.html`` has a regions table.

ACDC-style evaluation (Bernard et al., IEEE TMI 2018; :mod:`medcnn.metrics.acdc`): when the
pairs CSV has ``subject`` and ``phase`` (ED/ES) columns, the structures ``--lv-label``,
``--myo-label`` and ``--rv-label`` (label values, default 1, 2, 3, or ``--labels`` names; 0 =
none) give (1) per structure and phase Dice, HD95 and HD mean and SD, and (2) for LV EDV,
ESV, EF, RV EDV, ESV, EF and myocardial mass (myocardium at ED x 1.05 g/mL) the Pearson
correlation, bias, SD of the differences and 95 % limits of agreement, pooled and per group.
They are printed and written to ``acdc_geometric.csv``, ``acdc_clinical.csv``,
``acdc_subjects.csv`` and ``acdc.json``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "parse_labels", "find_pairs", "acdc_structures", "recorded_regions", "case_regions"]

#: Default label values of the ACDC structures (medcnn's cardiac convention).
ACDC_DEFAULT_LABELS = {"lv": "1", "myo": "2", "rv": "3"}


def register(sub) -> None:
    from medcnn.metrics.policy import DEFAULT_EMPTY_POLICY, EMPTY_POLICIES

    p = sub.add_parser(
        "validate", help="compare predicted label maps with references: Dice, HD95, ASSD, NSD, volumes, agreement",
        description="Evaluate predicted label maps against annotated references (distances in mm from the "
                    "reference geometry) and write metrics.csv, summary.json, PNG plots and report.html.",
        epilog="Exit codes: 0 every case evaluated, 2 some case failed or bad arguments, 1 internal error.")
    p.add_argument("--pred", help="folder of predicted label maps")
    p.add_argument("--ref", help="folder of reference label maps (same file names); DICOM RTSTRUCT or SEG "
                                 "references as <case>.dcm (an RTSTRUCT is rasterised on the prediction's grid)")
    p.add_argument("--pairs", help="CSV with columns pred,ref[,case_id,subject,phase,group] instead of name matching")
    p.add_argument("--group-column", default="group", metavar="NAME",
                   help="pairs CSV column that groups subjects (e.g. pathology) for the ACDC tables (default group)")
    p.add_argument("--pred-suffix", default="", metavar="SUFFIX",
                   help="name ending that marks predictions, removed before matching: '_labels' pairs "
                        "case01_labels.nii.gz (medcnn segment's output) with case01.nii.gz; other files in --pred "
                        "are ignored")
    p.add_argument("--ref-suffix", default="", metavar="SUFFIX",
                   help="the same for references, e.g. '_gt' or '_seg'")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="structures: label values (1 2) or NAME=VALUES (LV=1 WT=1,2,3,4); "
                        "default every non-zero label found")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    p.add_argument("--percentile", type=float, default=95.0, help="robust Hausdorff percentile (default 95)")
    p.add_argument("--regions", metavar="SPEC",
                   help="evaluate regions (unions of labels), one row per case and region: 'brats' (WT=1,2,4 TC=1,4 "
                        "ET=4, BraTS's labels), 'WT=1,2,4;TC=1,4;ET=4', a JSON object or a .json file (bundle.json, "
                        "dataset.json with regions); 'none': no regions. Without --labels only the regions are "
                        "evaluated. Default: the regions recorded by the medcnn region model that wrote a prediction")
    p.add_argument("--ignore-recorded-regions", action="store_true",
                   help="use the --regions label values for the predictions too, not the regions recorded by the "
                        "model that wrote them (predictions already in the references' label convention)")
    p.add_argument("--empty-policy", default=None, choices=EMPTY_POLICIES,
                   help="values when a structure is empty in one or both maps (default brats with --regions brats, "
                        f"else {DEFAULT_EMPTY_POLICY}); brats: Dice 1 / HD95 0 when both are empty, Dice 0 / HD95 "
                        "373.13 mm when one is (the BraTS challenge rule)")
    p.add_argument("--sparse-slices", action="store_true",
                   help="evaluate only slices (coarsest axis) where the reference has any label")
    p.add_argument("--resample", action="store_true",
                   help="resample predictions onto the reference grid (nearest neighbour) when grids differ")
    p.add_argument("--lesion-labels", nargs="*", default=[], metavar="NAME",
                   help="structures that get lesion-wise detection counts (or 'all')")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26), help="lesion connectivity")
    p.add_argument("--lv-label", help="LV blood pool for the ACDC tables: label value or --labels name (default 1; "
                                      "0 = none); the tables need subject/phase columns in --pairs")
    p.add_argument("--myo-label", help="LV myocardium: label value or --labels name (default 2; 0 = none)")
    p.add_argument("--rv-label", help="RV blood pool: label value or --labels name (default 3; 0 = none)")
    p.add_argument("--ref-dataset", metavar="DATASET_JSON",
                   help="the references' MSD-style dataset.json: structures whose label values its 'labels' do not "
                        "list, and those its 'not_annotated' lists (per phase: {\"ES\": [\"lv_myocardium\"]}; "
                        "or per entry), are 'not annotated' (empty metrics and a reason, never Dice 0); entries "
                        "also give subject (patient) and phase")
    p.add_argument("--min-n", type=int, default=None, metavar="N",
                   help="fewest cases/subjects for r, limits of agreement, ICC and CCC; below it they are withheld "
                        "with a note (default 5)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for CIs (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="threads for distance transforms (default 1)")
    p.add_argument("--include-paths", action="store_true",
                   help="keep full input paths in metrics.csv, summary.json and report.html (default: file names "
                        "only; folder names often hold patient names)")
    p.set_defaults(func=run)


def parse_labels(items: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``["1", "2"]`` or ``["LV=1", "WT=1,2,3,4"]`` → ``{name: values}`` (``None`` when empty)."""
    from medcnn.errors import ConfigError

    if not items:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, _, values = item.partition("=")
        text = values if _ else name
        try:
            vals = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ConfigError.expected("--labels like 1 2 or LV=1 WT=1,2,3,4", repr(item)) from None
        if not vals or any(v <= 0 for v in vals):
            raise ConfigError.expected("positive label values in --labels", repr(item))
        key = name.strip() if _ else ",".join(map(str, vals))
        if key in out:
            raise ConfigError.expected("unique structure names in --labels", f"{key!r} twice")
        out[key] = vals
    return out


def _strip_suffix(name: str) -> str | None:
    """Case key of a label file: the name without its image extension; DICOM annotations
    (RTSTRUCT / SEG) may be named ``<case>.dcm``."""
    from medcnn.io import image_stem

    if name.lower().endswith(".dcm") and len(name) > 4:
        return name[:-4]
    return image_stem(name)


def find_pairs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cases as dicts with ``case_id``, ``pred``, ``ref`` (paths or None), ``subject``,
    ``phase`` and ``error`` (a message when a file is missing)."""
    from medcnn.errors import ConfigError, InputFileNotFoundError

    if args.pairs:
        return _pairs_from_csv(Path(args.pairs), getattr(args, "group_column", "group"))
    if not (args.pred and args.ref):
        raise ConfigError.expected("--pred and --ref folders, or --pairs CSV", "neither")
    pred_dir, ref_dir = Path(args.pred), Path(args.ref)
    for d, flag in ((pred_dir, "--pred"), (ref_dir, "--ref")):
        if not d.is_dir():
            raise InputFileNotFoundError.expected(f"an existing folder for {flag}", "no folder at that path", path=d)

    preds, pred_dups = _listing(pred_dir, args.pred_suffix)
    refs, ref_dups = _listing(ref_dir, args.ref_suffix)
    if not refs and not preds:
        raise InputFileNotFoundError.expected("label maps (.nii.gz, .nrrd, .mha, ...) in the folders"
                                              + (" with the given --pred-suffix/--ref-suffix"
                                                 if args.pred_suffix or args.ref_suffix else ""),
                                              "no such files", path=ref_dir)
    cases = []
    for key in sorted(set(preds) | set(refs) | set(pred_dups) | set(ref_dups)):
        err = ""
        if key in pred_dups or key in ref_dups:
            names = pred_dups.get(key) or ref_dups.get(key)
            err = (f"{names[0].parent}: expected one label map for case {key!r}, got "
                   f"{', '.join(p.name for p in names)}")
        elif key not in preds:  # a reference nobody predicted: counted once, not an error
            cases.append({"case_id": key, "pred": None, "ref": str(refs[key]), "subject": "", "phase": "",
                          "group": "", "error": "", "unmatched_reference": True})
            continue
        elif key not in refs:
            err = (f"{ref_dir / (key + args.ref_suffix)}.*: expected a reference for the prediction "
                   f"{preds[key].name}, got no such file")
        cases.append({"case_id": key, "pred": str(preds[key]) if key in preds and not err else None,
                      "ref": str(refs[key]) if key in refs and not err else None, "subject": "", "phase": "",
                      "group": "", "error": err})
    return cases


def _listing(folder: Path, suffix: str) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """``({case key: file}, {case key: [files]} for keys held by several files)``.

    The key is the file name without its image extension and without ``suffix`` (files whose
    stem does not end in ``suffix`` are skipped), so ``case01.nrrd`` pairs with
    ``case01.nii.gz`` and ``case01_labels.nii.gz`` with ``case01_gt.nii.gz`` given the suffixes."""
    from medcnn.io import annotation_kind

    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        stem = _strip_suffix(p.name) if p.is_file() and not p.name.startswith(".") else None
        if stem and p.name.lower().endswith(".dcm") and annotation_kind(p) is None:
            continue  # other DICOM objects (an SR, an image) are not label maps
        if not stem or (suffix and (not stem.endswith(suffix) or stem == suffix)):
            continue
        found.setdefault(stem[: len(stem) - len(suffix)] if suffix else stem, []).append(p)
    return ({k: v[0] for k, v in found.items() if len(v) == 1}, {k: v for k, v in found.items() if len(v) > 1})


def _pairs_from_csv(path: Path, group_column: str = "group") -> list[dict[str, Any]]:
    from medcnn.errors import ConfigError, InputFileNotFoundError

    if not path.is_file():
        raise InputFileNotFoundError.expected("an existing pairs CSV", "no file at that path", path=path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "pred" not in cols or "ref" not in cols:
            raise ConfigError.expected("CSV columns pred,ref[,case_id,subject,phase]", f"columns {cols}", path=path)
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in reader]
    cases, seen = [], set()
    for i, r in enumerate(rows, start=2):
        pred = (path.parent / r["pred"]) if r.get("pred") else None
        ref = (path.parent / r["ref"]) if r.get("ref") else None
        cid = r.get("case_id") or (_strip_suffix(ref.name) if ref else None) or f"row{i}"
        if cid in seen:
            raise ConfigError.expected("unique case ids in the pairs CSV", f"{cid!r} on line {i} again", path=path)
        seen.add(cid)
        err = ""
        for p, what in ((pred, "pred"), (ref, "ref")):
            if p is None:
                err = err or f"{path}: line {i}: expected a {what} path, got an empty cell"
            elif not p.exists():
                err = err or f"{p}: expected an existing {what} file, got nothing at that path"
        cases.append({"case_id": cid, "pred": str(pred) if pred else None, "ref": str(ref) if ref else None,
                      "subject": r.get("subject", ""), "phase": r.get("phase", "").upper(),
                      "not_annotated": r.get("not_annotated", ""),
                      "group": r.get(group_column.strip().lower(), ""), "error": err})
    if not cases:
        raise ConfigError.expected("at least one pair in the CSV", "no rows", path=path)
    return cases


def acdc_structures(args: argparse.Namespace, labels: dict[str, tuple[int, ...]] | None):
    """The :class:`~medcnn.metrics.acdc.AcdcStructures` of ``--lv/--myo/--rv-label`` and notes.

    Each option is a ``--labels`` structure name or a label value (``0`` / ``none`` = not
    evaluated); unset options take the defaults 1, 2, 3. A value names the structure whose
    label values are exactly that value (without ``--labels``: the structure named by it). A
    default that ``--labels`` does not define is left out with a note; an explicit option
    that matches nothing is a :class:`~medcnn.errors.ConfigError`.
    """
    from medcnn.errors import ConfigError
    from medcnn.metrics.acdc import AcdcStructures

    chosen: dict[str, str | None] = {}
    notes: list[str] = []
    for key, flag in (("lv", "--lv-label"), ("myo", "--myo-label"), ("rv", "--rv-label")):
        given = getattr(args, f"{key}_label", None)
        spec = (given if given is not None else ACDC_DEFAULT_LABELS[key]).strip()
        if spec.lower() in ("0", "none", ""):
            chosen[key] = None
            continue
        value = int(spec) if spec.isdigit() else None
        if labels is None:
            if value is None:
                raise ConfigError.expected(f"{flag} as a label value (no --labels names are defined)", repr(spec))
            chosen[key] = str(value)
            continue
        name = spec if spec in labels else next((n for n, v in labels.items() if value is not None and v == (value,)),
                                                None)
        if name is None:
            if given is not None:
                raise ConfigError.expected(f"{flag} among the --labels names {sorted(labels)} or their single "
                                           "label values", repr(spec))
            notes.append(f"{flag} default {spec}: no --labels structure with label {spec}; not evaluated")
        chosen[key] = name
    return AcdcStructures(**chosen), notes


def _print_acdc(acdc: dict[str, Any], percentile: float) -> None:
    """The ACDC tables on stdout (pooled rows; groups are in the files)."""
    hd = f"hd{percentile:g}_mm"

    def pm(row: dict[str, Any], col: str, digits: int) -> str:
        m, sd = row.get(f"{col}_mean"), row.get(f"{col}_sd")
        return f"{m:.{digits}f} ± {sd:.{digits}f}" if sd is not None and math.isfinite(sd) else f"{m:.{digits}f}"

    print("ACDC geometric (all subjects; mean ± SD):")
    for r in acdc["geometric"]:
        if r["group"] == "all":
            print(f"  {r['structure']:<3} {r['phase']}  n={r['n']:<3} Dice {pm(r, 'dice', 3)}  "
                  f"HD{percentile:g} {pm(r, hd, 2)} mm  HD {pm(r, 'hd_mm', 2)} mm")
    print("ACDC clinical (all subjects; predicted - reference):")
    for r in acdc["clinical"]:
        if r["group"] == "all":
            unit = r.get("diff_unit") or r["unit"]
            stats = (f"r and LoA withheld ({r['withheld']})" if r.get("withheld") else
                     f"r {r['pearson_r']:.3f}  LoA [{r['loa_lower']:.2f}, {r['loa_upper']:.2f}] {unit}")
            print(f"  {r['index']:<14} n={r['n']:<3} bias {r['bias']:.2f} {unit}  SD {r['sd_diff']:.2f}  {stats}")
    for note in acdc["notes"]:
        print(f"  note: {note}")


def _read_ref_dataset(path: str) -> dict[str, Any]:
    """``{"name", "labels" ({value: name} or None), "not_annotated" ({phase or "*": [names or
    values]}), "entries" ({resolved reference path: entry})}`` of a dataset.json."""
    import json

    from medcnn.errors import ConfigError, InputFileNotFoundError
    from medcnn.measure.labels import as_label_names

    p = Path(path)
    if not p.is_file():
        raise InputFileNotFoundError.expected("an existing dataset.json for --ref-dataset", "no file at that path",
                                              path=p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError.expected("a JSON dataset description", str(exc), path=p) from None
    if not isinstance(doc, dict):
        raise ConfigError.expected("a JSON object", type(doc).__name__, path=p)
    raw = doc.get("not_annotated") or {}
    decl = {"*": list(raw)} if isinstance(raw, list) else {str(k).upper(): list(v) for k, v in raw.items()}
    entries = {}
    for e in doc.get("training") or []:
        if isinstance(e, dict) and e.get("label"):
            entries[str((p.parent / str(e["label"])).resolve())] = e
    return {"name": p.name, "labels": as_label_names(doc["labels"], path=str(p)) if doc.get("labels") else None,
            "not_annotated": decl, "entries": entries}


def _not_annotated(case: dict[str, Any], pred: Any, labels: dict[str, tuple[int, ...]] | None,
                   dataset: dict[str, Any] | None) -> dict[int, str]:
    """``{label value: reason}`` of the values this case's reference does not annotate, from
    the pairs CSV column ``not_annotated`` and the ``--ref-dataset`` declaration."""
    import numpy as np

    candidates = {int(v) for v in np.unique(np.asarray(pred.array)) if v > 0}
    candidates |= {v for vals in (labels or {}).values() for v in vals}
    out: dict[int, str] = {}

    def resolve(items: list[Any], names: dict[int, str]) -> set[int]:
        by_name = {n: v for v, n in names.items()}
        by_name.update({n: vals[0] for n, vals in (labels or {}).items() if len(vals) == 1})
        values = set()
        for it in items:
            text = str(it).strip()
            if text.isdigit():
                values.add(int(text))
            elif text in by_name:
                values.add(int(by_name[text]))
        return values

    for v in resolve([t for t in str(case.get("not_annotated") or "").replace(";", " ").split() if t], {}):
        out[v] = "pairs CSV column not_annotated"
    if dataset is not None:
        names = dataset["labels"] or {}
        if dataset["labels"] is not None:
            for v in candidates - set(names):
                out.setdefault(v, f"label {v} is not among the labels of {dataset['name']}")
        phase = str(case.get("phase") or "").upper()
        for key in ("*", phase):
            for v in resolve(dataset["not_annotated"].get(key, []), names):
                out.setdefault(v, f"{dataset['name']} not_annotated" + (f" at {key}" if key != "*" else ""))
        entry = dataset["entries"].get(str(Path(case["ref"]).resolve())) if case.get("ref") else None
        for v in resolve(list((entry or {}).get("not_annotated") or []), names):
            out.setdefault(v, f"{dataset['name']} entry not_annotated")
    return out


def _read_pair(pred_path: str, ref_path: str) -> tuple[Any, Any]:
    """Prediction and reference label maps. The grid is the first plain label map of the two
    (prediction first), else the reference read on its own (an RTSTRUCT on its image series);
    DICOM annotations are placed on that grid where exact (an RTSTRUCT rasterised on it, a
    sparse SEG given back its empty slices), see :func:`medcnn.io.read_labels_on_grid`."""
    from medcnn.io import annotation_kind, read_labels, read_labels_on_grid

    plain = [p for p in (pred_path, ref_path) if annotation_kind(p) is None]
    base = plain[0] if plain else ref_path
    grid = read_labels(base)
    pred = grid if pred_path == base else read_labels_on_grid(pred_path, grid)
    ref = grid if ref_path == base else read_labels_on_grid(ref_path, grid)
    return pred, ref


#: Files beside a label map in which medcnn records the model's regions: ``medcnn segment``'s
#: provenance (one record per case) and ``medcnn run``'s case record.
REGION_RECORDS = ("segment_provenance.json", "result.json")


def recorded_regions(pred_path: str | Path, pred: Any = None) -> tuple[dict[str, list[int]], str]:
    """The regions of the medcnn region model that wrote a prediction, and where they were found.

    Looked up in this order: the region segments of a DICOM SEG (``pred.meta["regions"]``,
    read by :func:`medcnn.io.read_labels`); ``segment_provenance.json`` beside the file (the
    case whose ``outputs`` name the file; its ``volumes`` rows); ``result.json`` beside it
    (``medcnn run``'s case folder; ``outputs.labels``, ``volumes``). Region rows are the
    volume rows whose ``label`` is a string such as ``"1+2+4"``
    (:func:`medcnn.regions.regions_of_volume_rows`).

    Returns:
        ``({region name: label values}, description of the source)``; ``({}, "")`` when
        nothing records regions for this file.

    Raises:
        CorruptFileError: a record file that is not JSON. ConfigError: malformed region rows.
    """
    import json

    from medcnn.errors import CorruptFileError
    from medcnn.regions import check_regions, regions_of_volume_rows

    p = Path(pred_path)
    meta_regions = (getattr(pred, "meta", None) or {}).get("regions")
    if meta_regions:
        return check_regions(meta_regions, path=p), f"{p.name}: region segments of the DICOM SEG"
    for fname in REGION_RECORDS:
        f = p.parent / fname
        if not f.is_file():
            continue
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError.expected("a readable JSON record of the model that wrote the prediction",
                                            f"{type(exc).__name__}: {exc}", path=f) from None
        if not isinstance(doc, dict):
            continue
        records = doc.get("cases") if fname == "segment_provenance.json" else [doc]
        for rec in records if isinstance(records, list) else []:
            outs = rec.get("outputs") if isinstance(rec, dict) else None
            outs = outs.get("labels") if isinstance(outs, dict) else outs
            if not any(Path(str(o)).name == p.name for o in outs or []):
                continue
            regions = regions_of_volume_rows(rec.get("volumes") or [], path=f)
            info = doc.get("model") if isinstance(doc.get("model"), dict) else rec.get("model")
            model = info.get("name") if isinstance(info, dict) else None
            return regions, (f"{f.name}: volume rows of the model {model!r}" if model else f"{f.name}: volume rows")
    return {}, ""


def case_regions(spec: dict[str, list[int]] | None, recorded: dict[str, list[int]], where: str, *,
                 ignore_recorded: bool = False, path: str | Path | None = None) -> dict[str, Any] | None:
    """The regions of one case: ``{"regions", "pred_regions", "source"}`` or ``None``.

    ``spec`` (``--regions``) gives the names and the reference's label values. Regions
    ``recorded`` for the prediction by the model that wrote it give the prediction's label
    values of the same-named region (:func:`medcnn.regions.match_region_names`: ``WT`` =
    ``whole tumor``); without ``spec`` they are the regions, in both maps.

    Raises:
        ConfigError: a ``spec`` region with no recorded counterpart (the prediction's label
            convention for it is unknown; ``--ignore-recorded-regions`` uses the spec's).
    """
    from medcnn.errors import ConfigError
    from medcnn.regions import match_region_names

    use_recorded = bool(recorded) and not ignore_recorded
    if spec is None:
        if not use_recorded:
            return None
        return {"regions": dict(recorded), "pred_regions": None, "source": f"recorded for the prediction ({where}); "
                "the same label values are used in the reference"}
    if not use_recorded:
        note = f"; the regions recorded for the prediction ({where}) were ignored" if recorded else ""
        return {"regions": dict(spec), "pred_regions": None, "source": f"--regions, in both maps{note}"}
    match = match_region_names(list(spec), list(recorded))
    missing = [n for n, m in match.items() if m is None]
    if missing:
        raise ConfigError.expected(
            f"a region recorded for the prediction ({where}) for every --regions name",
            f"no match for {missing} among {list(recorded)}", path=path,
            hint="pass --ignore-recorded-regions to use the --regions label values for the prediction too")
    pred_regions = {n: list(recorded[m]) for n, m in match.items() if m is not None}
    return {"regions": dict(spec), "pred_regions": pred_regions,
            "source": f"reference: --regions; prediction: recorded ({where}), matched by name "
                      + ", ".join(f"{n} = {m!r}" for n, m in match.items())}


def _error_row(case: dict[str, Any], message: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": case["case_id"], "label": "", "label_values": "", "empty_policy": settings["empty_policy"],
            "nsd_tolerance_mm": settings["tolerance_mm"], "hd_percentile": settings["percentile"],
            "error": message}


def run(args: argparse.Namespace) -> int:
    from medcnn.errors import ConfigError, MedcnnError
    from medcnn.io import input_qc_flags, input_rules
    from medcnn.measure.cardiac import MYOCARDIAL_DENSITY_G_PER_ML
    from medcnn.metrics.acdc import acdc_evaluation
    from medcnn.metrics.evaluate import evaluate_case, metric_columns
    from medcnn.report.provenance import file_sha256
    from medcnn.report.validation import build_validation_summary, write_validation_report

    if args.tolerance_mm < 0 or not math.isfinite(args.tolerance_mm):
        raise ConfigError.expected("--tolerance-mm >= 0", str(args.tolerance_mm))
    if not 0 < args.percentile <= 100:
        raise ConfigError.expected("--percentile in (0, 100]", str(args.percentile))
    labels = parse_labels(args.labels)
    from medcnn.metrics.policy import DEFAULT_EMPTY_POLICY, image_diagonal_mm
    from medcnn.regions import parse_regions

    region_arg = (getattr(args, "regions", None) or "").strip()
    regions_off = region_arg.lower() == "none"
    region_spec = parse_regions(region_arg) if region_arg and not regions_off else None
    ignore_recorded = bool(getattr(args, "ignore_recorded_regions", False))
    if getattr(args, "empty_policy", None) is None:
        args.empty_policy = "brats" if region_arg.lower() == "brats" else DEFAULT_EMPTY_POLICY
    if region_spec is not None and labels is not None and set(region_spec) & set(labels):
        raise ConfigError.expected("--regions names distinct from the --labels names",
                                   f"{sorted(set(region_spec) & set(labels))} in both")
    lesion: Any = True if [x.lower() for x in args.lesion_labels] == ["all"] else list(args.lesion_labels)
    if labels is not None and lesion is not True:
        unknown = set(lesion) - set(labels) - set(region_spec or {})
        if unknown:
            raise ConfigError.expected(f"--lesion-labels among {sorted(set(labels) | set(region_spec or {}))}",
                                       f"{sorted(unknown)}")
    structures, acdc_notes = acdc_structures(args, labels)
    from medcnn.metrics.agreement import MIN_AGREEMENT_N

    min_n = MIN_AGREEMENT_N if getattr(args, "min_n", None) is None else int(args.min_n)
    if min_n < 2:
        raise ConfigError.expected("--min-n >= 2 (a correlation needs two pairs)", str(min_n))
    found = find_pairs(args)
    dataset = _read_ref_dataset(args.ref_dataset) if getattr(args, "ref_dataset", None) else None
    if dataset is not None:
        for c in found:
            entry = dataset["entries"].get(str(Path(c["ref"]).resolve())) if c.get("ref") else None
            if entry:
                c["subject"] = c.get("subject") or str(entry.get("patient") or entry.get("subject") or "")
                c["phase"] = c.get("phase") or str(entry.get("phase") or "").upper()
                c["group"] = c.get("group") or str(entry.get("group") or "")
    unmatched = [Path(c["ref"]).name for c in found if c.get("unmatched_reference")]
    cases = [c for c in found if not c.get("unmatched_reference")]
    if not cases:
        raise ConfigError.expected("at least one prediction with a matching reference", f"none of "
                                   f"{len(unmatched)} reference(s) has a prediction in {args.pred}"
                                   + (f" with --pred-suffix {args.pred_suffix!r}" if args.pred_suffix else ""))
    if unmatched:
        print(f"medcnn validate: {len(unmatched)} reference(s) without a prediction were not evaluated "
              f"({', '.join(unmatched[:3])}{', ...' if len(unmatched) > 3 else ''})", file=sys.stderr)
    acdc_on = any(c.get("subject") and c.get("phase") in ("ED", "ES") for c in cases)
    if not acdc_on and any(getattr(args, f"{k}_label", None) for k in ("lv", "myo", "rv")):
        raise ConfigError.expected("a --pairs CSV with subject and phase (ED/ES) columns for the ACDC tables "
                                   "(--lv-label/--myo-label/--rv-label)", "no case with both")
    settings = {
        "labels": ({k: list(v) for k, v in labels.items()} if labels else
                   "none: --regions without --labels evaluates the regions only" if region_spec is not None else
                   "every non-zero label found"),
        "tolerance_mm": float(args.tolerance_mm), "percentile": float(args.percentile),
        "empty_policy": args.empty_policy, "sparse_slices": bool(args.sparse_slices),
        "resample": bool(args.resample), "lesion_labels": lesion, "connectivity": args.connectivity,
        "threads": args.threads, "min_agreement_n": min_n,
    }
    if region_spec is not None or regions_off or ignore_recorded:
        settings["regions"] = ("none" if regions_off else
                               {k: list(v) for k, v in region_spec.items()} if region_spec else "recorded")
        settings["regions_option"] = Path(region_arg).name if region_arg.lower().endswith(".json") else region_arg
        settings["ignore_recorded_regions"] = ignore_recorded
    eval_labels = {} if region_spec is not None and labels is None else labels  # --regions alone: regions only
    diagonals: set[float] = set()
    if acdc_on:
        settings["acdc_structures"] = {"LV": structures.lv, "Myo": structures.myo, "RV": structures.rv}
        settings["myocardial_density_g_per_ml"] = MYOCARDIAL_DENSITY_G_PER_ML
        settings["group_column"] = args.group_column
    rows: list[dict[str, Any]] = []
    internal = 0
    for case in cases:
        cid = case["case_id"]
        for key in ("pred", "ref"):
            p = case.get(key)
            case[f"{key}_sha256"] = file_sha256(p) if p and Path(p).is_file() else None
        if case["error"]:
            rows.append(_error_row(case, case["error"], settings))
            print(f"medcnn validate: error: {cid}: {case['error']}", file=sys.stderr)
            continue
        try:
            pred, ref = _read_pair(case["pred"], case["ref"])
            skip = _not_annotated(case, pred, labels, dataset)
            recorded, where = ({}, "") if regions_off else recorded_regions(case["pred"], pred)
            reg = None if regions_off else case_regions(region_spec, recorded, where, ignore_recorded=ignore_recorded,
                                                        path=case["pred"])
            case_rows = evaluate_case(
                pred, ref, labels=eval_labels, not_annotated=skip, tolerance_mm=args.tolerance_mm,
                percentile=args.percentile, empty_policy=args.empty_policy, sparse_slices=args.sparse_slices,
                resample=args.resample, lesion_labels=lesion, connectivity=args.connectivity, threads=args.threads,
                case_id=cid, regions=(reg or {}).get("regions"), pred_regions=(reg or {}).get("pred_regions"))
            if reg is not None:
                case["regions"] = {"source": reg["source"], "reference": reg["regions"],
                                   "prediction": reg["pred_regions"] or reg["regions"]}
                diagonals.add(round(image_diagonal_mm(ref.geometry), 5))
            flags = input_qc_flags([pred, ref])
            if flags:  # a NIfTI header read by the rule for inconsistent headers: on every row of the case
                case["qc_flags"] = flags
                settings.setdefault("input_header_rules", {}).update(input_rules([pred, ref]))
                for r in case_rows:
                    r["qc_codes"] = ";".join(dict.fromkeys(f["code"] for f in flags))
            rows.extend(case_rows)
            dice = ", ".join(f"{r['label']} Dice {r['dice']:.3f}" if r["annotated"] else f"{r['label']} not annotated"
                             for r in case_rows)
            print(f"ok {cid}: {dice or 'no structures'}")
        except MedcnnError as exc:
            case["error"] = str(exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
            internal += 1
            case["error"] = f"internal error: {type(exc).__name__}: {exc}"
        if case["error"]:
            rows.append(_error_row(case, case["error"], settings))
            print(f"medcnn validate: error: {cid}: {case['error']}", file=sys.stderr)
    acdc = None
    if acdc_on:
        acdc = acdc_evaluation(rows, cases, structures=structures, percentile=args.percentile,
                               myocardial_density_g_per_ml=MYOCARDIAL_DENSITY_G_PER_ML, notes=acdc_notes,
                               min_n=min_n)
        _print_acdc(acdc, args.percentile)
    from medcnn.report.provenance import display_path, redact_paths

    keep = bool(getattr(args, "include_paths", False))
    raw = [p for c in cases for p in (c.get("pred"), c.get("ref")) if p] + [a for a in (args.pred, args.ref, args.pairs)
                                                                            if a]
    for c in cases:
        c["error"] = redact_paths(c["error"], raw, include_paths=keep)
        for flag in c.get("qc_flags") or []:
            flag["message"] = redact_paths(flag["message"], raw, include_paths=keep)
        c["pred"] = display_path(c.get("pred"), include_paths=keep)
        c["ref"] = display_path(c.get("ref"), include_paths=keep)
    for r in rows:
        if r.get("error"):
            r["error"] = redact_paths(r["error"], raw, include_paths=keep)
    settings["include_paths"] = keep
    case_info = [{k: c.get(k) for k in ("case_id", "pred", "ref", "pred_sha256", "ref_sha256", "subject", "phase",
                                        "group", "error", "qc_flags", "regions") if k not in ("qc_flags", "regions")
                  or c.get(k)} for c in cases]
    summary = build_validation_summary(rows, settings=settings, cases=case_info, acdc=acdc,
                                       n_bootstrap=args.bootstrap, seed=args.seed, min_n=min_n)
    from medcnn.report.validation import region_summary

    regions_block = region_summary(rows, policy=args.empty_policy, diagonals_mm=diagonals, spec=region_spec,
                                   cases=case_info)
    if regions_block is not None:
        summary["regions"] = regions_block
    summary["counts"]["unmatched_references"] = len(unmatched)
    summary["unmatched_references"] = unmatched
    paths = write_validation_report(rows, summary, args.out, columns=metric_columns(percentile=args.percentile))
    failed = sum(1 for c in cases if c["error"])
    print(f"validated {len(cases) - failed} of {len(cases)} case(s)" + (f"; {failed} failed" if failed else "")
          + (f"; {len(unmatched)} reference(s) without a prediction skipped" if unmatched else "")
          + f"; report: {paths['html']}", file=sys.stderr)
    if internal:
        return 1
    return 2 if failed else 0
