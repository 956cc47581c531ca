"""Write small synthetic DICOM series for tests (pydicom); geometry is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_series(folder: Path, *, n_slices=5, rows=6, cols=7, spacing=(0.8, 0.9), dz=2.5,
                 origin=(10.0, -20.0, 30.0), row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                 frames=1, series_uid="1.2.3.4", description="synthetic", positions=None,
                 trigger_times=None, patient_name="Doe^Jane", patient_id="PID-12345",
                 start_index=0, shuffle_seed=0) -> np.ndarray:
    """Write a series; returns the pixel array (frames, slices, rows, cols) written.

    ``spacing`` = PixelSpacing (row spacing, column spacing) in mm; positions are LPS mm.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    rng = np.random.default_rng(shuffle_seed)
    pixels = rng.integers(0, 1000, size=(frames, n_slices, rows, cols)).astype(np.uint16)
    if positions is None:
        positions = [np.asarray(origin) + k * dz * normal for k in range(n_slices)]
    order = rng.permutation(frames * n_slices)  # write in shuffled order
    for n in order:
        t, k = divmod(int(n), n_slices)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{start_index + n}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
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
