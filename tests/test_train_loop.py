"""Training loop on tiny synthetic data: loss goes down, resume is exact, the bundle predicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medcnn.config import load_config  # noqa: E402
from medcnn.io import read_volume, write_volume  # noqa: E402
from medcnn.train.loop import TrainConfig, load_checkpoint, train  # noqa: E402
from medcnn.volume import Geometry, Volume  # noqa: E402

CONFIG = """
name: tiny
data:
  dataset: data/dataset.json
  channels: [MR]
  labels: {background: 0, blob: 1}
  n_folds: 2
  fold: 0
preprocess: {orientation: RAS, target_spacing: null, modalities: [MR]}
network: {name: unet, spatial_dims: 3, in_channels: 1, out_channels: 2, channels: [4, 8], strides: [2],
          num_res_units: 0}
patch_size: [16, 16, 8]
batch_size: 2
max_steps: 12
steps_per_epoch: 4
val_every_epochs: 3
checkpoint_every: 3
fg_fraction: 0.5
optim: {optimizer: adamw, lr: 0.01}
augment: {rotate_prob: 0.5, zoom_prob: 0.5, flip_axes: [0]}
seed: 3
progress: false
export_dtype: float32
"""


def make_dataset(root: Path, n: int = 4) -> Path:
    """Bright ellipsoids (label 1) in noise; LPS-flipped, anisotropic grid; 2 patients."""
    rng = np.random.default_rng(0)
    (root / "data" / "img").mkdir(parents=True)
    geom = Geometry((20, 18, 10), (1.0, 1.2, 2.5), (10.0, -5.0, 3.0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1)))
    entries = []
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in geom.shape], indexing="ij")
    for c in range(n):
        ci, cj, ck = rng.uniform(6, 12), rng.uniform(6, 11), rng.uniform(3, 6)
        lab = (((ii - ci) / 4.5) ** 2 + ((jj - cj) / 4) ** 2 + ((kk - ck) / 2) ** 2 <= 1).astype(np.uint8)
        img = 100 + 80 * lab + rng.normal(0, 15, geom.shape)
        write_volume(Volume(img.astype(np.float32), geom), root / "data" / "img" / f"c{c}.nii.gz")
        write_volume(Volume(lab, geom, kind="label"), root / "data" / "img" / f"c{c}_seg.nii.gz")
        entries.append({"image": f"img/c{c}.nii.gz", "label": f"img/c{c}_seg.nii.gz", "patient": f"p{c // 2}"})
    (root / "data" / "dataset.json").write_text(json.dumps({"training": entries}))
    (root / "tiny.yaml").write_text(CONFIG)
    return root / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cfg_path = make_dataset(root)
    return root, load_config(TrainConfig, cfg_path)


def _losses(out: Path) -> list[float]:
    with (out / "log.csv").open() as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_loss_decreases_and_bundle_predicts_on_input_grid(tiny):
    root, cfg = tiny
    torch.set_num_threads(1)
    cfg2 = type(cfg)(**{**cfg.__dict__, "augment": type(cfg.augment)(enabled=False)})
    res = train(cfg2, out_dir=root / "run_a", config_dir=root, max_steps=30, log=lambda s: None)
    losses = _losses(root / "run_a")
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert res.bundle is not None and (res.bundle / "model.safetensors").is_file()
    doc = json.loads((res.bundle / "bundle.json").read_text())
    prov = doc["provenance"]
    assert prov["training"]["config"]["name"] == "tiny"
    assert prov["training"]["hardware"]["cpu_cores"] >= 1
    assert prov["validation"]["n_cases"] == 2  # one held-out patient = 2 cases
    assert set(prov["training"]["val_cases"]).isdisjoint(prov["training"]["train_cases"])
    assert doc["mirror_axes"] == []  # augmentation off: TTA with "trained" axes has nothing to mirror
    # the exported bundle predicts through the full inference path, on the input grid
    from medcnn.train.evaluate import predict_case_labels

    img = read_volume(root / "data" / "img" / "c3.nii.gz")
    ref = read_volume(root / "data" / "img" / "c3_seg.nii.gz", kind="label")
    pred = predict_case_labels(res.bundle, [img])
    assert pred.shape == img.shape
    dice = 2 * ((pred == 1) & (ref.array == 1)).sum() / ((pred == 1).sum() + (ref.array == 1).sum())
    assert dice > 0.5
    from medcnn.inference import Segmenter

    out = Segmenter.from_bundle(res.bundle, device="cpu", precision="fp32").predict(img)
    assert out.labels.geometry.isclose(img.geometry)
    np.testing.assert_array_equal(np.asarray(out.labels.array), pred)


def test_resume_reproduces_the_uninterrupted_run(tiny):
    root, cfg = tiny
    torch.set_num_threads(1)
    full = train(cfg, out_dir=root / "full", config_dir=root, max_steps=6, log=lambda s: None)
    assert full.step == 6
    # interrupted after 3 steps (checkpoint), then resumed to the same schedule
    part = train(cfg, out_dir=root / "part", config_dir=root, max_steps=6, stop_after=3, log=lambda s: None)
    assert part.step == 3
    net_full = _fresh(cfg)
    net_part = _fresh(cfg)
    opt_part = torch.optim.AdamW(net_part.parameters())
    doc = load_checkpoint(root / "part" / "checkpoint", net_part, opt_part)
    assert doc["step"] == 3
    assert int(opt_part.state_dict()["state"][0]["step"]) == 3
    resumed = train(cfg, out_dir=root / "part", config_dir=root, max_steps=6, resume=True, log=lambda s: None)
    assert resumed.step == 6
    a, b = _losses(root / "full"), _losses(root / "part")
    assert len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5)  # same next losses after resuming
    load_checkpoint(root / "full" / "checkpoint", net_full, None)
    load_checkpoint(root / "part" / "checkpoint", net_part, None)
    for (k, v1), v2 in zip(net_full.state_dict().items(), net_part.state_dict().values()):
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6, msg=k)
    opt_full = torch.optim.AdamW(_fresh(cfg).parameters())
    opt_part2 = torch.optim.AdamW(_fresh(cfg).parameters())
    load_checkpoint(root / "full" / "checkpoint", _fresh(cfg), opt_full)
    load_checkpoint(root / "part" / "checkpoint", _fresh(cfg), opt_part2)
    s1, s2 = opt_full.state_dict()["state"], opt_part2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        torch.testing.assert_close(s1[i]["exp_avg"], s2[i]["exp_avg"], rtol=1e-5, atol=1e-7)


def _fresh(cfg):
    from medcnn.train._compat import build_network

    return build_network(cfg.network)


def test_checkpoint_is_not_a_pickle(tiny):
    root, cfg = tiny
    train(cfg, out_dir=root / "ck", config_dir=root, max_steps=3, log=lambda s: None)
    files = sorted(p.name for p in (root / "ck" / "checkpoint").iterdir())
    assert files == ["state.json", "weights.safetensors"]
    head = (root / "ck" / "checkpoint" / "weights.safetensors").read_bytes()[:2]
    assert head != b"PK" and head[:1] != b"\x80"  # neither a torch zip nor a raw pickle


def test_cli_train_and_bad_config(tiny, tmp_path, capsys):
    from medcnn.cli import main

    root, _ = tiny
    rc = main(["train", "--config", str(root / "tiny.yaml"), "--out", str(tmp_path / "cli"), "--max-steps", "2",
               "--no-progress", "--export", str(tmp_path / "exported")])
    assert rc == 0
    assert json.loads((tmp_path / "exported" / "bundle.json").read_text())["mirror_axes"] == [0]  # augment.flip_axes
    # postprocessing from the config goes into the bundle; --evaluate-only applies a changed rule
    pp = root / "pp.yaml"  # beside tiny.yaml: the dataset path is relative to the config
    pp.write_text((root / "tiny.yaml").read_text() + "\npostprocess: {keep_largest: true}\n")
    assert main(["train", "--config", str(pp), "--out", str(tmp_path / "cli"), "--evaluate-only"]) == 0
    from medcnn.models import load_bundle

    b = load_bundle(tmp_path / "cli" / "bundle")
    assert b.postprocess["keep_largest"] is True and b.mirror_axes == (0,)
    assert b.provenance["validation"]["n_cases"] >= 1
    bad_pp = root / "bad_pp.yaml"
    bad_pp.write_text((root / "tiny.yaml").read_text() + "\npostprocess: {connectivity: 7}\n")
    assert main(["train", "--config", str(bad_pp), "--out", str(tmp_path / "p")]) == 2
    assert "connectivity" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    flips = root / "flips.yaml"
    flips.write_text((root / "tiny.yaml").read_text().replace("flip_axes: [0]", "flip_axes: [3]"))
    assert main(["train", "--config", str(flips), "--out", str(tmp_path / "f")]) == 2
    assert "flip_axes" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text((root / "tiny.yaml").read_text() + "\nlearning_rate: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def _with_extra(root: Path, role: str) -> Path:
    """tiny.yaml plus a second dataset (the same 4 images, other case ids, class 1 not
    annotated) as data.extra with ``role``."""
    extra = root / "data2"
    if not extra.exists():
        extra.mkdir()
        entries = json.loads((root / "data" / "dataset.json").read_text())["training"]
        import shutil

        shutil.copytree(root / "data" / "img", extra / "img")  # a symlink leaving the folder is refused
        (extra / "dataset.json").write_text(json.dumps({"training": [
            {**e, "case_id": f"x{i}", "patient": f"x{i}"} for i, e in enumerate(entries)]}))
    p = root / f"extra_{role}.yaml"
    p.write_text((root / "tiny.yaml").read_text().replace(
        "  fold: 0\n", f"  fold: 0\n  extra:\n    - {{dataset: data2/dataset.json, role: {role}, annotated_classes: [],"
        " ignore_unlabelled_slices: true}\n"))
    return p


def test_extra_datasets_train_or_form_an_external_test(tiny):
    from medcnn.train.loop import split_cases

    root, _ = tiny
    ext = load_config(TrainConfig, _with_extra(root, "external"))
    tr, va, ex = split_cases(ext, None, root)
    assert (len(tr), len(va), [c.case_id for c in ex]) == (2, 2, ["x0", "x1", "x2", "x3"])
    assert all(c.annotated_classes == () and c.ignore_unlabelled_slices is True for c in ex)
    assert all(c.ignore_unlabelled_slices is None for c in tr + va)  # main dataset: the run's options
    tr2, va2, ex2 = split_cases(ext, None, root, train_on_external=True)
    assert (len(tr2), len(va2), ex2) == (6, 2, [])
    tr3, _, ex3 = split_cases(load_config(TrainConfig, _with_extra(root, "train")), None, root)
    assert (len(tr3), ex3) == (6, [])
    # the external test is evaluated with the held-out fold and recorded in the bundle
    res = train(ext, out_dir=root / "ext", config_dir=root, max_steps=2, log=lambda s: None)
    prov = json.loads((res.bundle / "bundle.json").read_text())["provenance"]
    assert prov["training"]["external_test_cases"] == ["x0", "x1", "x2", "x3"]
    assert prov["validation"]["n_cases"] == 2 and prov["validation"]["external"]["n_cases"] == 4
    assert prov["validation"]["external"]["kind"] == "external test"
    assert prov["data_use"]["external_test"] == ["x0", "x1", "x2", "x3"]
    # class 1 is not annotated in the external cases: no Dice for it there
    assert all(not c["dice"] for c in prov["validation"]["external"]["cases"])


def test_clashing_case_ids_across_datasets_are_refused(tiny):
    from medcnn.errors import ConfigError
    from medcnn.train.loop import split_cases

    root, _ = tiny
    p = root / "clash.yaml"
    p.write_text((root / "tiny.yaml").read_text().replace(
        "  fold: 0\n", "  fold: 0\n  extra: [{dataset: data/dataset.json}]\n"))
    with pytest.raises(ConfigError, match="unique across"):
        split_cases(load_config(TrainConfig, p), None, root)


def _with_selection(root: Path, n: int = 6, *, checkpoint: str = "best_selection") -> Path:
    """The tiny config over 6 cases of 3 patients, 3 folds: fold 0 test, fold 1 selection."""
    data = root / "data"
    entries = json.loads((data / "dataset.json").read_text())["training"]
    more = list(entries)
    for c in range(len(entries), n):  # a third patient: copies of the first two cases' files under new ids
        src = entries[c - len(entries)]
        more.append({**src, "case_id": f"c{c}", "patient": f"p{c // 2}"})
    (data / "dataset_sel.json").write_text(json.dumps({"training": more}))
    p = root / f"sel_{checkpoint}.yaml"
    p.write_text((root / "tiny.yaml").read_text()
                 .replace("dataset: data/dataset.json", "dataset: data/dataset_sel.json")
                 .replace("  n_folds: 2\n  fold: 0\n", "  n_folds: 3\n  fold: 0\n  selection_fold: 1\n")
                 .replace("val_every_epochs: 3\n", f"val_every_epochs: 1\ncheckpoint: {checkpoint}\n"))
    return p


def test_selection_split_never_overlaps_the_reported_test_cases(tiny):
    """checkpoint: best_selection picks the weights on the selection fold; the figures reported
    as ``test`` are on other patients, each figure carries its kind, and provenance lists every
    case id under exactly one role."""
    from medcnn.train.loop import split_run_cases

    root, _ = tiny
    cfg = load_config(TrainConfig, _with_selection(root))
    split = split_run_cases(cfg, None, root)
    sel, test = {c.case_id for c in split.selection}, {c.case_id for c in split.test}
    assert sel and test and not sel & test
    assert not {c.group for c in split.selection} & {c.group for c in split.test}  # patients, not only frames
    assert not {c.case_id for c in split.train} & (sel | test)
    res = train(cfg, out_dir=root / "sel", config_dir=root, max_steps=8, log=lambda s: None)
    prov = json.loads((res.bundle / "bundle.json").read_text())["provenance"]
    use = prov["data_use"]
    assert set(use["selection"]) == sel and set(use["test"]) == test
    assert set(use["training"]) == {c.case_id for c in split.train}
    # the evaluation reported as test never saw a selection case, and says it is a test figure
    val = prov["validation"]
    assert val["kind"] == "test"
    assert {c["case_id"] for c in val["cases"]} == test
    assert not {c["case_id"] for c in val["cases"]} & set(use["selection"])
    assert val["selection"]["kind"] == "selection"
    assert {c["case_id"] for c in val["selection"]["cases"]} == sel
    # the weights are the best of the training-time validations, which ran on the selection fold
    hist = prov["training"]["history"]
    assert len(hist) == 2 and prov["training"]["training_time_validation_on"] == "selection"
    best = max(hist, key=lambda h: h["val_dice"])
    assert prov["training"]["step"] == best["step"]
    assert "best training-time Dice on the selection split" in use["checkpoint"]


def test_default_checkpoint_is_the_final_step(tiny):
    """Without a selection split the bundle holds the final weights, whatever the test-fold log says."""
    root, cfg = tiny
    assert cfg.checkpoint == "final"
    cfg2 = type(cfg)(**{**cfg.__dict__, "val_every_epochs": 1})
    res = train(cfg2, out_dir=root / "final", config_dir=root, max_steps=8, log=lambda s: None)
    prov = json.loads((res.bundle / "bundle.json").read_text())["provenance"]
    assert prov["training"]["step"] == 8 and prov["training"]["best_val_dice_network_grid"] is None
    assert prov["data_use"]["checkpoint"].startswith("final step 8") and prov["data_use"]["selection"] == []
    assert prov["validation"]["kind"] == "test" and "selection" not in prov["validation"]
    # the bundle's weights equal the last checkpoint's model tensors
    from safetensors.torch import load_file

    w = load_file(str(res.bundle / "model.safetensors"))
    ck = load_file(str(root / "final" / "checkpoint" / "weights.safetensors"))
    for k, v in w.items():
        torch.testing.assert_close(v, ck[f"model.{k}"])


def test_best_selection_without_a_selection_split_is_refused(tiny):
    from medcnn.errors import ConfigError

    root, _ = tiny
    p = root / "bad_sel.yaml"
    p.write_text((root / "tiny.yaml").read_text() + "checkpoint: best_selection\n")
    with pytest.raises(ConfigError, match="selection_fold"):
        load_config(TrainConfig, p)
    p.write_text((root / "tiny.yaml").read_text().replace("  fold: 0\n", "  fold: 0\n  selection_fold: 0\n"))
    with pytest.raises(ConfigError, match="other than data.fold"):
        load_config(TrainConfig, p)


def test_an_external_dataset_that_shaped_the_recipe_is_reported_as_selection(tiny):
    root, _ = tiny
    p = _with_extra(root, "external")
    p.write_text(p.read_text().replace("role: external,", "role: external, reported_as: selection,"))
    res = train(load_config(TrainConfig, p), out_dir=root / "ext_sel", config_dir=root, max_steps=2, log=lambda s: None)
    prov = json.loads((res.bundle / "bundle.json").read_text())["provenance"]
    assert prov["validation"]["external"]["kind"] == "selection"
    assert prov["data_use"]["external_test"] == [] and prov["data_use"]["recipe_selection"] == ["x0", "x1", "x2", "x3"]
