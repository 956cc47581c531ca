"""``medcnn run SCANS... --model NAME|PATH --out DIR``: segment and measure many scans.

Writes one label map per case (in the input's format; DICOM -> ``.nii.gz``; with
``--dicom`` also a DICOM SEG + SR per DICOM series), CSV/JSON tables and a self-contained
``report.html``. Failed cases become error rows; the exit
code is 2 when any case failed. Rerunning the same command skips cases that are up to
date (same input pixels + geometry, model and settings).
"""

from __future__ import annotations

import argparse
import sys

from medcnn.cli._options import (add_backend_option, add_dicom_options, add_threads_option, add_whole_slice_option,
                                 backend_cache_dir)

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="segment and measure a batch of scans; label maps + CSV/JSON/HTML report",
        description="Segment and measure many scans with a model bundle. SCANS may be image files, folders of "
                    "image files, DICOM folders (one series or a cine series each), glob patterns, or a CSV "
                    "manifest (columns: case_id, one column per model channel or 'image', optional 'label' "
                    "reference, or 'ed'/'es' (with optional 'ed_label'/'es_label') for cardiac end-diastole/end-systole pairs, "
                    "or a 'phase' column ED/ES on two rows with the same case_id; optional 'height_cm'/'weight_kg' "
                    "for BSA-indexed cardiac values). Folders and globs skip label maps "
                    "(names with _gt, _seg, label, mask...; integer images with few values) and list them; in "
                    "cardiac mode their scans are paired by *_ED/*_ES names or ACDC *_frameNN + Info.cfg. Patient names and IDs "
                    "never appear in the outputs unless --include-identifiers is given.",
        epilog="Exit codes: 0 all cases ok, 2 some case failed (or bad arguments, or --strict and a cardiac case "
               "without a function row), 130 interrupted (rerun the same "
               "command to resume).")
    p.add_argument("scans", nargs="+", metavar="SCANS", help="files, folders, globs, DICOM folders or a CSV manifest")
    p.add_argument("--model", required=True, help="default model name (see `medcnn models list`) or bundle path")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", default="auto", choices=("auto", "cardiac", "tumour", "volumes"),
                   help="what to measure: cardiac function (cine or ED/ES pairs), tumour volumes and lesions, or "
                        "label volumes; auto follows the model (default)")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes (spawn; one torch thread each; default 1 = in this process). "
                        "Each worker loads its own model copy: on one GPU they share its memory (keep N small); "
                        "with several GPUs worker i uses cuda:(i mod n_gpus)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="Dask scheduler address (tcp://host:8786): run each case as a task on that cluster "
                        "(workers need medcnn installed and the same paths; with --device cuda each task asks for "
                        "the worker resource GPU=1: start workers with `dask worker ADDR --resources GPU=1`)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="inference precision (default auto)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_const", const=True, default=None,
                     help="test-time augmentation: average over mirrored views along the axes the model was trained "
                          "to be mirror-invariant to (bundle.json mirror_axes; slower; the default of models "
                          "imported from nnU-Net, as nnUNetv2_predict)")
    tta.add_argument("--no-tta", dest="tta", action="store_const", const=False,
                     help="no test-time augmentation, also for models whose default is mirroring")
    p.add_argument("--deterministic", action="store_true", help="deterministic torch algorithms (slower on GPU)")
    p.add_argument("--include-identifiers", action="store_true",
                   help="include DICOM patient name, ID and birth date in the report, and keep the patient/study "
                        "modules and UIDs of the source in --dicom outputs (default: de-identified by DICOM "
                        "PS3.15 Annex E, UIDs replaced; docs/dicom.md)")
    p.add_argument("--include-paths", action="store_true",
                   help="keep full input paths in the reports, tables, JSON and HTML (default: case id and file name "
                        "only; folder names often hold patient names)")
    add_dicom_options(p)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip cases whose outputs are up to date (default: --resume)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip overlay and curve figures")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.add_argument("--title", default=None, help="title of the HTML report")
    p.add_argument("--allow-input-mismatch", action="store_true",
                   help="run inputs that clearly do not fit the model (e.g. a CT series for an MRI model; such a case "
                        "fails by default), flagged INPUT_MODEL_MISMATCH_OVERRIDDEN (docs/batch.md)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 when a cardiac run leaves a case without a function row (an unpaired scan)")
    p.add_argument("--height", metavar="CM",
                   help="patient height in cm (30-250; with --weight) for a cardiac run of one case: adds the "
                        "Mosteller BSA = sqrt(height_cm x weight_kg / 3600) m^2 and BSA-indexed volumes (mL/m^2) "
                        "and LV mass (g/m^2); for several patients use manifest columns height_cm, weight_kg")
    p.add_argument("--weight", metavar="KG", help="patient weight in kg (1-400; with --height)")
    add_threads_option(p)
    add_backend_option(p)
    add_whole_slice_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcnn.batch import run_batch

    try:
        result = run_batch(
            args.scans, model=args.model, out=args.out, mode=args.mode, workers=args.workers,
            scheduler=args.scheduler, device=args.device, precision=args.precision, tta=args.tta,
            deterministic=args.deterministic, include_identifiers=args.include_identifiers,
            include_paths=args.include_paths, resume=args.resume, figures=args.figures, dicom=args.dicom,
            dicom_fractional=args.dicom_fractional,
            progress=args.progress, title=args.title, threads=args.threads, backend=args.backend,
            cache_dir=backend_cache_dir() if args.backend != "torch" else None, whole_slice=args.whole_slice,
            allow_input_mismatch=args.allow_input_mismatch, height_cm=args.height, weight_kg=args.weight)
    except KeyboardInterrupt:
        print(f"medcnn run: interrupted; finished cases are kept in {args.out}; rerun the same command to resume",
              file=sys.stderr)
        raise
    print(result.summary_line)
    print(f"report: {result.report_files['html']}")
    tables = ("cases", "volumes", "lesions", "cardiac", "errors")
    print(f"tables: {', '.join(str(result.report_files[k]) for k in tables)}")
    from medcnn.batch.cases import missing_function_rows  # issue 26 point 4: unpaired cardiac scans, loudly

    unpaired = missing_function_rows(result.records)
    for line in unpaired:
        print(f"medcnn run: warning: {line}", file=sys.stderr)
    return max(result.exit_code, 2 if unpaired and args.strict else 0)
