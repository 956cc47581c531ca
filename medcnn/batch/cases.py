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
  ``ed_label`` / ``es_label``), optional ``phase`` (``ED`` / ``ES``: two rows with the same
  ``case_id`` form one pair), optional ``height_cm`` / ``weight_kg`` (the patient's height in
  cm and weight in kg, both or neither: a cardiac case then gets its BSA and indexed volumes;
  a bad value, e.g. a height in metres, makes that row an error row; the two rows of a
  ``phase`` pair may both give them, equal, or only one). Relative paths are relative to the
  manifest's folder. Other columns are ignored.
* **Folder** holding image files: each image file (top level, sorted) is a case, except
  label maps, which are skipped and listed (:func:`label_map_reason`): by name (a file-name
  token ``gt``, ``seg``, ``label``/``labels``, ``mask``, ``lab``, ``roi``, ``annotation``,
  ``truth``, ``manual``, ``probabilities``, e.g. ``SCD0000101_ED_gt.nii.gz``,
  ``BraTS_001_seg.nii.gz``, ``case_labels.nrrd``, ``brainmask.nii.gz``) and by content (an image
  whose voxels are all integers with at most 16 distinct values, one of them 0, as in
  nnU-Net's ``labelsTr``). The same holds for the matches of a glob; a file named on its own
  is always a case.
  A folder holding other files (no image extension) is **one DICOM case** (a series or a
  cine series). A folder holding only sub-folders: each sub-folder, by the same rules.
* **Glob** (``*``, ``?``, ``[``): each match, by the rules above.
* Nothing at a path: an error row saying so.
* **Cardiac pairs** (``pair_phases=True``, ``medcnn run --mode cardiac``): single scans of a
  folder or glob are paired into one ED/ES case by the common conventions, in this order:
  (1) file names ending in ``_ED`` / ``_ES`` (also ``-ED``, ``.ed``; case-insensitive; the
  case id is the rest of the name, e.g. ``patient001_ED.nii.gz`` + ``patient001_ES.nii.gz`` →
  ``patient001``); (2) the released ACDC layout ``patientNNN_frameNN.nii.gz`` with an
  ``Info.cfg`` beside it whose ``ED:`` and ``ES:`` lines give the frame numbers. A manifest
  pairs by ``ed``/``es`` columns or by a ``phase`` column (``ED``/``ES``, two rows with the
  same ``case_id``, each with its ``image`` and optional ``label``).

Case ids are made file-name safe (``[A-Za-z0-9._-]``) and unique (``-2``, ``-3`` ...); they
come from file or folder names or the manifest, never from DICOM patient fields.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Sequence

from medcnn.errors import ConfigError, InputFileNotFoundError, MedcnnError, UnsupportedFormatError
from medcnn.io._common import SUPPORTED_SUFFIXES, suffix_of

__all__ = ["CaseInput", "Case", "SkippedFile", "discover_cases", "label_map_reason", "read_manifest",
           "safe_case_id", "pair_cases", "read_info_cfg", "report_skipped", "missing_function_rows", "LABEL_NAME_TOKENS", "LABEL_MAX_DISTINCT_VALUES"]

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
        height_cm, weight_kg: the patient's height (cm) and weight (kg), checked
            (:func:`medcnn.measure.body.body_size`), for BSA-indexed cardiac values; ``None``
            when not given.
    """

    case_id: str
    inputs: tuple[CaseInput, ...]
    origin: str
    error: str | None = None
    error_type: str | None = None
    height_cm: float | None = None
    weight_kg: float | None = None

    @property
    def kind(self) -> str:
        """``"pair"`` (ED/ES), ``"single"`` (one scan or series)."""
        return "pair" if len(self.inputs) == 2 else "single"

    @property
    def paths(self) -> list[str]:
        return [p for ci in self.inputs for _, p in ci.channels]


@dataclass(frozen=True)
class SkippedFile:
    """A file of a folder or glob that was not made a case.

    Attributes:
        path: the file.
        reason: why, e.g. ``label map by name (token 'gt')``.
    """

    path: str
    reason: str


#: File-name tokens (split at ``_ - .`` and spaces, case-insensitive) that mark a label map
#: (or a medcnn output) rather than a scan.
LABEL_NAME_TOKENS = ("gt", "seg", "segmentation", "label", "labels", "labelmap", "mask", "lab", "roi",
                     "annotation", "annotations", "truth", "groundtruth", "manual", "probabilities")
#: An integer-valued image with at most this many distinct values (0 among them) is a label map.
LABEL_MAX_DISTINCT_VALUES = 16
_TOKEN_SPLIT = re.compile(r"[_\-. ]+")


def label_map_reason(path: str | PathLike[str], *, read_content: bool = True) -> str | None:
    """Why ``path`` looks like a label map rather than a scan, or ``None``.

    By name first (a token of :data:`LABEL_NAME_TOKENS`, or a name ending in ``mask``/``label``
    such as ``brainmask``), then, with ``read_content``, by content: all voxels integers,
    at most :data:`LABEL_MAX_DISTINCT_VALUES` distinct values, one of them 0. A file that
    cannot be read is not judged (it fails as a case, with its own error).
    """
    p = Path(path)
    stem = _stem(p).lower()
    tokens = [t for t in _TOKEN_SPLIT.split(stem) if t]
    for t in tokens:
        if t in LABEL_NAME_TOKENS:
            return f"label map by name (token {t!r})"
    if tokens and re.search(r"(mask|label|labels)$", tokens[-1]):
        return f"label map by name ({tokens[-1]!r})"
    if not read_content or p.is_dir():
        return None
    import warnings

    import numpy as np

    from medcnn.io import read_volume

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(read_volume(p).array)
    except Exception:  # noqa: BLE001 - unreadable: the case reports it
        return None
    if arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return None
    sample = arr.ravel()[:: max(1, arr.size // 200_000)]
    if np.unique(sample).size > LABEL_MAX_DISTINCT_VALUES:
        return None
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        return None
    values = np.unique(arr)
    if values.size > LABEL_MAX_DISTINCT_VALUES or 0 not in values:
        return None
    return (f"label map by content (integer voxels, {values.size} distinct values: "
            + ", ".join(str(int(v)) for v in values[:8]) + (" ..." if values.size > 8 else "") + ")")


def report_skipped(skipped: Sequence[SkippedFile], tool: str) -> None:
    """One stderr line per skipped label map: ``<tool>: skipped <file>: <reason>``."""
    import sys

    for sk in skipped:
        print(f"{tool}: skipped {Path(sk.path).name}: {sk.reason}", file=sys.stderr)


def missing_function_rows(records: Sequence[dict]) -> list[str]:
    """Warnings for a cardiac run (``mode == "cardiac"``): one per case that has results but
    no function row (a single scan that found no ED/ES partner), and one saying so when the
    whole run produced none; empty otherwise."""
    cardiac = [r for r in records if r.get("mode") == "cardiac" and r.get("status") in ("ok", "skipped")]
    lacking = [r["case_id"] for r in cardiac if not r.get("cardiac")]
    if not lacking:
        return []
    hint = ("pair scans as <id>_ED/<id>_ES, ACDC <id>_frameNN with Info.cfg, or a manifest with columns ed,es "
            "(or a phase column); see docs/batch.md")
    out = [f"{cid}: no cardiac function row (a single 3D scan without an ED/ES partner)" for cid in lacking]
    if len(lacking) == len(cardiac):
        out.append(f"cardiac mode produced no function row for any of {len(cardiac)} case(s): {hint}")
    else:
        out.append(f"{len(lacking)} of {len(cardiac)} case(s) have no cardiac function row: {hint}")
    return out


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


def _scans_only(files: Sequence[Path], skipped: list[SkippedFile] | None) -> list[Path]:
    """``files`` without label maps (those are appended to ``skipped``)."""
    out = []
    for f in files:
        why = label_map_reason(f) if f.is_file() else None
        if why is None:
            out.append(f)
        elif skipped is not None:
            skipped.append(SkippedFile(str(f), why))
    return out


def _from_path(p: Path, channel: str, multi_channel: Sequence[str] | None, depth: int = 0,
               skipped: list[SkippedFile] | None = None) -> list[Case]:
    if p.suffix.lower() == ".csv" and p.is_file():
        raise AssertionError("manifests are handled by the caller")  # pragma: no cover
    if p.is_dir():
        images = _image_files(p)
        if images:
            out: list[Case] = []
            for f in _scans_only(images, skipped):
                out.extend(_from_path(f, channel, multi_channel, depth + 1))
            return out
        files = [q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")]
        if files:
            return [_single(p, p.name, channel, multi_channel)]
        subdirs = sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
        if subdirs and depth < 2:
            out = []
            for q in subdirs:
                out.extend(_from_path(q, channel, multi_channel, depth + 1, skipped))
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

    from medcnn.measure.body import body_size

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
        body, body_error = None, None
        try:
            body = body_size(_cell(row, cols.get("height_cm")), _cell(row, cols.get("weight_kg")),
                             source=f"{p} line {n}")
        except ConfigError as exc:
            body_error = exc
        size = {"height_cm": body.height_cm, "weight_kg": body.weight_kg} if body is not None else {}
        if ed or es:
            if not (ed and es):
                out.append(_error_case(cid, origin, ConfigError.expected(
                    "both 'ed' and 'es' paths", f"only {'ed' if ed else 'es'}", path=f"{p} line {n}")))
                continue
            if body_error is not None:
                out.append(_error_case(cid, origin, body_error))
                continue
            inputs = (
                CaseInput("ED", ((channels[0], resolve(ed)),), resolve(_cell(row, cols.get("ed_label")))),
                CaseInput("ES", ((channels[0], resolve(es)),), resolve(_cell(row, cols.get("es_label")))),
            )
            out.append(Case(safe_case_id(cid), inputs, origin, **size))
            continue
        if any(v is None for v in chan_vals):
            missing = [ch for ch, v in zip(channels, chan_vals) if v is None]
            out.append(_error_case(cid, origin, ConfigError.expected(
                f"a path for every channel ({', '.join(channels)})",
                f"no {' and no '.join(missing)} image for case {cid} (an empty cell)", path=f"{p} line {n}",
                hint="every case needs all sequences the model takes")))
            continue
        ref = resolve(_cell(row, cols.get("label")))
        if body_error is not None:
            out.append(_error_case(cid, origin, body_error))
            continue
        phase = (_cell(row, cols.get("phase")) or "").upper() or None
        if phase is not None and (phase not in ("ED", "ES") or len(channels) != 1):
            out.append(_error_case(cid, origin, ConfigError.expected(
                "phase ED or ES (one-channel model)", repr(_cell(row, cols.get("phase"))), path=f"{p} line {n}")))
            continue
        out.append(Case(safe_case_id(cid), (CaseInput(phase, tuple(
            (ch, resolve(v)) for ch, v in zip(channels, chan_vals)), ref),), origin, **size))
    return _join_phase_rows(out)


def _join_phase_rows(cases: list[Case]) -> list[Case]:
    """Manifest rows with a ``phase`` (ED / ES) and the same case id → one ED/ES case; a
    phase without its partner, or given twice, is an error row."""
    by_id: dict[str, list[Case]] = {}
    for c in cases:
        if not c.error and c.kind == "single" and c.inputs[0].phase:
            by_id.setdefault(c.case_id, []).append(c)
    out: list[Case] = []
    for c in cases:
        rows = by_id.get(c.case_id) if not c.error and c.kind == "single" and c.inputs[0].phase else None
        if rows is None:
            out.append(c)
            continue
        if rows[0] is not c:
            continue
        phases = sorted(r.inputs[0].phase for r in rows)
        if phases != ["ED", "ES"]:
            out.append(_error_case(c.case_id, " + ".join(r.origin for r in rows), ConfigError.expected(
                "one ED row and one ES row per case_id in the 'phase' column", f"phases {phases}",
                path=c.origin)))
            continue
        ed, es = sorted(rows, key=lambda r: r.inputs[0].phase)
        sizes = {(r.height_cm, r.weight_kg) for r in (ed, es) if r.height_cm is not None}
        if len(sizes) > 1:
            out.append(_error_case(c.case_id, f"{ed.origin} + {es.origin}", ConfigError.expected(
                "the same height_cm and weight_kg on the ED and ES rows of a case (or on one of them only)",
                " and ".join(f"{r.inputs[0].phase} {r.height_cm:g} cm, {r.weight_kg:g} kg" for r in (ed, es)),
                path=c.origin)))
            continue
        h, w = next(iter(sizes)) if sizes else (None, None)
        out.append(Case(c.case_id, (ed.inputs[0], es.inputs[0]), f"{ed.origin} + {es.origin}", height_cm=h,
                        weight_kg=w))
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
            c = replace(c, case_id=new)
        else:
            seen[cid] = 1
        out.append(c)
    return out


def discover_cases(scans: Sequence[str | PathLike[str]], *, channels: Sequence[str] = ("image",),
                   pair_phases: bool = False, skipped: list[SkippedFile] | None = None) -> list[Case]:
    """The cases named by ``scans`` (files, folders, globs, DICOM folders, CSV manifests).

    Args:
        scans: what the user typed, in order.
        channels: the model's input channel names; a model with more than one channel
            needs a manifest (single scans become error rows saying so).
        pair_phases: pair ED/ES scans into one case by their names (``*_ED``/``*_ES``) or
            the ACDC ``frameNN`` + ``Info.cfg`` layout (cardiac mode; module docstring).
        skipped: if given, receives a :class:`SkippedFile` for each label map of a folder
            or glob that was not made a case.

    Returns:
        Cases in the order given (folders and globs sorted), with unique ids. Problems
        found while listing (missing path, empty folder, incomplete manifest row) are
        cases with ``error`` set, so the batch reports them and carries on.

    Raises:
        ConfigError: a manifest without the needed columns (nothing could run).
    """
    channels = tuple(channels) or ("image",)
    multi = channels if len(channels) > 1 else None
    sink: list[SkippedFile] = [] if skipped is None else skipped
    out: list[Case] = []
    for item in scans:
        text = str(item)
        if _GLOB_CHARS.search(text) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                out.append(_error_case(Path(text).name, text, InputFileNotFoundError.expected(
                    "files matching the pattern", "no match", path=text)))
            for m in _scans_only([Path(m) for m in matches], sink):
                out.extend(_expand(m, channels, multi, sink))
            continue
        out.extend(_expand(Path(text).expanduser(), channels, multi, sink))
    if pair_phases and not multi:
        out = pair_cases(out)
    return _unique(out)


_PHASE_NAME = re.compile(r"^(?P<base>.+?)[_\-. ](?P<phase>ED|ES)$", re.IGNORECASE)
_FRAME_NAME = re.compile(r"^(?P<base>.+?)[_\-]frame(?P<frame>\d+)$", re.IGNORECASE)


def read_info_cfg(path: str | PathLike[str]) -> dict[str, int]:
    """``{"ED": frame, "ES": frame}`` of an ACDC ``Info.cfg`` (lines ``ED: 1``, ``ES: 12``).

    Raises:
        ConfigError: no integer ``ED:`` / ``ES:`` line.
    """
    p = Path(path)
    found: dict[str, int] = {}
    for line in p.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().upper() in ("ED", "ES"):
            try:
                found[key.strip().upper()] = int(float(value.strip()))
            except ValueError:
                raise ConfigError.expected(f"an integer frame number after '{key.strip()}:'", repr(value.strip()),
                                           path=p) from None
    if set(found) != {"ED", "ES"}:
        raise ConfigError.expected("lines 'ED: <frame>' and 'ES: <frame>'", f"{sorted(found) or 'neither'}", path=p)
    return found


def pair_cases(cases: Sequence[Case]) -> list[Case]:
    """Join single-scan cases into ED/ES pairs by file name (``*_ED``/``*_ES``) or the ACDC
    ``*_frameNN`` + ``Info.cfg`` layout; everything else is returned unchanged, in order.
    A phase with no partner stays a single-scan case (cardiac mode then flags it).
    """
    groups: dict[tuple[str, str], dict[str, Case]] = {}
    keys: dict[int, tuple[str, str]] = {}
    cfg_cache: dict[Path, dict[str, int] | None] = {}
    for i, c in enumerate(cases):
        if c.error or c.kind != "single" or c.inputs[0].phase is not None or len(c.inputs[0].channels) != 1:
            continue
        path = Path(c.inputs[0].channels[0][1])
        stem = _stem(path)
        m = _PHASE_NAME.match(stem)
        phase = base = None
        if m:
            base, phase = m["base"], m["phase"].upper()
        else:
            f = _FRAME_NAME.match(stem)
            cfg = path.parent / "Info.cfg"
            if f and cfg.is_file():
                if path.parent not in cfg_cache:
                    try:
                        cfg_cache[path.parent] = read_info_cfg(cfg)
                    except (ConfigError, OSError):
                        cfg_cache[path.parent] = None
                frames = cfg_cache[path.parent]
                if frames:
                    for ph, n in frames.items():
                        if int(f["frame"]) == n:
                            base, phase = f["base"], ph
        if phase is None:
            continue
        key = (str(path.parent), base.lower())
        if phase in groups.setdefault(key, {}):
            continue  # two scans claim the same phase: leave the second single
        groups[key][phase] = c
        keys[i] = key
    out: list[Case] = []
    done: set[tuple[str, str]] = set()
    for i, c in enumerate(cases):
        key = keys.get(i)
        if key is None or set(groups[key]) != {"ED", "ES"}:
            out.append(c)
            continue
        if key in done:
            continue
        done.add(key)
        ed, es = groups[key]["ED"], groups[key]["ES"]
        inputs = tuple(CaseInput(ph, cc.inputs[0].channels, cc.inputs[0].reference)
                       for ph, cc in (("ED", ed), ("ES", es)))
        base = _PHASE_NAME.match(_stem(Path(ed.inputs[0].channels[0][1])))
        frame = _FRAME_NAME.match(_stem(Path(ed.inputs[0].channels[0][1])))
        cid = (base or frame)["base"] if (base or frame) else ed.case_id
        out.append(Case(safe_case_id(cid), inputs, f"{ed.origin} + {es.origin}"))
    return out


def _expand(p: Path, channels: Sequence[str], multi: Sequence[str] | None,
            skipped: list[SkippedFile] | None = None) -> list[Case]:
    if not p.exists():
        return [_error_case(_stem(p), str(p), InputFileNotFoundError.expected(
            "an existing file, folder or CSV manifest", "nothing at that path", path=p))]
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_manifest(p, channels=channels)
    return _from_path(p, channels[0], multi, 0, skipped)
