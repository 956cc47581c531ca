"""Write small synthetic DICOM series for tests (pydicom); geometry is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_series(folder: Path, *, n_slices=5, rows=6, cols=7, spacing=(0.8, 0.9), dz=2.5,
                 origin=(10.0, -20.0, 30.0), row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                 frames=1, series_uid="1.2.3.4", description="synthetic", positions=None,
                 trigger_times=None, patient_name="Doe^Jane", patient_id="PID-12345",
                 start_index=0, shuffle_seed=0, study_uid="1.2.3.9", frame_uid="1.2.3.8",
                 modality="MR", pixels=None) -> np.ndarray:
    """Write a series; returns the pixel array (frames, slices, rows, cols) written
    (``pixels``, uint16 of that shape, or random values).

    ``spacing`` = PixelSpacing (row spacing, column spacing) in mm; positions are LPS mm.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    rng = np.random.default_rng(shuffle_seed)
    noise = rng.integers(0, 1000, size=(frames, n_slices, rows, cols)).astype(np.uint16)
    pixels = noise if pixels is None else np.asarray(pixels, np.uint16).reshape(frames, n_slices, rows, cols)
    if positions is None:
        positions = [np.asarray(origin) + k * dz * normal for k in range(n_slices)]
    order = rng.permutation(frames * n_slices)  # write in shuffled order
    for n in order:
        t, k = divmod(int(n), n_slices)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{start_index + n}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = 3
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200102", "101010", "S1", "ACC-777"
        ds.ReferringPhysicianName, ds.PatientSex = "Ref^Doc", "F"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.InstanceNumber = k * frames + t + 1
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
        ds.SliceThickness = 99.0  # deliberately wrong: spacing must come from positions
        if frames > 1:
            ds.TriggerTime = float(trigger_times[t] if trigger_times is not None else 40.0 * t + 5)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = pixels[t, k].tobytes()
        ds.save_as(str(folder / f"im{start_index + n}.dcm"), enforce_file_format=True)
    return pixels


def write_non_image(folder: Path, name="sr.dcm") -> None:
    """A DICOM object without pixel data or geometry (e.g. a structured report)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = "9.9.9"
    ds.save_as(str(folder / name), enforce_file_format=True)


def voxel_to_lps(ijk, *, spacing=(0.8, 0.9), dz=2.5, origin=(10.0, -20.0, 30.0), row_dir=(1.0, 0.0, 0.0),
                 col_dir=(0.0, 1.0, 0.0)) -> np.ndarray:
    """LPS mm of (fractional) voxel indices ``(N, 3)`` = (column i, row j, slice k) of a series
    written by :func:`write_series` with the same arguments (computed from the DICOM
    definition, independently of medcnn's reader)."""
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    ijk = np.atleast_2d(np.asarray(ijk, float))
    return (np.asarray(origin) + np.outer(ijk[:, 0] * spacing[1], row_dir) + np.outer(ijk[:, 1] * spacing[0], col_dir)
            + np.outer(ijk[:, 2] * dz, normal))


def write_rtstruct(path: Path, rois, *, series_uid="1.2.3.4", study_uid="1.2.3.9", frame_uid="1.2.3.8",
                   geometric_type="CLOSED_PLANAR") -> Path:
    """An RT Structure Set: ``rois`` = ``{name: [contour (N, 3) LPS mm, ...]}`` (an empty list
    gives an ROI without contours)."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-12345"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StructureSetLabel = "synthetic"
    se = Dataset()
    se.SeriesInstanceUID = series_uid
    st = Dataset()
    st.RTReferencedSeriesSequence = Sequence([se])
    fr = Dataset()
    fr.FrameOfReferenceUID = frame_uid
    fr.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])
    ssr, rcs = [], []
    for n, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID = n, name, frame_uid
        ssr.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = n
        items = []
        for c in contours:
            c = np.asarray(c, float)
            item = Dataset()
            item.ContourGeometricType = geometric_type
            item.NumberOfContourPoints = len(c)
            item.ContourData = [f"{v:.6f}" for v in c.ravel()]
            items.append(item)
        if items:
            rc.ContourSequence = Sequence(items)
        rcs.append(rc)
    ds.StructureSetROISequence = Sequence(ssr)
    ds.ROIContourSequence = Sequence(rcs)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def documented_pseudonymous_uid(uid: str) -> str:
    """The replacement UID docs/dicom.md specifies for a source UID (computed here from the
    documentation, independently of medcnn.io.deid)."""
    import hashlib

    return f"2.25.{int.from_bytes(hashlib.sha256(b'medcnn pseudonymous UID v1' + bytes(1) + uid.encode()).digest()[:16], 'big')}"


# --- a source series carrying every attribute of PS3.15 Table E.1-1 ------------------------------

_NUMERIC_VRS = ("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT")
ANNEX_E_CSV = Path(__file__).resolve().parents[1] / "medcnn" / "io" / "data" / "ps3.15_table_E.1-1.csv"
#: set by write_series itself (distinctive per test through its arguments)
_FACTORY_KEYWORDS = {"SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "PatientName",
                     "PatientID"}


def annex_e_rows() -> list[dict]:
    """The rows of the shipped PS3.15 Table E.1-1 (plain csv parsing, not medcnn's loader)."""
    import csv

    lines = [ln for ln in ANNEX_E_CSV.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _distinctive(i: int, vr: str) -> str | None:
    """A value unique to attribute number ``i`` that is valid for ``vr`` (None: VR not textual)."""
    import datetime

    day = (datetime.date(1931, 1, 1) + datetime.timedelta(days=i)).strftime("%Y%m%d")
    values = {"AE": f"ZQ{i:04d}AE", "AS": f"{100 + i % 800:03d}D", "CS": f"ZQ{i:04d}CS", "DA": day,
              "DT": f"{day}121314.{i:06d}", "TM": f"{i % 24:02d}{i % 60:02d}{(7 * i) % 60:02d}.{i:06d}",
              "DS": f"9753.{i:04d}", "IS": f"97{i:05d}", "LO": f"ZQ{i:04d}LO secret", "LT": f"ZQ{i:04d}LT secret",
              "SH": f"ZQ{i:04d}SH secret", "ST": f"ZQ{i:04d}ST secret", "UC": f"ZQ{i:04d}UC secret",
              "UT": f"ZQ{i:04d}UT secret", "PN": f"Zq{i:04d}^Secret", "UI": f"1.3.6.1.4.1.99999.{i}.7",
              "UR": f"http://zq{i:04d}.example.org"}
    return values.get(vr)


def profile_attribute_values() -> tuple[dict[int, tuple[str, object]], list[bytes]]:
    """``{tag: (VR, value)}`` for every concrete attribute of Table E.1-1 with a textual VR or a
    sequence (items with a code, a nested person name, institution and UID), and the list of
    every distinctive value written (bytes, for searching outputs)."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset

    values: dict[int, tuple[str, object]] = {}
    tokens: list[bytes] = []
    for i, row in enumerate(annex_e_rows()):
        if not row["keyword"] or row["keyword"] in _FACTORY_KEYWORDS:
            continue
        tag = int(row["tag"], 16)
        if tag >> 16 in (0x0000, 0x0002, 0x0004):  # command, file meta, directory: not in a dataset body
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ":
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = f"ZQ{i:04d}CV", "99ZQ"
            item.CodeMeaning = f"ZQ{i:04d} nested code meaning"
            item.InstitutionName = f"ZQ{i:04d} nested institution"
            item.PersonName = f"Zq{i:04d}^Nested"
            item.ReferencedSOPInstanceUID = f"1.3.6.1.4.1.99999.{i}.8"
            values[tag] = (vr, [item])
            tokens += [item.CodeValue.encode(), item.CodeMeaning.encode(), item.InstitutionName.encode(),
                       str(item.PersonName).encode(), item.ReferencedSOPInstanceUID.encode()]
            continue
        value = _distinctive(i, vr)
        if value is None:
            continue
        values[tag] = (vr, value)
        tokens.append(value.encode())
    return values, tokens


def write_profile_series(folder: Path, **kwargs) -> list[bytes]:
    """:func:`write_series` whose every image also carries every attribute of PS3.15 Table E.1-1
    (textual VRs and sequences, with nested identifying values), a private block and a
    de-identification claim of its own; returns every distinctive value written (incl. UIDs)."""
    import pydicom

    study_uid, frame_uid = "1.3.6.1.4.1.99999.1.1", "1.3.6.1.4.1.99999.1.2"
    series_uid = kwargs.pop("series_uid", "1.3.6.1.4.1.99999.1.3")
    write_series(folder, study_uid=study_uid, frame_uid=frame_uid, series_uid=series_uid,
                 patient_name="Zqpatient^Privacy", patient_id="ZQPID-998877", **kwargs)
    values, tokens = profile_attribute_values()
    tokens += [study_uid.encode(), frame_uid.encode(), series_uid.encode(), b"Zqpatient^Privacy", b"ZQPID-998877",
               b"ZQ PRIVATE CREATOR", b"ZQ private value", b"ZQ source deidentification claim"]
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(f))
        tokens.append(str(ds.SOPInstanceUID).encode())
        for tag, (vr, value) in values.items():
            ds.add_new(tag, vr, value)
        ds.PatientSex = "O"  # enumerated (M, F, O): not distinctive, emptied all the same
        ds.Manufacturer = "ZQ Scanner Maker"  # highdicom then describes the source equipment (with its institution)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "ZQ source deidentification claim"
        block = ds.private_block(0x0029, "ZQ PRIVATE CREATOR", create=True)
        block.add_new(0x10, "LO", "ZQ private value")
        ds.save_as(str(f), enforce_file_format=True)
    return tokens


def pydicom_testfile_series(folder: Path, name: str, *, n_slices: int = 3) -> list[bytes]:
    """A series of ``n_slices`` images made from one of pydicom's own test files (``CT_small.dcm``,
    ``MR_small.dcm``; shipped in the pydicom wheel) with its real header -- private tags
    included -- changing only SOP Instance UID, InstanceNumber and ImagePositionPatient.
    Returns the identifying values of that header: the value of every attribute Table E.1-1
    does not let the Basic Profile keep, and of every private attribute, of at least 4
    characters (recursively)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file(name, download=False))
    folder.mkdir(parents=True, exist_ok=True)
    iop = np.asarray([float(v) for v in src.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dz = float(getattr(src, "SliceThickness", 0) or 0) or 2.0
    for k in range(n_slices):
        ds = pydicom.dcmread(get_testdata_file(name, download=False))
        uid = str(src.SOPInstanceUID) if k == 0 else f"{src.SOPInstanceUID}.{k}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) + k * dz * n for v, n in zip(src.ImagePositionPatient, normal)]
        ds.save_as(str(folder / f"{k}.dcm"))
    actions = {int(r["tag"], 16): r["basic_profile"] for r in annex_e_rows() if r["keyword"]}
    secrets: set[bytes] = set()

    def collect(ds) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    collect(item)
                continue
            if not (elem.tag.is_private or actions.get(int(elem.tag), "K") != "K") or elem.VR in _NUMERIC_VRS:
                continue
            for v in (elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]):
                text = (v.decode("latin-1") if isinstance(v, bytes) else str(v if v is not None else "")).strip()
                # names, IDs, texts, UIDs, dates and times; not bare numbers (private DS-like values)
                if len(text) >= 4 and text.isprintable() and (elem.VR in ("UI", "DA", "TM", "DT")
                                                                or any(c.isalpha() for c in text)):
                    secrets.add(text.encode("latin-1"))

    for f in folder.iterdir():
        collect(pydicom.dcmread(str(f), stop_before_pixels=True))
    return sorted(secrets)
