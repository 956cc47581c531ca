"""Region training (issue 27 part 1): nested regions as sigmoid outputs, BCE + soft Dice per
region, brain-mask normalisation, missing sequences.

A tiny synthetic BraTS-like dataset (24^3, four sequences, labels 1 / 2 / 4 nested as whole
tumour ⊇ tumour core ⊇ enhancing tumour) trains for a few dozen steps; the exported bundle
segments through ``medcnn segment`` (Segmenter, case pipeline, volumes.csv) and its region
volumes equal an independent computation: the network run directly in torch on the
numpy-normalised image, each output's sigmoid > 0.5, unions counted with numpy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medcnn.config import load_config  # noqa: E402
from medcnn.errors import ConfigError, InputFileNotFoundError, InvalidIntensityError  # noqa: E402
from medcnn.io import read_volume, write_volume  # noqa: E402
from medcnn.train.loop import TrainConfig, train  # noqa: E402
from medcnn.volume import Geometry, Volume  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQUENCES = ("flair", "t1", "t1ce", "t2")
REGIONS = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}

CONFIG = """
name: tiny-regions
data:
  dataset: data/dataset.json
  channels: [FLAIR, T1, T1ce, T2]
  labels: {background: 0, necrosis: 1, oedema: 2, enhancing: 4}
  regions:
    whole_tumour: [1, 2, 4]
    tumour_core: [1, 4]
    enhancing_tumour: [4]
  regions_class_order: [2, 1, 4]
  n_folds: 3
  fold: 0
preprocess: {orientation: RAS, target_spacing: null, modalities: [MR, MR, MR, MR], mr_foreground: nonzero_any}
network: {name: unet, spatial_dims: 3, in_channels: 4, out_channels: 3, channels: [8, 16], strides: [2],
          num_res_units: 0}
patch_size: [24, 24, 24]
batch_size: 2
max_steps: 40
steps_per_epoch: 10
val_every_epochs: 2
checkpoint_every: 40
fg_fraction: 0.5
optim: {optimizer: adamw, lr: 0.02}
augment: {enabled: false}
seed: 1
progress: false
export_dtype: float32
sw_overlap: 0.25
"""

#: RAS-aligned, anisotropic, non-zero origin: the model grid is the input grid (no
#: reorientation or resampling), so an independent forward pass sees the same voxels
GEOMETRY = Geometry((24, 24, 24), (1.0, 1.1, 1.3), (-12.0, 20.0, 5.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))


def _case_arrays(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Four sequences (zero outside an ellipsoidal "brain") and BraTS labels: oedema (2)
    around a core of necrosis (1) around enhancing tumour (4), concentric spheres."""
    ii, jj, kk = np.meshgrid(*[np.arange(s, dtype=float) for s in GEOMETRY.shape], indexing="ij")
    brain = ((ii - 11.5) / 11) ** 2 + ((jj - 11.5) / 10.5) ** 2 + ((kk - 11.5) / 10) ** 2 <= 1
    c = rng.uniform(9, 14, 3)
    d = np.sqrt((ii - c[0]) ** 2 + (jj - c[1]) ** 2 + (kk - c[2]) ** 2)
    lab = np.zeros(GEOMETRY.shape, np.uint8)
    lab[d <= rng.uniform(6.5, 7.5)] = 2
    lab[d <= rng.uniform(4.0, 4.6)] = 1
    lab[d <= rng.uniform(2.0, 2.6)] = 4
    lab[~brain] = 0
    base = 300 + rng.normal(0, 12, (4,) + GEOMETRY.shape)
    # FLAIR bright in the whole tumour, T1ce bright where enhancing, T2 bright in the core, T1 dark in it
    contrast = {0: {1: 200, 2: 200, 4: 200}, 1: {1: -120, 2: 0, 4: -120}, 2: {1: 0, 2: 0, 4: 300},
                3: {1: 250, 2: 80, 4: 250}}
    seqs = []
    for s in range(4):
        a = base[s].copy()
        for v, dv in contrast[s].items():
            a[lab == v] += dv
        a[~brain] = 0
        seqs.append(np.rint(a).astype(np.int16))  # raw scanner integers, as BraTS ships them
    return seqs, lab


def make_dataset(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(7)
    entries = []
    for i in range(n):
        seqs, lab = _case_arrays(rng)
        folder = root / "data" / f"case{i}"
        folder.mkdir(parents=True)
        images = []
        for name, a in zip(SEQUENCES, seqs):
            write_volume(Volume(a, GEOMETRY), folder / f"case{i}_{name}.nii.gz")
            images.append(f"case{i}/case{i}_{name}.nii.gz")
        write_volume(Volume(lab, GEOMETRY, kind="label"), folder / f"case{i}_seg.nii.gz")
        entries.append({"case": f"case{i}", "images": images, "label": f"case{i}/case{i}_seg.nii.gz"})
    ds = {"name": "tiny BraTS-like", "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
          "labels": {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 4}, "regions": REGIONS,
          "cases": entries}
    (root / "data" / "dataset.json").write_text(json.dumps(ds))
    (root / "regions.yaml").write_text(CONFIG)
    return root / "regions.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("regions")
    cfg = load_config(TrainConfig, make_dataset(root))
    res = train(cfg, out_dir=root / "run", config_dir=root, log=lambda s: None)
    return root, cfg, res


def _reference_region_masks(bundle: Path, files: list[Path]) -> np.ndarray:
    """Independent of medcnn's reading, preprocessing and inference: nibabel reads the four
    sequences, numpy z-scores each inside the brain (voxels non-zero in any sequence), MONAI's
    UNet with the bundle's safetensors weights runs once on the whole 24^3 image (= the
    window), each output's sigmoid > 0.5. Returns ``(R, I, J, K)`` bool."""
    import nibabel as nib
    from monai.networks.nets import UNet
    from safetensors.torch import load_file

    arrs = [np.asarray(nib.load(str(f)).dataobj, dtype=np.float64) for f in files]
    brain = np.any([a != 0 for a in arrs], axis=0)
    x = np.zeros((len(arrs),) + arrs[0].shape, np.float32)
    for c, a in enumerate(arrs):
        x[c][brain] = (a[brain] - a[brain].mean()) / a[brain].std()
    meta = json.loads((bundle / "bundle.json").read_text())
    spec = {k: v for k, v in meta["network"].items() if k != "name"}
    net = UNet(**spec)
    net.load_state_dict({k: v.float() for k, v in load_file(str(bundle / meta["weights"]["file"])).items()})
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(x)[None])[0].numpy()
    return 1 / (1 + np.exp(-logits.astype(np.float64))) > 0.5


@pytest.mark.slow
def test_region_model_trains_exports_and_segments_like_an_imported_one(trained, tmp_path, capsys):
    import nibabel as nib
    import pandas as pd

    from medcnn.cli import main
    from medcnn.regions import regions_from_nnunet

    root, cfg, res = trained
    assert res.bundle is not None
    meta = json.loads((res.bundle / "bundle.json").read_text())
    # the bundle says what an imported nnU-Net region model says for the same dataset.json
    _, nnunet_spec = regions_from_nnunet({"labels": {"background": 0, **REGIONS}, "regions_class_order": [2, 1, 4]})
    assert meta["regions"] == nnunet_spec.to_dict()
    assert meta["activation"] == "sigmoid" and meta["network"]["out_channels"] == 3
    assert meta["labels"] == {"0": "background", "1": "necrosis", "2": "oedema", "4": "enhancing"}
    assert meta["preprocess"]["mr_foreground"] == "nonzero_any"
    norm = meta["provenance"]["normalisation"]
    assert norm["mr_foreground"] == "nonzero_any" and "non-zero in any input channel" in norm["mask"]
    # training-time validation and the held-out evaluation are per region
    assert set(res.history[-1]["per_class"]) == set(REGIONS)
    val = meta["provenance"]["validation"]
    assert val["kind"] == "test" and set(val["mean_dice"]) == set(REGIONS)
    assert set(val["mean_class_dice"]) == {"necrosis", "oedema", "enhancing"}
    test_case = val["cases"][0]["case_id"]
    folder = root / "data" / test_case
    files = [folder / f"{test_case}_{s}.nii.gz" for s in SEQUENCES]
    # `medcnn segment` with a folder of the four sequences (T1 is not mistaken for T1ce)
    out = tmp_path / "seg"
    assert main(["segment", "--channels", str(folder), "--model", str(res.bundle), "--out", str(out),
                 "--device", "cpu", "--precision", "fp32", "--no-tta"]) == 0, capsys.readouterr().err
    lab_file = next(out.glob("*_labels.nii.gz"))
    img = nib.load(str(lab_file))
    lab = np.asarray(img.dataobj).astype(np.int64)
    np.testing.assert_allclose(img.affine, nib.load(str(files[0])).affine, atol=1e-5)  # the input's grid
    assert set(np.unique(lab)) <= {0, 1, 2, 4}  # the dataset's convention, BraTS 1 / 2 / 4
    ref_masks = _reference_region_masks(res.bundle, files)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    # `medcnn run` (the case pipeline: segment, measure, report) on a manifest row of the same case
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,FLAIR,T1,T1ce,T2\n" + test_case + "," + ",".join(map(str, files)) + "\n")
    run_out = tmp_path / "run"
    assert main(["run", str(manifest), "--model", str(res.bundle), "--out", str(run_out), "--no-progress",
                 "--no-figures", "--device", "cpu", "--precision", "fp32", "--no-tta"]) == 0
    table = pd.read_csv(run_out / "volumes.csv", dtype={"label": str}, comment="#")
    table = table[table["case_id"] == test_case].set_index("label_name")
    assert list(table.index) == ["necrosis", "oedema", "enhancing", *REGIONS]
    truth = np.asarray(nib.load(str(folder / f"{test_case}_seg.nii.gz")).dataobj)
    for r, (name, members) in enumerate(REGIONS.items()):
        union = np.isin(lab, members)
        assert ref_masks[r].sum() > 20, f"{name}: the tiny network predicts (almost) nothing"
        np.testing.assert_array_equal(union, ref_masks[r], err_msg=name)  # painting = per-output sigmoid > 0.5
        # equal up to the float32 spacing of the NIfTI header nibabel reports
        assert table.loc[name, "volume_ml"] == pytest.approx(int(ref_masks[r].sum()) * voxel_ml, rel=1e-6)
        t = np.isin(truth, members)
        dice = 2 * (union & t).sum() / (union.sum() + t.sum())
        assert dice > (0.8 if name == "whole_tumour" else 0.5), (name, dice)
    assert table.loc["whole_tumour", "label"] == "1+2+4"


@pytest.mark.slow
def test_missing_sequence_is_named_at_inference(trained, tmp_path, capsys):
    from medcnn.cli import main

    root, _, res = trained
    folder = tmp_path / "caseX"
    folder.mkdir()
    for s in ("flair", "t1", "t1ce"):
        (folder / f"caseX_{s}.nii.gz").write_bytes((root / "data" / "case0" / f"case0_{s}.nii.gz").read_bytes())
    for spec in ([str(folder)], [",".join(str(folder / f"caseX_{s}.nii.gz") for s in ("flair", "t1", "t1ce"))]):
        out = tmp_path / "out"
        rc = main(["segment", "--channels", *spec, "--model", str(res.bundle), "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if "T2" in ln]
        assert rc != 0 and lines, err
        assert "caseX" in lines[0] and "no T2 image" in lines[0], lines[0]
        assert not out.exists() or not any(out.rglob("*.nii.gz"))


# ---------------------------------------------------------------------------- fast tests
def test_region_loss_equals_a_hand_computation():
    from medcnn.train.losses import region_annotated, region_dice_bce_loss, region_targets

    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]], [[-0.3, 1.2], [0.7, -2.0]]],
                           [[[1.5, 0.2], [-0.4, -1.1]], [[0.9, -0.6], [0.1, 2.2]]]], dtype=torch.float32)  # (2, 2, 2, 2)
    label = torch.tensor([[[2, 0], [4, 1]], [[0, 4], [2, 2]]])  # BraTS values
    regions = [[1, 2, 4], [1, 4]]
    target = region_targets(label, regions)
    assert target.shape == (2, 2, 2, 2)
    ignore = torch.tensor([[[False, False], [False, True]], [[False, False], [False, False]]])
    ann = torch.ones((2, 5), dtype=torch.bool)
    ann[1, 1] = False  # case 1 does not annotate label 1: its region 1 ({1, 4}) is not scored there
    reg_ann = region_annotated(ann, regions)
    assert reg_ann.tolist() == [[True, True], [False, False]]  # region 0 = {1, 2, 4} needs label 1 too
    reg_ann = torch.tensor([[True, True], [True, False]])  # case 1 scores region 0 only
    loss, parts = region_dice_bce_loss(logits, target, ignore=ignore, annotated=reg_ann, dice_weight=0.7,
                                       bce_weight=1.3)
    # by hand: every counted (case, region, voxel), then batch Dice per region
    L, T = logits.tolist(), target.tolist()
    bce_terms, inter, denom = [], [0.0, 0.0], [0.0, 0.0]
    for b in range(2):
        for r in range(2):
            if not reg_ann[b, r]:
                continue
            for i in range(2):
                for j in range(2):
                    if ignore[b, i, j]:
                        continue
                    s, t = 1 / (1 + math.exp(-L[b][r][i][j])), T[b][r][i][j]
                    bce_terms.append(-(t * math.log(s) + (1 - t) * math.log(1 - s)))
                    inter[r] += s * t
                    denom[r] += s + t
    bce = sum(bce_terms) / len(bce_terms)
    dice = [(2 * inter[r] + 1e-5) / (denom[r] + 1e-5) for r in range(2)]
    expected = 1.3 * bce + 0.7 * (1 - (dice[0] + dice[1]) / 2)
    assert len(bce_terms) == 10  # case 0: 2 regions x 3 voxels (one ignored); case 1: region 0 x 4
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert parts["ce"] == pytest.approx(bce, rel=1e-6)
    assert parts["dice_per_region"] == pytest.approx(dice, rel=1e-6)
    # gradients flow only where counted
    lg = logits.clone().requires_grad_(True)
    region_dice_bce_loss(lg, target, ignore=ignore, annotated=reg_ann)[0].backward()
    assert float(lg.grad[0, :, 1, 1].abs().sum()) == 0.0 and float(lg.grad[1, 1].abs().sum()) == 0.0
    assert float(lg.grad[1, 0].abs().sum()) > 0


def test_region_config_is_checked():
    from medcnn.config import from_dict

    import yaml

    doc = yaml.safe_load(CONFIG)
    cfg = from_dict(TrainConfig, doc)
    assert cfg.n_classes == 5 and cfg.region_members == [[1, 2, 4], [1, 4], [4]]
    assert cfg.region_spec.paint() == [(0, 2), (1, 1), (2, 4)]
    bad = [([1, 4, 4], "outer to inner"),  # the core's output would write enhancing over necrosis
           ([4, 1, 2], "writing a label of its region"),  # enhancing's output writing oedema
           ([2, 1], "one label value per region")]
    for value, words in bad:
        d = json.loads(json.dumps(doc))
        d["data"]["regions_class_order"] = value
        with pytest.raises(ConfigError, match=words):
            from_dict(TrainConfig, d)
    d = json.loads(json.dumps(doc))
    d["network"]["out_channels"] = 4
    with pytest.raises(ConfigError, match="one sigmoid output per region"):
        from_dict(TrainConfig, d)
    d = json.loads(json.dumps(doc))
    d["data"]["regions"]["tumour_core"] = [1, 3]
    with pytest.raises(ConfigError, match="nested or disjoint"):
        from_dict(TrainConfig, d)
    d = json.loads(json.dumps(doc))
    d["data"]["regions"]["whole_tumour"] = [1, 2, 3, 4]  # 3 is no class of data.labels
    with pytest.raises(ConfigError, match=r"label map's classes \[1, 2, 4\], got labels \[3\]"):
        from_dict(TrainConfig, d)
    d = json.loads(json.dumps(doc))
    d["data"]["absent_classes_unannotated"] = True
    with pytest.raises(ConfigError, match="absent_classes_unannotated"):
        from_dict(TrainConfig, d)


def test_missing_sequence_is_named_at_training(tmp_path, capsys):
    from medcnn.cli import main

    make_dataset(tmp_path, n=3)
    ds_path = tmp_path / "data" / "dataset.json"
    ds = json.loads(ds_path.read_text())
    ds["cases"][1]["images"] = ds["cases"][1]["images"][:3]  # no T2 listed
    ds_path.write_text(json.dumps(ds))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "regions.yaml"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case1" in err[0] and "no T2 image" in err[0] and "dataset.json" in err[0], err
    assert not out.exists()  # nothing written
    ds["cases"][1]["images"].append("case1/case1_t2.nii.gz")
    ds_path.write_text(json.dumps(ds))
    (tmp_path / "data" / "case1" / "case1_t2.nii.gz").unlink()  # listed, but not there
    assert main(["train", "--config", str(tmp_path / "regions.yaml"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case1" in err[0] and "T2 image" in err[0] and "case1_t2.nii.gz" in err[0], err
    assert not out.exists()
    # sequences in another order than the dataset declares them: refused, not silently swapped
    (tmp_path / "swapped.yaml").write_text(CONFIG.replace("[FLAIR, T1, T1ce, T2]", "[T1, FLAIR, T1ce, T2]"))
    assert main(["train", "--config", str(tmp_path / "swapped.yaml"), "--out", str(out), "--no-progress"]) == 2
    assert "channel order" in capsys.readouterr().err and not out.exists()


def test_label_values_outside_the_config_are_refused(tmp_path):
    from medcnn.train.datasets import load_cases
    from medcnn.train.loop import prepare_cases

    cfg = load_config(TrainConfig, make_dataset(tmp_path, n=1))
    case = load_cases(tmp_path / "data" / "dataset.json")[0]
    lab = read_volume(case.label, kind="label")
    arr = np.asarray(lab.array).copy()
    arr[arr == 1] = 3  # BraTS's unused value
    write_volume(lab.with_array(arr), case.label)
    with pytest.raises(ConfigError, match=r"label values among \[0, 1, 2, 4\].*got \[3\]") as exc:
        prepare_cases([case], cfg, tmp_path / "cache", log=lambda s: None)
    assert "case0_seg.nii.gz" in str(exc.value)


def test_brain_mask_normalisation_matches_numpy():
    from medcnn.preprocess import Preprocessor, PreprocessSpec

    rng = np.random.default_rng(3)
    seqs, _ = _case_arrays(rng)
    a, b = seqs[0].astype(np.float32), seqs[3].astype(np.float32)
    b[10:13, 10:13, 10:13] = 0  # zeros inside the brain of one sequence only
    brain = (a != 0) | (b != 0)
    spec = PreprocessSpec(orientation=None, modalities=("MR", "MR"), mr_foreground="nonzero_any")
    x, rec = Preprocessor(spec).forward([Volume(a, GEOMETRY), Volume(b, GEOMETRY)])
    for c, arr in enumerate((a, b)):
        v = arr[brain].astype(np.float64)
        ref = np.where(brain, (arr - v.mean()) / v.std(), 0.0)
        np.testing.assert_allclose(x[c], ref, atol=2e-5)
        step = [s for s in rec.steps if s.get("step") == "normalise"][c]
        assert step["foreground"] == "nonzero_any" and step["foreground_voxels"] == int(brain.sum())
    # the default (each sequence's own non-zero voxels) differs exactly where b is 0 inside the brain
    x0, _ = Preprocessor(PreprocessSpec(orientation=None, modalities=("MR", "MR"))).forward(
        [Volume(a, GEOMETRY), Volume(b, GEOMETRY)])
    vb = b[b != 0].astype(np.float64)
    np.testing.assert_allclose(x0[1], np.where(b != 0, (b - vb.mean()) / vb.std(), 0.0), atol=2e-5)
    assert "mr_foreground" not in PreprocessSpec().to_dict()  # existing bundles keep their JSON and spec hash
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_border_mode_normalisation_for_a_constant_background(tmp_path):
    from medcnn.preprocess import Preprocessor, PreprocessSpec

    rng = np.random.default_rng(4)
    seqs, _ = _case_arrays(rng)
    brain = seqs[0] != 0
    # as BRATS 2015 ships its scans: already z-scored, the outside a constant non-zero value
    a = np.where(brain, rng.normal(0, 1, brain.shape), -3.1607306).astype(np.float32)
    b = np.where(brain, rng.normal(0.5, 2, brain.shape), -2.747435).astype(np.float32)
    spec = PreprocessSpec(orientation=None, modalities=("MR", "MR"), mr_foreground="border_mode", crop_foreground=True)
    x, rec = Preprocessor(spec).forward([Volume(a, GEOMETRY), Volume(b, GEOMETRY)])
    box = tuple(slice(int(np.flatnonzero(brain.any(axis=tuple(j for j in range(3) if j != i))).min()),
                      int(np.flatnonzero(brain.any(axis=tuple(j for j in range(3) if j != i))).max()) + 1)
                for i in range(3))
    assert x.shape[1:] == brain[box].shape  # cropped to the brain, not to the (non-zero) whole image
    steps = [s for s in rec.steps if s.get("step") == "normalise"]
    assert [s["background_value"] for s in steps] == pytest.approx([-3.1607306, -2.747435])
    for c, arr in enumerate((a, b)):
        v = arr[brain].astype(np.float64)
        np.testing.assert_allclose(x[c], np.where(brain, (arr - v.mean()) / v.std(), 0.0)[box], atol=2e-5)
    # no constant border: the rule does not apply, said with the file's name
    noisy = rng.normal(0, 1, GEOMETRY.shape).astype(np.float32)
    write_volume(Volume(noisy, GEOMETRY), tmp_path / "noisy.nii.gz")
    vol = read_volume(tmp_path / "noisy.nii.gz")
    with pytest.raises(InvalidIntensityError, match="noisy.nii.gz.*constant background on the image border"):
        Preprocessor(PreprocessSpec(orientation=None, modalities=("MR",), mr_foreground="border_mode")).forward(vol)
    with pytest.raises(ConfigError, match="mr_foreground"):
        PreprocessSpec(mr_foreground="brain")


@pytest.mark.realdata
@pytest.mark.slow  # reads three 240x240x155 float32 scans: 3 s idle, 11 s on a busy 2-core CPU
def test_border_mode_reproduces_the_brats2015_brain_mask(shared_data):
    """BRATS 2015 (DeepMedic copy): the provider's threshold brain mask equals the voxels
    differing from the border background in FLAIR or T1c."""
    import nibabel as nib

    from medcnn.preprocess import mr_foreground_mask

    folder = shared_data / "brats2015" / "brats_2013_pat0003_1"
    if not folder.is_dir():
        pytest.skip("brats2015 not in the shared data")
    arrs = [np.asarray(nib.load(str(folder / f)).dataobj) for f in ("Flair_subtrMeanDivStd.nii.gz",
                                                                    "T1c_subtrMeanDivStd.nii.gz")]
    mask, info = mr_foreground_mask(arrs, "border_mode")
    ref = np.asarray(nib.load(str(folder / "brainmask.nii.gz")).dataobj) > 0
    assert info["background_values"][0] == pytest.approx(-3.1607306) and ref.sum() > 1e6
    np.testing.assert_array_equal(mask, ref)


@pytest.mark.realdata
def test_four_sequence_config_matches_brats2018(shared_data):
    """configs/brain-tumour-mri-4seq.yaml: channels and regions as brats2018's dataset.json
    declares them, BraTS 1 / 2 / 4 painted back, 4 folds of 2 patients each."""
    from medcnn.regions import class_names, paint_regions, regions_of_file
    from medcnn.train.loop import split_run_cases

    root = shared_data / "brats2018"
    if not root.is_dir():
        pytest.skip("brats2018 not in the shared data")
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(TrainConfig, repo / "configs" / "brain-tumour-mri-4seq.yaml")
    ds = json.loads((root / "dataset.json").read_text())
    assert list(cfg.data.channels) == [ds["channel_names"][str(i)] for i in range(4)]
    assert cfg.data.regions == regions_of_file(root / "dataset.json")
    assert cfg.data.labels == ds["labels"]
    spec = cfg.region_spec
    assert class_names(spec.regions) == {1: "tumour_core minus enhancing_tumour",
                                         2: "whole_tumour minus tumour_core", 4: "enhancing_tumour"}
    # painting nested region masks gives back BraTS's own label values
    truth = np.array([0, 1, 2, 4, 2, 1])
    masks = np.stack([np.isin(truth, m) for m in cfg.region_members])
    np.testing.assert_array_equal(paint_regions(masks, spec), truth)
    assert cfg.preprocess.mr_foreground == "nonzero_any" and cfg.network["in_channels"] == 4
    tests, groups = [], set()
    for fold in range(cfg.data.n_folds):
        c = load_config(TrainConfig, repo / "configs" / "brain-tumour-mri-4seq.yaml")
        c.data.fold = fold
        split = split_run_cases(c, shared_data, None)
        assert len({x.group for x in split.test}) == 2 and len(split.train) == 6
        assert {x.group for x in split.test}.isdisjoint({x.group for x in split.train})
        tests += [x.case_id for x in split.test]
        groups |= {x.group for x in split.train}
    assert sorted(tests) == sorted(c["case"] for c in ds["cases"]) and len(groups) == 8


def test_held_out_evaluation_scores_regions_and_lists_unnested_cases(tmp_path, monkeypatch):
    """evaluate_bundle with regions: Dice and volumes of each region's union against numpy;
    a case whose prediction the nesting check refuses is listed, not scored (region models
    only: for others the error propagates)."""
    import nibabel as nib

    from medcnn.errors import InvalidLabelError
    from medcnn.train import evaluate
    from medcnn.train.datasets import load_cases

    make_dataset(tmp_path, n=2)
    cases = load_cases(tmp_path / "data" / "dataset.json")
    truth = np.asarray(nib.load(str(cases[1].label)).dataobj).astype(np.int64)
    pred = truth.copy()
    pred[(truth == 2) & (np.arange(truth.shape[0])[:, None, None] < 11)] = 0  # lose part of the oedema
    pred[(truth == 1) & (np.arange(truth.shape[2])[None, None, :] % 2 == 0)] = 4  # core called enhancing

    def fake_predict(bundle, chans, *, device="cpu"):
        if chans[0].source and "case0" in str(chans[0].source):
            raise InvalidLabelError("case0_flair.nii.gz: expected region 'tumour_core' inside 'whole_tumour'")
        return pred

    monkeypatch.setattr(evaluate, "predict_case_labels", fake_predict)
    labels = {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 4}
    v = evaluate.evaluate_bundle("unused", cases, labels=labels, regions=REGIONS)
    assert [f["case_id"] for f in v["failed_cases"]] == ["case0"] and "tumour_core" in v["failed_cases"][0]["error"]
    assert v["n_cases"] == 1
    vml = float(np.prod(nib.load(str(cases[1].label)).header.get_zooms()[:3])) / 1000
    row = v["cases"][0]
    for name, members in REGIONS.items():
        p, t = np.isin(pred, members), np.isin(truth, members)
        assert row["dice"][name] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), rel=1e-12)
        assert row["volume_ml"][name] == pytest.approx(p.sum() * vml, rel=1e-6)
        assert row["ref_volume_ml"][name] == pytest.approx(t.sum() * vml, rel=1e-6)
    # necrosis called enhancing stays inside the core: the core is exact, enhancing is not
    assert row["dice"]["whole_tumour"] < 1 and row["dice"]["tumour_core"] == 1.0 and row["dice"]["enhancing_tumour"] < 1
    assert row["class_dice"]["necrosis"] < 1
    assert v["mean_dice"] == row["dice"] and set(v["mean_class_dice"]) == {"necrosis", "oedema", "enhancing"}
    with pytest.raises(InvalidLabelError):  # softmax models: no such refusal is expected; never hidden
        evaluate.evaluate_bundle("unused", cases, labels=labels)
