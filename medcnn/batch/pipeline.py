"""One case pipeline: what ``medcnn segment`` and ``medcnn run`` both do with a case.

Predicting a scan, naming and writing its label map, measuring its label volume rows (with
reference volumes, Dice, volume intervals and intensity statistics), and writing its DICOM SEG
+ SR live here, once. The two commands only orchestrate: ``segment`` writes into one flat
folder, prints a line per case and records ``segment_provenance.json``; ``run`` writes
``cases/<id>/``, resumes, adds cardiac / tumour measurements and figures and writes the batch
report (:mod:`medcnn.batch.runner`). For the same scan and flags both write the same label map,
the same volume rows and the same SEG and SR (``tests/test_case_pipeline.py``).

Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import MedcnnError

__all__ = [
    "cardiac_labels_from_names",
    "cardiac_row",
    "label_suffix",
    "read_channels",
    "input_flags",
    "predict",
    "volume_rows",
    "scan_rows",
    "dicom_volumes",
    "fractional_segments",
    "write_case_dicom",
    "INTERVAL_KEYS",
    "REFERENCE_BINARISED",
    "intervals_by_label",
    "table_rows",
]

#: Interval columns copied from the prediction into each volume row.
INTERVAL_KEYS = ("volume_low_ml", "volume_high_ml", "volume_soft_ml", "volume_prob_low_ml", "volume_prob_high_ml",
                 "volume_tta_min_ml", "volume_tta_max_ml")

#: How a reference with several labels is compared with a one-foreground-label model.
REFERENCE_BINARISED = ("the model has one foreground label and the reference map has other label values, so "
                       "the reference was binarised (every non-zero reference label counts as that label) before "
                       "reference volumes and Dice were computed")


def label_suffix(path: str | Path) -> str:
    """File suffix of the label map written for the input ``path``: the input's own format
    (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``); a detached header (``.nhdr``/``.mhd``) gives
    one self-contained file (``.nrrd``/``.mha``); DICOM folders and anything else ``.nii.gz``."""
    from medcnn.io._common import SUPPORTED_SUFFIXES, suffix_of

    p = Path(path)
    if p.is_dir():
        return ".nii.gz"  # DICOM in, NIfTI out
    sfx = suffix_of(p)
    return {".nhdr": ".nrrd", ".mhd": ".mha"}.get(sfx, sfx if sfx in SUPPORTED_SUFFIXES else ".nii.gz")


def read_channels(paths: Sequence[str | Path], *, series: str | None = None) -> list[Any]:
    """The input volumes of one scan: one image (3D scan or cine series ``(T, I, J, K)``), or
    the channel images of a multi-channel model in its channel order (3D, on one grid, 1e-3
    mm). ``series``: which series of a DICOM folder holding several. Raises
    ``DimensionError`` for a 4D multi-channel image (each channel is its own file) or a 4D
    channel of a multi-channel scan, ``GeometryMismatchError`` for channels on different grids.
    """
    from medcnn.errors import DimensionError
    from medcnn.io import read_volume

    vols = []
    for path in paths:
        v = read_volume(path, series=series, require_3d=len(paths) > 1)
        if v.leading_axis == "channel":
            raise DimensionError.expected("a 3D scan or a cine series", f"a {v.shape[0]}-channel 4D image",
                                          path=path, hint="list each channel in its own manifest column")
        vols.append(v)
    for v in vols[1:]:
        vols[0].geometry.check_matches(v.geometry, what="input channels", atol_mm=1e-3)
    return vols


def predict(seg: Any, channels: Sequence[Any], *, probabilities: bool = False, fractional: bool = False) -> Any:
    """``seg.predict`` of one scan (a single volume, or the channel volumes of a multi-channel
    model) with volume intervals (uint8 probabilities on the model grid, cheap) and, with
    ``probabilities``, the class probabilities ``(C, I, J, K)`` float32 on the input grid;
    ``fractional`` (``--dicom-fractional``) asks for them only where a SEG can be written (a
    3D scan; a cine series gets none, and no SEG). Raises ``GeometryMismatchError`` should
    the labels not lie on the input's grid (1e-3 mm)."""
    inp = channels[0] if len(channels) == 1 else list(channels)
    want = probabilities or (fractional and channels[0].leading_axis is None)
    pred = seg.predict(inp, volume_intervals=True, return_probabilities=want)
    labels, image = pred.labels, channels[0]
    if labels.geometry.differences(image.geometry, atol_mm=1e-3) or labels.shape[-3:] != image.shape[-3:]:
        from medcnn.errors import GeometryMismatchError

        raise GeometryMismatchError(f"segmenter returned labels on grid {labels.geometry} instead of the input "
                                    f"grid {image.geometry}", path=image.source)
    return pred


def input_flags(volumes: Sequence[Any], *, phase: str | None = None, methods: dict[str, str]) -> list[dict[str, Any]]:
    """QC flags of one scan's input volumes (channels, and a reference: e.g.
    ``NIFTI_HEADER_INCONSISTENT``), each with ``phase``; the rule each flagged input was read
    by goes into ``methods`` (``input_<code>``)."""
    from medcnn.io import input_qc_flags, input_rules

    flags = input_qc_flags(list(volumes), phase=phase)
    for code, rule in input_rules(list(volumes)).items():
        methods[f"input_{code.lower()}"] = (f"{rule}. Label maps are written on this resolved grid, with a "
                                            "consistent header (sform = qform, pixdim = their axis lengths)"
                                            if code.startswith("NIFTI") else rule)
    return flags


def intervals_by_label(intervals: Any, frame: int | None = None) -> dict[int, dict[str, Any]]:
    """``{label: interval row}`` of a prediction (one cine frame when ``frame`` is given)."""
    return {int(r["label"]): r for r in intervals or [] if frame is None or r.get("frame") == frame}


def table_rows(df) -> list[dict[str, Any]]:
    """The rows of a pandas table as JSON-ready dicts."""
    from medcnn.report.tables import jsonable

    return [jsonable(r) for r in df.to_dict(orient="records")]


def _dice(pred: np.ndarray, ref: np.ndarray, label: int | Sequence[int]) -> float | None:
    """Dice of one label, or of the union of several (a region)."""
    if isinstance(label, (int, np.integer)):
        a, b = pred == label, ref == label
    else:
        a, b = np.isin(pred, list(label)), np.isin(ref, list(label))
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def volume_rows(labels: Any, *, label_names: Mapping[int, str], regions: Mapping[str, Sequence[int]] | None,
                phase: str | None, frame: int | None, reference: Any = None, qc: list, methods: dict | None = None,
                intervals: Mapping[int, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Label volume rows (``volume_ml`` in mL) of one 3D label map ``labels`` (a label
    ``Volume``): every label of ``label_names`` and every label present, then one row per
    region (``label`` the member labels joined by ``+``). With a ``reference`` label map on
    the same grid: reference volume, difference (mL) and Dice per row (a grid mismatch
    becomes a ``REFERENCE_GRID_DIFFERS`` entry of ``qc``); ``intervals`` (``{label: row}``
    from the prediction) adds the volume interval columns (mL)."""
    from medcnn.measure import label_volumes

    label_set = sorted(v for v in label_names if v != 0)
    present = sorted(int(v) for v in np.unique(labels.array) if v != 0)
    wanted = sorted(set(label_set) | set(present))
    regions = dict(regions or {})
    rows = table_rows(label_volumes(labels, label_names=label_names, labels=wanted, regions=regions))
    ref_by_label: dict[Any, float] = {}
    ref_arr = None
    if reference is not None:
        try:
            labels.geometry.check_matches(reference.geometry, what="label map and reference", atol_mm=1e-3)
            ref_arr = np.asarray(reference.array)
        except MedcnnError as exc:
            qc.append({"code": "REFERENCE_GRID_DIFFERS", "message": str(exc), "phase": phase})
        if ref_arr is not None and len(label_set) == 1:
            ref_values = {int(v) for v in np.unique(ref_arr) if v != 0}
            if ref_values - set(label_set):
                ref_arr = (ref_arr > 0).astype(np.uint8) * np.uint8(label_set[0])
                reference = reference.with_array(ref_arr, kind="label")
                if methods is not None:
                    methods["reference"] = REFERENCE_BINARISED
        if ref_arr is not None:
            ref_rows = label_volumes(reference, label_names=label_names,
                                     labels=sorted(set(wanted) | {int(v) for v in np.unique(ref_arr) if v != 0}),
                                     regions=regions)
            ref_by_label = dict(zip(ref_rows["label"].tolist(), ref_rows["volume_ml"].tolist()))
            extras = sorted(k for k in ref_by_label if isinstance(k, (int, np.integer)) and k not in wanted)
            n_labels = len(rows) - len(regions)
            for extra in extras:  # before the region rows
                rows.insert(n_labels, {"label": extra, "label_name": label_names.get(extra, f"label_{extra}"),
                                       "voxel_count": 0, "voxel_volume_mm3": float(np.prod(labels.spacing)),
                                       "volume_ml": 0.0, "method": rows[0]["method"] if rows else ""})
                n_labels += 1
    out = []
    for r in rows:
        r = {"phase": phase, "frame": frame, **r}
        region = isinstance(r["label"], str)  # a region row: label "1+2+4", label_name its name
        iv = None if region else (intervals or {}).get(int(r["label"]))
        if iv is not None:
            r.update({k: iv.get(k) for k in INTERVAL_KEYS})
            r["interval_method"] = "see methods: volume_interval"
        if ref_arr is not None:
            lab = regions[r["label_name"]] if region else int(r["label"])
            r["reference_volume_ml"] = float(ref_by_label.get(r["label"] if region else lab, 0.0))
            r["volume_difference_ml"] = float(r["volume_ml"]) - r["reference_volume_ml"]
            r["dice"] = _dice(np.asarray(labels.array), ref_arr, lab)
        out.append(r)
    return out


def scan_rows(labels: Any, image: Any, *, label_names: Mapping[int, str],
              regions: Mapping[str, Sequence[int]] | None, phase: str | None, intervals: Any,
              reference: Any = None, qc: list, methods: dict | None = None,
              intensity: bool = True) -> list[dict[str, Any]]:
    """The volume rows of one predicted scan, as both commands report them: a cine label map
    ``(T, I, J, K)`` gives the rows of every frame (``phase`` ``frame N``); a 3D one its rows
    (:func:`volume_rows`, with the ``reference``) plus the intensity statistics of ``image``
    (the first channel) inside each label and region
    (:func:`medcnn.measure.intensity.add_intensity_columns`; not with ``intensity=False``: the
    phases of an ED/ES pair, whose rows ``medcnn run`` reports without them). ``intervals``: the
    prediction's volume interval rows."""
    if labels.leading_axis == "time":
        rows: list[dict[str, Any]] = []
        for t in range(labels.shape[0]):
            rows += volume_rows(labels.frame(t), label_names=label_names, regions=regions, phase=f"frame {t}",
                                frame=t, reference=None, qc=qc, intervals=intervals_by_label(intervals, t))
        return rows
    from medcnn.measure.intensity import add_intensity_columns

    rows = volume_rows(labels, label_names=label_names, regions=regions, phase=phase, frame=None,
                       reference=reference, qc=qc, methods=methods, intervals=intervals_by_label(intervals))
    if intensity:
        add_intensity_columns(rows, image, labels)
    return rows


def dicom_volumes(rows: Sequence[Mapping[str, Any]], *, phase: str | None,
                  regions: Mapping[str, Sequence[int]] | None) -> dict[Any, float]:
    """``{label value: mL}`` and ``{region name: mL}`` of one scan's volume rows (``phase``),
    as the SR reports them: label rows by value, region rows (their label a string such as
    ``"1+2+4"``, or ``"4"`` for a one-label region) by name."""
    mine = [r for r in rows if r.get("phase") == phase]
    out: dict[Any, float] = {int(r["label"]): float(r["volume_ml"]) for r in mine
                             if not isinstance(r.get("label"), str) and str(r.get("label", "")).isdigit()}
    out.update({r["label_name"]: float(r["volume_ml"]) for r in mine
                if r.get("label_name") in (regions or {}) and isinstance(r.get("label"), str)})
    return out


def fractional_segments(seg: Any, probabilities: Any, volumes_ml: Mapping[Any, float],
                        label_names: Mapping[int, str]) -> tuple[dict[int, np.ndarray], dict[int, str],
                                                                 dict[Any, float]]:
    """What a FRACTIONAL SEG of a prediction holds: ``(fractions, names, volumes)``.

    ``probabilities``: the prediction's class probabilities ``Volume`` ``(C, I, J, K)``;
    ``fractions``: ``{label value: (I, J, K) probability}`` (softmax channel ``c`` → label ``c``;
    sigmoid channels → the label they are painted as); a model with region channels has one
    segment per region channel, named after the region, and its SR reports the regions' volumes.
    """
    probs = np.asarray(probabilities.array)
    fractions = {v: probs[c] for c, v in seg._foreground_channels(probs.shape[0])}
    names = {k: v for k, v in label_names.items() if k != 0}
    volumes = dict(volumes_ml)
    if seg.regions is not None and seg.regions.has_channels:  # a region channel's fraction is its region's
        names = {v: seg.regions.channels[c] for c, v in seg.regions.paint()}
        volumes = {v: volumes_ml[n] for v, n in names.items()}
    return fractions, names, volumes


def cardiac_labels_from_names(names: Mapping[int, str]):
    """:class:`medcnn.measure.CardiacLabels` from a bundle's label names.

    ``myo`` in a name -> LV myocardium; ``RV`` / ``right`` -> RV blood pool; another name
    with ``LV``, ``left``, ``blood`` or ``cavity`` -> LV blood pool. Falls back to the
    default 1 = LV blood pool, 2 = LV myocardium when nothing matches.
    """
    from medcnn.measure import CardiacLabels

    lv = myo = rv = None
    for v, n in sorted(names.items()):
        if v == 0:
            continue
        low = n.lower().replace("_", " ")
        words = low.split()
        if "myo" in low and myo is None:
            myo = v
        elif ("rv" in words or "right" in low) and rv is None:
            rv = v
        elif ("lv" in words or "left" in low or "blood" in low or "cavity" in low) and lv is None:
            lv = v
    if lv is None:
        return CardiacLabels(lv_blood=1, lv_myo=2 if 2 in names else None, rv_blood=None)
    return CardiacLabels(lv_blood=lv, lv_myo=myo, rv_blood=rv)


def cardiac_row(function: Any, intervals_ed: Mapping[int, Mapping[str, Any]],
                intervals_es: Mapping[int, Mapping[str, Any]], cardiac_labels: Any) -> dict[str, Any]:
    """The cardiac row of a case (``cardiac.csv``, ``result.json`` ``cardiac``, the SR's LV
    group): ``function`` (:class:`medcnn.measure.CardiacFunction`: EDV/ESV in mL, EF in %...)
    plus the intervals of EDV/ESV/EF from the ED and ES volume intervals (``{label: row}``)."""
    from medcnn.measure.intervals import cardiac_intervals
    from medcnn.report.tables import jsonable

    row = dict(jsonable(function.to_row()))
    row.update(jsonable(cardiac_intervals(intervals_ed, intervals_es, lv_blood=cardiac_labels.lv_blood,
                                          rv_blood=cardiac_labels.rv_blood)))
    return row


def write_case_dicom(labels: Any, source: str | Path, image: Any, *, seg_path: Path, sr_path: Path,
                     rows: Sequence[Mapping[str, Any]], phase: str | None, label_names: Mapping[int, str],
                     regions: Mapping[str, Sequence[int]] | None, model_name: str, weights_sha256: str | None,
                     spec_sha256: str | None, cardiac: Mapping[str, Any] | None = None,
                     lv_label: int | None = None, include_identifiers: bool = False,
                     qc_flags: Sequence[Mapping[str, Any]] = (),
                     fractional: tuple[Any, Any] | None = None) -> tuple[list[Path], str | None]:
    """The DICOM SEG + SR of one predicted scan (``--dicom`` of both commands).

    ``labels``: the label ``Volume`` on the grid of ``image`` (read from ``source``); ``rows``:
    its volume rows (:func:`scan_rows`), whose ``phase`` rows the SR reports; ``cardiac``:
    the case's cardiac function row (an ED/ES pair), reported in the LV's measurement group;
    ``qc_flags``: the case's QC flags, of which those about its input (``scope`` ``input``,
    e.g. ``INPUT_MODEL_MISMATCH_SUSPECTED``) go into the SR;
    ``fractional``: ``(segmenter, probabilities Volume)`` for a FRACTIONAL SEG of the class
    probabilities (:func:`fractional_segments`). The algorithm is the model's name, version
    its spec SHA-256 (:func:`medcnn.io.dicom_out.algorithm_from_model`).

    Returns:
        ``([seg_path, sr_path], None)``, or ``([], why)`` when the input is not a 3D DICOM
        series (``why`` a one-line note starting with ``--dicom:``).
    """
    from medcnn.io.dicom_out import algorithm_from_model, is_dicom_series, write_dicom_results

    if labels.leading_axis is not None:
        return [], "--dicom: a cine (4D) series: DICOM SEG/SR are written for 3D series only"
    if not is_dicom_series(source, image):
        return [], "--dicom: the input is not a DICOM series: no SEG/SR"
    algorithm = algorithm_from_model(model_name, weights_sha256=weights_sha256, spec_sha256=spec_sha256)
    names = {k: v for k, v in label_names.items() if k != 0}
    volumes = dicom_volumes(rows, phase=phase, regions=regions)
    fractions = None
    if fractional is not None:
        fractions, names, volumes = fractional_segments(fractional[0], fractional[1], volumes, label_names)
        regions = None
    paths = write_dicom_results(labels, source, seg_path, sr_path, label_names=names, volumes_ml=volumes,
                                algorithm=algorithm, cardiac=cardiac, lv_label=lv_label,
                                include_identifiers=include_identifiers, fractions=fractions, regions=regions,
                                qc_flags=[f for f in qc_flags if f.get("scope") == "input"])
    return paths, None
