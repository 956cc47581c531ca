"""Bundles: round trip, integrity checks, and refusing pickles without running them."""

from __future__ import annotations

import hashlib
import io
import json
import re
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from medcnn.errors import BundleError, ConfigError, InputFileNotFoundError, UnsafeModelFileError
from medcnn.models import build_network, load_bundle, save_bundle
from medcnn.models import bundle as bundle_mod
from medcnn.preprocess import PreprocessSpec

SPEC = {"name": "unet", "in_channels": 2, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2],
        "num_res_units": 1}
PRE = PreprocessSpec(orientation="RAS", target_spacing=(1.0, 1.0, 2.0), modalities=("MR", "MR"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: fastest on one thread


def _save(tmp_path: Path, name: str = "b", net=None, **kw) -> Path:
    torch.manual_seed(0)
    net = net if net is not None else build_network(SPEC)
    opts = dict(network=SPEC, preprocess=PRE, roi_size=(16, 16, 8), labels={0: "background", 1: "a", 2: "b"},
                channels=["FLAIR", "T1c"], provenance={"seed": 0, "data": "synthetic"})
    opts.update(kw)
    return save_bundle(net, tmp_path / name, **opts)


def _x():
    return torch.randn(1, 2, 16, 16, 8, generator=torch.Generator().manual_seed(1))


def test_round_trip_same_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    net = build_network(SPEC)
    path = _save(tmp_path, net=net)
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "model.safetensors"]
    b = load_bundle(path)
    # the recorded hash is the SHA-256 of the file (computed independently here)
    assert b.sha256 == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert b.json["weights"]["sha256"] == b.sha256
    assert b.network["name"] == "unet" and b.roi_size == (16, 16, 8) and b.overlap == 0.5
    assert b.labels == {0: "background", 1: "a", 2: "b"} and b.channels == ("FLAIR", "T1c")
    assert b.target_spacing_mm == (1.0, 1.0, 2.0) and b.provenance == {"seed": 0, "data": "synthetic"}
    assert b.preprocess_spec() == PRE and b.format_version == 1 and b.medcnn_version
    with torch.no_grad():
        assert torch.equal(b.build_model()(_x()), net.eval()(_x()))
    # build_model gives independent copies
    m1, m2 = b.build_model(), b.build_model()
    with torch.no_grad():
        next(m1.parameters()).add_(1.0)
    assert not torch.equal(next(m1.parameters()), next(m2.parameters()))


def test_fp16_bundle_is_smaller_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    net = build_network(SPEC).eval()
    p32 = _save(tmp_path, "b32", net=net)
    p16 = _save(tmp_path, "b16", net=net, weights_dtype="float16")
    assert (p16 / "model.safetensors").stat().st_size < 0.6 * (p32 / "model.safetensors").stat().st_size
    b = load_bundle(p16)
    assert all(v.dtype == torch.float32 for v in b.state_dict.values() if v.is_floating_point())
    with torch.no_grad():
        assert torch.allclose(b.build_model()(_x()), net(_x()), atol=5e-2)


def test_archive_round_trip(tmp_path):
    p = _save(tmp_path, "model.medcnn")
    assert p.is_file() and zipfile.is_zipfile(p)
    b = load_bundle(p)
    assert b.labels[2] == "b"


def test_tampered_weights_are_refused_with_both_hashes(tmp_path):
    path = _save(tmp_path)
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    expected = json.loads((path / "bundle.json").read_text())["weights"]["sha256"]
    data[-5] ^= 0xFF  # flip bits in the last weight values
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        load_bundle(path)
    msg = str(e.value)
    assert f"expected sha256 {expected}" in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    assert str(path) in msg


def _rewrite_weights(path: Path, state: dict) -> None:
    w = path / "model.safetensors"
    save_file(state, str(w))
    meta = json.loads((path / "bundle.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    (path / "bundle.json").write_text(json.dumps(meta))


def test_missing_tensor_named(tmp_path):
    path = _save(tmp_path)
    state = load_file(str(path / "model.safetensors"))
    victim = sorted(state)[3]
    del state[victim]
    _rewrite_weights(path, state)
    with pytest.raises(BundleError) as e:
        load_bundle(path)
    assert repr(victim) in str(e.value) and str(path) in str(e.value)


def test_wrong_shape_named(tmp_path):
    path = _save(tmp_path)
    meta = json.loads((path / "bundle.json").read_text())
    meta["network"]["channels"] = [4, 8, 32]  # spec no longer matches the weights
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"tensor '.*' of shape .*got shape"):
        load_bundle(path)


def test_unexpected_tensor_named(tmp_path):
    path = _save(tmp_path)
    state = load_file(str(path / "model.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    _rewrite_weights(path, state)
    with pytest.raises(BundleError, match="'extra.weight'"):
        load_bundle(path)


def test_newer_format_and_broken_json(tmp_path):
    path = _save(tmp_path)
    meta = json.loads((path / "bundle.json").read_text())
    meta["format_version"] = 99
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="upgrade medcnn"):
        load_bundle(path)
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="valid JSON"):
        load_bundle(path)
    (path / "bundle.json").unlink()
    with pytest.raises(BundleError, match="bundle.json"):
        load_bundle(path)
    with pytest.raises(InputFileNotFoundError):
        load_bundle(tmp_path / "nothing")


# ---------------------------------------------------------------------------- pickles
class _Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _assert_refused(target: Path, marker: Path) -> None:
    with pytest.raises(UnsafeModelFileError) as e:
        load_bundle(target)
    assert not marker.exists(), "the pickle was executed"
    msg = str(e.value)
    assert "weights_only=True" in msg and "save_bundle" in msg  # tells how to convert a trusted file


def test_torch_checkpoint_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.pt"
    torch.save({"state": _Evil(marker)}, ckpt)  # a real PyTorch zip checkpoint with data.pkl
    _assert_refused(ckpt, marker)
    renamed = tmp_path / "weights.medcnn"  # same bytes, innocent name: found by content
    renamed.write_bytes(ckpt.read_bytes())
    _assert_refused(renamed, marker)


def test_raw_pickle_posing_as_safetensors_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _save(tmp_path)
    blob = pickle.dumps(_Evil(marker), protocol=2)
    (path / "model.safetensors").write_bytes(blob)
    meta = json.loads((path / "bundle.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(blob).hexdigest()  # even with a matching hash
    (path / "bundle.json").write_text(json.dumps(meta))
    _assert_refused(path, marker)
    (path / "model.safetensors").write_bytes(pickle.dumps(_Evil(marker), protocol=0))
    _assert_refused(path, marker)


def test_folder_with_only_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "old_model"
    folder.mkdir()
    torch.save(_Evil(marker), folder / "model.pth")
    _assert_refused(folder, marker)


def test_archive_holding_a_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Evil(marker), buf)
    arch = tmp_path / "model.medcnn"
    with zipfile.ZipFile(arch, "w") as zf:
        zf.writestr("bundle.json", json.dumps({"weights": {"file": "model.safetensors"}}))
        zf.writestr("model.safetensors", buf.getvalue())
    _assert_refused(arch, marker)


# ---------------------------------------------------------------------------- saving
def test_save_refuses_mismatched_model_and_bad_options(tmp_path):
    other = build_network(dict(SPEC, channels=[4, 8, 32]))
    with pytest.raises(ConfigError, match="shape"):
        _save(tmp_path, "x", net=other)
    with pytest.raises(ConfigError, match="roi_size divisible"):
        _save(tmp_path, "x", roi_size=(15, 16, 8))
    with pytest.raises(ConfigError, match="channel names"):
        _save(tmp_path, "x", channels=["only_one"])
    with pytest.raises(ConfigError, match="label values"):
        _save(tmp_path, "x", labels={0: "bg", 5: "x"})
    with pytest.raises(ConfigError, match="JSON"):
        _save(tmp_path, "x", provenance={"bad": object()})
    assert not any(tmp_path.iterdir()), "a failed save left files behind"


def test_save_is_atomic_and_does_not_overwrite_by_default(tmp_path, monkeypatch):
    path = _save(tmp_path)
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(BundleError, match="overwrite=True"):
        _save(tmp_path)

    def boom(tmp, dest):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_mod, "_replace", boom)
    torch.manual_seed(5)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(build_network(SPEC), path, network=SPEC, preprocess=PRE, roi_size=(16, 16, 8),
                    labels={0: "bg"}, channels=["a", "b"], overwrite=True)
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"], "temporary folder left behind"
    monkeypatch.undo()
    torch.manual_seed(5)
    _save(tmp_path, overwrite=True, net=build_network(SPEC))
    assert (path / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_sigmoid_bundle_allows_region_labels_and_reaches_the_segmenter(tmp_path):
    from medcnn.inference import Segmenter

    path = _save(tmp_path, labels={0: "bg", 1: "whole", 2: "core", 3: "enhancing"}, activation="sigmoid")
    b = load_bundle(path)
    assert b.activation == "sigmoid" and b.labels[3] == "enhancing"
    assert Segmenter.from_bundle(b, device="cpu").activation == "sigmoid"
    with pytest.raises(ConfigError, match="label values 0..2"):
        _save(tmp_path, "softmax", labels={3: "x"})
    with pytest.raises(ConfigError, match="activation"):
        _save(tmp_path, "bad", activation="relu")


# ---------------------------------------------------------------------------- training mirror axes
def test_mirror_axes_round_trip_and_reach_the_segmenter(tmp_path):
    import warnings

    from medcnn.inference import Segmenter

    b = load_bundle(_save(tmp_path, "m", mirror_axes=[2, 0]))
    assert b.json["mirror_axes"] == [0, 2] and b.mirror_axes == (0, 2)
    seg = Segmenter.from_bundle(b, device="cpu", tta_axes="trained")
    assert seg.mirror_axes == (0, 2) and seg.tta_axes == (0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # trained axes: no warning
        Segmenter.from_bundle(b, device="cpu", tta_axes=(0,))
    with pytest.warns(UserWarning, match=r"axes \[1\] that this model's training never mirrored"):
        Segmenter.from_bundle(b, device="cpu", tta_axes="all")
    # bundles written without the key (older medcnn, other tools): unknown, not "none"
    legacy = _save(tmp_path, "legacy")
    meta = json.loads((legacy / "bundle.json").read_text())
    meta.pop("mirror_axes")
    (legacy / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(legacy).mirror_axes is None
    with pytest.warns(UserWarning, match="does not record"):
        seg = Segmenter.from_bundle(legacy, device="cpu", tta_axes="trained")
    assert seg.tta_axes == (0, 1, 2)


def test_bad_mirror_axes_are_refused_on_save_and_load(tmp_path):
    for bad in ([3], [0, 0], ["x"], [True]):
        with pytest.raises(ConfigError, match="mirror_axes"):
            _save(tmp_path, "bad", mirror_axes=bad)
    path = _save(tmp_path, "ok", mirror_axes=[0])
    meta = json.loads((path / "bundle.json").read_text())
    meta["mirror_axes"] = [5]
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="mirror_axes"):
        load_bundle(path)


def test_models_list_shows_tta_axes_and_postprocessing_of_the_shipped_bundles(capsys):
    from medcnn.cli import main
    from medcnn.models.defaults import bundled_names

    if "cardiac-lv-cine-mri" not in bundled_names():
        pytest.skip("default bundles not installed")
    assert main(["models", "show", "cardiac-lv-cine-mri"]) == 0
    out = capsys.readouterr().out
    assert "tta axes    [0]" in out and "postprocess keep_largest (connectivity 26)" in out
    assert main(["models", "list", "--json"]) == 0
    rows = {d["name"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {n: rows[n]["mirror_axes"] for n in rows} == {n: [0] for n in rows}  # all trained with LR flips
    assert rows["cardiac-lv-cine-mri"]["postprocess"].startswith("keep_largest")
    assert rows["hippocampus-mri"]["postprocess"] == ""
    assert load_bundle("cardiac-lv-cine-mri").postprocess["keep_largest"] is True


def test_update_bundle_changes_json_and_keeps_the_weights_bytes(tmp_path):
    from medcnn.models import update_bundle

    for name in ("folder", "archive.medcnn"):
        path = _save(tmp_path, name, mirror_axes=[0])
        weights = (path / "model.safetensors").read_bytes() if path.is_dir() else \
            zipfile.ZipFile(path).read("model.safetensors")
        before = load_bundle(path)
        update_bundle(path, postprocess={"keep_largest": True}, provenance={"validation": {"dice": 0.9}})
        after = load_bundle(path)
        now = (path / "model.safetensors").read_bytes() if path.is_dir() else \
            zipfile.ZipFile(path).read("model.safetensors")
        assert now == weights and after.sha256 == before.sha256
        assert after.postprocess["keep_largest"] is True and after.provenance == {"validation": {"dice": 0.9}}
        assert after.mirror_axes == (0,) and after.labels == before.labels  # untouched fields kept
        with pytest.raises(ConfigError, match="mirror_axes"):
            update_bundle(path, mirror_axes=[7])
        assert load_bundle(path).mirror_axes == (0,)  # a refused update leaves the bundle as it was


def test_saving_is_byte_reproducible_across_processes(tmp_path):
    """The weights file's SHA-256 is the model hash in reports: the same weights must give the
    same bytes in another process (safetensors orders multi-key metadata differently per process)."""
    import subprocess
    import sys

    code = ("import sys, torch; sys.path.insert(0, %r); import test_bundle as t; from pathlib import Path; "
            "t._save(Path(sys.argv[1]), 'b')") % str(Path(__file__).parent)
    hashes = set()
    for i in range(3):
        out = tmp_path / f"run{i}"
        out.mkdir()
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=300)
        hashes.add(hashlib.sha256((out / "b" / "model.safetensors").read_bytes()).hexdigest())
    assert len(hashes) == 1


def test_models_show_states_the_default_cardiac_models_licence_and_cross_validation(capsys):
    from medcnn.cli import main
    from medcnn.models.defaults import bundled_names

    if "cardiac-cine-mri" not in bundled_names():
        pytest.skip("default bundles not installed")
    assert main(["models", "show", "cardiac-cine-mri"]) == 0
    out = capsys.readouterr().out
    assert "non-commercial research" in out and "rv_blood_pool" in out
    cv = load_bundle("cardiac-cine-mri").provenance["cross_validation"]
    n = cv["n_folds"]
    folds = f"{n} folds" if n > 1 else "1 folds"
    assert re.search(rf"figure      cross_validation: {cv['kind']} \(", out)
    assert re.search(rf"per-label Dice \(mean over {folds} [^)]*\): lv_blood_pool "
                     rf"{cv['mean_over_folds']['dice.lv_blood_pool']:.3f}", out)
    assert main(["models", "list", "--json"]) == 0
    rows = {d["name"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["cardiac-cine-mri"]["cross_validation"]["n_folds"] == n
    assert "licence" not in rows["hippocampus-mri"]  # only bundles that record one
