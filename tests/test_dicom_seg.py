"""DICOM SEG: label map -> SEG -> read_labels round trips on axial, reversed and oblique
series; independent decoders (highdicom, dcmqi's segimage2itkimage); binary, fractional
and labelmap SEGs with sparse frames; a SEG on another grid is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import documented_pseudonymous_uid, write_series
from medcnn.errors import GeometryMismatchError
from medcnn.io import read_labels, read_volume
from medcnn.io.dicom_out import AlgorithmInfo, write_dicom_seg

pytest.importorskip("highdicom")

GEOMS = {
    "axial": {},
    "reversed": {"dz": -2.5, "origin": (3.0, 4.0, 50.0)},
    "oblique": {"row_dir": (np.cos(0.3), np.sin(0.3), 0.0),
                "col_dir": (-np.sin(0.3) * np.cos(0.5), np.cos(0.3) * np.cos(0.5), np.sin(0.5)),
                "origin": (-5.0, 12.0, -40.0)},
}
NAMES = {1: "lv_blood_pool", 2: "lv_myocardium", 3: "rv_blood_pool"}


def _case(tmp_path: Path, geom: str):
    write_series(tmp_path / "image", n_slices=6, rows=12, cols=14, **GEOMS[geom])
    img = read_volume(tmp_path / "image")
    lab = np.zeros(img.shape, np.uint8)
    lab[2:6, 1:5, 1:3] = 1
    lab[6:10, 3:9, 2:5] = 2
    lab[11, 10, 4] = 3
    return img, img.with_array(lab, kind="label", leading_axis=None)


def _sorted_instances(folder: Path) -> list[str]:
    """SOP instance UIDs in slice order along the normal (independent of medcnn's reader)."""
    import pydicom

    dss = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in folder.iterdir()]
    n = np.cross(*np.reshape([float(v) for v in dss[0].ImageOrientationPatient], (2, 3)))
    dss.sort(key=lambda d: float(np.dot(n, [float(v) for v in d.ImagePositionPatient])))
    return [str(d.SOPInstanceUID) for d in dss]


@pytest.mark.parametrize("geom", list(GEOMS))
@pytest.mark.parametrize("sparse", [True, False])
def test_round_trip_identical(tmp_path, geom, sparse):
    img, labels = _case(tmp_path, geom)
    info = write_dicom_seg(labels, tmp_path / "image", tmp_path / "out" / "seg.dcm", label_names=NAMES,
                           sparse=sparse, algorithm=AlgorithmInfo("m", "1", {"weights_sha256": "0" * 64}))
    assert info["segments"] == {1: (1, "lv_blood_pool"), 2: (2, "lv_myocardium"), 3: (3, "rv_blood_pool")}
    back = read_labels(tmp_path / "out" / "seg.dcm", reference=tmp_path / "image")
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.geometry.isclose(img.geometry)
    assert back.meta["label_names"] == {str(k): v for k, v in NAMES.items()}
    own = read_labels(tmp_path / "out" / "seg.dcm")  # grid from the SEG alone
    if sparse:  # empty slices 0 and 5 left out: the SEG's own grid is slices 1..4
        np.testing.assert_array_equal(own.array, labels.array[:, :, 1:5])
        assert own.geometry.isclose(img.geometry.crop((0, 0, 1), (14, 12, 5)))
    else:
        np.testing.assert_array_equal(own.array, labels.array)
        assert own.geometry.isclose(img.geometry)


def test_label_values_that_are_not_1_to_n_come_back(tmp_path):
    _, labels = _case(tmp_path, "axial")
    brats = labels.with_array(np.choose(labels.array, [0, 1, 2, 4]).astype(np.uint8))
    info = write_dicom_seg(brats, tmp_path / "image", tmp_path / "seg.dcm",
                           label_names={1: "necrosis", 2: "oedema", 4: "enhancing tumour"})
    assert info["segments"] == {1: (1, "necrosis"), 2: (2, "oedema"), 3: (4, "enhancing tumour")}
    back = read_labels(tmp_path / "seg.dcm", reference=tmp_path / "image")
    np.testing.assert_array_equal(back.array, brats.array)
    assert back.meta["label_names"] == {"1": "necrosis", "2": "oedema", "4": "enhancing tumour"}
    import pydicom

    seg = pydicom.dcmread(str(tmp_path / "seg.dcm"))
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == [
        "6574001", "79654002", "108369006"]  # SNOMED CT necrosis, edema, neoplasm


@pytest.mark.parametrize("geom", list(GEOMS))
def test_highdicom_decodes_the_same_voxels(tmp_path, geom):
    import highdicom as hd

    _, labels = _case(tmp_path, geom)
    write_dicom_seg(labels, tmp_path / "image", tmp_path / "seg.dcm", label_names=NAMES)
    seg = hd.seg.segread(str(tmp_path / "seg.dcm"))
    uids = [documented_pseudonymous_uid(u) for u in _sorted_instances(tmp_path / "image")]  # de-identified refs
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                           skip_overlap_checks=True)
    np.testing.assert_array_equal(px, labels.array.transpose(2, 1, 0))


def _tool(name: str) -> str | None:
    """A command on PATH or next to this Python (console scripts of the virtual environment)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


@pytest.mark.skipif(_tool("segimage2itkimage") is None,
                    reason="dcmqi's segimage2itkimage not installed (pip install dcmqi)")
@pytest.mark.parametrize("geom", list(GEOMS))
def test_dcmqi_decodes_the_same_voxels(tmp_path, geom):
    exe = _tool("segimage2itkimage")
    _, labels = _case(tmp_path, geom)
    write_dicom_seg(labels, tmp_path / "image", tmp_path / "seg.dcm", label_names=NAMES)
    out = tmp_path / "dcmqi"
    out.mkdir()
    subprocess.run([exe, "--inputDICOM", str(tmp_path / "seg.dcm"), "--outputDirectory", str(out),
                    "--outputType", "nrrd"], check=True, capture_output=True, timeout=120)
    g = labels.geometry
    for value in (1, 2, 3):
        vol = read_volume(out / f"{value}.nrrd")  # dcmqi's own grid, read through ITK (LPS)
        ijk = np.argwhere(vol.array > 0)
        ours = g.world_to_index(vol.geometry.index_to_world(ijk))
        assert np.abs(ours - np.round(ours)).max() < 1e-3
        got = {tuple(v) for v in np.round(ours).astype(int).tolist()}
        assert got == {tuple(v) for v in np.argwhere(labels.array == value).tolist()}


def _hd_seg(tmp_path, pixels, seg_type, n_segments, **kw):
    """A SEG written directly with highdicom (not medcnn's writer)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    dss = [pydicom.dcmread(str(f)) for f in (tmp_path / "image").iterdir()]
    order = _sorted_instances(tmp_path / "image")
    dss.sort(key=lambda d: order.index(str(d.SOPInstanceUID)))
    desc = [hd.seg.SegmentDescription(n, f"seg{n}", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
            for n in range(1, n_segments + 1)]
    seg = hd.seg.Segmentation(dss, pixels, seg_type, desc, hd.UID(), 1, hd.UID(), 1, "test", "test", "1", "1", **kw)
    path = tmp_path / f"{seg_type}.dcm"
    seg.save_as(str(path))
    return path


def test_fractional_segment_thresholded_at_half(tmp_path):
    img, _ = _case(tmp_path, "oblique")
    frac = np.zeros((6, 12, 14), np.float32)  # (K, rows, cols)
    frac[2, 3:6, 4:8] = 0.8
    frac[3, 3:6, 4:8] = 0.3  # below 0.5: outside
    frac[4, 1, 1] = 0.5  # exactly half: inside
    path = _hd_seg(tmp_path, frac, "FRACTIONAL", 1)
    lab = read_labels(path, reference=tmp_path / "image")
    expected = np.zeros(img.shape, np.uint8)
    expected[4:8, 3:6, 2] = 1
    expected[1, 1, 4] = 1
    np.testing.assert_array_equal(lab.array, expected)


def test_labelmap_seg_and_multiple_binary_segments(tmp_path):
    img, labels = _case(tmp_path, "reversed")
    frames = labels.array.transpose(2, 1, 0).copy()
    lm = _hd_seg(tmp_path, frames, "LABELMAP", 3)
    np.testing.assert_array_equal(read_labels(lm, reference=tmp_path / "image").array, labels.array)
    stacked = np.stack([frames == v for v in (1, 2, 3)], axis=-1).astype(np.uint8)  # (K, rows, cols, segments)
    binary = _hd_seg(tmp_path, stacked, "BINARY", 3)
    back = read_labels(binary, reference=tmp_path / "image")
    np.testing.assert_array_equal(back.array, labels.array)
    chosen = read_labels(binary, reference=tmp_path / "image", roi=["seg2"])
    np.testing.assert_array_equal(chosen.array, (labels.array == 2).astype(np.uint8))


def test_seg_on_another_grid_refused(tmp_path):
    _, labels = _case(tmp_path, "axial")
    write_dicom_seg(labels, tmp_path / "image", tmp_path / "seg.dcm", label_names=NAMES)
    write_series(tmp_path / "other", n_slices=6, rows=12, cols=14, origin=(11.0, -20.0, 30.0), series_uid="5.6.7")
    with pytest.raises(GeometryMismatchError, match=r"seg.dcm: expected SEG frames on the grid"):
        read_labels(tmp_path / "seg.dcm", reference=tmp_path / "other")


@pytest.mark.realdata
def test_sarcoma_ct_rtstruct_to_seg_round_trip(shared_data, tmp_path):
    """Real CT headers: RTSTRUCT -> label map -> SEG on the CT series -> the same voxels,
    and (where dciodvfy is installed) a conformant SEG."""
    case = shared_data / "sarcoma" / "STS_001" / "CT" / "dicom"
    labels = read_labels(case / "mask")  # the folder holding just the structure set
    info = write_dicom_seg(labels, case / "image", tmp_path / "gtv_seg.dcm")
    assert info["segments"] == {1: (1, "GTV_Mass_CT")}
    back = read_labels(tmp_path / "gtv_seg.dcm", reference=case / "image")
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.geometry.isclose(labels.geometry)
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(tmp_path / "gtv_seg.dcm")], capture_output=True, text=True, timeout=120)
        assert not [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")], res.stderr
