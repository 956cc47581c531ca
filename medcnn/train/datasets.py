"""Training datasets: MSD ``dataset.json`` / CSV manifests, k-fold splits, cached preprocessing.

A dataset file lists cases; every path in it is relative to the file's folder and may not
escape it (absolute paths and ``..`` are refused with :class:`~medcnn.errors.ConfigError`).

Preprocessed cases are cached as ``.npz`` files in a cache folder, keyed by a hash of the
preprocessing spec, the label options and the bytes of every input file, so changing any
of them recomputes the case and nothing stale is ever reused.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError

__all__ = [
    "Case",
    "PreparedCase",
    "load_cases",
    "load_dataset_json",
    "dataset_channel_names",
    "check_case_channels",
    "load_csv_manifest",
    "kfold_split",
    "unlabelled_slice_mask",
    "prepare_case",
    "file_digest",
    "slice_axis",
]


@dataclass(frozen=True)
class Case:
    """One training case as listed in a dataset file.

    Attributes:
        case_id: unique name (from the entry or the label file name).
        images: one path per input channel, in channel order.
        label: label map path (``None`` for unlabelled cases).
        group: patient id used to keep a patient's cases in one fold.
        annotated_classes: classes annotated in this case (``None``: all of them).
        meta: the remaining fields of the entry (strings only).
        ignore_unlabelled_slices, absent_classes_unannotated: this case's label options
            when they differ from the run's (``None``: the run's ``data`` settings), e.g. a
            partially contoured dataset trained beside a fully contoured one.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    group: str
    annotated_classes: tuple[int, ...] | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    ignore_unlabelled_slices: bool | None = None
    absent_classes_unannotated: bool | None = None

    def label_options(self, *, ignore_unlabelled_slices: bool, absent_classes_unannotated: bool) -> tuple[bool, bool]:
        """``(ignore_unlabelled_slices, absent_classes_unannotated)`` for this case: its own
        values where set, else the given run defaults."""
        return (ignore_unlabelled_slices if self.ignore_unlabelled_slices is None else self.ignore_unlabelled_slices,
                absent_classes_unannotated if self.absent_classes_unannotated is None
                else self.absent_classes_unannotated)


@dataclass
class PreparedCase:
    """A preprocessed case in network space.

    Attributes:
        case_id, group: as in :class:`Case`.
        image: ``(C, X, Y, Z)`` float32, normalised.
        label: ``(X, Y, Z)`` int64 class indices (after label mapping).
        ignore: ``(X, Y, Z)`` bool, True where the loss must not look (unannotated slices).
        annotated: ``(K,)`` bool, False for classes this case does not annotate.
        spacing: voxel spacing in mm of the arrays.
    """

    case_id: str
    group: str
    image: np.ndarray
    label: np.ndarray
    ignore: np.ndarray
    annotated: np.ndarray
    spacing: tuple[float, float, float]


# ---------------------------------------------------------------------------- dataset files
def _safe_path(root: Path, value: Any, *, source: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError.expected("a relative file path (string)", repr(value), path=source,
                                   hint=f"in {key}")
    p = Path(value)
    if p.is_absolute() or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ConfigError.expected("a path relative to the dataset folder", f"absolute path {value!r}",
                                   path=source, hint=f"in {key}; dataset files may not point outside their folder")
    if ".." in p.parts:
        raise ConfigError.expected("a path inside the dataset folder", f"{value!r} (contains '..')",
                                   path=source, hint=f"in {key}; dataset files may not point outside their folder")
    full = (root / p).resolve()
    try:
        full.relative_to(root.resolve())
    except ValueError:
        raise ConfigError.expected("a path inside the dataset folder", f"{value!r} (resolves to {full})",
                                   path=source, hint=f"in {key}; symbolic links may not leave the folder") from None
    return root / p


def _case_id_from(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _group(case_id: str, entry: Mapping[str, Any], group_pattern: str | None) -> str:
    for key in ("patient", "patient_id", "group", "subject"):
        if entry.get(key) not in (None, ""):
            return str(entry[key])
    if group_pattern:
        m = re.search(group_pattern, case_id)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return case_id


def _annotated(value: Any, source: Path, key: str) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = [v for v in re.split(r"[;,\s]+", value) if v]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigError.expected("a list of class indices", repr(value), path=source, hint=f"in {key}")
    try:
        return tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        raise ConfigError.expected("a list of class indices", repr(value), path=source, hint=f"in {key}") from None


def _read_dataset_json(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError.expected("an existing dataset.json", "nothing at that path", path=p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError.expected("valid JSON", str(exc), path=p) from None
    if not isinstance(data, dict):
        raise ConfigError.expected("a JSON object", type(data).__name__, path=p)
    return data


def dataset_channel_names(path: str | PathLike[str]) -> list[str] | None:
    """The input channels a ``dataset.json`` declares in nnU-Net v2's ``channel_names``
    (``{"0": "FLAIR", "1": "T1", ...}``), in channel order; ``None`` for a CSV manifest or a
    dataset.json without it (MSD's ``modality`` names the modality, e.g. ``MRI``, not the
    sequence, and is not read)."""
    p = Path(path)
    if p.is_dir():
        p = p / "dataset.json"
    if p.suffix.lower() != ".json":
        return None
    data = _read_dataset_json(p)
    names = data.get("channel_names")
    if not isinstance(names, dict) or not names:
        return None
    try:
        return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    except (TypeError, ValueError):
        raise ConfigError.expected('channel_names as {"0": name, "1": name, ...}', repr(names)[:80], path=p) from None


def load_dataset_json(path: str | PathLike[str], *, group_pattern: str | None = None) -> list[Case]:
    """Read an MSD / nnU-Net style ``dataset.json``: ``{"training": [{"image", "label"}, ...]}``.

    ``image`` is one path or a list (one per channel). Optional per-entry keys:
    ``case_id``, ``patient``/``patient_id``/``group`` (fold grouping),
    ``annotated_classes`` (list of label values annotated in this case).
    The spelling of the datasets in ``../shared/data`` is read too:
    ``{"cases": [{"case", "images", "label"}, ...]}``.
    """
    p = Path(path)
    data = _read_dataset_json(p)
    key0 = "training" if "training" in data or "cases" not in data else "cases"
    entries = data.get(key0)
    if not isinstance(entries, list) or not entries:
        raise ConfigError.expected('a non-empty "training" (or "cases") list', type(entries).__name__, path=p)
    root = p.parent
    cases: list[Case] = []
    normalised: list[Any] = []
    for i, entry in enumerate(entries):
        key = f"{key0}[{i}]"
        if isinstance(entry, dict) and "image" not in entry and "images" in entry:
            entry = {**{k: v for k, v in entry.items() if k != "images"}, "image": entry["images"]}
        if isinstance(entry, dict) and "case" in entry and "case_id" not in entry:
            entry = {**{k: v for k, v in entry.items() if k != "case"}, "case_id": entry["case"]}
        if not isinstance(entry, dict) or "image" not in entry:
            raise ConfigError.expected('an object with "image" (and "label")', repr(entry)[:80], path=p, hint=key)
        normalised.append(entry)
        imgs = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        images = tuple(_safe_path(root, v, source=p, key=f"{key}.image") for v in imgs)
        label = _safe_path(root, entry["label"], source=p, key=f"{key}.label") if entry.get("label") else None
        case_id = str(entry.get("case_id") or _case_id_from(label or images[0]))
        meta = {k: str(v) for k, v in entry.items() if isinstance(v, (str, int, float)) and k not in ("image", "label")}
        cases.append(Case(case_id, images, label, _group(case_id, entry, group_pattern),
                          _annotated(entry.get("annotated_classes"), p, key), meta))
    cases = _unique_ids(cases, normalised, root, group_pattern)
    _check_unique(cases, p)
    return cases


def _unique_ids(cases: list[Case], entries: Sequence[Any], root: Path, group_pattern: str | None) -> list[Case]:
    """File stems that repeat (``case1/seg.nii.gz``, ``case2/seg.nii.gz``) become the
    file's path inside the dataset folder, ``/`` replaced by ``_`` (``case1_seg``)."""
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.case_id] = counts.get(c.case_id, 0) + 1
    out = []
    for c, entry in zip(cases, entries):
        if counts[c.case_id] > 1 and not entry.get("case_id"):
            src = c.label or c.images[0]
            rel = src.relative_to(root)
            new_id = _case_id_from(Path("_".join(rel.parts)))
            group = c.group if c.group != c.case_id else _group(new_id, entry, group_pattern)
            c = dataclasses.replace(c, case_id=new_id, group=group)
        out.append(c)
    return out


def load_csv_manifest(path: str | PathLike[str], *, channels: Sequence[str] | None = None,
                      group_pattern: str | None = None) -> list[Case]:
    """Read a CSV manifest: one row per case with ``case_id``, one column per channel, ``label``.

    Channel columns are ``channels`` when given, else every column except ``case_id``,
    ``label``, ``patient``/``patient_id``/``group``/``subject`` and ``annotated_classes``,
    in file order. Paths are relative to the CSV's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError.expected("an existing CSV manifest", "nothing at that path", path=p)
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    reserved = {"case_id", "label", "patient", "patient_id", "group", "subject", "annotated_classes"}
    if "case_id" not in columns or "label" not in columns:
        raise ConfigError.expected("columns case_id, <channel...>, label", ", ".join(columns) or "no header", path=p)
    chans = list(channels) if channels else [c for c in columns if c not in reserved]
    missing = [c for c in chans if c not in columns]
    if missing or not chans:
        raise ConfigError.expected(f"channel columns {chans}", f"columns {columns}", path=p)
    root = p.parent
    cases = []
    for i, row in enumerate(rows):
        key = f"row {i + 2}"
        images = tuple(_safe_path(root, row[c], source=p, key=f"{key}.{c}") for c in chans)
        label = _safe_path(root, row["label"], source=p, key=f"{key}.label") if row.get("label") else None
        case_id = row["case_id"] or _case_id_from(images[0])
        meta = {k: v for k, v in row.items() if k not in chans and k != "label" and v is not None}
        cases.append(Case(case_id, images, label, _group(case_id, row, group_pattern),
                          _annotated(row.get("annotated_classes"), p, key), meta))
    _check_unique(cases, p)
    return cases


def _check_unique(cases: Sequence[Case], source: Path) -> None:
    seen: set[str] = set()
    for c in cases:
        if c.case_id in seen:
            raise ConfigError.expected("unique case ids", f"{c.case_id!r} twice", path=source)
        seen.add(c.case_id)


def load_cases(path: str | PathLike[str], *, channels: Sequence[str] | None = None,
               group_pattern: str | None = None) -> list[Case]:
    """Dispatch on the suffix: ``.json`` → :func:`load_dataset_json`, ``.csv`` → manifest.

    A folder means ``<folder>/dataset.json``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "dataset.json"
    if p.suffix.lower() == ".csv":
        return load_csv_manifest(p, channels=channels, group_pattern=group_pattern)
    return load_dataset_json(p, group_pattern=group_pattern)


def _channel_key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def check_case_channels(cases: Sequence[Case], channels: Sequence[str], *, source: str | PathLike[str] | None = None,
                        declared: Sequence[str] | None = None) -> None:
    """Every case has one existing image per channel (an MRI sequence), before any is read.

    Args:
        cases: the dataset's cases.
        channels: the run's channel names in order (``data.channels``).
        source: the dataset file, named in errors.
        declared: the channels the dataset file declares (:func:`dataset_channel_names`):
            for a multi-channel dataset they must be ``channels`` in the same order (case
            and punctuation aside), so no sequence is fed to the wrong input.

    Raises:
        ConfigError: declared channels that differ, or a case with more or fewer images
            (naming the case and, when the file names say it, the missing sequence, e.g.
            ``T2``). InputFileNotFoundError: a listed image that does not exist (naming the
            case, the sequence and the path).
    """
    from medcnn.errors import InputFileNotFoundError
    from medcnn.io import missing_channels

    chans = [str(c) for c in channels]
    multi = declared is not None and max(len(declared), len(chans)) > 1
    if multi and [_channel_key(c) for c in declared or ()] != [_channel_key(c) for c in chans]:
        raise ConfigError.expected(f"data.channels in the dataset's channel order {list(declared)}", f"{chans}",
                                   path=source, hint="list the channels as the dataset declares them (channel_names)")
    for c in cases:
        if len(c.images) != len(chans):
            missing = missing_channels(c.images, chans) if len(c.images) < len(chans) else None
            got = (f"no {' and no '.join(missing)} image" + f" (its {len(c.images)} images are "
                   + ", ".join(p.name for p in c.images) + ")") if missing else \
                f"{len(c.images)} image(s) ({', '.join(p.name for p in c.images)})"
            raise ConfigError.expected(f"case {c.case_id}: one image per channel ({', '.join(chans)})", got,
                                       path=source, hint="every case needs all sequences the model takes")
        for ch, img in zip(chans, c.images):
            if not img.exists():
                raise InputFileNotFoundError.expected(f"case {c.case_id}: its {ch} image", f"no file at {img}",
                                                      path=source)


# ---------------------------------------------------------------------------- splits
def kfold_split(cases: Sequence[Case], *, n_folds: int, fold: int, seed: int = 0,
                stratify_by: str | None = None) -> tuple[list[Case], list[Case]]:
    """Split into (train, validation) for ``fold`` of ``n_folds``, grouped by ``Case.group``.

    Groups are shuffled with ``seed`` and dealt round-robin into folds, so all cases of a
    patient land in the same fold. With ``stratify_by`` (a field of the dataset entries,
    e.g. ``group`` holding the pathology in ACDC), the patients of each stratum are shuffled
    and dealt in turn (the deal continues across strata), so every fold holds each stratum
    in proportion. ``n_folds`` <= 1 means no validation split.
    """
    if n_folds <= 1:
        return list(cases), []
    groups = sorted({c.group for c in cases})
    if n_folds > len(groups):
        raise ConfigError.expected(f"at most {len(groups)} folds (one per patient group)", str(n_folds))
    if not 0 <= fold < n_folds:
        raise ConfigError.expected(f"a fold in 0..{n_folds - 1}", str(fold))
    if stratify_by is None:
        order = np.random.default_rng(seed).permutation(len(groups))
        val_groups = {groups[j] for k, j in enumerate(order) if k % n_folds == fold}
    else:
        stratum: dict[str, str] = {}
        for c in cases:
            value = c.meta.get(stratify_by)
            if value is None:
                raise ConfigError.expected(f"a {stratify_by!r} field in every dataset entry (data.stratify_by)",
                                           f"none for case {c.case_id}")
            if stratum.setdefault(c.group, value) != value:
                raise ConfigError.expected(f"one {stratify_by!r} per patient group",
                                           f"{stratum[c.group]!r} and {value!r} for {c.group}")
        rng = np.random.default_rng(seed)
        val_groups, k = set(), 0
        for s in sorted(set(stratum.values())):
            members = [g for g in groups if stratum[g] == s]
            for j in rng.permutation(len(members)):
                if k % n_folds == fold:
                    val_groups.add(members[j])
                k += 1
    train = [c for c in cases if c.group not in val_groups]
    val = [c for c in cases if c.group in val_groups]
    return train, val


# ---------------------------------------------------------------------------- labels
def slice_axis(spacing: Sequence[float]) -> int:
    """The coarsest axis (the last one among equally coarse axes), as inference picks it
    for 2D networks."""
    sp = np.asarray(spacing, dtype=float)
    return int(np.flatnonzero(np.isclose(sp, sp.max(), rtol=1e-6))[-1])


def unlabelled_slice_mask(label: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """True on every slice (along the coarsest axis) that holds no label > 0.

    Such slices were not contoured by the expert (partial annotation); they must not
    teach "background". label: ``(X, Y, Z)``; spacing in mm; returns bool ``(X, Y, Z)``.
    """
    axis = slice_axis(spacing)
    other = tuple(a for a in range(label.ndim) if a != axis)
    labelled = np.any(label > 0, axis=other)
    shape = [1] * label.ndim
    shape[axis] = label.shape[axis]
    return np.broadcast_to(~labelled.reshape(shape), label.shape).copy()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex): :func:`medcnn.hashing.file_sha256`."""
    from medcnn.hashing import file_sha256

    return file_sha256(path)


def prepare_case(
    case: Case,
    *,
    preprocess: Callable[[Case], tuple[np.ndarray, np.ndarray, tuple[float, float, float]]],
    spec: Mapping[str, Any],
    label_map: Mapping[int, int] | None,
    n_classes: int,
    ignore_unlabelled_slices: bool,
    absent_classes_unannotated: bool,
    cache_dir: str | PathLike[str] | None,
    label_values: Sequence[int] | None = None,
) -> PreparedCase:
    """Preprocess one case (or load it from the cache).

    ``preprocess(case)`` returns ``(image (C,X,Y,Z) float32, label (X,Y,Z) int, spacing)``
    on the network grid. ``label_map`` maps raw label values to class indices (unlisted
    values > 0 are an error, 0 stays 0). The two label options are the run's defaults; a
    case's own values (:meth:`Case.label_options`) take precedence. ``label_values``
    (region models: the label map keeps the dataset's values, e.g. BraTS 0, 1, 2, 4): the
    only values allowed after mapping; another one is an error naming the file.
    """
    ignore_unlabelled_slices, absent_classes_unannotated = case.label_options(
        ignore_unlabelled_slices=ignore_unlabelled_slices, absent_classes_unannotated=absent_classes_unannotated)
    key_data = {"spec": spec, "label_map": {str(k): v for k, v in (label_map or {}).items()},
                "n_classes": n_classes, "ignore": ignore_unlabelled_slices,
                "absent": absent_classes_unannotated, "annotated": case.annotated_classes,
                "files": [file_digest(p) for p in (*case.images, *( [case.label] if case.label else []))],
                "version": 1}
    if label_values is not None:  # only when set: other runs' cache keys stay as they were
        key_data["label_values"] = sorted(int(v) for v in label_values)
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cache_file = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', case.case_id)}-{key}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            return PreparedCase(case.case_id, case.group, z["image"], z["label"].astype(np.int64),
                                z["ignore"], z["annotated"], tuple(float(s) for s in z["spacing"]))
    image, raw, spacing = preprocess(case)
    raw = np.asarray(raw).astype(np.int64)
    label = raw.copy()
    if label_map:
        label = np.zeros_like(raw)
        for value in np.unique(raw):
            if value == 0:
                continue
            if int(value) not in label_map:
                raise ConfigError.expected(f"label values in {sorted(label_map)}", f"value {int(value)}",
                                           path=case.label, hint="add it to data.label_map")
            label[raw == value] = label_map[int(value)]
    if label_values is not None:
        stray = sorted(set(np.unique(label).tolist()) - {int(v) for v in label_values} - {0})
        if stray:
            raise ConfigError.expected(f"label values among {sorted(int(v) for v in label_values)} (data.labels)",
                                       f"{stray}", path=case.label, hint="add them to data.labels (and a region) "
                                       "or map them with data.label_map")
    if label.max(initial=0) >= n_classes:
        raise ConfigError.expected(f"class indices < {n_classes}", f"{int(label.max())}", path=case.label,
                                   hint="set data.label_map or model.out_channels")
    ignore = unlabelled_slice_mask(label, spacing) if ignore_unlabelled_slices else np.zeros(label.shape, bool)
    annotated = np.ones(n_classes, bool)
    if case.annotated_classes is not None:
        annotated[:] = False
        annotated[0] = True
        for c in case.annotated_classes:
            mapped = label_map.get(c, c) if label_map else c
            if 0 <= mapped < n_classes:
                annotated[mapped] = True
    if absent_classes_unannotated:
        present = np.bincount(label[~ignore].ravel(), minlength=n_classes) > 0
        annotated &= present | (np.arange(n_classes) == 0)
    out = PreparedCase(case.case_id, case.group, np.ascontiguousarray(image, np.float32), label, ignore,
                       annotated, tuple(float(s) for s in spacing))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, image=out.image, label=out.label.astype(np.uint8 if n_classes < 256 else np.int32),
                 ignore=out.ignore, annotated=out.annotated, spacing=np.asarray(out.spacing))
        os.replace(tmp, cache_file)
    return out
