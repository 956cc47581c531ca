"""Turning what the user typed (files, folders, globs, DICOM folders, CSV manifests) into
a list of cases.

Rules
-----
* **File** with an image extension (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
  ``.mhd``) or any other extension: one case (an unreadable file becomes an error row
  when the case runs). Case id = file name without its extension(s).
* **CSV manifest** (``.csv``): one case per row; columns ``case_id`` (required), one column
  per input channel named after the bundle's channel names (case-insensitive; ``image``
  for a one-channel model), optional ``label`` (reference label map), optional ``ed`` /
  ``es`` (an end-diastolic / end-systolic pair instead of ``image``, with optional
  ``ed_label`` / ``es_label``). Relative paths are relative to the manifest's folder.
  Other columns are ignored.
* **Folder** holding image files: each image file (top level, sorted) is a case.
  A folder holding other files (no image extension) is **one DICOM case** (a series or a
  cine series). A folder holding only sub-folders: each sub-folder, by the same rules.
* **Glob** (``*``, ``?``, ``[``): each match, by the rules above.
* Nothing at a path: an error row saying so.

Case ids are made file-name safe (``[A-Za-z0-9._-]``) and unique (``-2``, ``-3`` ...); they
come from file or folder names or the manifest, never from DICOM patient fields.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Sequence

from medcnn.errors import ConfigError, InputFileNotFoundError, MedcnnError, UnsupportedFormatError
from medcnn.io._common import SUPPORTED_SUFFIXES, suffix_of

__all__ = ["CaseInput", "Case", "discover_cases", "read_manifest", "safe_case_id"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CaseInput:
    """The scan(s) of one phase of a case.

    Attributes:
        phase: ``None`` for a single scan or cine series, ``"ED"`` / ``"ES"`` for pairs.
        channels: ``(channel name, path)`` in the model's channel order.
        reference: optional reference label map path.
    """

    phase: str | None
    channels: tuple[tuple[str, str], ...]
    reference: str | None = None


@dataclass(frozen=True)
class Case:
    """One unit of work of a batch (picklable; sent to worker processes and Dask).

    Attributes:
        case_id: file-name-safe identifier.
        inputs: one :class:`CaseInput` (single scan / cine) or two (ED, ES).
        origin: where the case came from (path, or ``manifest.csv row N``).
        error: a problem found while listing the case (reported as an error row).
        error_type: class name of that problem.
    """

    case_id: str
    inputs: tuple[CaseInput, ...]
    origin: str
    error: str | None = None
    error_type: str | None = None

    @property
    def kind(self) -> str:
        """``"pair"`` (ED/ES), ``"single"`` (one scan or series)."""
        return "pair" if len(self.inputs) == 2 else "single"

    @property
    def paths(self) -> list[str]:
        return [p for ci in self.inputs for _, p in ci.channels]


def safe_case_id(name: str) -> str:
    """A file-name-safe case id (``[A-Za-z0-9._-]``, not starting with a dot)."""
    cid = _UNSAFE.sub("_", str(name).strip())
    cid = re.sub(r"^[._-]+|[_-]+$", "", cid)
    return cid or "case"


def _stem(path: Path) -> str:
    sfx = suffix_of(path)
    name = path.name
    return name[: -len(sfx)] if sfx and name.lower().endswith(sfx) else name


def _error_case(cid: str, origin: str, exc: MedcnnError) -> Case:
    return Case(safe_case_id(cid), (), origin, str(exc), type(exc).__name__)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and suffix_of(p) in SUPPORTED_SUFFIXES
                  and not (suffix_of(p) in (".raw", ".zraw")))


def _from_path(p: Path, channel: str, multi_channel: Sequence[str] | None, depth: int = 0) -> list[Case]:
    if p.suffix.lower() == ".csv" and p.is_file():
        raise AssertionError("manifests are handled by the caller")  # pragma: no cover
    if p.is_dir():
        images = _image_files(p)
        if images:
            out: list[Case] = []
            for f in images:
                out.extend(_from_path(f, channel, multi_channel, depth + 1))
            return out
        files = [q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")]
        if files:
            return [_single(p, p.name, channel, multi_channel)]
        subdirs = sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
        if subdirs and depth < 2:
            out = []
            for q in subdirs:
                out.extend(_from_path(q, channel, multi_channel, depth + 1))
            return out
        return [_error_case(p.name, str(p), UnsupportedFormatError.expected(
            "image files or a DICOM series", "an empty folder", path=p))]
    return [_single(p, _stem(p), channel, multi_channel)]


def _single(p: Path, cid: str, channel: str, multi_channel: Sequence[str] | None) -> Case:
    if multi_channel:
        return _error_case(cid, str(p), ConfigError.expected(
            f"a CSV manifest with one column per input channel ({', '.join(multi_channel)}) for this "
            f"{len(multi_channel)}-channel model", "a single scan", path=p,
            hint="write a CSV with columns case_id," + ",".join(multi_channel)))
    return Case(safe_case_id(cid), (CaseInput(None, ((channel, str(p)),)),), str(p))


def _cell(row, col: str | None) -> str | None:
    if col is None:
        return None
    v = row.get(col)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def read_manifest(path: str | PathLike[str], *, channels: Sequence[str]) -> list[Case]:
    """Cases of a CSV manifest (see the module docstring for the columns).

    Args:
        path: the CSV file.
        channels: the model's input channel names, in order.

    Raises:
        ConfigError: no ``case_id`` column, or no column for a channel (and no ``ed``/``es``).
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputFileNotFoundError.expected("an existing CSV manifest", "nothing at that path", path=p)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError.expected("a CSV manifest with a header row", f"{type(exc).__name__}: {exc}", path=p) from None
    cols = {c.strip().lower(): c for c in df.columns}
    if "case_id" not in cols:
        raise ConfigError.expected("a 'case_id' column in the manifest", f"columns {list(df.columns)}", path=p)
    chan_cols: list[str | None] = []
    for i, ch in enumerate(channels):
        col = cols.get(ch.strip().lower())
        if col is None and len(channels) == 1:
            col = cols.get("image")
        chan_cols.append(col)
    has_pair = "ed" in cols and "es" in cols
    if any(c is None for c in chan_cols) and not has_pair:
        missing = [ch for ch, c in zip(channels, chan_cols) if c is None]
        want = "'image' (or '" + channels[0] + "')" if len(channels) == 1 else ", ".join(repr(c) for c in channels)
        raise ConfigError.expected(f"manifest column(s) {want} for the model's input channel(s)"
                                   + (", or 'ed' and 'es' for cardiac pairs" if len(channels) == 1 else ""),
                                   f"no column for {missing}; columns {list(df.columns)}", path=p)
    if has_pair and len(channels) != 1:
        raise ConfigError.expected("'ed'/'es' pair columns only with a one-channel model",
                                   f"a {len(channels)}-channel model ({', '.join(channels)})", path=p)
    base = p.parent

    def resolve(s: str | None) -> str | None:
        if s is None:
            return None
        q = Path(s).expanduser()
        return str(q if q.is_absolute() else base / q)

    out: list[Case] = []
    for n, row in enumerate(df.to_dict(orient="records"), start=2):  # line 1 is the header
        origin = f"{p.name} line {n}"
        cid = _cell(row, cols["case_id"])
        if cid is None:
            out.append(_error_case(f"line{n}", origin, ConfigError.expected(
                "a case_id", "an empty cell", path=f"{p} line {n}")))
            continue
        ed, es = (_cell(row, cols.get("ed")), _cell(row, cols.get("es"))) if has_pair else (None, None)
        chan_vals = [_cell(row, c) for c in chan_cols]
        if ed or es:
            if not (ed and es):
                out.append(_error_case(cid, origin, ConfigError.expected(
                    "both 'ed' and 'es' paths", f"only {'ed' if ed else 'es'}", path=f"{p} line {n}")))
                continue
            inputs = (
                CaseInput("ED", ((channels[0], resolve(ed)),), resolve(_cell(row, cols.get("ed_label")))),
                CaseInput("ES", ((channels[0], resolve(es)),), resolve(_cell(row, cols.get("es_label")))),
            )
            out.append(Case(safe_case_id(cid), inputs, origin))
            continue
        if any(v is None for v in chan_vals):
            missing = [ch for ch, v in zip(channels, chan_vals) if v is None]
            out.append(_error_case(cid, origin, ConfigError.expected(
                f"a path for every channel ({', '.join(channels)})", f"an empty cell for {missing}",
                path=f"{p} line {n}")))
            continue
        ref = resolve(_cell(row, cols.get("label")))
        out.append(Case(safe_case_id(cid), (CaseInput(None, tuple(
            (ch, resolve(v)) for ch, v in zip(channels, chan_vals)), ref),), origin))
    return out


def _unique(cases: list[Case]) -> list[Case]:
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        cid = c.case_id
        if cid in seen:
            seen[cid] += 1
            new = f"{cid}-{seen[cid]}"
            while new in seen:
                seen[cid] += 1
                new = f"{cid}-{seen[cid]}"
            seen[new] = 1
            c = Case(new, c.inputs, c.origin, c.error, c.error_type)
        else:
            seen[cid] = 1
        out.append(c)
    return out


def discover_cases(scans: Sequence[str | PathLike[str]], *, channels: Sequence[str] = ("image",)) -> list[Case]:
    """The cases named by ``scans`` (files, folders, globs, DICOM folders, CSV manifests).

    Args:
        scans: what the user typed, in order.
        channels: the model's input channel names; a model with more than one channel
            needs a manifest (single scans become error rows saying so).

    Returns:
        Cases in the order given (folders and globs sorted), with unique ids. Problems
        found while listing (missing path, empty folder, incomplete manifest row) are
        cases with ``error`` set, so the batch reports them and carries on.

    Raises:
        ConfigError: a manifest without the needed columns (nothing could run).
    """
    channels = tuple(channels) or ("image",)
    multi = channels if len(channels) > 1 else None
    out: list[Case] = []
    for item in scans:
        text = str(item)
        if _GLOB_CHARS.search(text) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                out.append(_error_case(Path(text).name, text, InputFileNotFoundError.expected(
                    "files matching the pattern", "no match", path=text)))
            for m in matches:
                out.extend(_expand(Path(m), channels, multi))
            continue
        out.extend(_expand(Path(text).expanduser(), channels, multi))
    return _unique(out)


def _expand(p: Path, channels: Sequence[str], multi: Sequence[str] | None) -> list[Case]:
    if not p.exists():
        return [_error_case(_stem(p), str(p), InputFileNotFoundError.expected(
            "an existing file, folder or CSV manifest", "nothing at that path", path=p))]
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_manifest(p, channels=channels)
    return _from_path(p, channels[0], multi)
