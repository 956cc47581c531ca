"""DICOM results: Segmentation (SEG) of a label map and a TID 1500 measurement report (SR).

Both are written with highdicom on the grid of, and referencing, the DICOM image series
the label map was computed from, with new Series/SOP Instance UIDs. By default they are
de-identified by the DICOM Basic Application Level Confidentiality Profile
(:mod:`medcnn.io.deid`): only an allow-list of source attributes is used, the source's UIDs
(study, frame of reference, referenced series and instances) are replaced consistently by
:func:`medcnn.io.deid.pseudonymous_uid`, and ``PatientIdentityRemoved`` is ``YES``. With
``include_identifiers=True`` the patient and study modules and all UIDs of the source are
kept (results going back into the PACS) -- see docs/dicom.md.

Segments: one per non-zero label value, numbered 1..N in ascending label order (DICOM
binary SEGs need consecutive numbers; with labels 1..N the numbers equal the labels); each
segment's Segment Description records its label value, which :func:`medcnn.io.read_labels`
restores. With ``regions`` (nested unions of labels, e.g. BraTS whole tumour ⊇ tumour
core ⊇ enhancing tumour) one more segment per region follows the label segments: DICOM
binary SEGs allow overlapping segments (each segment has its own frames); their Segment
Description ``"medcnn region of labels 1+2+4"`` lets medcnn's reader leave them out of the
label map.
Coded concepts come from :data:`SEGMENT_CODES` (SNOMED CT) by label name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import DimensionError, DicomSeriesError, InvalidLabelError
from medcnn.io._seg import LABEL_VALUE_PREFIX, REGION_PREFIX
from medcnn.volume import Volume

__all__ = ["AlgorithmInfo", "SEGMENT_CODES", "CARDIAC_SR_CODES", "segment_codes", "write_dicom_seg",
           "write_dicom_sr", "write_dicom_results", "algorithm_from_model", "is_dicom_series", "QC_CODING_SCHEME"]

#: label name (lower case, ``_``/``-`` read as spaces) -> (category, type) as
#: ``(code value, scheme, meaning)`` pairs; SNOMED CT (``SCT``).
_ANAT = ("91723000", "SCT", "Anatomical Structure")
_ABNORMAL = ("49755003", "SCT", "Morphologically Abnormal Structure")
SEGMENT_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "lv blood pool": (_ANAT, ("87878005", "SCT", "Left ventricle")),
    "lv myocardium": (_ANAT, ("49848007", "SCT", "Left ventricle myocardium")),
    "rv blood pool": (_ANAT, ("53085002", "SCT", "Right ventricle")),
    "whole tumour": (_ABNORMAL, ("108369006", "SCT", "Neoplasm")),
    "tumour": (_ABNORMAL, ("108369006", "SCT", "Neoplasm")),
    "tumour core": (_ABNORMAL, ("108369006", "SCT", "Neoplasm")),
    "enhancing tumour": (_ABNORMAL, ("108369006", "SCT", "Neoplasm")),
    "necrosis": (_ABNORMAL, ("6574001", "SCT", "Necrosis")),
    "oedema": (_ABNORMAL, ("79654002", "SCT", "Edema")),
    "edema": (_ABNORMAL, ("79654002", "SCT", "Edema")),
    "anterior": (_ANAT, ("5366008", "SCT", "Hippocampus")),
    "posterior": (_ANAT, ("5366008", "SCT", "Hippocampus")),
    "hippocampus": (_ANAT, ("5366008", "SCT", "Hippocampus")),
}
#: Used for label names without an entry: category and type "Tissue".
GENERIC_CODE = (("85756007", "SCT", "Tissue"), ("85756007", "SCT", "Tissue"))

_MANUFACTURER = "medcnn"


@dataclass(frozen=True)
class AlgorithmInfo:
    """The model that made a segmentation (DICOM Segment Algorithm Identification).

    Attributes:
        name: model name; version: its version; parameters: e.g. ``{"weights_sha256": ...}``.
    """

    name: str
    version: str
    parameters: Mapping[str, str] = field(default_factory=dict)



#: coding scheme (private, DICOM PS3.16 "99" prefix) of the QC flag codes in the SR
QC_CODING_SCHEME = "99MEDCNN"

def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def segment_codes(name: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """``(category, type)`` coded concepts ``(value, scheme, meaning)`` for a label name
    (American spellings read as British: "tumor" as "tumour", "edema" as "oedema")."""
    key = _norm(name)
    return SEGMENT_CODES.get(key) or SEGMENT_CODES.get(key.replace("tumor", "tumour"), GENERIC_CODE)


def _source_series(source: str | Path, labels: Volume) -> tuple[list[Any], Volume]:
    """Headers of the source series (the one on ``labels``' grid when the folder holds several)
    sorted as medcnn's K axis, and the series Volume."""
    from medcnn.io import list_dicom_series, read_volume
    from medcnn.io._dicom import _read_headers

    folder = Path(source)
    if not folder.is_dir():
        raise DicomSeriesError.expected("the DICOM image series folder the label map was computed from",
                                        "a file" if folder.exists() else "nothing at that path", path=folder)
    uids = [s["uid"] for s in list_dicom_series(folder)]
    vol = None
    for uid in uids or [None]:
        vol = read_volume(folder, series=uid if len(uids) > 1 else None)
        if vol.leading_axis is not None:
            raise DimensionError.expected("a 3D DICOM series for SEG/SR output",
                                          f"a cine series with {vol.array.shape[0]} frames", path=folder,
                                          hint="cine (4D) results are written as NIfTI only")
        if vol.geometry.isclose(labels.geometry, atol_mm=1e-3):
            break
    assert vol is not None
    vol.geometry.check_matches(labels.geometry, atol_mm=1e-3, what="label map and DICOM source series")
    chosen = uid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headers, _ = _read_headers(folder)
    dss = [ds for _, ds in headers if chosen is None or str(getattr(ds, "SeriesInstanceUID", "")) == chosen]
    iop = np.asarray([float(v) for v in dss[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    return dss, vol


def _finish_identity(ds: Any, include_identifiers: bool) -> None:
    """De-identify the written object by the profile (:mod:`medcnn.io.deid`), or, with
    identifiers, drop de-identification claims copied from the source (medcnn did none)."""
    from medcnn.io.deid import apply_confidentiality_profile, remove_deidentification_claims

    if include_identifiers:
        remove_deidentification_claims(ds)
    else:
        apply_confidentiality_profile(ds)


def _atomic_save(ds: Any, out: Path) -> Path:
    from medcnn.io._common import atomic_path

    with atomic_path(out) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return out


def _label_values(labels: Volume, label_names: Mapping[Any, str] | None) -> tuple[list[int], dict[int, str]]:
    arr = np.asarray(labels.array)
    present = [int(v) for v in np.unique(arr) if v != 0]
    names = {int(k): str(v) for k, v in (label_names or {}).items() if int(k) != 0}
    values = sorted(set(present) | set(names))
    return values, {v: names.get(v, f"label {v}") for v in values}


def write_dicom_seg(labels: Volume, source: str | Path, out: str | Path, *,
                    label_names: Mapping[Any, str] | None = None, algorithm: AlgorithmInfo | None = None,
                    include_identifiers: bool = False, sparse: bool = True,
                    series_description: str = "medcnn segmentation",
                    fractions: Mapping[int, np.ndarray] | None = None,
                    regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Write ``labels`` as a binary DICOM SEG referencing the series in ``source`` (a
    FRACTIONAL one of ``fractions`` when given).

    Args:
        labels: label Volume ``(I, J, K)`` on the grid of the source series (checked, 1e-3 mm).
        source: folder of the DICOM image series the labels were computed from.
        out: the ``.dcm`` file to write (atomically).
        label_names: ``{value: name}`` (default ``labels.meta["label_names"]``).
        algorithm: the model (AUTOMATIC segments); ``None`` = MANUAL segments.
        include_identifiers: copy the patient and study modules and the UIDs of the source
            unchanged; default: de-identified (:mod:`medcnn.io.deid`).
        sparse: leave out empty frames (readers then need the source series for the full grid).
        fractions: ``{label value: (I, J, K) probability in [0, 1]}``: write a FRACTIONAL
            (PROBABILITY, 8-bit) SEG with one segment per entry instead; ``labels`` gives the grid.
        regions: ``{region name: [label values]}``: binary SEGs get one more (overlapping)
            segment per region, the union of its labels, after the label segments.

    Returns:
        ``{"path", "sop_instance_uid", "series_instance_uid", "segments": {number: (value, name)},
        "dataset", "source_datasets"}`` (the source headers as handed to highdicom --
        de-identified unless ``include_identifiers`` -- in slice order); a region's
        ``value`` is its labels joined by ``+`` (``"1+2+4"``, as in the volume tables).
    """
    import highdicom as hd

    from medcnn import __version__

    if labels.leading_axis is not None:
        raise DimensionError.expected("a 3D label map for DICOM SEG", f"a 4D volume of shape {labels.shape}",
                                      path=labels.source)
    out = Path(out)
    dss, _ = _source_series(source, labels)
    if not include_identifiers:  # only the allow-listed, de-identified source attributes reach highdicom
        from medcnn.io.deid import deidentify_source_headers

        dss = [deidentify_source_headers(ds) for ds in dss]
    names_in = label_names if label_names is not None else labels.meta.get("label_names")
    values, names = _label_values(labels, names_in)
    if fractions is not None:
        values = sorted(int(v) for v in fractions if int(v) != 0)
        names = {v: names.get(v, f"label {v}") for v in values}
    if not values:
        raise InvalidLabelError.expected("at least one labelled structure (or a label table) for a DICOM SEG",
                                         "an empty label map without label names", path=labels.source)
    arr = np.asarray(labels.array)
    seg_pixels = np.zeros(arr.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):
        seg_pixels[arr == value] = number
    frames = np.ascontiguousarray(seg_pixels.transpose(2, 1, 0))  # (K, rows = J, cols = I)
    region_sets = {} if fractions is not None else _region_sets(regions, labels.source)
    if region_sets:  # overlapping segments: one binary plane per segment, (K, rows, cols, segments)
        masks = [arr == v for v in values] + [np.isin(arr, m) for m in region_sets.values()]
        frames = np.stack([m.transpose(2, 1, 0) for m in masks], axis=-1).astype(np.uint8)
    if fractions is not None:  # (K, rows, cols, segments)
        frames = np.stack([np.clip(np.asarray(fractions[v], np.float32), 0, 1).transpose(2, 1, 0) for v in values],
                          axis=-1)
    algo = None
    if algorithm is not None:
        algo = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
            version=str(algorithm.version), parameters={str(k): str(v) for k, v in algorithm.parameters.items()}
            or None)
    descriptions = []
    for number, value in enumerate(values, start=1):
        cat, typ = segment_codes(names[value])
        d = hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value][:64],
            segmented_property_category=hd.sr.CodedConcept(*cat), segmented_property_type=hd.sr.CodedConcept(*typ),
            algorithm_type="AUTOMATIC" if algo is not None else "MANUAL", algorithm_identification=algo,
            tracking_uid=hd.UID(), tracking_id=f"{names[value]}"[:64])
        d.SegmentDescription = f"{LABEL_VALUE_PREFIX}{value}"  # read back by medcnn: the label value
        descriptions.append(d)
    region_keys = {}
    for number, (rname, members) in enumerate(region_sets.items(), start=len(values) + 1):
        key = "+".join(map(str, members))
        region_keys[number] = (key, rname)
        cat, typ = segment_codes(rname)
        d = hd.seg.SegmentDescription(
            segment_number=number, segment_label=rname[:64],
            segmented_property_category=hd.sr.CodedConcept(*cat), segmented_property_type=hd.sr.CodedConcept(*typ),
            algorithm_type="AUTOMATIC" if algo is not None else "MANUAL", algorithm_identification=algo,
            tracking_uid=hd.UID(), tracking_id=rname[:64])
        d.SegmentDescription = f"{REGION_PREFIX}{key}"[:64]  # medcnn's reader leaves region segments out
        descriptions.append(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=dss, pixel_array=frames, segmentation_type="FRACTIONAL" if fractions is not None else "BINARY",
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=int(getattr(dss[0], "SeriesNumber", 0) or 0) + 9000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
            manufacturer_model_name=algorithm.name[:64] if algorithm else "medcnn convert",
            software_versions=f"medcnn {__version__}", device_serial_number="0",
            omit_empty_frames=bool(sparse and frames.any()), series_description=series_description)
    _finish_identity(seg, include_identifiers)
    _atomic_save(seg, out)
    return {"path": out, "sop_instance_uid": str(seg.SOPInstanceUID),
            "series_instance_uid": str(seg.SeriesInstanceUID),
            "segments": {**{n: (v, names[v]) for n, v in enumerate(values, start=1)}, **region_keys},
            "dataset": seg, "source_datasets": dss}


def _region_sets(regions: Mapping[str, Sequence[int]] | None, source: Any) -> dict[str, list[int]]:
    from medcnn.regions import check_regions

    return check_regions(regions, path=source) if regions else {}


#: Cardiac measurements of the LV group: (column in medcnn's cardiac table, code, unit).
_ML = ("ml", "UCUM", "milliliter")
CARDIAC_SR_CODES = {
    "lv_edv_ml": (("18026-5", "LN", "Left Ventricular End Diastolic Volume"), _ML),
    "lv_esv_ml": (("18148-7", "LN", "Left Ventricular End Systolic Volume"), _ML),
    "lv_sv_ml": (("90096001", "SCT", "Stroke Volume"), _ML),
    "lv_ef_percent": (("8811-2", "LN", "Left ventricular ejection fraction by MR"), ("%", "UCUM", "percent")),
}


def write_dicom_sr(seg: Mapping[str, Any], out: str | Path, *,
                   volumes_ml: Mapping[int, float], cardiac: Mapping[str, float] | None = None,
                   lv_segment: int | None = None, algorithm: AlgorithmInfo | None = None,
                   include_identifiers: bool = False,
                   qc_flags: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Write a TID 1500 measurement report referencing the SEG written by :func:`write_dicom_seg`.

    Args:
        seg: the dict returned by :func:`write_dicom_seg` (its SEG and source headers are
            the evidence).
        volumes_ml: ``{segment number: volume in mL}``; one measurement group per segment.
        cardiac: optional ``{"lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent"}`` values,
            added to the group of ``lv_segment``.
        qc_flags: QC flags of the case (``{"code", "message"}``, e.g.
            ``INPUT_MODEL_MISMATCH_SUSPECTED``): one more measurement group (TID 1501,
            tracking identifier "medcnn QC flags") with a qualitative evaluation per code:
            concept (121071, DCM, "Finding"), value (code, 99MEDCNN, message up to 64 characters).

    Returns:
        ``{"path", "sop_instance_uid", "dataset"}``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medcnn import __version__

    out = Path(out)
    seg_ds = seg["dataset"]
    dss = list(seg["source_datasets"])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=(algorithm.name if algorithm else "medcnn")[:64],
            manufacturer_name=_MANUFACTURER, model_name=(algorithm.version if algorithm else __version__)[:64]))
    algo_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=str(algorithm.version)) if algorithm else None
    groups = []
    for number, (value, name) in seg["segments"].items():
        if number not in volumes_ml:
            continue
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=float(volumes_ml[number]),
                                          unit=hd.sr.CodedConcept(*_ML), algorithm_id=algo_id)]
        if cardiac and number == lv_segment:
            for key, (code, unit) in CARDIAC_SR_CODES.items():
                v = cardiac.get(key)
                if v is not None and np.isfinite(v):
                    measurements.append(hd.sr.Measurement(name=hd.sr.CodedConcept(*code), value=float(v),
                                                          unit=hd.sr.CodedConcept(*unit), algorithm_id=algo_id))
        cat, typ = segment_codes(name)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"segment {number}: {name}"[:64]),
            referenced_segment=_referenced_segment(seg_ds, number),
            finding_type=hd.sr.CodedConcept(*typ), finding_category=hd.sr.CodedConcept(*cat),
            measurements=measurements))
    flags = {str(f["code"]): str(f.get("message") or f["code"]) for f in qc_flags or ()}
    if flags:  # e.g. an input that may not fit the model: the SR says so too
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="medcnn QC flags"),
            algorithm_id=algo_id,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept("121071", "DCM", "Finding"),
                value=hd.sr.CodedConcept(code, QC_CODING_SCHEME, msg[:64])) for code, msg in flags.items()]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = hd.sr.Comprehensive3DSR(
            evidence=[seg_ds, *dss], content=report[0], series_instance_uid=hd.UID(),
            series_number=int(getattr(seg_ds, "SeriesNumber", 0) or 0) + 1, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=_MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
            series_description="medcnn measurements")
    _finish_identity(sr, include_identifiers)
    _atomic_save(sr, out)
    return {"path": out, "sop_instance_uid": str(sr.SOPInstanceUID), "dataset": sr}


def _referenced_segment(seg_ds: Any, number: int) -> Any:
    """highdicom's ReferencedSegment of segment ``number``; also for a one-segment SEG, where
    highdicom writes the Segment Identification in the shared functional groups and its
    ``from_segmentation`` (which reads only the per-frame groups) fails."""
    import highdicom as hd

    shared = seg_ds.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" not in shared:
        return hd.sr.ReferencedSegment.from_segmentation(seg_ds, number)
    sources: dict[str, str] = {}
    for frame in seg_ds.PerFrameFunctionalGroupsSequence:
        for derivation in getattr(frame, "DerivationImageSequence", []):
            for src in getattr(derivation, "SourceImageSequence", []):
                sources.setdefault(str(src.ReferencedSOPInstanceUID), str(src.ReferencedSOPClassUID))
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg_ds.SOPClassUID), sop_instance_uid=str(seg_ds.SOPInstanceUID), segment_number=number,
        source_images=[hd.sr.SourceImageForSegmentation(cls, uid) for uid, cls in sources.items()])


def algorithm_from_model(name: str, *, weights_sha256: str | None, spec_sha256: str | None) -> AlgorithmInfo:
    """:class:`AlgorithmInfo` of a model bundle: version = first 16 hex digits of its spec
    SHA-256 (weights + every setting that decides predictions); both hashes in full as
    parameters."""
    params = {k: v for k, v in (("weights_sha256", weights_sha256), ("spec_sha256", spec_sha256)) if v}
    return AlgorithmInfo(name=str(name)[:64], version=(spec_sha256 or weights_sha256 or "unknown")[:16],
                         parameters=params)


def is_dicom_series(path: str | Path, volume: Volume) -> bool:
    """True when ``volume`` was read from the DICOM series folder ``path``."""
    return Path(path).is_dir() and volume.meta.get("format") == "dicom"


def write_dicom_results(labels: Volume, source: str | Path, seg_path: str | Path, sr_path: str | Path, *,
                        label_names: Mapping[Any, str] | None, volumes_ml: Mapping[int, float],
                        algorithm: AlgorithmInfo | None = None, cardiac: Mapping[str, float] | None = None,
                        lv_label: int | None = None, include_identifiers: bool = False,
                        fractions: Mapping[int, np.ndarray] | None = None,
                        regions: Mapping[str, Sequence[int]] | None = None,
                        qc_flags: Sequence[Mapping[str, Any]] = ()) -> list[Path]:
    """SEG of ``labels`` and the SR of its measurements (``volumes_ml``: ``{label value: mL}``,
    as in the CSV report, of the label map, plus ``{region name: mL}`` for ``regions``) for one
    DICOM series; both or neither are left on disk. ``fractions``: write a FRACTIONAL SEG;
    ``regions``: one more segment and SR measurement group per region (see
    :func:`write_dicom_seg`); ``qc_flags``: the case's QC flags, in the SR
    (:func:`write_dicom_sr`).

    Returns:
        ``[seg_path, sr_path]``.
    """
    seg = write_dicom_seg(labels, source, seg_path, label_names=label_names, algorithm=algorithm,
                          include_identifiers=include_identifiers, fractions=fractions, regions=regions)
    try:
        by_segment = {n: float(volumes_ml[v]) for n, (v, _) in seg["segments"].items() if v in volumes_ml}
        by_segment.update({n: float(volumes_ml[name]) for n, (v, name) in seg["segments"].items()
                           if isinstance(v, str) and name in volumes_ml})
        lv_segment = next((n for n, (v, _) in seg["segments"].items() if v == lv_label), None)
        write_dicom_sr(seg, sr_path, volumes_ml=by_segment, cardiac=cardiac, lv_segment=lv_segment,
                       algorithm=algorithm, include_identifiers=include_identifiers, qc_flags=qc_flags)
    except BaseException:
        Path(seg_path).unlink(missing_ok=True)
        raise
    return [Path(seg_path), Path(sr_path)]
