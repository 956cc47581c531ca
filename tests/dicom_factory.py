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
