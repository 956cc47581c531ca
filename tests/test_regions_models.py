"""Region models end to end: the WT / TC / ET volumes medcnn reports equal the unions
computed independently from the tool's own prediction -- nnU-Net's ``nnUNetPredictor``
(per-channel sigmoid probabilities it returns, thresholded at 0.5 in numpy) and MONAI's
``ConfigParser`` running the bundle (per-channel sigmoid thresholded at 0.5) -- in both
channel orders; the names in volumes.csv, the DICOM SEG and the SR match.

Models are built as in tests/nnunet_factory.py and tests/test_import_monai.py: tiny
networks briefly trained with each region as its own sigmoid output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed")
sitk = pytest.importorskip("SimpleITK")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

NNUNET_BRATS = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
BRATS_124 = {"whole tumor": [1, 2, 4], "tumor core": [1, 4], "enhancing tumor": [4]}


def _region_table(labels, regions):
    from medcnn.measure import label_volumes

    return label_volumes(labels, regions=regions).set_index("label_name")


def _check_regions(got_table, ref_masks: dict[str, np.ndarray], voxel_ml: float, got_masks: dict[str, np.ndarray]):
    for name, ref in ref_masks.items():
        n_ref = int(ref.sum())
        assert n_ref > 50, f"{name}: the test network predicts (almost) nothing"
        agree = float((got_masks[name] == ref).mean())
        got_ml, ref_ml = float(got_table.loc[name, "volume_ml"]), n_ref * voxel_ml
        print(f"{name}: medcnn {got_ml:.4f} mL, reference {ref_ml:.4f} mL, voxel agreement {agree:.6f}")
        assert agree >= 0.999 and got_ml == pytest.approx(ref_ml, rel=0.01)


@pytest.mark.parametrize("region_labels, order", [(NNUNET_BRATS, [1, 2, 3]), (BRATS_124, [2, 1, 4])],
                         ids=["nnunet-123", "brats-124"])
def test_nnunet_region_model_volumes_equal_nnunet_predictor_unions(tmp_path, region_labels, order):
    pytest.importorskip("nnunetv2")
    from nnunet_factory import make_nnunet_folder, reference_predictor
    from test_import_nnunet import medcnn_predict, write_case

    from medcnn.io import write_volume
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), n_classes=4, region_labels=region_labels,
                                regions_class_order=order, seed=3, steps=60)
    files = write_case(tmp_path, n_classes=4)
    bundle = import_model(folder, tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["regions"]["regions"] == region_labels
    inner = {v: k for k, v in zip(("whole tumor minus tumor core", "tumor core minus enhancing tumor",
                                   "enhancing tumor"), order)}
    assert meta["labels"] == {"0": "background", **{str(v): inner[v] for v in sorted(order)}}
    # nnU-Net itself: segmentation and per-channel sigmoid probabilities, SimpleITK order (z, y, x)
    img = sitk.ReadImage(files[0])
    pred_nn = reference_predictor(folder, (0,), use_mirroring=False)
    seg_nn, probs = pred_nn.predict_single_npy_array(sitk.GetArrayFromImage(img)[None].astype(np.float32),
                                                     {"spacing": list(img.GetSpacing())[::-1]}, None, None, True)
    ref_masks = {name: np.asarray(probs[i]) > 0.5 for i, name in enumerate(region_labels)}
    pred = medcnn_predict(bundle, files, tta=False)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(write_volume(pred.labels, tmp_path / "m.nii.gz"))))
    assert float((got == seg_nn).mean()) >= 0.999  # the same voxel classes, BraTS 1/2/4 included
    table = _region_table(pred.labels, {k: v for k, v in region_labels.items()})
    _check_regions(table, ref_masks, pred.labels.voxel_volume_ml,
                   {name: np.isin(got, members) for name, members in region_labels.items()})
    assert [r["inner"] for r in pred.info["region_nesting"]] == ["tumor core", "enhancing tumor"]


@pytest.mark.parametrize("order", [("TC", "WT", "ET"), ("WT", "TC", "ET")], ids=["model-zoo-TC-WT-ET", "WT-TC-ET"])
def test_monai_region_bundle_volumes_equal_configparser_unions(tmp_path, order):
    from test_import_monai import blobs, brats_bundle, medcnn_labels, monai_reference, write_nifti

    bundle = brats_bundle(tmp_path, order=order)
    img, _ = blobs((21, 24, 18), seed=9, n=3, scale=(2.0, 2.0, 2.0), base=1.0, noise=0.3)
    img[:2] = 0
    files = [write_nifti(tmp_path / "t1c.nii.gz", img, (1.0, 1.2, 1.5)),
             write_nifti(tmp_path / "flair.nii.gz", np.where(img != 0, img * 0.5 + 1, 0).astype(np.float32),
                         (1.0, 1.2, 1.5))]
    # MONAI running the bundle (without its $ lambda and the writer): per-channel sigmoid > 0.5
    ref = np.asarray(monai_reference(bundle, files, tmp_path / "eval", drop_post=(3, 4))) > 0
    ref_masks = {r: ref[i] for i, r in enumerate(order)}
    pred, out = medcnn_labels(bundle, files, overrides={"postprocessing.transforms.3": None})
    meta = json.loads((out / "bundle.json").read_text())
    regions = meta["regions"]["regions"]
    assert regions == {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}
    assert meta["labels"] == {"0": "background", "1": "WT minus TC", "2": "TC minus ET", "3": "ET"}
    lab = pred.labels.array
    _check_regions(_region_table(pred.labels, regions), ref_masks, pred.labels.voxel_volume_ml,
                   {r: np.isin(lab, m) for r, m in regions.items()})


def test_monai_region_order_option_and_refusals(tmp_path, capsys):
    """Unknown channel names need --region-order; a wrong order is refused on the output."""
    from test_import_monai import blobs, brats_bundle, write_nifti

    from medcnn.cli import main

    bundle = brats_bundle(tmp_path, order=("TC", "WT", "ET"))
    mp = bundle / "configs" / "metadata.json"
    meta = json.loads(mp.read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "core", "1": "whole", "2": "active"}
    mp.write_text(json.dumps(meta))
    setk = ["--set", "postprocessing.transforms.3=null"]
    assert main(["models", "import", str(bundle), "--out", str(tmp_path / "a")] + setk) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metadata.json" in err[0] and "--region-order" in err[0]
    assert not (tmp_path / "a").exists()
    img, _ = blobs((21, 24, 18), seed=9, n=3, scale=(2.0, 2.0, 2.0), base=1.0, noise=0.3)
    files = [write_nifti(tmp_path / "t1c.nii.gz", img, (1.0, 1.2, 1.5)),
             write_nifti(tmp_path / "flair.nii.gz", np.where(img != 0, img * 0.5 + 1, 0).astype(np.float32),
                         (1.0, 1.2, 1.5))]
    for ro, ok in (("whole,core,active", True), ("core,whole,active", False)):
        out = tmp_path / f"b_{ok}"
        assert main(["models", "import", str(bundle), "--out", str(out), "--region-order", ro] + setk) == 0
        capsys.readouterr()
        rc = main(["segment", "--channels", ",".join(files), "--model", str(out), "--out",
                   str(tmp_path / f"seg_{ok}"), "--device", "cpu", "--precision", "fp32"])
        err = capsys.readouterr().err
        if ok:
            assert rc == 0, err
        else:  # declared core ⊇ whole: contradicted by the network's outputs
            assert rc == 2 and "'whole' inside 'core'" in err and "--region-order" in err


def test_run_dicom_names_and_region_volumes_match_in_csv_seg_sr(tmp_path):
    """`medcnn run --dicom` with an imported nnU-Net region model on a DICOM series: the
    voxel-class and region names and volumes agree across volumes.csv, SEG and SR."""
    hd = pytest.importorskip("highdicom")
    import pandas as pd
    import pydicom
    from dicom_factory import write_series
    from nnunet_factory import blob_image, make_nnunet_folder

    from medcnn.cli import main
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), n_classes=4, region_labels=NNUNET_BRATS,
                                regions_class_order=[1, 2, 3], seed=3, steps=60)
    bundle = import_model(folder, tmp_path / "brats-regions")
    img, _ = blob_image((28, 26, 30), seed=7, n_classes=4)  # (slices, rows, cols)
    write_series(tmp_path / "in" / "scan1", n_slices=28, rows=26, cols=30, spacing=(1.0, 1.0), dz=1.0,
                 series_uid="1.2.3.4.21", pixels=np.clip(img * 200, 0, 4000)[None])
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image\nscan1,{tmp_path / 'in' / 'scan1'}\n")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--model", str(bundle), "--out", str(out), "--dicom", "--no-progress",
                 "--no-figures", "--mode", "volumes", "--device", "cpu"]) == 0
    vols = pd.read_csv(out / "volumes.csv", dtype={"label": str})
    vols = vols[vols["case_id"] == "scan1"]
    names = ["whole tumor minus tumor core", "tumor core minus enhancing tumor", "enhancing tumor"]
    # rows: the three voxel classes, then the three regions (unions); the CSV, SEG and SR in this order
    assert list(vols["label_name"]) == names + list(NNUNET_BRATS)
    assert list(vols["label"]) == ["1", "2", "3", "1+2+3", "2+3", "3"]
    ml = vols["volume_ml"].to_numpy()
    assert ml[3] == pytest.approx(ml[:3].sum()) and ml[4] == pytest.approx(ml[1:3].sum()) and ml[4] > 0.1
    html = (out / "report.html").read_text()
    assert "1+2+3" in html and "tumor core minus enhancing tumor" in html
    assert json.loads((out / "report.json").read_text())["model"]["regions"] == NNUNET_BRATS
    seg = hd.seg.segread(str(out / "cases" / "scan1" / "scan1_seg.dcm"))
    segs = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert list(segs) == [1, 2, 3, 4, 5, 6] and list(segs.values()) == names + list(NNUNET_BRATS)
    src = sorted((pydicom.dcmread(str(p)) for p in (tmp_path / "in" / "scan1").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    from dicom_factory import documented_pseudonymous_uid

    uids = [documented_pseudonymous_uid(str(d.SOPInstanceUID)) for d in src]  # de-identified: source UIDs replaced
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                           segment_numbers=sorted(segs), combine_segments=False,
                                           assert_missing_frames_are_empty=True).astype(bool)
    voxel_ml = 1.0 / 1000
    for i in range(6):  # each segment's voxels = the CSV row's volume (region segments overlap)
        assert int(px[..., i].sum()) * voxel_ml == pytest.approx(ml[i])
    assert np.array_equal(px[..., 3], px[..., 0] | px[..., 1] | px[..., 2])  # whole tumour = union of classes
    sr = hd.sr.srread(str(out / "cases" / "scan1" / "scan1_sr.dcm"))
    groups = {}
    for g in sr.content.get_volumetric_roi_measurement_groups():
        (number,) = g.referenced_segment.referenced_segment_numbers
        groups[int(number)] = {m.name.meaning: m.value for m in g.get_measurements()}["Volume"]
    assert sorted(groups) == [1, 2, 3, 4, 5, 6]
    for n, v in groups.items():
        assert float(v) == pytest.approx(ml[n - 1])
