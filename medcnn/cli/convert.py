"""``medcnn convert INPUT --out OUT [--reference DICOM_DIR] [--roi NAME]``: DICOM annotations
to label maps and back.

* RTSTRUCT / DICOM SEG (file, or a folder holding one) -> ``OUT`` ``.nii.gz`` / ``.nrrd`` /
  ``.mha`` ... plus ``OUT``'s stem + ``.labels.json`` (``{"labels": {value: name}}``, which
  ``--labels`` options read back).
* a label map (or an RTSTRUCT / SEG) -> ``OUT.dcm``: a binary DICOM SEG referencing the image
  series given with ``--reference`` (the label map must be on its grid).

Nothing is written when the input is refused (one error line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="RTSTRUCT / DICOM SEG -> NIfTI/NRRD label map + label table, or label map -> DICOM SEG",
        description="Convert annotations. An RT Structure Set is rasterised on its image series (found beside it "
                    "through its referenced SeriesInstanceUID, or given with --reference): a voxel is inside when "
                    "its centre is inside the ROI's contours on its slice (even-odd rule, so holes work). A DICOM "
                    "SEG is decoded on its own grid (or checked against --reference). OUT ending in .dcm writes a "
                    "DICOM SEG instead; it needs --reference (the image series the label map belongs to). Patient "
                    "identifiers are copied into a SEG only with --include-identifiers.",
        epilog="Exit codes: 0 written, 2 refused input (nothing written).")
    p.add_argument("input", metavar="INPUT", help="RTSTRUCT or SEG file (or a folder holding one), or a label map")
    p.add_argument("--out", required=True, metavar="OUT", help="label map (.nii.gz, .nrrd, .mha...) or SEG (.dcm)")
    p.add_argument("--reference", metavar="DICOM_DIR", default=None,
                   help="image series folder: the grid to rasterise an RTSTRUCT on / check a SEG against / "
                        "reference from a written SEG")
    p.add_argument("--roi", action="append", default=None, metavar="NAME",
                   help="keep only this ROI / segment (repeatable; labels 1..n in the order given)")
    p.add_argument("--labels", metavar="TABLE", default=None,
                   help="label names for a label-map INPUT (.json/.csv, as medcnn measure --labels)")
    p.add_argument("--include-identifiers", action="store_true",
                   help="keep the patient/study modules and UIDs of the source in a written SEG (default: "
                        "de-identified by DICOM PS3.15 Annex E, UIDs replaced; docs/dicom.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcnn.errors import ConfigError
    from medcnn.io import read_labels, write_volume
    from medcnn.io._common import atomic_path, check_suffix
    from medcnn.measure import load_label_table

    out = Path(args.out)
    to_seg = out.suffix.lower() == ".dcm"
    if not to_seg:
        check_suffix(out, for_writing=True)
    elif args.reference is None:
        raise ConfigError.expected("--reference DICOM_DIR (the image series the SEG refers to) with --out *.dcm",
                                   "no --reference", path=out)
    labels = read_labels(args.input, reference=args.reference, roi=args.roi)
    names = {int(k): str(v) for k, v in (labels.meta.get("label_names") or {}).items()}
    if args.labels:
        names = {int(k): str(v) for k, v in load_label_table(args.labels).items() if int(k) != 0}
    if to_seg:
        from medcnn.io.dicom_out import write_dicom_seg

        info = write_dicom_seg(labels, args.reference, out, label_names=names or None,
                               include_identifiers=args.include_identifiers)
        print(f"medcnn convert: wrote {out} (DICOM SEG, {len(info['segments'])} segment(s))")
        return 0
    table = out.with_name(_stem(out) + ".labels.json")
    doc = {"labels": {str(k): v for k, v in sorted(names.items())},
           "source": Path(args.input).name, "annotation": labels.meta.get("annotation", "label map")}
    if "overlap_voxels" in labels.meta:
        doc["overlap_voxels"] = labels.meta["overlap_voxels"]
    write_volume(labels, out)
    with atomic_path(table) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"medcnn convert: wrote {out} and {table.name} ({len(names)} label(s))")
    return 0


def _stem(path: Path) -> str:
    from medcnn.io import image_stem

    return image_stem(path.name) or path.stem
