"""``medcnn segment SCANS... --model BUNDLE --out DIR``: label maps on the scans' own grids.

Each case is written as ``<name>_labels<ext>`` in the input's format (DICOM folders →
``.nii.gz``; with ``--dicom`` also ``<name>_seg.dcm`` + ``<name>_sr.dcm``) with exactly the
input's geometry; ``--probabilities`` adds
``<name>_probabilities<ext>`` (``(C, I, J, K)`` float32). Writes are atomic.
``segment_provenance.json`` records the medcnn version, the model's weights and spec
SHA-256, the settings and, per case, the inputs, their pixel+geometry hashes, the outputs,
the volume rows (``volumes``: the rows ``medcnn run`` puts in volumes.csv) or the error (no
DICOM identifiers); it is written when at least one case produced output. Every case goes
through the case pipeline of ``medcnn run`` (:mod:`medcnn.batch.pipeline`): the same label
map, rows, SEG and SR for the same scan and flags; a manifest's ED/ES pair segmented with a
cardiac model also gets the pair's cardiac row (record ``cardiac``, and in both SRs).
An input whose NIfTI header's sform, qform and pixdim disagree is read as SimpleITK reads it
(docs/io.md): one warning line, ``qc_flags`` (``NIFTI_HEADER_INCONSISTENT``) and the rule
(``methods``) in its case record, and its label map written on that resolved grid.

A folder of image files (not a DICOM series) is a folder of cases, as for ``medcnn run``:
each image file is segmented on its own (sub-folders likewise; a folder of non-image files is
one DICOM series); label maps in it (by name, ``*_gt``, ``*_seg``, ``*mask*`` ..., or by
content, integer images with few values) are skipped and listed on stderr (docs/batch.md).
Each input is checked against the model's input description before inference: a clear
mismatch (a CT series for an MRI model) fails unless ``--allow-input-mismatch``, a doubtful one
is flagged ``INPUT_MODEL_MISMATCH_SUSPECTED`` (:mod:`medcnn.models.compat`). Multi-channel models take a case as ``--channels a.nii.gz,b.nii.gz`` (in
the bundle's channel order; repeatable), as ``--channels FOLDER`` (one image file per
channel, matched by channel name in the file name, e.g. ``case1/flair.nii.gz`` for channel
``FLAIR``) or as a row of a CSV manifest (``case_id`` plus one column per channel, as for
``medcnn run``; outputs are named after the case id). A folder given as SCANS whose files
match a multi-channel model's channels reads two ways (one multi-channel case, or separate
scans each missing the other channels): it is refused with a message naming both readings
and how to choose. A case that fails prints one error line and the others continue; the
exit code is 2 if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcnn.cli._options import (add_backend_option, add_dicom_options, add_threads_option, add_whole_slice_option,
                                 backend_cache_dir)

__all__ = ["register", "run", "output_name", "parse_tta_axes"]


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment scans with a model bundle; label maps on the input grids",
        description="Segment each scan with a model bundle and write its label map in the scan's format and "
                    "exact geometry (DICOM input is written as NIfTI .nii.gz).",
        epilog="Exit codes: 0 all cases ok, 2 some case failed or bad arguments, 1 internal error.")
    p.add_argument("scans", nargs="*", metavar="SCANS",
                   help="image files, folders of image files (each file one case, as for medcnn run), DICOM "
                        "folders, or CSV manifests: a case_id column and one column per model channel (outputs are "
                        "named <case_id>_labels)")
    p.add_argument("--model", required=True,
                   help="default model name (see `medcnn models list`), bundle folder or .medcnn archive")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--channels", action="append", default=[], metavar="A,B,...|FOLDER",
                   help="one multi-channel case: comma-separated files in the bundle's channel order, or a folder "
                        "holding one image file per channel (matched by channel name); repeatable")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto (default: bf16 where the hardware has it), fp32, bf16, fp16 (GPU only)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_const", const="trained", default=None,
                     help="mirroring test-time augmentation over the axes the model was trained with "
                          "(bundle.json mirror_axes; the default of models imported from nnU-Net, as "
                          "nnUNetv2_predict)")
    tta.add_argument("--no-tta", dest="tta", action="store_const", const="none",
                     help="no test-time augmentation, also for models whose default is mirroring "
                          "(nnUNetv2_predict --disable_tta)")
    tta.add_argument("--tta-axes", dest="tta", metavar="AXES",
                     help="mirroring test-time augmentation over these model-grid axes, e.g. 0 or 0,2, or all "
                          "(warns for axes the training never mirrored)")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    p.add_argument("--series", help="DICOM series UID, index or description when a folder holds several")
    p.add_argument("--overlap", type=float, default=None, help="window overlap fraction (default: the bundle's)")
    p.add_argument("--sw-batch-size", type=int, default=None,
                   help="windows per network call (default: 4 on GPUs, on the CPU 2 in fp32 and 1 in bf16)")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="memory budget for one case")
    add_dicom_options(p)
    p.add_argument("--include-identifiers", action="store_true",
                   help="with --dicom: keep the patient/study modules and UIDs of the source (default: de-identified "
                        "by DICOM PS3.15 Annex E, UIDs replaced; docs/dicom.md)")
    p.add_argument("--include-paths", action="store_true",
                   help="keep full input paths in segment_provenance.json (default: file names only; folder names "
                        "often hold patient names)")
    p.add_argument("--allow-input-mismatch", action="store_true",
                   help="run inputs that clearly do not fit the model (e.g. a CT series for an MRI model; refused by "
                        "default), flagged INPUT_MODEL_MISMATCH_OVERRIDDEN (docs/batch.md)")
    add_threads_option(p)
    add_backend_option(p)
    add_whole_slice_option(p)
    p.set_defaults(func=run)


def parse_tta_axes(text: str) -> tuple[int, ...] | str:
    """``""``/``"none"`` → ``()``, ``"trained"`` and ``"all"`` pass through (resolved by the
    Segmenter against the bundle's mirror axes), ``"0,2"`` → ``(0, 2)``."""
    from medcnn.errors import ConfigError

    t = (text or "").strip().lower()
    if t in ("", "none"):
        return ()
    if t in ("trained", "all"):
        return t
    try:
        axes = tuple(sorted({int(v) for v in t.replace(" ", "").split(",") if v}))
    except ValueError:
        raise ConfigError.expected("--tta axes like 0,1,2, or trained, all, none", repr(text)) from None
    if any(a not in (0, 1, 2) for a in axes):
        raise ConfigError.expected("--tta axes among 0, 1, 2", repr(text))
    return axes


def _split_name(path: Path) -> tuple[str, str]:
    from medcnn.batch.pipeline import label_suffix
    from medcnn.io._common import suffix_of

    if path.is_dir():
        return path.name, ".nii.gz"
    sfx = suffix_of(path)
    name = path.name[: -len(sfx)] if sfx and path.name.lower().endswith(sfx) else path.stem
    return name, label_suffix(path)


def output_name(first_input: str | Path, out_dir: str | Path, what: str = "labels", *,
                stem: str | None = None) -> Path:
    """``out_dir/<name>_<what><ext>`` in the input's format (DICOM folders → ``.nii.gz``);
    ``stem`` replaces the input's name (manifest case ids)."""
    name, sfx = _split_name(Path(first_input))
    return Path(out_dir) / f"{stem or name}_{what}{sfx}"


def _channel_files_in_folder(folder: Path, channels: tuple[str, ...]) -> list[Path]:
    """One image file per channel, matched by name (:func:`medcnn.io.match_channel_files`:
    ``case_t1.nii.gz`` is channel ``T1``, ``case_t1ce.nii.gz`` only ``T1ce``)."""
    from medcnn.errors import DimensionError
    from medcnn.io import match_channel_files
    from medcnn.io._common import SUPPORTED_SUFFIXES, suffix_of

    files = sorted(p for p in folder.iterdir() if p.is_file() and suffix_of(p) in SUPPORTED_SUFFIXES)
    found = match_channel_files(files, channels)
    absent = [c for c in channels if not found[c]]
    if absent:
        raise DimensionError.expected(
            f"case {folder.name}: one image file per channel ({', '.join(channels)})",
            f"no {' and no '.join(absent)} image among {', '.join(p.name for p in files) or 'no image files'}",
            path=folder, hint="every case needs all sequences the model takes; name the files after the channels "
                              "or pass --channels A,B,...")
    for c in channels:
        hits = found[c]
        if len(hits) != 1:
            raise DimensionError.expected(
                f"case {folder.name}: exactly one image file named after channel {c!r}",
                f"{len(hits)} ({', '.join(p.name for p in hits)})", path=folder,
                hint="Name the files after the channels " + ", ".join(channels) + " or pass --channels A,B")
    return [found[c][0] for c in channels]


def _is_folder_of_cases(p: Path) -> bool:
    """A folder holding image files, or only sub-folders: a folder of cases, not one DICOM
    series (the rule of :func:`medcnn.batch.cases.discover_cases`)."""
    from medcnn.batch.cases import _image_files

    if not p.is_dir():
        return False
    if _image_files(p):
        return True
    entries = [q for q in p.iterdir() if not q.name.startswith(".")]
    return bool(entries) and all(q.is_dir() for q in entries)


def _ambiguous_folder(folder: Path, channels: tuple[str, ...]) -> str | None:
    """For a multi-channel model: the message when ``folder``'s files match its channels
    (one multi-channel case, or a folder of separate scans?), else ``None``."""
    from medcnn.errors import ConfigError, MedcnnError

    if len(channels) < 2:
        return None
    try:
        files = _channel_files_in_folder(folder, channels)
    except MedcnnError:
        return None
    matched = ", ".join(f"{c}={p.name}" for c, p in zip(channels, files))
    return str(ConfigError.expected(
        "one reading of the folder: a folder of scans (each image file one case, as medcnn run reads it) or one "
        f"{len(channels)}-channel case",
        f"a folder that reads both ways (its files match the model's channels: {matched})", path=folder,
        hint=f"To segment it as one case pass --channels {folder} (or --channels "
             + ",".join(str(p) for p in files) + ", or a CSV manifest with columns case_id,"
             + ",".join(channels) + "); as separate scans this model cannot run on them: each needs all "
             f"{len(channels)} channels"))


@dataclass
class _Case:
    """One case to segment.

    Attributes:
        name: how messages name it (the argument, or ``manifest line N (case id)``).
        spec: a scan path (file, DICOM folder or channel folder) or a list of channel paths.
        stem: output name stem (manifest case id); ``None``: from the first input's name.
        error: a problem found while listing it (a bad manifest row, an ambiguous folder).
        channel_folder: ``spec`` is a folder holding one image file per channel
            (``--channels FOLDER``).
        phase: ``ED`` / ``ES`` of a manifest's cardiac pair (its volume rows' phase).
        pair: the manifest case id of that pair: with ``--dicom`` and a cardiac model both
            phases' SRs carry the pair's EDV/ESV/SV/EF, as from ``medcnn run``.
    """

    name: str
    spec: Any
    stem: str | None = None
    error: str | None = None
    channel_folder: bool = False
    phase: str | None = None
    pair: str | None = None


def _cases(args: argparse.Namespace, channels: tuple[str, ...]) -> list[_Case]:
    """Every case of the SCANS arguments (CSV manifests expanded) and ``--channels`` groups."""
    from medcnn.batch.cases import read_manifest

    cases: list[_Case] = []
    for s in args.scans:
        if s.lower().endswith(".csv") and Path(s).is_file():
            for case in read_manifest(s, channels=channels):
                if case.error:
                    cases.append(_Case(f"{case.origin} ({case.case_id})", None, case.case_id, case.error))
                    continue
                for ci in case.inputs:  # one, or ED and ES of a cardiac pair
                    stem = case.case_id + (f"_{ci.phase}" if ci.phase else "")
                    files = [Path(p) for _, p in ci.channels]
                    cases.append(_Case(f"{case.origin} ({stem})", files[0] if len(files) == 1 else files, stem,
                                       phase=ci.phase, pair=case.case_id if case.kind == "pair" else None))
            continue
        p = Path(s)
        if _is_folder_of_cases(p):  # as for medcnn run
            cases.extend(_folder_cases(p, channels))
            continue
        cases.append(_Case(s, p))
    for group in args.channels:
        parts = [f.strip() for f in group.split(",") if f.strip()]
        if len(parts) == 1 and Path(parts[0]).is_dir():
            cases.append(_Case(group, Path(parts[0]), channel_folder=True))
            continue
        cases.append(_Case(group, [Path(f) for f in parts]))
    return cases


def _folder_cases(folder: Path, channels: tuple[str, ...]) -> list[_Case]:
    """The cases of a folder of image files: each file (and each sub-folder's files) one
    case, by :func:`medcnn.batch.cases.discover_cases`; an ambiguous multi-channel folder is
    one failed case naming both readings."""
    from medcnn.batch.cases import discover_cases, report_skipped

    msg = _ambiguous_folder(folder, channels)
    if msg is not None:
        return [_Case(str(folder), None, None, msg)]
    out = []
    skipped: list = []  # label maps in the folder (issue 26 point 3)
    found = discover_cases([folder], channels=channels, skipped=skipped)
    report_skipped(skipped, "medcnn segment")
    for case in found:
        if case.error:
            out.append(_Case(case.origin, None, None, case.error))
            continue
        files = [Path(p) for _, p in case.inputs[0].channels]
        out.append(_Case(str(files[0]), files[0] if len(files) == 1 else files))
    return out


def _read_case(spec: Any, channels: tuple[str, ...], series: str | None, *,
               channel_folder: bool = False) -> tuple[list[Any], Path]:
    """The input volumes of a case (:func:`medcnn.batch.pipeline.read_channels`, as
    ``medcnn run`` reads them) and the path its outputs are named after."""
    from medcnn.batch.pipeline import read_channels
    from medcnn.errors import DimensionError

    n = len(channels)
    if isinstance(spec, list):
        if len(spec) != n:
            from medcnn.io import missing_channels

            absent = missing_channels(spec, channels) if len(spec) < n else None
            got = (f"no {' and no '.join(absent)} image (the {len(spec)} files are named after "
                   + ", ".join(c for c in channels if c not in absent) + ")") if absent else f"{len(spec)}"
            from medcnn.io import image_stem

            case = image_stem(spec[0].name) or spec[0].name
            raise DimensionError.expected(f"{n} channel files ({', '.join(channels)}) for case {case}", got,
                                          path=",".join(map(str, spec)),
                                          hint="every case needs all sequences the model takes")
        return read_channels(spec, series=series), spec[0]
    path = spec
    if channel_folder:
        return read_channels(_channel_files_in_folder(path, channels)), path
    if n > 1:
        raise DimensionError.expected(
            f"--channels A,B (or --channels FOLDER with one image per channel: {', '.join(channels)}) or a manifest "
            f"row for this {n}-channel model", "a single image", path=path)
    return read_channels([path], series=series), path


def run(args: argparse.Namespace) -> int:
    from medcnn.batch.bundles import bundle_info
    from medcnn.batch.execute import resolve_mode
    from medcnn.errors import ConfigError
    from medcnn.inference import Segmenter

    if not args.scans and not args.channels:
        raise ConfigError.expected("at least one scan or --channels group", "none")
    if args.dicom_fractional and not args.dicom:
        raise ConfigError.expected("--dicom-fractional together with --dicom", "--dicom-fractional alone")
    _check_inputs_exist(args)  # before the model loads (seconds): a typo is reported at once
    tta = {} if args.tta is None else {"tta_axes": parse_tta_axes(args.tta)}  # None: the bundle's default
    seg = Segmenter.from_bundle(args.model, device=args.device, precision=args.precision, overlap=args.overlap,
                                sw_batch_size=args.sw_batch_size, memory_limit_gb=args.memory_limit_gb,
                                threads=args.threads, backend=args.backend, cache_dir=backend_cache_dir(),
                                whole_slice=args.whole_slice, **tta)  # first: names what is wrong with a bad bundle
    model = bundle_info(args.model)  # name, labels, regions, input description as medcnn run reads them
    out_dir = Path(args.out)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        cases = _cases(args, seg.channels)
    except BaseException:
        _remove_if_empty(out_dir, created)
        raise
    print(f"model {args.model}: {seg!r}", file=sys.stderr)
    failed = internal = 0
    written: dict[Path, str] = {}
    log: list[dict[str, Any]] = []
    try:
        cardiac = resolve_mode("auto", model.task) == "cardiac"  # as medcnn run's default mode
        pending: list[tuple[_Case, dict[str, Any], Any]] = []  # a cardiac pair's phases, SEG/SR not yet written
        for n, case in enumerate(cases):
            rec: dict[str, Any] = {"case": case.name}
            log.append(rec)
            later = pending if case.pair and cardiac else None
            f, i = _segment_one(case, seg, model, args, out_dir, written, rec, later=later)
            failed += f
            internal += i
            if pending and (n + 1 == len(cases) or cases[n + 1].pair != case.pair):
                failed += _finish_pair(pending, model, dicom=args.dicom)
                pending = []
    finally:
        if any(r.get("outputs") for r in log):  # a run that wrote nothing leaves nothing behind
            _write_provenance(out_dir, args, seg, model, log)
        else:
            _remove_if_empty(out_dir, created)
    done = len(cases) - failed
    print(f"segmented {done} of {len(cases)} case(s)" + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    if internal:
        return 1
    return 2 if failed else 0


def _check_inputs_exist(args: argparse.Namespace) -> None:
    """At least one file or folder named on the command line exists (patterns left to the
    shell or the case listing); else an :class:`InputFileNotFoundError` naming the first
    missing one, before the model loads. With some inputs present, each missing one becomes
    its case's error line and the others are segmented (as ``medcnn run`` does)."""
    from medcnn.errors import InputFileNotFoundError

    named = list(args.scans) + [p for group in args.channels for p in str(group).split(",") if p]
    missing = [p for p in named if not any(c in str(p) for c in "*?[") and not Path(p).exists()]
    if missing and len(missing) == len(named):
        more = f" (none of the {len(missing)} named inputs exists)" if len(missing) > 1 else ""
        raise InputFileNotFoundError.expected("an existing scan file, folder or CSV manifest",
                                              f"nothing at that path{more}", path=missing[0])


def _remove_if_empty(folder: Path, created: bool) -> None:
    """Remove the output folder this command created when nothing was written into it."""
    if created:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


PROVENANCE_FILE = "segment_provenance.json"


def _write_provenance(out_dir: Path, args: argparse.Namespace, seg: Any, model: Any,
                      log: list[dict[str, Any]]) -> None:
    """``segment_provenance.json``: version, model name (as in ``run``'s records and the
    SEG/SR algorithm) and hashes, settings and per case inputs, input hashes, outputs, volume
    rows or the error (written atomically, replaced by a later run)."""
    from medcnn.report.provenance import HASH_METHOD, environment_info
    from medcnn.report.tables import write_json

    from medcnn.report.provenance import PATHS_METHOD, display_path, redact_paths

    b = seg.bundle_info
    keep = bool(getattr(args, "include_paths", False))
    if not keep:
        raw = [str(s) for s in args.scans] + [f.strip() for g in args.channels for f in g.split(",")]
        for rec in log:
            raw_inputs = rec.get("inputs") or []
            every = raw + raw_inputs
            rec["case"] = redact_paths(rec.get("case"), every)
            for key in ("inputs", "outputs"):
                if key in rec:
                    rec[key] = [display_path(p) for p in rec[key]]
            if rec.get("error"):
                rec["error"] = redact_paths(rec["error"], every)
            for flag in rec.get("qc_flags") or []:
                flag["message"] = redact_paths(flag["message"], every)
    write_json({
        "tool": "medcnn segment", "medcnn_version": environment_info()["medcnn_version"],
        "environment": environment_info(),
        "paths": "full paths (--include-paths)" if keep else PATHS_METHOD + "; outputs are in this file's folder",
        "model": {"name": model.name, "argument": display_path(args.model, include_paths=keep),
                  "path": display_path(b.get("path"), include_paths=keep), "sha256": b.get("sha256"),
                  "spec_sha256": b.get("spec_sha256"),
                  **({"imported_from": b["imported_from"]} if b.get("imported_from") else {})},
        "settings": {"device": str(seg.device), "precision": seg.precision, "tta_request": seg.tta_request,
                     "mirror_axes_trained": None if seg.mirror_axes is None else list(seg.mirror_axes),
                     "overlap": seg.overlap, "sw_batch_size": seg.sw_batch_size,
                     "threads": seg.threads.requested, "backend": seg.backend_request,
                     **({"whole_slice": seg.whole_slice} if seg.spatial_dims == 2 else {}),
                     "probabilities": bool(args.probabilities)},
        "input_hash_method": HASH_METHOD,
        "cases": log,
    }, out_dir / PROVENANCE_FILE)


def _finish_pair(pending: list[tuple[_Case, dict[str, Any], Any]], model: Any, *, dicom: bool) -> int:
    """Measure a manifest's cardiac pair once both phases are segmented (``pending``: the
    phases that were, each ``(case, record, (prediction, write_dicom))``): with both 3D phases
    each record gets the pair's cardiac row (:func:`medcnn.batch.pipeline.cardiac_row`, as
    ``medcnn run``) and, with ``dicom``, the SRs carry it; else each phase's volumes alone.
    Returns the number of phases that failed (their outputs removed, as a case is written
    whole or not at all)."""
    from medcnn.batch.pipeline import cardiac_labels_from_names, cardiac_row, intervals_by_label
    from medcnn.errors import MedcnnError
    from medcnn.measure import cardiac_function

    cl = cardiac_labels_from_names(model.labels)
    preds = {case.phase: pred for case, _, (pred, _) in pending}
    row = None
    if set(preds) == {"ED", "ES"} and all(p.labels.leading_axis is None for p in preds.values()):
        try:
            fn = cardiac_function(preds["ED"].labels, preds["ES"].labels, labels=cl)
            row = cardiac_row(fn, *(intervals_by_label(preds[ph].volume_intervals) for ph in ("ED", "ES")), cl)
        except MedcnnError as exc:  # e.g. ED and ES on different grids: the phases keep their volumes
            print(f"medcnn segment: warning: {pending[0][0].pair}: no cardiac function: {exc}", file=sys.stderr)
    failed = 0
    for case, rec, (_, write) in pending:
        if row is not None:
            rec["cardiac"] = row
        if not dicom:
            continue
        try:
            dcm, note = write(cardiac=row, lv_label=cl.lv_blood if row else None)
        except Exception as exc:  # noqa: BLE001 - the other phase is kept
            for f in rec.pop("outputs", []):
                Path(f).unlink(missing_ok=True)
            rec.update(status="error", error_type=type(exc).__name__, error=str(exc))
            print(f"medcnn segment: error: {case.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        rec["outputs"] += [str(p) for p in dcm]
        if note:
            rec["dicom_note"] = note
        print(f"ok {case.name} -> " + (", ".join(p.name for p in dcm) if dcm else note)
              + (f" (EF {row['lv_ef_percent']:.1f} %)" if row and row.get("lv_ef_percent") is not None else ""))
    return failed


def _segment_one(case: _Case, seg: Any, model: Any, args: argparse.Namespace, out_dir: Path,
                 written: dict[Path, str], rec: dict[str, Any], *, later: list | None = None) -> tuple[int, int]:
    """Segment one case by the case pipeline (:mod:`medcnn.batch.pipeline`, as ``medcnn run``),
    filling ``rec``; ``model``: the bundle's :class:`medcnn.batch.BundleInfo`; ``later``: a
    list to append ``(case, rec, (prediction, write_dicom))`` to instead of writing the
    SEG + SR now (a cardiac pair's phase, :func:`_finish_pair`). Returns
    ``(failed, internal_error)`` as 0/1."""
    from medcnn.batch.pipeline import input_flags, predict, scan_rows, write_case_dicom
    from medcnn.errors import ConfigError, MedcnnError
    from medcnn.io import write_volume
    from medcnn.report.provenance import volume_hash

    name, spec, out_stem = case.name, case.spec, case.stem
    t0 = time.perf_counter()
    try:
        if case.error:
            raise ConfigError(case.error)
        first_path = spec[0] if isinstance(spec, list) else spec
        target = output_name(first_path, out_dir, "labels", stem=out_stem)
        if target in written:
            raise ConfigError.expected("a unique output name per case", f"{target.name} also written for "
                                       f"{written[target]}", path=first_path,
                                       hint="Segment same-named scans into different --out folders")
        vols, first = _read_case(spec, seg.channels, args.series, channel_folder=case.channel_folder)
        from medcnn.models.compat import check_inputs  # issue 26 point 1: refuse / flag before inference

        check_inputs(vols, model.input_description, model=model.name, allow_mismatch=args.allow_input_mismatch)
        rec["inputs"] = [str(v.source) for v in vols]
        rec["input_hashes"] = [volume_hash(v) for v in vols]
        methods: dict[str, str] = {}
        flags = input_flags(vols, phase=case.phase, methods=methods)
        if flags:  # e.g. a NIfTI header read by the rule for inconsistent headers: outputs on that grid
            rec["qc_flags"] = flags
            rec["methods"] = methods
        pred = predict(seg, vols, probabilities=args.probabilities, fractional=args.dicom_fractional)
        qc: list[dict[str, Any]] = []
        rows = scan_rows(pred.labels, vols[0], label_names=model.labels, regions=model.regions, phase=case.phase,
                         intervals=pred.volume_intervals, qc=qc, intensity=case.pair is None)
        base = target.name[: -len("_labels" + _split_name(target)[1])]

        def write_dicom(*, cardiac: dict[str, Any] | None = None, lv_label: int | None = None):
            return write_case_dicom(
                pred.labels, first_path, vols[0], seg_path=target.with_name(f"{base}_seg.dcm"),
                sr_path=target.with_name(f"{base}_sr.dcm"), rows=rows, phase=case.phase, label_names=model.labels,
                regions=model.regions, model_name=model.name, weights_sha256=model.sha256,
                spec_sha256=model.spec_sha256, cardiac=cardiac, lv_label=lv_label,
                include_identifiers=args.include_identifiers, qc_flags=(rec.get("qc_flags") or []) + qc,
                fractional=(seg, pred.probabilities) if args.dicom_fractional else None)

        out = write_volume(pred.labels, target)
        written[target] = name
        rec["outputs"] = [str(out)]
        extra = ""
        try:
            if args.probabilities:
                pout = write_volume(pred.probabilities, output_name(first, out_dir, "probabilities", stem=out_stem))
                rec["outputs"].append(str(pout))
                extra = f" + {pout}"
            if later is not None:  # measured (and its SEG/SR written) with the other phase
                later.append((case, rec, (pred, write_dicom)))
                extra += " (SEG/SR once both phases are segmented)" if args.dicom else ""
            elif args.dicom:
                dcm, note = write_dicom()
                rec["outputs"] += [str(p) for p in dcm]
                extra += f" + {', '.join(p.name for p in dcm)}" if dcm else f" ({note})"
                if note:
                    rec["dicom_note"] = note
        except BaseException:  # a case is written whole or not at all
            for f in rec.pop("outputs"):
                Path(f).unlink(missing_ok=True)
            written.pop(target, None)
            raise
        info = pred.info
        rec["volumes"] = rows  # the volume rows of medcnn run's volumes.csv for this scan
        if qc:
            rec["qc_flags"] = rec.get("qc_flags", []) + qc
        rec.update(status="ok", tta_axes=info.get("tta_axes"), n_windows=info.get("n_windows"),
                   threads=info.get("threads"), backend=info.get("backend"),
                   seconds=round(time.perf_counter() - t0, 3),
                   timings_s={k: round(float(v), 4) for k, v in (info.get("timings_s") or {}).items()})
        tta = f", TTA mirror axes {info['tta_axes']}" if info.get("tta_axes") else ""
        n_threads = (info.get("threads") or {}).get("threads")
        threads = f", {n_threads} thread(s)" if n_threads and info["device"] == "cpu" else ""
        used = (info.get("backend") or {}).get("used", "torch")
        threads += f", {used}" if used != "torch" else ""
        print(f"ok {name} -> {out}{extra} ({info.get('n_windows')} windows, {info['device']} "
              f"{info['precision']}{threads}{tta}, {time.perf_counter() - t0:.1f} s)")
        return 0, 0
    except MedcnnError as exc:
        msg = str(exc)  # typed errors already start with the file name; don't repeat it
        rec.update(status="error", error_type=type(exc).__name__, error=msg)
        print(f"medcnn segment: error: {msg if msg.startswith(str(name)) else f'{name}: {msg}'}",
              file=sys.stderr)
        return 1, 0
    except (KeyboardInterrupt, SystemExit):
        rec.update(status="interrupted")
        raise
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
        rec.update(status="error", error_type=type(exc).__name__, error=f"internal error: {exc}")
        print(f"medcnn segment: internal error: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1, 1
