"""`medcnn models import` of MONAI bundles: parity with MONAI running the same config,
refusals and provenance.

Bundles are written at test time in the style of the Model Zoo's spleen_ct_segmentation
(UNet; Orientationd, Spacingd, ScaleIntensityRanged; SlidingWindowInferer; softmax,
Invertd, argmax) and brats_mri_segmentation (SegResNet; NormalizeIntensityd nonzero
channel-wise; sigmoid, threshold, and a ``$`` lambda that is refused) with tiny,
briefly trained networks. ``monai.bundle run`` needs pytorch-ignite (not installed), so
the reference is MONAI's own ``ConfigParser`` instantiating the config's
preprocessing, network, inferer and postprocessing and running them in that order.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcnn.errors import BundleError, ConfigError, UnsafeModelFileError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

R = np.array([[0.9362934, -0.2896295, 0.1986693], [0.3129918, 0.9447025, -0.0978434],
              [-0.1593451, 0.1537920, 0.9751703]])

SPLEEN = {
    "imports": ["$import glob", "$import numpy", "$import os"],
    "bundle_root": ".", "image_key": "image", "output_dir": "$@bundle_root + '/eval'", "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32", "output_postfix": "trans", "separate_folder": True,
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))", "dataset_dir": "/nowhere",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                    "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"},
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "@image_key"},
        {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -57, "a_max": 164, "b_min": 0,
         "b_max": 1, "clip": True},
        {"_target_": "EnsureTyped", "keys": "@image_key"}]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_ext": "@output_ext",
         "output_dtype": "@output_dtype", "output_postfix": "@output_postfix",
         "separate_folder": "@separate_folder"}]},
    "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                         "load_dict": {"model": "@network"}},
    "run": ["$@evaluator.run()"],
}

BRATS = {
    "bundle_root": ".", "image_key": "image", "output_dir": "$@bundle_root + '/eval'",
    "device": "$torch.device('cpu')",
    "network_def": {"_target_": "SegResNet", "blocks_down": [1, 2, 2], "blocks_up": [1, 1], "init_filters": 8,
                    "in_channels": 2, "out_channels": 3, "dropout_prob": 0.2},
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "@image_key", "image_only": False},
        {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True, "channel_wise": True}]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1, "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
         "meta_keys": "pred_meta_dict", "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "Lambdad", "keys": "pred",
         "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir"}]},
}

META = {"name": "Tiny spleen-style bundle", "version": "0.0.1", "monai_version": "1.4.0",
        "copyright": "Copyright (c) test authors", "intended_use": "tests only",
        "network_data_format": {"inputs": {"image": {"num_channels": 1, "channel_def": {"0": "CT"}}},
                                "outputs": {"pred": {"num_channels": 2,
                                                     "channel_def": {"0": "background", "1": "spleen"}}}}}


def blobs(shape, seed, n=1, scale=(120.0,), base=0.0, noise=20.0):
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    lab = np.zeros(shape, np.uint8)
    for c in range(1, n + 1):
        centre, radii = rng.uniform(-0.3, 0.3, 3), rng.uniform(0.3, 0.55, 3)
        lab[sum(((x - m) / a) ** 2 for x, m, a in zip(g, centre, radii)) < 1] = c
    img = base + noise * rng.standard_normal(shape)
    for c in range(1, n + 1):
        img[lab >= c] += scale[min(c - 1, len(scale) - 1)]
    return img.astype(np.float32), lab


def train(net, make_batch, loss_fn, steps=40, seed=0):
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for it in range(steps):
        x, y = make_batch(it)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def write_bundle(root: Path, config: dict, meta: dict, state, *, yaml_config: bool = False) -> Path:
    import torch

    b = root / "bundle"
    (b / "configs").mkdir(parents=True)
    (b / "models").mkdir()
    if yaml_config:
        import yaml

        (b / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    else:
        (b / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (b / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    (b / "LICENSE").write_text("Apache License 2.0 (test)\n")
    torch.save(state, b / "models" / "model.pt")
    return b


def spleen_bundle(root: Path, *, wrap_model=True) -> Path:
    import torch
    from monai.networks.nets import UNet

    cfg = SPLEEN["network_def"]
    net = UNet(**{k: v for k, v in cfg.items() if k != "_target_"})

    def batch(it):
        xs, ys = zip(*[blobs((16, 16, 16), 100 + 2 * it + b) for b in range(2)])
        x = np.clip((np.stack(xs) + 57) / 221.0, 0, 1)[:, None]
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(np.stack(ys)).long()

    train(net, batch, torch.nn.functional.cross_entropy)
    sd = net.state_dict()
    return write_bundle(root, copy.deepcopy(SPLEEN), META, {"model": sd} if wrap_model else sd)


def write_nifti(path: Path, arr: np.ndarray, spacing, direction=R, origin=(12.0, -30.0, 5.5)) -> str:
    aff = np.eye(4)
    aff[:3, :3] = direction @ np.diag(spacing)
    aff[:3, 3] = origin
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    return str(path)


def monai_reference(bundle: Path, image, out_dir: Path, drop_post: tuple[int, ...] = ()):
    """MONAI itself: ConfigParser instantiates the config's parts; run them in order."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(next((bundle / "configs").glob("inference.*"))))
    parser["bundle_root"] = str(bundle)
    parser["output_dir"] = str(out_dir)
    for i in sorted(drop_post, reverse=True):
        del parser.config["postprocessing"]["transforms"][i]
    pre = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network_def")
    ck = torch.load(bundle / "models" / "model.pt", weights_only=True)
    net.load_state_dict(ck.get("model", ck))
    net.eval()
    inferer = parser.get_parsed_content("inferer")
    post = parser.get_parsed_content("postprocessing")
    data = pre({"image": image})
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], net)[0]
    data = post(data)
    return data["pred"]


def medcnn_labels(bundle_dir: Path, images, **kw):
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume
    from medcnn.models.importers import import_model

    out = import_model(bundle_dir, bundle_dir.parent / "imported", **kw)
    seg = Segmenter.from_bundle(out, device="cpu", precision="fp32")
    vols = [read_volume(p) for p in images]
    return seg.predict(vols[0] if len(vols) == 1 else vols), out


@pytest.mark.parametrize("direction", ["oblique", "permuted"])
def test_spleen_style_parity_with_monai(tmp_path, direction):
    d = R if direction == "oblique" else np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    bundle = spleen_bundle(tmp_path)
    img, _ = blobs((30, 27, 19), seed=7)
    f = write_nifti(tmp_path / "ct.nii.gz", img, (1.1, 0.9, 2.6), direction=d)
    ref = monai_reference(bundle, f, tmp_path / "eval")
    pred, out = medcnn_labels(bundle, [f])
    got = pred.labels.array
    ref_arr = np.asarray(ref)[0].astype(np.uint8)
    assert got.shape == ref_arr.shape == img.shape
    np.testing.assert_allclose(np.asarray(ref.affine), pred.labels.affine, atol=1e-4)
    equal = float((got == ref_arr).mean())
    print(f"\nparity spleen-style ({direction}): {equal:.6f} of {got.size} voxels equal; "
          f"MONAI {np.bincount(ref_arr.ravel()).tolist()} medcnn {np.bincount(got.ravel()).tolist()}")
    assert equal >= 0.999
    n_ref, n_got = int((ref_arr == 1).sum()), int((got == 1).sum())
    assert n_ref > 200 and abs(n_got - n_ref) <= 0.005 * n_ref
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "spleen"} and meta["channels"] == ["CT"]
    assert [o["op"] for o in meta["preprocess"]["monai"]] == ["orientation", "spacing", "scale_range"]


#: BraTS regions as the blobs below make them: whole tumour = every blob, core = blobs 2-3, enhancing = blob 3
BRATS_REGION_MIN_LABEL = {"WT": 1, "TC": 2, "ET": 3}


def brats_bundle(root: Path, order=("TC", "WT", "ET")) -> Path:
    """The Model Zoo's brats_mri_segmentation layout: one sigmoid channel per region, in
    ``order`` (the Model Zoo's is TC, WT, ET), named in ``channel_def``, each channel
    trained on its own region."""
    import torch
    from monai.networks.nets import SegResNet

    cfg = BRATS["network_def"]
    torch.manual_seed(0)  # deterministic initial weights: the same network on every run
    net = SegResNet(**{k: v for k, v in cfg.items() if k != "_target_"})

    def batch(it):
        xs, ys = [], []
        for b in range(2):
            img, lab = blobs((16, 16, 16), 300 + 2 * it + b, n=3, scale=(2.0, 2.0, 2.0), base=1.0, noise=0.3)
            x = np.stack([img, img * 0.5 + 1])
            xs.append((x - x.mean((1, 2, 3), keepdims=True)) / x.std((1, 2, 3), keepdims=True))
            ys.append(np.stack([(lab >= BRATS_REGION_MIN_LABEL[r]) for r in order]).astype(np.float32))
        return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(np.stack(ys))

    train(net, batch, torch.nn.functional.binary_cross_entropy_with_logits, steps=80)
    meta = copy.deepcopy(META)
    meta["network_data_format"] = {
        "inputs": {"image": {"num_channels": 2, "channel_def": {"0": "T1c", "1": "FLAIR"}}},
        "outputs": {"pred": {"num_channels": 3, "channel_def": {str(i): r for i, r in enumerate(order)}}}}
    return write_bundle(root, copy.deepcopy(BRATS), meta, net.state_dict(), yaml_config=True)


def test_brats_style_refuses_expression_then_matches_monai_without_it(tmp_path, capsys):
    from medcnn.cli import main
    from medcnn.models.importers import import_model

    bundle = brats_bundle(tmp_path)
    with pytest.raises(ConfigError, match=r"postprocessing\.transforms\.3.*lambda"):
        import_model(bundle, tmp_path / "x")
    code = main(["models", "import", str(bundle), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "inference.yaml" in err[0] and "'$lambda x" in err[0]
    assert not (tmp_path / "x").exists()

    img, _ = blobs((21, 24, 18), seed=9, n=3, scale=(2.0, 2.0, 2.0), base=1.0, noise=0.3)
    img[:2] = 0  # a zero border: NormalizeIntensityd(nonzero=True) leaves it at zero
    files = [write_nifti(tmp_path / "t1c.nii.gz", img, (1.0, 1.2, 1.5)),
             write_nifti(tmp_path / "flair.nii.gz", np.where(img != 0, img * 0.5 + 1, 0).astype(np.float32),
                         (1.0, 1.2, 1.5))]
    ref = np.asarray(monai_reference(bundle, files, tmp_path / "eval", drop_post=(3, 4))) > 0  # (3, I, J, K)
    ref_lab = np.zeros(ref.shape[1:], np.uint8)
    for c, v in ((1, 1), (0, 2), (2, 3)):  # regions painted outer to inner: WT (channel 1), TC (0), ET (2)
        ref_lab[ref[c]] = v
    pred, out = medcnn_labels(bundle, files, overrides={"postprocessing.transforms.3": None})
    got = pred.labels.array
    equal = float((got == ref_lab).mean())
    print(f"\nparity brats-style: {equal:.6f} of {got.size} voxels equal; MONAI {np.bincount(ref_lab.ravel()).tolist()}"
          f" medcnn {np.bincount(got.ravel()).tolist()}")
    assert equal >= 0.999 and (ref_lab > 0).sum() > 200
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["activation"] == "sigmoid" and meta["channels"] == ["T1c", "FLAIR"]
    assert meta["labels"] == {"0": "background", "1": "WT minus TC", "2": "TC minus ET", "3": "ET"}
    assert meta["regions"]["regions"] == {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}
    assert meta["provenance"]["imported_from"]["overrides"] == {"postprocessing.transforms.3": None}


def test_provenance_and_plain_state_dict(tmp_path):
    import hashlib

    bundle = spleen_bundle(tmp_path, wrap_model=False)
    from medcnn.models.importers import import_model

    out = import_model(bundle, tmp_path / "imported", name="spleen-tiny")
    src = json.loads((out / "bundle.json").read_text())["provenance"]["imported_from"]
    assert src["format"] == "monai-bundle" and src["name"] == "spleen-tiny"
    assert src["bundle_name"] == "Tiny spleen-style bundle" and src["bundle_version"] == "0.0.1"
    assert src["licence"]["copyright"].startswith("Copyright") and "Apache" in src["licence"]["licence_file"]
    for rel, sha in src["files_sha256"].items():
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == sha
    assert "models/model.pt" in src["files_sha256"]


@pytest.mark.parametrize("edit, error, match", [
    (lambda c: c["network_def"].update(_target_="MyFancyNet"), ConfigError, "MyFancyNet"),
    (lambda c: c["network_def"].update(in_channels="$1 + 0"), ConfigError, r"network_def\.in_channels"),
    (lambda c: c["preprocessing"]["transforms"].insert(2, {"_target_": "RandFlipd", "keys": "image"}),
     ConfigError, "RandFlipd"),
    (lambda c: c["network_def"].update(channels=[8, 16, 32]), BundleError, "model.pt"),
])
def test_refusals(tmp_path, edit, error, match):
    import torch
    from monai.networks.nets import UNet

    cfg = copy.deepcopy(SPLEEN)
    net = UNet(**{k: v for k, v in cfg["network_def"].items() if k != "_target_"})
    edit(cfg)
    bundle = write_bundle(tmp_path, cfg, META, {"model": net.state_dict()})
    from medcnn.models.importers import import_model

    with pytest.raises(error, match=match):
        import_model(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    del torch


def test_refuses_pickled_objects(tmp_path):
    import torch
    from monai.networks.nets import UNet

    net = UNet(**{k: v for k, v in SPLEEN["network_def"].items() if k != "_target_"})
    bundle = write_bundle(tmp_path, copy.deepcopy(SPLEEN), META, {"model": net.state_dict(), "net": net})
    from medcnn.models.importers import import_model

    with pytest.raises(UnsafeModelFileError, match="model.pt"):
        import_model(bundle, tmp_path / "out")
    del torch


def test_cli_import_with_set_and_show(tmp_path, capsys):
    from medcnn.cli import main

    bundle = spleen_bundle(tmp_path)
    out = tmp_path / "imported"
    assert main(["models", "import", str(bundle), "--out", str(out), "--name", "spleen-tiny",
                 "--set", "inferer.overlap=0.25"]) == 0
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["overlap"] == 0.25 and meta["provenance"]["imported_from"]["overrides"] == {"inferer.overlap": 0.25}
    assert main(["models", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported    monai-bundle 'spleen-tiny'" in text and "LICENSE file: 'Apache License 2.0 (test)'" in text
    assert "models/model.pt  sha256 " in text


# ---------------------------------------------------------------------------- exact class names
@pytest.mark.parametrize("net_target, spacing_target", [
    ("UNet", "Spacingd"),
    ("monai.networks.nets.UNet", "monai.transforms.Spacingd"),
    ("monai.networks.nets.unet.UNet", "monai.transforms.spatial.dictionary.Spacingd"),
])
def test_class_names_accepted_as_monai_resolves_them(tmp_path, net_target, spacing_target):
    """Bare names (ConfigParser searches monai's modules) and fully qualified monai paths:
    MONAI's own ConfigParser builds the very classes medcnn maps them to."""
    from monai.bundle import ConfigParser
    from monai.networks.nets import UNet
    from monai.transforms import Spacingd

    from medcnn.models.importers import import_model

    cfg = copy.deepcopy(SPLEEN)
    cfg["network_def"]["_target_"] = net_target
    cfg["preprocessing"]["transforms"][3]["_target_"] = spacing_target
    parser = ConfigParser(copy.deepcopy(cfg))
    assert type(parser.get_parsed_content("network_def")) is UNet
    assert type(parser.get_parsed_content("preprocessing#transforms#3")) is Spacingd
    net = UNet(**{k: v for k, v in cfg["network_def"].items() if k != "_target_"})
    bundle = write_bundle(tmp_path, cfg, META, {"model": net.state_dict()})
    meta = json.loads((import_model(bundle, tmp_path / "out") / "bundle.json").read_text())
    assert meta["network"]["name"] == "unet" and [o["op"] for o in meta["preprocess"]["monai"]][1] == "spacing"


@pytest.mark.parametrize("where, target", [
    ("network_def", "scripts.net.UNet"),
    ("network_def", "monai.networks.nets.unet.SegResNet"),
    ("preprocessing.transforms.3", "my.Spacingd"),
    ("inferer", "my_inferers.SlidingWindowInferer"),
    ("postprocessing", "mypkg.Compose"),
])
def test_refuses_classes_from_other_modules(tmp_path, capsys, where, target):
    """A class of the same name from any other module would run other code: one line, exit 2,
    naming the path and the file; nothing written."""
    from monai.networks.nets import UNet

    from medcnn.cli import main
    from medcnn.models.importers import import_model

    cfg = copy.deepcopy(SPLEEN)
    node = cfg
    for p in where.split("."):
        node = node[int(p)] if isinstance(node, list) else node[p]
    node["_target_"] = target
    net = UNet(**{k: v for k, v in SPLEEN["network_def"].items() if k != "_target_"})
    bundle = write_bundle(tmp_path, cfg, META, {"model": net.state_dict()})
    with pytest.raises(ConfigError, match=target.replace(".", r"\.")):
        import_model(bundle, tmp_path / "out")
    code = main(["models", "import", str(bundle), "--out", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and target in err[0] and "inference.json" in err[0], err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- MONAI's defaults
def _edge_touching_ct(tmp_path: Path) -> str:
    """Air (-1000 HU: 0 after ScaleIntensityRanged) around a body that touches the first
    and last voxels of axis 0, so a margin reaches outside the image there."""
    img, _ = blobs((30, 27, 19), seed=11)
    img[:, :4] = -1000.0
    img[:, 22:] = -1000.0
    img[:, :, :3] = -1000.0
    return write_nifti(tmp_path / "edge.nii.gz", img, (1.1, 0.9, 2.6))


@pytest.mark.parametrize("allow_smaller", [True, False, None])
def test_crop_foreground_parity_with_monai_at_the_image_edge(tmp_path, allow_smaller):
    """CropForegroundd (margin 3) on foreground touching the image edge: MONAI's own transform
    (via ConfigParser) pads the box outside the image unless allow_smaller (default False in
    MONAI >= 1.5); medcnn's model-grid array, its grid, and the final labels equal MONAI's."""
    import torch
    from monai.bundle import ConfigParser

    from medcnn.io import read_volume
    from medcnn.models.importers import import_model
    from medcnn.preprocess import Preprocessor, PreprocessSpec

    bundle = spleen_bundle(tmp_path)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    crop = {"_target_": "CropForegroundd", "keys": "@image_key", "source_key": "@image_key", "margin": 3}
    if allow_smaller is not None:
        crop["allow_smaller"] = allow_smaller
    cfg["preprocessing"]["transforms"].insert(5, crop)
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    f = _edge_touching_ct(tmp_path)

    parser = ConfigParser(copy.deepcopy(cfg))
    ref = parser.get_parsed_content("preprocessing")({"image": f})["image"]  # MONAI's (1, X, Y, Z) MetaTensor
    out = import_model(bundle, tmp_path / "imported")
    meta = json.loads((out / "bundle.json").read_text())
    op = meta["preprocess"]["monai"][3]
    assert op["op"] == "crop_foreground" and op["allow_smaller"] is (allow_smaller is True)
    x, record = Preprocessor(PreprocessSpec.from_dict(meta["preprocess"])).forward(read_volume(f))
    uncropped = Preprocessor(PreprocessSpec.from_dict({**meta["preprocess"], "monai": meta["preprocess"]["monai"][:3]}))
    full = uncropped.forward(read_volume(f))[0]
    assert x.shape == tuple(ref.shape), (x.shape, tuple(ref.shape))
    np.testing.assert_allclose(x, np.asarray(ref), atol=1e-4)
    np.testing.assert_allclose(record.model_geometry.affine, np.asarray(ref.affine), atol=1e-4)
    padded = x.shape[1] > full.shape[1]
    assert padded is (allow_smaller is not True), "the box must leave the image on axis 0 in this test"
    if allow_smaller is None:
        assert any("allow_smaller" in d for d in meta["provenance"]["imported_from"]["deviations"])

    ref_labels = np.asarray(monai_reference(bundle, f, tmp_path / "eval"))[0].astype(np.uint8)
    from medcnn.inference import Segmenter

    got = Segmenter.from_bundle(out, device="cpu", precision="fp32").predict(read_volume(f)).labels.array
    assert got.shape == ref_labels.shape
    equal = float((got == ref_labels).mean())
    print(f"\ncrop_foreground allow_smaller={allow_smaller}: model grid {x.shape[1:]} (uncropped {full.shape[1:]}), "
          f"{equal:.6f} of {got.size} voxels equal MONAI's")
    assert equal >= 0.999 and (ref_labels == 1).sum() > 100
    del torch


def test_transforms_not_on_the_image_key_are_skipped_and_crop_source_is_checked(tmp_path, capsys):
    from medcnn.cli import main
    from medcnn.models.importers import import_model

    bundle = spleen_bundle(tmp_path)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg["preprocessing"]["transforms"].insert(5, {"_target_": "CropForegroundd", "keys": "label",
                                                  "source_key": "label"})
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    meta = json.loads((import_model(bundle, tmp_path / "a") / "bundle.json").read_text())
    assert [o["op"] for o in meta["preprocess"]["monai"]] == ["orientation", "spacing", "scale_range"]
    assert any("keys ['label']" in d for d in meta["provenance"]["imported_from"]["deviations"])
    cfg["preprocessing"]["transforms"][5]["keys"] = ["image", "label"]
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["models", "import", str(bundle), "--out", str(tmp_path / "b")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "source_key" in err[0] and "'label'" in err[0]


@pytest.mark.parametrize("item, named", [
    ("inferer.nonexistent.x=1", "inferer.nonexistent.x"),
    ("preprocessing.transforms.99=null", "preprocessing.transforms.99"),
    ("preprocessing.transforms.x=null", "preprocessing.transforms.x"),
    ("inferer.roi_size.0.1=3", "inferer.roi_size.0.1"),
    ("nope=1", "nope"),
    ('inferer.overlap="abc"', "inferer.overlap"),
    ("network_def.channels=5", "network_def"),
    ("preprocessing.transforms.3.pixdim=[1, 2]", "pixdim"),
    ("noequals", "noequals"),
])
def test_set_errors_are_one_line_naming_the_key(tmp_path, capsys, item, named):
    from medcnn.cli import main

    bundle = spleen_bundle(tmp_path)
    capsys.readouterr()
    code = main(["models", "import", str(bundle), "--out", str(tmp_path / "out"), "--set", item])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and named in err[0] and "internal error" not in err[0], err
    assert not (tmp_path / "out").exists()
