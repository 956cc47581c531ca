"""`medcnn models import` of nnU-Net v2 result folders: parity with nnUNetPredictor,
refusals, provenance, and no unpickling at run time.

The result folders are built at test time (tests/nnunet_factory.py): tiny
PlainConvUNet / ResidualEncoderUNet networks from dynamic-network-architectures,
briefly trained on synthetic blobs, saved in nnU-Net's checkpoint layout. The reference
is nnU-Net's own ``nnUNetPredictor`` reading the same NIfTI files with SimpleITK.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed "
                    "(scripts/setup_env.sh installs it)")
sitk = pytest.importorskip("SimpleITK")

sys.path.insert(0, str(Path(__file__).parent))
from nnunet_factory import (as_numpy1_checkpoint, blob_image, make_nnunet_folder, pickle_globals,  # noqa: E402
                            reference_predict, rewrite_globals)

from medcnn.errors import BundleError, ConfigError, UnsafeModelFileError, UnsupportedFormatError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: an oblique direction (rotation about all three axes) and a non-zero origin
OBLIQUE = np.array([[0.9362934, -0.2896295, 0.1986693], [0.3129918, 0.9447025, -0.0978434],
                    [-0.1593451, 0.1537920, 0.9751703]])


def _needs_nnunet():
    return pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (scripts/setup_env.sh installs it)")


def write_case(tmp: Path, *, shape=(30, 28, 33), spacing=(1.2, 0.9, 1.1), n_classes=3, ct=False, n_channels=1,
               seed=7) -> list[str]:
    """NIfTI file(s) in nnU-Net's naming (case_0000.nii.gz, ...), oblique, SimpleITK (z, y, x) array order."""
    files = []
    for c in range(n_channels):
        img, _ = blob_image(shape, seed=seed, n_classes=n_classes, ct=ct)
        if c:
            img = np.where(img != 0, img * 0.5 + c, 0).astype(np.float32)
        im = sitk.GetImageFromArray(img)
        im.SetSpacing(tuple(float(s) for s in spacing))
        im.SetOrigin((10.0, -5.0, 3.0))
        im.SetDirection(tuple(OBLIQUE.ravel()))
        f = tmp / f"case_{c:04d}.nii.gz"
        sitk.WriteImage(im, str(f))
        files.append(str(f))
    return files


def medcnn_predict(bundle: Path, files: list[str], *, tta: bool | None):
    """``tta=None``: no TTA option at all (the imported bundle's default)."""
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume

    opts = {} if tta is None else {"tta_axes": "trained" if tta else ()}
    seg = Segmenter.from_bundle(bundle, device="cpu", precision="fp32", **opts)
    vols = [read_volume(f) for f in files]
    return seg.predict(vols if len(vols) > 1 else vols[0])


def check_parity(tmp: Path, folder: Path, files: list[str], folds, *, tta: bool | None, min_equal: float = 0.999):
    """``tta=None``: both at their defaults (nnUNetPredictor mirrors, medcnn gets no option)."""
    from medcnn.io import write_volume
    from medcnn.models.importers import import_model

    ref = reference_predict(folder, files, folds, use_mirroring=tta is None or tta)  # SimpleITK order (z, y, x)
    bundle = import_model(folder, tmp / "bundle", folds=[str(f) for f in folds])
    pred = medcnn_predict(bundle, files, tta=tta)
    out = write_volume(pred.labels, tmp / "medcnn_seg.nii.gz")
    got_img, in_img = sitk.ReadImage(str(out)), sitk.ReadImage(files[0])
    got = sitk.GetArrayFromImage(got_img)
    assert got.shape == ref.shape
    assert np.allclose(got_img.GetSpacing(), in_img.GetSpacing(), atol=1e-5)
    assert np.allclose(got_img.GetOrigin(), in_img.GetOrigin(), atol=1e-4)
    assert np.allclose(got_img.GetDirection(), in_img.GetDirection(), atol=1e-5)
    equal = float((got == ref).mean())
    print(f"\nparity {folder.name} folds={list(folds)} tta={tta}: {equal:.6f} of {ref.size} voxels equal; "
          f"label voxels nnU-Net {np.bincount(ref.ravel()).tolist()} medcnn {np.bincount(got.ravel()).tolist()}")
    assert equal >= min_equal, f"only {equal:.5f} of voxels equal nnUNetPredictor's"
    n_ref, n_got = np.bincount(ref.ravel(), minlength=8), np.bincount(got.ravel(), minlength=8)
    assert n_ref[1:].sum() > 100, "the test network predicts no structure: parity would be meaningless"
    for lab in range(1, 8):
        if n_ref[lab] >= 100:
            assert abs(int(n_got[lab]) - int(n_ref[lab])) <= 0.005 * n_ref[lab], (lab, n_got[lab], n_ref[lab])
    return equal, pred, bundle


# ---------------------------------------------------------------------------- parity
@pytest.mark.slow
def test_parity_3d_fullres_isotropic_mirroring_at_defaults(tmp_path):
    """nnUNetPredictor at its defaults (mirroring on) and medcnn with no TTA option at all."""
    _needs_nnunet()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    import inspect

    assert inspect.signature(nnUNetPredictor).parameters["use_mirroring"].default is True
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), spacing=(1.0, 1.0, 1.0), mirror=(0, 1, 2))
    equal, pred, _ = check_parity(tmp_path, folder, write_case(tmp_path), (0,), tta=None)
    assert pred.info["tta_axes"] == [0, 1, 2] and pred.info["window_placement"] == "nnunet"
    assert "resample" in pred.info["preprocess_steps"]


@pytest.mark.slow
def test_parity_3d_two_folds_without_mirroring_resenc_transposed(tmp_path):
    _needs_nnunet()
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), folds=(0, 1), mirror=None,
                                arch="ResidualEncoderUNet", transpose=(1, 0, 2), seed=3)
    _, pred, bundle = check_parity(tmp_path, folder, write_case(tmp_path), (0, 1), tta=False)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["network"]["n_members"] == 2 and meta["mirror_axes"] == []


@pytest.mark.slow
def test_parity_anisotropic_separate_z(tmp_path):
    """Thick slices (2.0 mm) to a 3.5 mm target: max/min spacing > 3, so nnU-Net resamples
    in-plane with order 3 and along z with order 0 (and back with order 1 / 0)."""
    _needs_nnunet()
    from medcnn.preprocess._nnunet import nnunet_separate_axis

    assert nnunet_separate_axis([2.0, 1.0, 1.0], [3.5, 1.0, 1.0]) == 0
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(8, 24, 24), spacing=(3.5, 1.0, 1.0), mirror=(1, 2),
                                strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                                seed=2)
    files = write_case(tmp_path, shape=(30, 34, 21), spacing=(1.0, 1.0, 2.0))
    _, pred, _ = check_parity(tmp_path, folder, files, (0,), tta=True)


@pytest.mark.slow
def test_parity_2d(tmp_path):
    _needs_nnunet()
    folder = make_nnunet_folder(tmp_path, dim=2, patch=(24, 24), spacing=(0.8, 0.9), mirror=(0, 1))
    _, pred, _ = check_parity(tmp_path, folder, write_case(tmp_path), (0,), tta=None)
    assert pred.info["slice_axis"] == 0 and pred.info["tta_axes"] == [1, 2]  # model-grid axes of the 2D window axes


@pytest.mark.slow
def test_parity_regions_old_plans_ct(tmp_path):
    """Region-based training (sigmoid, nested regions), the old plans format and CT
    normalisation with the dataset's percentiles and statistics."""
    _needs_nnunet()
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), regions=True, old_plans=True,
                                scheme="CTNormalization", seed=5)
    _, pred, bundle = check_parity(tmp_path, folder, write_case(tmp_path, ct=True), (0,), tta=True)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["activation"] == "sigmoid" and meta["preprocess"]["nnunet"]["normalization"][0]["lower"] == -150.0


# ---------------------------------------------------------------------------- pieces vs nnU-Net
def test_resize_matches_nnunet_resampling():
    _needs_nnunet()
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg

    from medcnn.preprocess._nnunet import nnunet_resize

    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 7, 11, 9)).astype(np.float32)
    for new, axis, order, order_z in (((9, 15, 5), None, 3, 0), ((12, 8, 9), 0, 3, 0), ((7, 20, 13), 2, 1, 0)):
        ref = resample_data_or_seg(data, new, False, axis, order, axis is not None, order_z=order_z)
        got = nnunet_resize(data, new, order=order, separate_axis=axis, order_z=order_z)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_window_starts_and_gaussian_match_nnunet():
    _needs_nnunet()
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    from medcnn.inference.sliding_window import nnunet_gaussian, nnunet_window_starts

    for size, roi in ((110, 64), (64, 64), (65, 32), (200, 48), (33, 16)):
        assert list(nnunet_window_starts(size, roi, 0.5)) == compute_steps_for_sliding_window((size,), (roi,), 0.5)[0]
    g = compute_gaussian((12, 16, 9), 1 / 8, 1, dtype=torch.float32, device=torch.device("cpu")).numpy()
    np.testing.assert_allclose(nnunet_gaussian((12, 16, 9)), g / g.max(), rtol=1e-5, atol=1e-7)


def test_preprocessing_matches_nnunet_preprocessor(tmp_path):
    """The model-grid array equals DefaultPreprocessor.run_case's (transpose, crop,
    ZScore with mask, resampling)."""
    _needs_nnunet()
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medcnn.io import read_volume
    from medcnn.models.importers.nnunet import import_nnunet
    from medcnn.preprocess import Preprocessor, PreprocessSpec

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), spacing=(1.3, 0.7, 1.0), use_mask=True,
                                transpose=(2, 0, 1), steps=0)
    files = write_case(tmp_path)
    plans = PlansManager(json.loads((folder / "plans.json").read_text()))
    dataset = json.loads((folder / "dataset.json").read_text())
    ref, _, props = DefaultPreprocessor(verbose=False).run_case(files, None, plans,
                                                                plans.get_configuration("3d_fullres"), dataset)
    kw = import_nnunet(folder)
    x, record = Preprocessor(PreprocessSpec.from_dict(kw["preprocess"])).forward(read_volume(files[0]))
    assert x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-4)
    assert [s["step"] for s in record.steps] == ["reorient", "crop", "normalise", "resample"]


def test_postprocessing_json_is_nnunets_largest_component_rule(tmp_path):
    _needs_nnunet()
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    from medcnn.models.importers.nnunet import import_nnunet
    from medcnn.postprocess import PostprocessSpec, postprocess
    from medcnn.volume import Geometry, Volume

    steps = [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}]
    folder = make_nnunet_folder(tmp_path, steps=0, postprocessing=steps)
    assert import_nnunet(folder)["postprocess"] is None  # nnUNetv2_predict does not apply it
    spec = PostprocessSpec.from_dict(import_nnunet(folder, postprocessing=True)["postprocess"])
    rng = np.random.default_rng(1)
    seg = (rng.random((20, 18, 16)) > 0.93).astype(np.uint8) * rng.integers(1, 3, (20, 18, 16)).astype(np.uint8)
    seg[3:9, 3:9, 3:9] = 1
    seg[10:14, 4:8, 4:8] = 2
    ref = seg
    for s in steps:
        ref = remove_all_but_largest_component_from_segmentation(ref, s["labels_or_regions"])
    got = postprocess(Volume(seg, Geometry(seg.shape, (1.0, 1.0, 1.0)), "label"), spec).array
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------------------- run time, provenance
def test_no_unpickling_at_run_time_and_provenance(tmp_path, monkeypatch):
    import torch

    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    bundle = import_model(folder, tmp_path / "bundle", name="blobs")
    meta = json.loads((bundle / "bundle.json").read_text())
    src = meta["provenance"]["imported_from"]
    assert src["format"] == "nnunet-v2" and src["trainer"] == "nnUNetTrainer" and src["plans"] == "nnUNetPlans"
    assert src["configuration"] == "3d_fullres" and src["folds"] == ["0"] and src["name"] == "blobs"
    assert src["licence"]["licence"].startswith("CC-BY-4.0")
    for rel, sha in src["files_sha256"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == sha
    assert set(src["files_sha256"]) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json", "model.safetensors"]

    def refuse(*a, **k):
        raise AssertionError("unpickling at run time")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    files = write_case(tmp_path, shape=(20, 18, 22))
    pred = medcnn_predict(bundle, files, tta=True)
    assert pred.labels.array.shape == (22, 18, 20)
    assert pred.info["bundle"]["imported_from"]["format"] == "nnunet-v2"
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume

    p = Segmenter.from_bundle(bundle, device="cpu", precision="fp32").predict(read_volume(files[0]),
                                                                              return_probabilities=True)
    probs = p.probabilities.array  # softmax after resampling the logits, background outside the crop
    assert probs.shape == (3, 22, 18, 20) and np.allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.labels.array, probs.argmax(0))


def test_cli_import_and_show(tmp_path, capsys):
    from medcnn.cli import main

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    assert main(["models", "import", str(folder), "--out", str(tmp_path / "b"), "--folds", "0"]) == 0
    assert main(["models", "show", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "imported    nnunet-v2" in out and "nnUNetTrainer" in out and "CC-BY-4.0" in out
    assert "fold_0/checkpoint_final.pth  sha256 " in out


# ---------------------------------------------------------------------------- refusals
def _cli_refusal(tmp_path, source: Path, name: str, capsys) -> str:
    """The CLI (in process): exit 2, one line on stderr naming the file, nothing written."""
    from medcnn.cli import main

    out = tmp_path / "refused"
    capsys.readouterr()
    code = main(["models", "import", str(source), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0], err
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    return lines[0]


def test_refuses_checkpoint_with_objects(tmp_path, capsys):
    import torch

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    ck_path = folder / "fold_0" / "checkpoint_final.pth"
    ck = torch.load(ck_path, weights_only=False)
    ck["trainer"] = Path("/an/object/beyond/plain/types")  # a class instance: needs a GLOBAL to unpickle
    torch.save(ck, ck_path)
    from medcnn.models.importers import import_model

    with pytest.raises(UnsafeModelFileError, match=r"checkpoint_final.pth.*pathlib"):
        import_model(folder, tmp_path / "x")
    _cli_refusal(tmp_path, folder, "checkpoint_final.pth", capsys)


class TrainingLog(OrderedDict):
    """A dict subclass from some module (what a custom trainer might store): not allowed."""


class _Call:
    """Pickles as ``print("not run")``; the fixture then rewrites that GLOBAL to another name."""

    def __reduce__(self):
        return print, ("not run",)


def test_numpy1_checkpoint_imports_and_predicts_like_numpy2(tmp_path):
    """A checkpoint as nnU-Net wrote it under numpy 1.x (GLOBAL numpy.core.multiarray.scalar
    in the training log) imports under numpy 2.x with the same weights and predictions."""
    import shutil

    from medcnn.models.bundle import load_bundle
    from medcnn.models.importers import import_model

    new = make_nnunet_folder(tmp_path / "np2", dim=3, patch=(16, 16, 16), steps=3)
    old_root = tmp_path / "np1"
    shutil.copytree(new.parents[1], old_root)
    old = old_root / new.relative_to(new.parents[1])
    ck = old / "fold_0" / "checkpoint_final.pth"
    as_numpy1_checkpoint(ck)
    names = {f"{m}.{n}" for m, n in pickle_globals(ck)}
    assert {"numpy.core.multiarray.scalar", "numpy.dtype"} <= names and not any("numpy._core" in n for n in names)
    assert ck.read_bytes() != (new / "fold_0" / "checkpoint_final.pth").read_bytes()
    b_new, b_old = import_model(new, tmp_path / "b_new"), import_model(old, tmp_path / "b_old")
    assert load_bundle(b_new).sha256 == load_bundle(b_old).sha256
    assert load_bundle(b_new).spec_sha256 == load_bundle(b_old).spec_sha256
    files = write_case(tmp_path, shape=(20, 18, 22))
    p_new, p_old = medcnn_predict(b_new, files, tta=False), medcnn_predict(b_old, files, tta=False)
    np.testing.assert_array_equal(p_new.labels.array, p_old.labels.array)
    assert np.bincount(p_new.labels.array.ravel()).size > 1


@pytest.mark.parametrize("replace, named", [
    ((("__builtin__", "print"), ("os", "system")), "os.system"),
    ((("__builtin__", "print"), ("builtins", "eval")), "builtins.eval"),
    ((("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar2")), "numpy.core.multiarray.scalar2"),
    (None, "test_import_nnunet.TrainingLog"),
])
def test_refuses_globals_outside_the_allow_list_by_name(tmp_path, capsys, replace, named):
    """Only the numpy scalar/dtype globals (numpy 1.x or 2.x names) are allowed beyond
    torch's own list; anything else is refused naming it, from the API and the CLI."""
    import torch

    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    ck_path = folder / "fold_0" / "checkpoint_final.pth"
    ck = torch.load(ck_path, weights_only=False)
    if replace is None:
        ck["logging"] = TrainingLog(ck["logging"])
        torch.save(ck, ck_path)
    else:
        if replace[0][0] == "__builtin__":  # protocol 2 names builtins __builtin__
            ck["logging"]["note"] = _Call()
            torch.save(ck, ck_path)
        rewrite_globals(ck_path, dict([replace]))
    assert named in {f"{m}.{n}" for m, n in pickle_globals(ck_path)}
    with pytest.raises(UnsafeModelFileError, match=rf"checkpoint_final.pth.*a reference to {named}\b"):
        import_model(folder, tmp_path / "x")
    assert named in _cli_refusal(tmp_path, folder, "checkpoint_final.pth", capsys)


def test_refuses_class_not_on_allow_list(tmp_path, capsys):
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my_lab.nets.FancyUNet"
    (folder / "plans.json").write_text(json.dumps(plans))
    from medcnn.models.importers import import_model

    with pytest.raises(ConfigError, match="FancyUNet"):
        import_model(folder, tmp_path / "x")
    assert "plans.json" in _cli_refusal(tmp_path, folder, "plans.json", capsys)


def test_refuses_layer_not_on_allow_list(tmp_path):
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    from medcnn.models.importers import import_model

    with pytest.raises(ConfigError, match="nonlin"):
        import_model(folder, tmp_path / "x")


def test_refuses_weights_plans_mismatch(tmp_path, capsys):
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32]
    (folder / "plans.json").write_text(json.dumps(plans))
    from medcnn.models.importers import import_model

    with pytest.raises(BundleError, match="checkpoint_final.pth"):
        import_model(folder, tmp_path / "x")
    _cli_refusal(tmp_path, folder, "checkpoint_final.pth", capsys)


def test_refuses_cascade_and_unknown_format(tmp_path, capsys):
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0, configuration="3d_cascade_fullres")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_cascade_fullres"]["previous_stage"] = "3d_lowres"
    (folder / "plans.json").write_text(json.dumps(plans))
    from medcnn.models.importers import import_model

    with pytest.raises(ConfigError, match="cascade"):
        import_model(folder, tmp_path / "x")
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    with pytest.raises(UnsupportedFormatError):
        import_model(empty, tmp_path / "x")
    _cli_refusal(tmp_path, empty, "not_a_model", capsys)


def test_run_report_shows_the_import(tmp_path, capsys):
    """`medcnn run` with an imported bundle: volumes per nnU-Net label name, and the report
    names where the model came from."""
    from medcnn.cli import main
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    bundle = import_model(folder, tmp_path / "bundle")
    case = write_case(tmp_path, shape=(20, 18, 22))[0]
    code = main(["run", case, "--model", str(bundle), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    src = report["model"]["imported_from"]
    assert src["format"] == "nnunet-v2" and src["configuration"] == "3d_fullres"
    assert "imported from nnunet-v2" in (tmp_path / "out" / "report.html").read_text()
    assert set(report["model"]["labels"].values()) == {"background", "class1", "class2"}
    assert any("float16" in d for d in src["deviations"]) and src["reproduces"].startswith("nnUNetv2_predict")


# ---------------------------------------------------------------------------- exact class names
@pytest.mark.parametrize("key, value", [
    ("norm_op", "torch.nn.InstanceNorm3d"),
    ("norm_op", "torch.nn.modules.instancenorm.InstanceNorm3d"),
    ("nonlin", "torch.nn.modules.activation.LeakyReLU"),
    ("conv_op", "torch.nn.Conv3d"),
    ("network_class_name", "PlainConvUNet"),
])
def test_layer_names_accepted_as_nnunet_resolves_them(tmp_path, key, value):
    """The names nnU-Net writes or resolves (pydoc.locate; a bare network class is searched in
    dynamic_network_architectures only) give the same network."""
    import pydoc

    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from medcnn.models.importers.nnunet import import_nnunet

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    if key == "network_class_name":
        arch[key] = value
    else:
        import torch

        assert pydoc.locate(value) is getattr(torch.nn, value.rsplit(".", 1)[1])
        arch["arch_kwargs"][key] = value
    (folder / "plans.json").write_text(json.dumps(plans))
    spec = import_nnunet(folder)["network"]
    assert spec["name"] == "plainconvunet" and spec["norm_op"] == "InstanceNorm" and spec["nonlin"] == "LeakyReLU"
    del PlainConvUNet


@pytest.mark.parametrize("key, value", [
    ("norm_op", "my_lab.layers.InstanceNorm3d"),
    ("norm_op", "InstanceNorm3d"),
    ("nonlin", "torch.nn.modules.activation.Tanh"),
    ("conv_op", "scripts.net.Conv3d"),
    ("network_class_name", "scripts.net.PlainConvUNet"),
])
def test_refuses_layers_from_other_modules(tmp_path, capsys, key, value):
    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    (arch if key == "network_class_name" else arch["arch_kwargs"])[key] = value
    (folder / "plans.json").write_text(json.dumps(plans))
    from medcnn.models.importers import import_model

    with pytest.raises(ConfigError, match=value.replace(".", r"\.")):
        import_model(folder, tmp_path / "x")
    assert value in _cli_refusal(tmp_path, folder, "plans.json", capsys)


# ---------------------------------------------------------------------------- nnUNetv2_predict's defaults
def test_segment_cli_mirrors_by_default_like_nnunetv2_predict(tmp_path, capsys):
    """No flag: mirroring over the trainer's axes, labels equal to nnUNetPredictor's default
    run; --no-tta: none (nnUNetv2_predict --disable_tta); a model trained without mirroring
    runs without, and no warning."""
    _needs_nnunet()
    from medcnn.cli import main
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=8, mirror=(0, 2))
    bundle = import_model(folder, tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["inference"]["tta_axes"] == "trained" and meta["mirror_axes"] == [0, 2]
    files = write_case(tmp_path, shape=(20, 18, 22))
    runs = {}
    for flags in ([], ["--no-tta"]):
        out = tmp_path / ("out" + "".join(flags))
        assert main(["segment", files[0], "--model", str(bundle), "--out", str(out), "--device", "cpu",
                     "--precision", "fp32", *flags]) == 0, capsys.readouterr().err
        prov = json.loads((out / "segment_provenance.json").read_text())
        runs[tuple(flags)] = (prov, sitk.GetArrayFromImage(sitk.ReadImage(str(next(out.glob("*_labels.nii.gz"))))))
    assert runs[()][0]["cases"][0]["tta_axes"] == [0, 2]
    assert runs[("--no-tta",)][0]["cases"][0]["tta_axes"] == []
    ref_on = reference_predict(folder, files, (0,), use_mirroring=True)
    ref_off = reference_predict(folder, files, (0,), use_mirroring=False)
    assert (runs[()][1] == ref_on).mean() >= 0.999 and (runs[("--no-tta",)][1] == ref_off).mean() >= 0.999
    assert (ref_on != ref_off).any(), "mirroring changes nothing here: the test could not tell them apart"

    plain = make_nnunet_folder(tmp_path / "nomirror", dim=3, patch=(16, 16, 16), steps=0, mirror=None)
    meta = json.loads((import_model(plain, tmp_path / "b2") / "bundle.json").read_text())
    assert "tta_axes" not in meta["inference"] and meta["mirror_axes"] == []


def test_postprocessing_json_only_when_asked(tmp_path, capsys):
    from medcnn.cli import main
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0,
                                postprocessing=[{"labels_or_regions": [1, 2]}])
    default = json.loads((import_model(folder, tmp_path / "a") / "bundle.json").read_text())
    src = default["provenance"]["imported_from"]
    assert default["postprocess"] is None and src["postprocessing"] is None
    assert src["postprocessing_not_applied"] == "crossval_results_folds_0/postprocessing.json"
    assert main(["models", "import", str(folder), "--out", str(tmp_path / "b"), "--nnunet-postprocessing"]) == 0
    asked = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert asked["postprocess"]["keep_largest_groups"] == [[1, 2]]
    assert any("nnUNetv2_apply_postprocessing" in d for d in asked["provenance"]["imported_from"]["deviations"])
    assert asked["provenance"]["imported_from"]["files_sha256"]["crossval_results_folds_0/postprocessing.json"]
    # asked for, but the folder has none: refused, one line
    bare = make_nnunet_folder(tmp_path / "bare", dim=3, patch=(16, 16, 16), steps=0)
    capsys.readouterr()
    assert main(["models", "import", str(bare), "--out", str(tmp_path / "c"), "--nnunet-postprocessing"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "postprocessing.json" in err[0] and not (tmp_path / "c").exists()


def test_torch_without_safe_globals_is_one_line_not_attribute_error(tmp_path, capsys, monkeypatch):
    """torch < 2.5 has no torch.serialization.safe_globals (and < 2.6 no (object, name)
    pairs): below pyproject's floor the import stops with one line naming the version."""
    import torch

    from medcnn.cli import main

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(16, 16, 16), steps=0)
    monkeypatch.delattr(torch.serialization, "safe_globals")
    capsys.readouterr()
    assert main(["models", "import", str(folder), "--out", str(tmp_path / "x")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "torch >= 2.6" in err[0] and torch.__version__ in err[0]
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"torch>=2.6"' in pyproject
