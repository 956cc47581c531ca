"""Tiny nnU-Net v2 result folders, built at test time (nothing is committed).

``make_nnunet_folder(tmp, ...)`` writes ``DatasetXXX/<Trainer>__<Plans>__<config>/`` with
``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth`` in the layout nnU-Net
writes (network_weights, init_args, trainer_name, inference_allowed_mirroring_axes,
logging with numpy scalars). The networks are dynamic-network-architectures'
PlainConvUNet / ResidualEncoderUNet, briefly trained on synthetic blobs so that their
predictions have real structure (random weights give noise, which makes parity
meaningless). ``reference_predict`` runs ``nnUNetPredictor`` on files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ARCH = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}


def blob_image(shape: Sequence[int], *, seed: int, n_classes: int = 2, zero_margin: int = 2, ct: bool = False):
    """(image, labels) arrays: bright ellipsoids (one per foreground class, class c at
    intensity ~c) on noise; a zero margin so cropping to non-zero matters."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    lab = np.zeros(shape, np.uint8)
    for c in range(1, n_classes):
        centre = rng.uniform(-0.35, 0.35, len(shape))
        radii = rng.uniform(0.25, 0.45, len(shape))
        r = sum(((g - m) / a) ** 2 for g, m, a in zip(grid, centre, radii))
        lab[r < 1] = c
    img = 0.3 * rng.standard_normal(shape) + lab.astype(float) + 1.0
    if ct:
        img = img * 300 - 200
    if zero_margin:
        sl = tuple(slice(zero_margin, s - zero_margin) if s > 3 * zero_margin else slice(None) for s in shape)
        keep = np.zeros(shape, bool)
        keep[sl] = True
        img[~keep] = 0
        lab[~keep] = 0
    return img.astype(np.float32), lab


def arch_kwargs(dim: int, n_stages: int = 3, arch: str = "PlainConvUNet", features=(4, 8, 16),
                strides=None, kernels=None) -> dict[str, Any]:
    strides = strides or [[1] * dim] + [[2] * dim] * (n_stages - 1)
    kernels = kernels or [[3] * dim] * n_stages
    kw = {"n_stages": n_stages, "features_per_stage": list(features)[:n_stages],
          "conv_op": f"torch.nn.modules.conv.Conv{dim}d", "kernel_sizes": kernels, "strides": strides,
          "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
          "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
          "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if arch == "PlainConvUNet":
        kw["n_conv_per_stage"] = [2] * n_stages
    else:
        kw["n_blocks_per_stage"] = [1] * n_stages
    return kw


def build_network(dim: int, in_ch: int, out_ch: int, kw: dict[str, Any], arch: str):
    import pydoc

    from dynamic_network_architectures.architectures import unet

    kw = dict(kw)
    for k in ("conv_op", "norm_op", "dropout_op", "nonlin"):
        if kw.get(k) is not None:
            kw[k] = pydoc.locate(kw[k])
    cls = getattr(unet, arch)
    return cls(input_channels=in_ch, num_classes=out_ch, deep_supervision=False, **kw)


def train_briefly(net, dim: int, patch: Sequence[int], *, in_ch: int, n_classes: int, regions: bool, seed: int,
                  steps: int = 40, region_sets: Sequence[Sequence[int]] | None = None):
    """A few Adam steps on synthetic blobs (z-scored), enough for structured predictions.

    ``region_sets``: channel ``i`` learns "the voxel's class is in ``region_sets[i]``", the
    blob classes 1..n-1 standing for the label values ordered by how many regions hold
    them (as nnU-Net's region training: each output is one region of the dataset.json
    labels)."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    # 3D: 16^3 crops (fast), larger where the network downsamples so often that 16^3 would
    # leave its deepest stage a single voxel (instance norm needs more than one)
    strides = getattr(getattr(net, "encoder", None), "strides", None) or []
    n_down = sum(1 for st in strides if max(st if isinstance(st, (list, tuple)) else [st]) > 1)
    crop = max(16, 2 ** (n_down + 1))
    for it in range(steps):
        xs, ys = [], []
        train_patch = [min(int(p), crop) if dim == 3 else int(p) for p in patch]
        for b in range(2):
            img, lab = blob_image(train_patch, seed=seed * 100 + it * 2 + b, n_classes=n_classes, zero_margin=0)
            img = (img - img.mean()) / img.std()
            xs.append(np.stack([img] * in_ch))
            ys.append(lab)
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys)).long()
        out = net(x)
        if region_sets is not None:
            # blob class k (brighter with k) -> the label value k regions deep (BraTS 1/2/4: 2, 1, 4)
            values = sorted({int(v) for r in region_sets for v in r},
                            key=lambda v: (sum(v in r for r in region_sets), v))
            y_ds = torch.as_tensor(np.asarray([0] + values))[y]  # blob class -> dataset label value
            tgt = torch.stack([torch.isin(y_ds, torch.as_tensor(list(r))).float() for r in region_sets], 1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, tgt)
        elif regions:  # nested regions: channel c = label > c
            tgt = torch.stack([(y > c).float() for c in range(n_classes - 1)], 1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, tgt)
        else:
            loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def make_nnunet_folder(
    root: Path,
    *,
    dim: int = 3,
    patch: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_classes: int = 3,
    folds: Sequence[int] = (0,),
    mirror: Sequence[int] | None = (0, 1, 2),
    regions: bool = False,
    old_plans: bool = False,
    arch: str = "PlainConvUNet",
    scheme: str = "ZScoreNormalization",
    use_mask: bool = False,
    transpose: Sequence[int] = (0, 1, 2),
    n_channels: int = 1,
    strides=None,
    kernels=None,
    seed: int = 0,
    steps: int = 40,
    configuration: str | None = None,
    postprocessing: list[dict[str, Any]] | None = None,
    n_stages: int = 3,
    features: Sequence[int] = (4, 8, 16),
    region_labels: dict[str, list[int]] | None = None,
    regions_class_order: Sequence[int] | None = None,
) -> Path:
    """Write a trained-model folder; returns its path (``.../Trainer__Plans__config``).

    ``region_labels`` + ``regions_class_order``: a region dataset as nnU-Net's BraTS ones,
    e.g. ``{"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}``
    with ``[1, 2, 3]`` (``n_classes`` = number of distinct labels + 1)."""
    import torch

    configuration = configuration or ("2d" if dim == 2 else "3d_fullres")
    kw = arch_kwargs(dim, n_stages, arch, features=features, strides=strides, kernels=kernels)
    if region_labels is not None:
        labels = {"background": 0, **{k: list(v) for k, v in region_labels.items()}}
        out_ch = len(region_labels)
    elif regions:
        labels = {"background": 0, **{f"region{c}": list(range(c, n_classes)) for c in range(1, n_classes)}}
        out_ch = n_classes - 1
    else:
        labels = {"background": 0, **{f"class{c}": c for c in range(1, n_classes)}}
        out_ch = n_classes
    dataset = {"channel_names": {str(i): ("CT" if scheme == "CTNormalization" else f"MR{i}") for i in range(n_channels)},
               "labels": labels, "numTraining": 4, "file_ending": ".nii.gz",
               "licence": "CC-BY-4.0 (synthetic test data)"}
    if region_labels is not None:
        dataset["regions_class_order"] = list(regions_class_order)
    elif regions:
        dataset["regions_class_order"] = list(range(1, n_classes))
    conf: dict[str, Any] = {
        "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [40] * dim,
        "spacing": list(spacing), "normalization_schemes": [scheme] * n_channels,
        "use_mask_for_norm": [use_mask] * n_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "batch_dice": False,
    }
    if old_plans:
        conf.update({"UNet_class_name": arch, "UNet_base_num_features": features[0],
                     "unet_max_num_features": features[n_stages - 1],
                     "n_conv_per_stage_encoder": [2] * n_stages if arch == "PlainConvUNet" else [1] * n_stages,
                     "n_conv_per_stage_decoder": [1] * (n_stages - 1), "num_pool_per_axis": [n_stages - 1] * dim,
                     "pool_op_kernel_sizes": kw["strides"], "conv_kernel_sizes": kw["kernel_sizes"]})
    else:
        conf["architecture"] = {"network_class_name": ARCH[arch], "arch_kwargs": kw,
                                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    tb = [int(i) for i in np.argsort(transpose)]
    plans = {"dataset_name": "Dataset042_Blobs", "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
             "original_median_shape_after_transp": [40, 40, 40], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": list(transpose), "transpose_backward": tb,
             "configurations": {configuration: conf}, "experiment_planner_used": "ExperimentPlanner",
             "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {
                 str(i): {"max": 900.0, "mean": 150.0, "median": 140.0, "min": -300.0, "percentile_00_5": -150.0,
                          "percentile_99_5": 700.0, "std": 250.0} for i in range(n_channels)}}
    folder = Path(root) / "Dataset042_Blobs" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    for f in folds:
        torch.manual_seed(seed + f)  # deterministic initial weights
        net = build_network(dim, n_channels, out_ch, kw, arch)
        train_briefly(net, dim, patch, in_ch=n_channels, n_classes=n_classes, regions=regions, seed=seed + f,
                      steps=steps, region_sets=None if region_labels is None else list(region_labels.values()))
        ck = {"network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
              "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float64(0.55)],
                          "train_losses": [np.float64(0.4)], "epoch_start_timestamps": [1.0, 2.0],
                          "dice_per_class_or_region": [[np.float32(0.4), np.float32(0.7)]]},
              "_best_ema": np.float64(0.6), "current_epoch": 2,
              "init_args": {"plans": plans, "configuration": configuration, "fold": f, "dataset_json": dataset,
                            "device": torch.device("cpu")},
              "trainer_name": "nnUNetTrainer",
              "inference_allowed_mirroring_axes": None if mirror is None else tuple(mirror)}
        (folder / f"fold_{f}").mkdir()
        torch.save(ck, folder / f"fold_{f}" / "checkpoint_final.pth")
    if postprocessing is not None:
        d = folder / f"crossval_results_folds_{'_'.join(str(f) for f in folds)}"
        d.mkdir()
        (d / "postprocessing.json").write_text(json.dumps({
            "input_folder": "x", "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] *
            len(postprocessing), "postprocessing_kwargs": postprocessing}))
    return folder


#: numpy 2.x module names → the names numpy 1.x wrote for the same objects
NUMPY1_NAMES = {("numpy._core.multiarray", "scalar"): ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "_reconstruct"): ("numpy.core.multiarray", "_reconstruct")}


def pickle_globals(checkpoint: Path) -> list[tuple[str, str]]:
    """(module, name) of every GLOBAL opcode in a torch zip checkpoint's ``data.pkl``, read
    with pickletools (nothing is unpickled)."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    return [tuple(str(arg).split(" ", 1)) for op, arg, _pos in pickletools.genops(data) if op.name == "GLOBAL"]


def rewrite_globals(checkpoint: Path, names: dict[tuple[str, str], tuple[str, str]]) -> None:
    """Rewrite GLOBAL opcodes (``c<module>\\n<name>\\n``, what ``torch.save``'s protocol 2
    writes) in the checkpoint's ``data.pkl``, in place, keeping torch's zip layout: the way
    to get the bytes another numpy (or an attacker) would have written, without mocking the
    loader. Every ``names`` key must occur."""
    import zipfile

    src = Path(checkpoint)
    tmp = src.with_suffix(".rewriting")
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                for (m, n), (m2, n2) in names.items():
                    old, new = f"c{m}\n{n}\n".encode(), f"c{m2}\n{n2}\n".encode()
                    if old not in data:
                        raise AssertionError(f"no GLOBAL {m}.{n} in {src}")
                    data = data.replace(old, new)
            zo.writestr(info, data)
    tmp.replace(src)


def as_numpy1_checkpoint(checkpoint: Path) -> None:
    """Make a checkpoint saved under numpy 2.x read as one saved under numpy 1.x did
    (``numpy.core.multiarray.scalar`` / ``_reconstruct``; ``numpy.dtype`` is the same in both)."""
    present = set(pickle_globals(checkpoint))
    rewrite_globals(checkpoint, {k: v for k, v in NUMPY1_NAMES.items() if k in present})
    after = pickle_globals(checkpoint)
    assert ("numpy.core.multiarray", "scalar") in after and not any(m == "numpy._core.multiarray" for m, _ in after)


def reference_predictor(folder: Path, folds: Sequence[int], *, use_mirroring: bool):
    """``nnUNetPredictor`` for ``folder``, initialised without nnU-Net's trainer lookup
    (which imports every trainer module, some needing timm/torchvision): the network is
    built from the plans exactly as the standard trainer does and set manually."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = json.loads((folder / "dataset.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())
    pm = PlansManager(plans)
    params, ck = [], None
    for f in folds:
        ck = torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        params.append(ck["network_weights"])
    cm = pm.get_configuration(ck["init_args"]["configuration"])
    lm = pm.get_label_manager(dataset)
    # the class by its last name: nnU-Net's class search would import every architecture
    # module (some need timm), and its old-plans path names a module that no longer exists
    kw = dict(cm.network_arch_init_kwargs)
    dim = len(cm.patch_size)
    net = build_network(dim, len(dataset["channel_names"]), lm.num_segmentation_heads, kw,
                        cm.network_arch_class_name.rsplit(".", 1)[-1])
    net.load_state_dict(params[0])
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           allow_tqdm=False)
    pred.manual_initialization(net, pm, cm, params, dataset, ck["trainer_name"],
                               ck["inference_allowed_mirroring_axes"])
    return pred


def reference_predict(folder: Path, image_files: Sequence[str], folds: Sequence[int], *, use_mirroring: bool):
    """nnU-Net's label array (SimpleITK order, z y x) for one case of ``image_files``."""
    pred = reference_predictor(folder, folds, use_mirroring=use_mirroring)
    return pred.predict_from_files_sequential([list(image_files)], None)[0]
