"""Regions (nested label sets): declarations from nnU-Net's dataset.json and from channel
meaning, refusal of inconsistent ones, painting of region channels, region volumes on a
real BraTS label map (nibabel + numpy as the reference), and region segments in DICOM SEG
read back with highdicom.

The model-level acceptance tests (nnUNetPredictor, MONAI ConfigParser, ``medcnn run
--dicom``) are in tests/test_regions_models.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from medcnn.errors import ConfigError, InvalidLabelError  # noqa: E402
from medcnn.regions import (RegionSpec, check_nesting, class_names, known_region_nesting,  # noqa: E402
                            nesting_violations, paint_regions, regions_from_channel_nesting,
                            regions_from_nnunet)

#: nnU-Net's own BraTS conversion (Dataset001/Task01_BrainTumour in the nnU-Net docs)
NNUNET_BRATS = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                           "enhancing tumor": [3]}, "regions_class_order": [1, 2, 3]}
#: BraTS's own label values (1 necrosis / non-enhancing, 2 oedema, 4 enhancing)
BRATS_124 = {"labels": {"background": 0, "whole tumor": [1, 2, 4], "tumor core": [1, 4],
                        "enhancing tumor": [4]}, "regions_class_order": [2, 1, 4]}


def nested_masks(shape=(20, 18, 16), seed=0):
    """Three concentric balls (WT ⊇ TC ⊇ ET) with jittered centres: (wt, tc, et) booleans."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    c = (np.asarray(shape) - 1) / 2 + rng.uniform(-1, 1, 3)
    d = np.sqrt(((g - c) ** 2).sum(-1))
    wt, tc, et = d < 7.5, d < 5.0, d < 2.5
    return wt, tc, et


def test_nnunet_brats_classes_are_named_for_what_they_are():
    classes, spec = regions_from_nnunet(NNUNET_BRATS, path="dataset.json")
    assert classes == {0: "background", 1: "whole tumor minus tumor core", 2: "tumor core minus enhancing tumor",
                       3: "enhancing tumor"}
    assert spec.regions == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
    assert spec.paint() == [(0, 1), (1, 2), (2, 3)]  # nnU-Net's convert_logits_to_segmentation, channel order
    classes, spec = regions_from_nnunet(BRATS_124)
    assert classes == {0: "background", 1: "tumor core minus enhancing tumor", 2: "whole tumor minus tumor core",
                       4: "enhancing tumor"}
    assert spec.paint() == [(0, 2), (1, 1), (2, 4)]


@pytest.mark.parametrize("dataset, words", [
    ({**NNUNET_BRATS, "regions_class_order": [3, 2, 1]}, "channel 2"),  # ET channel would write label 1
    ({"labels": {"background": 0, "enhancing tumor": [3], "tumor core": [2, 3], "whole tumor": [1, 2, 3]},
      "regions_class_order": [3, 2, 3]}, "painted"),  # inner regions first: WT would overwrite everything
    ({"labels": {"background": 0, "a": [1, 2], "b": [2, 3]}, "regions_class_order": [1, 3]}, "nested or disjoint"),
    ({**NNUNET_BRATS, "regions_class_order": [1, 2]}, "regions_class_order"),
])
def test_inconsistent_declarations_are_refused_with_one_line(dataset, words):
    with pytest.raises(ConfigError) as exc:
        regions_from_nnunet(dataset, path="Dataset001/dataset.json")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("Dataset001/dataset.json: ") and words in msg


def test_the_model_zoo_channel_order_gives_the_right_unions_in_both_orders():
    """Channels painted outer to inner whatever their order: the label map's unions give back
    every channel's region exactly (hand computation with numpy)."""
    wt, tc, et = nested_masks()
    by_name = {"Whole tumor": wt, "Tumor core": tc, "Enhancing tumor": et}
    for order in (["Tumor core", "Whole tumor", "Enhancing tumor"], ["Whole tumor", "Tumor core", "Enhancing tumor"],
                  ["Enhancing tumor", "Tumor core", "Whole tumor"]):
        nesting = known_region_nesting(order)
        assert nesting == ["Whole tumor", "Tumor core", "Enhancing tumor"]
        classes, spec = regions_from_channel_nesting(order, nesting)
        assert classes[1] == "Whole tumor minus Tumor core" and classes[3] == "Enhancing tumor"
        labels = paint_regions(np.stack([by_name[n] for n in order]), spec)
        for name, members in spec.regions.items():
            np.testing.assert_array_equal(np.isin(labels, members), by_name[name])
        assert all(r["outside_voxels"] == 0 for r in nesting_violations(np.stack([by_name[n] for n in order]), spec))
    # the old rule (channel c writes c + 1, later wins) on the Model Zoo's order leaves TC almost empty
    old = np.zeros(wt.shape, np.uint8)
    for c, m in enumerate([tc, wt, et]):
        old[m] = c + 1
    assert (old == 1).sum() == 0 and tc.sum() > 400


def test_output_contradicting_the_declared_nesting_is_refused():
    wt, tc, et = nested_masks()
    _, spec = regions_from_channel_nesting(["Tumor core", "Whole tumor", "Enhancing tumor"],
                                           ["Whole tumor", "Tumor core", "Enhancing tumor"])
    ok = nesting_violations(np.stack([tc, wt, et]), spec)
    check_nesting(ok)
    swapped = nesting_violations(np.stack([wt, tc, et]), spec)  # the network really outputs WT, TC, ET
    with pytest.raises(InvalidLabelError, match=r"'Tumor core' inside 'Whole tumor'.*outside") as exc:
        check_nesting(swapped, path="case1.nii.gz")
    assert str(exc.value).startswith("case1.nii.gz: ") and "\n" not in str(exc.value)
    # a few disagreeing boundary voxels are tolerated (independent sigmoids)
    tc2 = tc.copy()
    tc2[tuple(np.argwhere(wt)[0])] = True
    check_nesting(nesting_violations(np.stack([tc2, wt, et]), spec))


def test_unknown_channel_names_need_an_order():
    assert known_region_nesting(["liver", "tumour"]) is None
    with pytest.raises(ConfigError, match="region order"):
        regions_from_channel_nesting(["a", "b"], ["a", "c"])


def test_class_names_and_spec_round_trip():
    assert class_names({"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}) == {1: "TC minus ET", 2: "WT minus TC", 4: "ET"}
    assert class_names({"kidney": [1, 2], "tumour": [2], "cyst": [3]}) == {1: "kidney minus tumour", 2: "tumour",
                                                                          3: "cyst"}
    _, spec = regions_from_nnunet(BRATS_124)
    assert RegionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ConfigError, match="bundle.json"):
        RegionSpec.from_dict({"regions": {"a": [1]}, "colour": 1}, path="bundle.json")


def test_region_volumes_on_a_real_brats_label_map(shared_data, tmp_path, capsys):
    """BraTS 2018 (labels 1/2/4, regions from its dataset.json): medcnn's region volumes
    equal nibabel + numpy unions; `medcnn measure --labels dataset.json` reports them."""
    import nibabel as nib
    import pandas as pd

    from medcnn.cli import main
    from medcnn.io import read_volume
    from medcnn.measure import label_volumes
    from medcnn.regions import regions_of_file

    root = shared_data / "brats2018"
    if not root.is_dir():
        pytest.skip("brats2018 not in the shared data")
    ds = json.loads((root / "dataset.json").read_text())
    case = ds["cases"][0]
    f = root / case["label"]
    img = nib.load(str(f))
    arr = np.asarray(img.dataobj).astype(np.int64)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert set(np.unique(arr)) <= {0, 1, 2, 4} and (arr == 4).any()
    regions = regions_of_file(root / "dataset.json")
    assert regions == {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}
    df = label_volumes(read_volume(f, kind="label"), regions=regions).set_index("label_name")
    for name, members in ds["regions"].items():
        ref = int(np.isin(arr, members).sum()) * voxel_ml
        assert df.loc[name, "volume_ml"] == pytest.approx(ref, rel=1e-12) and ref > 1.0
    out = tmp_path / "vol.csv"
    assert main(["measure", str(f), "--labels", str(root / "dataset.json"), "--out", str(out), "--no-lesions"]) == 0
    csv = pd.read_csv(out, comment="#").set_index("label_name")
    assert csv.loc["whole_tumour", "label"] == "1+2+4"
    assert csv.loc["tumour_core", "volume_ml"] == pytest.approx(int(np.isin(arr, [1, 4]).sum()) * voxel_ml)
    assert csv.loc["oedema", "volume_ml"] == pytest.approx(int((arr == 2).sum()) * voxel_ml)


def test_seg_has_one_overlapping_segment_per_region(tmp_path):
    """write_dicom_seg(regions=): label segments then region segments (overlapping),
    read back with highdicom; medcnn's reader still restores the label map."""
    hd = pytest.importorskip("highdicom")
    from dicom_factory import write_series

    from medcnn.io import read_labels, read_volume
    from medcnn.io.dicom_out import write_dicom_results

    write_series(tmp_path / "s", n_slices=16, rows=18, cols=20, spacing=(1.0, 1.1), dz=1.5, series_uid="1.2.3.4.7")
    image = read_volume(tmp_path / "s")
    wt, tc, et = nested_masks(image.shape)
    lab = np.zeros(image.shape, np.uint8)
    lab[wt], lab[tc], lab[et] = 2, 1, 4  # BraTS's own values
    labels = image.with_array(lab, kind="label")
    names = {1: "necrosis", 2: "oedema", 4: "enhancing tumour"}
    regions = {"whole tumour": [1, 2, 4], "tumour core": [1, 4], "enhancing tumour": [4]}
    vox = image.voxel_volume_ml
    vols = {1: (lab == 1).sum() * vox, 2: (lab == 2).sum() * vox, 4: (lab == 4).sum() * vox,
            **{n: np.isin(lab, m).sum() * vox for n, m in regions.items()}}
    seg_path, sr_path = write_dicom_results(labels, tmp_path / "s", tmp_path / "seg.dcm", tmp_path / "sr.dcm",
                                            label_names=names, volumes_ml=vols, regions=regions)
    seg = hd.seg.segread(str(seg_path))
    segs = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert segs == {1: "necrosis", 2: "oedema", 3: "enhancing tumour", 4: "whole tumour", 5: "tumour core",
                    6: "enhancing tumour"}
    import pydicom

    src = sorted((pydicom.dcmread(str(p)) for p in (tmp_path / "s").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    from medcnn.io.deid import pseudonymous_uid

    uids = [pseudonymous_uid(str(d.SOPInstanceUID)) for d in src]  # de-identified SEG: source UIDs replaced
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[4, 5, 6],
                                           combine_segments=False, assert_missing_frames_are_empty=True)
    for i, (name, members) in enumerate(regions.items()):  # (slices, rows, cols) = (K, J, I)
        np.testing.assert_array_equal(px[..., i].transpose(2, 1, 0).astype(bool), np.isin(lab, members))
    np.testing.assert_array_equal(read_labels(seg_path, reference=tmp_path / "s").array, lab)
    back = read_labels(seg_path, reference=tmp_path / "s", roi=["whole tumour"]).array
    np.testing.assert_array_equal(back > 0, np.isin(lab, [1, 2, 4]))
    sr = hd.sr.srread(str(sr_path))
    got = {}
    for g in sr.content.get_volumetric_roi_measurement_groups():
        (number,) = g.referenced_segment.referenced_segment_numbers
        got[segs[int(number)] + ("" if int(number) <= 3 else " (region)")] = \
            {m.name.meaning: m.value for m in g.get_measurements()}["Volume"]
    assert got["whole tumour (region)"] == pytest.approx(vols["whole tumour"])
    assert got["tumour core (region)"] == pytest.approx(vols["tumour core"])
    assert got["oedema"] == pytest.approx(vols[2]) and len(got) == 6
