#!/usr/bin/env python
"""Write a ``medcnn validate --pairs`` CSV from an MSD-style ``dataset.json`` with ED/ES entries.

Each ``training`` (or ``--section``) entry needs ``image``, ``label`` and a subject
(``patient`` or ``subject``) and ``phase`` (``ED`` / ``ES``); an optional ``group`` (ACDC:
pathology) becomes the CSV's ``group`` column, so ``medcnn validate`` prints the ACDC
tables pooled and per group. The prediction of an entry is found in ``--pred-dir`` with
``--pred-pattern`` (``{stem}`` = the image file name without its extension, ``{subject}`` =
the entry's patient/subject):

* ``medcnn segment IMAGES --out DIR``  -> ``--pred-pattern '{stem}_labels.nii.gz'`` (default)
* ``medcnn run IMAGES --out DIR --mode volumes`` (one case per scan)
  -> ``--pred-pattern 'cases/{stem}/{stem}_labels.nii.gz'``
* ``medcnn run IMAGES --out DIR`` with a cardiac model (ED/ES scans paired into one case per
  patient) -> ``--pred-pattern 'cases/{subject}/{stem}_labels.nii.gz'``

Example (ACDC copy in the shared data)::

    medcnn run ../shared/data/acdc/patient*_E[DS].nii.gz --model MODEL --out runs/acdc --mode volumes
    python scripts/acdc_pairs.py ../shared/data/acdc/dataset.json --pred-dir runs/acdc \\
        --pred-pattern 'cases/{stem}/{stem}_labels.nii.gz' --out runs/acdc/pairs.csv
    medcnn validate --pairs runs/acdc/pairs.csv --out runs/acdc/validation

Paths in the CSV are relative to the CSV's folder when possible. Entries whose prediction
is missing are still written (``medcnn validate`` turns them into error rows) and counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from medcnn.io import image_stem

COLUMNS = ["pred", "ref", "case_id", "subject", "phase", "group"]


def pair_rows(dataset_json: Path, pred_dir: Path, *, pred_pattern: str = "{stem}_labels.nii.gz",
              section: str = "training") -> list[dict[str, str]]:
    """One pairs-CSV row (absolute paths) per dataset entry with a subject and an ED/ES phase."""
    doc = json.loads(dataset_json.read_text(encoding="utf-8"))
    entries = doc.get(section)
    if not isinstance(entries, list):
        raise ValueError(f"{dataset_json}: expected a list under {section!r}, got {type(entries).__name__}")
    rows = []
    for i, e in enumerate(entries):
        subject = e.get("patient") or e.get("subject")
        phase = str(e.get("phase") or "").upper()
        if not (e.get("image") and e.get("label") and subject and phase in ("ED", "ES")):
            raise ValueError(f"{dataset_json}: entry {i}: expected image, label, patient/subject and phase ED/ES, "
                             f"got keys {sorted(e)}")
        stem = image_stem(Path(e["image"]).name) or Path(e["image"]).stem
        rows.append({"pred": str((pred_dir / pred_pattern.format(stem=stem, subject=subject)).resolve()),
                     "ref": str((dataset_json.parent / e["label"]).resolve()),
                     "case_id": stem, "subject": str(subject), "phase": phase, "group": str(e.get("group") or "")})
    return rows


def write_pairs(rows: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            rel = dict(r)
            for key in ("pred", "ref"):
                try:
                    rel[key] = os.path.relpath(r[key], base)
                except ValueError:  # another drive (Windows): keep the absolute path
                    pass
            w.writerow(rel)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset_json", type=Path)
    p.add_argument("--pred-dir", type=Path, required=True, help="folder with the predicted label maps")
    p.add_argument("--pred-pattern", default="{stem}_labels.nii.gz",
                   help="prediction path inside --pred-dir; {stem} = image name without extension, {subject} = the entry's patient")
    p.add_argument("--section", default="training", help="dataset.json list to read (default training)")
    p.add_argument("--out", type=Path, required=True, help="pairs CSV to write")
    args = p.parse_args(argv)
    try:
        rows = pair_rows(args.dataset_json, args.pred_dir, pred_pattern=args.pred_pattern, section=args.section)
    except (OSError, ValueError, KeyError) as exc:
        print(f"acdc_pairs: {exc}", file=sys.stderr)
        return 2
    write_pairs(rows, args.out)
    missing = sum(not Path(r["pred"]).is_file() for r in rows)
    subjects = {r["subject"] for r in rows}
    groups = sorted({r["group"] for r in rows if r["group"]})
    print(f"wrote {args.out}: {len(rows)} pairs, {len(subjects)} subjects"
          + (f", groups {', '.join(groups)}" if groups else "")
          + (f"; {missing} prediction(s) not found yet" if missing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
