#!/usr/bin/env python
"""Strip outputs from Jupyter notebooks before committing them.

Clears every code cell's outputs and execution count and drops per-cell execution
metadata and volatile notebook metadata (widget state), so the notebooks in git hold
only their source and diffs stay readable. Notebook-level ``kernelspec`` and
``language_info.name`` are kept.

Usage::

    python scripts/strip_notebooks.py                      # strip notebooks/*.ipynb in place
    python scripts/strip_notebooks.py path/to/x.ipynb ...  # strip these
    python scripts/strip_notebooks.py --check              # exit 1 if any notebook has outputs

``tests/test_notebooks.py`` runs the check on the committed notebooks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
_VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
_VOLATILE_NB_METADATA = ("widgets", "varInspector", "toc")


def is_stripped(nb: nbformat.NotebookNode) -> list[str]:
    """Problems that stripping would fix (empty list = already stripped)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i}: has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count {cell.execution_count}")
        extra = [k for k in _VOLATILE_CELL_METADATA if k in cell.get("metadata", {})]
        if extra:
            problems.append(f"cell {i}: metadata {extra}")
    extra = [k for k in _VOLATILE_NB_METADATA if k in nb.metadata]
    if extra:
        problems.append(f"notebook metadata {extra}")
    return problems


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove outputs, execution counts and volatile metadata (in place; returns ``nb``)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for k in _VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(k, None)
    for k in _VOLATILE_NB_METADATA:
        nb.metadata.pop(k, None)
    lang = nb.metadata.get("language_info")
    if lang:
        nb.metadata["language_info"] = {"name": lang.get("name", "python")}
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Strip outputs from Jupyter notebooks.")
    ap.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    ap.add_argument("--check", action="store_true", help="report notebooks with outputs and exit 1; change nothing")
    args = ap.parse_args(argv)
    paths = args.paths or sorted((REPO / "notebooks").glob("*.ipynb"))
    bad = 0
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        problems = is_stripped(nb)
        if args.check:
            if problems:
                bad += 1
                print(f"{p}: not stripped ({'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''})",
                      file=sys.stderr)
            continue
        if problems:
            strip(nb)
            tmp = p.with_name(p.name + ".tmp")
            nbformat.write(nb, tmp)
            tmp.replace(p)
            print(f"stripped {p}")
    if args.check and bad:
        print("run: python scripts/strip_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
