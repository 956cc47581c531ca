"""Label tables: which integer in a label map means which structure.

A label table maps label values (non-negative integers) to names. It can come from a
``dict`` in code, or from a file read by :func:`load_label_table`:

* **JSON**: ``{"1": "liver", "2": "tumour"}``, or the reverse ``{"liver": 1, ...}``
  (MSD ``dataset.json`` style), or either of those under a ``"labels"`` key (so an MSD
  ``dataset.json`` works as is), or a list of ``{"label": 1, "name": "liver"}`` objects.
* **CSV** (or ``.tsv``): a header row with a value column (``label``, ``value``, ``id`` or
  ``index``) and a name column (``name``, ``label_name`` or ``structure``).
"""

from __future__ import annotations

import csv
import json
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from medcnn.errors import ConfigError, CorruptFileError, InputFileNotFoundError, UnsupportedFormatError

__all__ = ["LabelNames", "load_label_table", "as_label_names", "label_name"]

#: Label value -> structure name.
LabelNames = dict[int, str]

_VALUE_COLUMNS = ("label", "value", "id", "index", "label_value")
_NAME_COLUMNS = ("name", "label_name", "structure", "description")


def _as_label_value(key: Any, *, path: str | None) -> int:
    try:
        f = float(key)
    except (TypeError, ValueError):
        raise ConfigError.expected("integer label values", f"{key!r}", path=path) from None
    if not f.is_integer() or f < 0:
        raise ConfigError.expected("non-negative integer label values", f"{key!r}", path=path)
    return int(f)


def as_label_names(labels: Mapping[Any, Any] | None, *, path: str | None = None) -> LabelNames:
    """Normalise ``{value: name}`` or ``{name: value}`` into ``{int value: str name}``.

    Args:
        labels: mapping in either direction; ``None`` gives an empty table.
        path: file the mapping came from (for error messages).

    Raises:
        ConfigError: values that are not non-negative integers, or one value named twice.
    """
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ConfigError.expected("a mapping of label value to name", f"{type(labels).__name__}", path=path)
    out: LabelNames = {}
    items = list(labels.items())
    # decide the direction: keys are values ({"1": "liver"}) or names ({"liver": 1})
    def _is_int_like(x: Any) -> bool:
        try:
            return float(x).is_integer()
        except (TypeError, ValueError):
            return False

    keys_are_values = all(_is_int_like(k) for k, _ in items)
    if not keys_are_values and not all(_is_int_like(v) for _, v in items):
        raise ConfigError.expected("a label table mapping integer values to names (or names to values)",
                                   f"keys {[k for k, _ in items][:4]} and values {[v for _, v in items][:4]}",
                                   path=path)
    for k, v in items:
        value, name = (k, v) if keys_are_values else (v, k)
        ivalue = _as_label_value(value, path=path)
        if ivalue in out and out[ivalue] != str(name):
            raise ConfigError.expected("each label value named once", f"{ivalue} named {out[ivalue]!r} and {name!r}",
                                       path=path)
        out[ivalue] = str(name)
    return out


def load_label_table(path: str | PathLike[str]) -> LabelNames:
    """Read a label table (JSON or CSV/TSV; see the module docstring) into ``{value: name}``.

    Raises:
        InputFileNotFoundError, UnsupportedFormatError, CorruptFileError, ConfigError.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileNotFoundError.expected("a label table file (.json or .csv)", "nothing at that path", path=p)
    sfx = p.suffix.lower()
    if sfx == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError.expected("valid JSON", f"{type(exc).__name__}: {exc}", path=p) from None
        if isinstance(data, Mapping) and "labels" in data:
            data = data["labels"]
        if isinstance(data, list):
            table: LabelNames = {}
            for row in data:
                if not isinstance(row, Mapping):
                    raise ConfigError.expected("a list of {'label': value, 'name': name} objects",
                                               f"an item of type {type(row).__name__}", path=p)
                vcol = next((c for c in _VALUE_COLUMNS if c in row), None)
                ncol = next((c for c in _NAME_COLUMNS if c in row), None)
                if vcol is None or ncol is None:
                    raise ConfigError.expected("objects with 'label' and 'name' keys", f"keys {sorted(row)}", path=p)
                table.update(as_label_names({row[vcol]: row[ncol]}, path=str(p)))
            return table
        return as_label_names(data, path=str(p))
    if sfx in (".csv", ".tsv", ".txt"):
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorruptFileError.expected("UTF-8 text", f"{exc}", path=p) from None
        delimiter = "\t" if sfx == ".tsv" or ("\t" in text.splitlines()[0] if text else False) else ","
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        vcol = next((c for c in _VALUE_COLUMNS if c in fields), None)
        ncol = next((c for c in _NAME_COLUMNS if c in fields), None)
        if vcol is None or ncol is None:
            raise ConfigError.expected(
                f"a header with a value column ({'/'.join(_VALUE_COLUMNS)}) and a name column "
                f"({'/'.join(_NAME_COLUMNS)})", f"columns {fields}", path=p)
        table = {}
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get(vcol):
                continue
            table.update(as_label_names({row[vcol]: row[ncol]}, path=str(p)))
        return table
    raise UnsupportedFormatError.expected("a label table ending in .json, .csv or .tsv", f"{sfx or 'no extension'!r}",
                                          path=p)


def label_name(names: Mapping[int, str] | None, value: int) -> str:
    """Name of ``value`` in ``names``; ``"background"`` for 0 and ``"label_<v>"`` when unnamed."""
    if names and int(value) in names:
        return names[int(value)]
    return "background" if int(value) == 0 else f"label_{int(value)}"
