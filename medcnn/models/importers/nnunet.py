"""Import an nnU-Net v2 trained-model folder as a medcnn bundle.

A folder ``DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/`` holding
``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth`` (optionally
``crossval_results_folds_*/postprocessing.json``) becomes a bundle whose

- network is nnU-Net's ``PlainConvUNet`` / ``ResidualEncoderUNet`` built from the plans
  (new and old plans formats; class and layer names from allow-lists), one member per
  fold (logits averaged, as ``nnUNetPredictor``);
- preprocessing is ``PreprocessSpec(nnunet=...)`` (:mod:`medcnn.preprocess._nnunet`):
  transpose, crop to non-zero, the plans' normalisation, resampling incl. separate-z;
- inference rules are nnU-Net's window placement and Gaussian (``bundle.json["inference"]``),
  patch size and step 0.5, the trainer's allowed mirroring axes as ``mirror_axes`` and
  mirroring over them as the default (``inference.tta_axes = "trained"``), as
  ``nnUNetv2_predict`` does unless ``--disable_tta``;
- labels or regions (sigmoid) come from ``dataset.json``; ``postprocessing.json`` only when
  asked (``postprocessing=True``, ``--nnunet-postprocessing``): ``nnUNetv2_predict`` never
  applies it (``nnUNetv2_apply_postprocessing`` is a separate step).

What still differs from ``nnUNetv2_predict`` is listed in :data:`DEVIATIONS` and recorded in
the provenance (``imported_from.deviations``).

Checkpoints are read once, here, with ``torch.load(weights_only=True)``; the bundle holds
safetensors weights and JSON only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from medcnn.errors import BundleError, ConfigError, InputFileNotFoundError
from medcnn.models.importers._common import check_state_matches, load_checkpoint, read_json

__all__ = ["is_nnunet_folder", "import_nnunet", "CHECKPOINT_NAME", "DEVIATIONS"]

CHECKPOINT_NAME = "checkpoint_final.pth"

_CLASSES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": "plainconvunet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": "residualencoderunet",
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": "residualencoderunet",
}
_OLD_CLASSES = {"PlainConvUNet": "plainconvunet", "ResidualEncoderUNet": "residualencoderunet"}
_READERS = ("SimpleITKIO", "NibabelIO")
#: How an imported model's predictions can differ from ``nnUNetv2_predict`` at its defaults
#: (recorded in every imported bundle's provenance; docs/import-nnunet.md).
DEVIATIONS = (
    "logits are blended in float32 (nnU-Net: float16), so labels can differ at near-ties",
    "precision follows medcnn's --precision (auto: bf16 where the hardware has it); nnUNetv2_predict runs "
    "float32 on the CPU and float16 autocast on CUDA: use --precision fp32 / fp16 to match",
    "the folds are every fold_N present unless --folds (nnUNetv2_predict: 0, 1, 2, 3, 4)",
)
_RESAMPLING_FN = "resample_data_or_seg_to_shape"


def is_nnunet_folder(path: Path) -> bool:
    return path.is_dir() and (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def _torch_names(cls_name: str) -> set[str]:
    """The fully qualified names under which ``pydoc.locate`` (what nnU-Net uses for
    ``_kw_requires_import``) finds ``torch.nn.<cls_name>``: ``torch.nn.X`` and
    ``torch.nn.modules.<file>.X`` (read from torch itself)."""
    from torch import nn

    cls = getattr(nn, cls_name)
    return {f"torch.nn.{cls_name}", f"{cls.__module__}.{cls_name}"}


def _layer(value: Any, kind: str, nd: int, path: Path) -> str | None:
    """The class name (``InstanceNorm3d``, ``LeakyReLU``, ``BasicBlockD``...) of an
    ``arch_kwargs`` layer, accepted only under the fully qualified names nnU-Net writes
    and ``pydoc.locate`` resolves to that very class; any other module path (a custom
    ``my_lab.layers.InstanceNorm3d``) or a bare name is refused, naming it."""
    if value is None:
        return None
    if kind == "block":
        names = {f"dynamic_network_architectures.building_blocks.residual.{b}": b for b in ("BasicBlockD", "BottleneckD")}
    else:
        short = {"conv_op": [f"Conv{nd}d"], "norm_op": [f"InstanceNorm{nd}d", f"BatchNorm{nd}d"],
                 "dropout_op": [f"Dropout{nd}d", "Dropout"],
                 "nonlin": ["LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU"]}[kind]
        names = {full: n for n in short for full in _torch_names(n)}
    if value not in names:
        raise ConfigError.expected(f"{kind} among {', '.join(sorted(names))} (fully qualified, as nnU-Net writes it)",
                                   repr(value), path=path,
                                   hint="Layers from other modules would need their code to run; medcnn builds "
                                        "only torch's and dynamic-network-architectures' own")
    return names[value]


def _configuration(plans: Mapping[str, Any], name: str, path: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    confs = plans.get("configurations") or {}
    if name not in confs:
        raise ConfigError.expected(f"configuration {name!r} in plans.json", f"configurations {sorted(confs)}",
                                   path=path)
    conf = dict(confs[name])
    parent = conf.get("inherits_from")
    if parent:
        if parent in seen:
            raise ConfigError.expected("configurations without circular inherits_from", f"{seen + (name,)}", path=path)
        base = _configuration(plans, parent, path, seen + (name,))
        base.update(conf)
        conf = base
    return conf


def _network_spec(conf: Mapping[str, Any], in_ch: int, out_ch: int, path: Path) -> dict[str, Any]:
    nd = len(conf["patch_size"])
    if "architecture" in conf:
        arch = conf["architecture"]
        cls = arch.get("network_class_name")
        # nnU-Net resolves the name with pydoc.locate, then (bare name) searches only
        # dynamic_network_architectures.architectures: both give exactly these classes
        cls = f"dynamic_network_architectures.architectures.unet.{cls}" if cls in _OLD_CLASSES else cls
        if cls not in _CLASSES:
            raise ConfigError.expected(f"network_class_name among {', '.join(sorted(_CLASSES))} (or the bare class "
                                       "name)", repr(arch.get("network_class_name")), path=path,
                                       hint="Only nnU-Net's standard PlainConvUNet / ResidualEncoderUNet are built; "
                                            "custom architectures would need their code to run")
        name = _CLASSES[cls]
        kw = dict(arch.get("arch_kwargs") or {})
    else:  # old plans format (nnU-Net v2 before 2.3)
        cls = conf.get("UNet_class_name")
        if cls not in _OLD_CLASSES:
            raise ConfigError.expected("UNet_class_name PlainConvUNet or ResidualEncoderUNet", repr(cls), path=path)
        name = _OLD_CLASSES[cls]
        n = len(conf["n_conv_per_stage_encoder"])
        kw = {"n_stages": n,
              "features_per_stage": [min(conf["UNet_base_num_features"] * 2 ** i, conf["unet_max_num_features"])
                                     for i in range(n)],
              "conv_op": f"torch.nn.modules.conv.Conv{nd}d", "kernel_sizes": conf["conv_kernel_sizes"],
              "strides": conf["pool_op_kernel_sizes"],
              ("n_conv_per_stage" if name == "plainconvunet" else "n_blocks_per_stage"): conf["n_conv_per_stage_encoder"],
              "n_conv_per_stage_decoder": conf["n_conv_per_stage_decoder"], "conv_bias": True,
              "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{nd}d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    conv = _layer(kw.pop("conv_op", None), "conv_op", nd, path)
    if conv is None:
        raise ConfigError.expected(f"conv_op torch.nn.modules.conv.Conv{nd}d", "null", path=path)
    spec: dict[str, Any] = {"name": name, "spatial_dims": nd, "in_channels": in_ch, "out_channels": out_ch}
    for key in ("norm_op", "dropout_op"):
        v = _layer(kw.pop(key, None), key, nd, path)
        spec[key] = (re.sub(r"[123]d$", "", v) or None) if v else None
    spec["nonlin"] = _layer(kw.pop("nonlin", None), "nonlin", nd, path)
    if "block" in kw:
        spec["block"] = _layer(kw.pop("block"), "block", nd, path)
    spec.update(kw)
    return spec


def _labels(dataset: Mapping[str, Any], path: Path) -> tuple[dict[int, str], int, str, dict[str, Any] | None]:
    """(medcnn labels, network outputs, activation, regions) from dataset.json's labels/regions.

    Region datasets (label lists + ``regions_class_order``): the labels are the voxel
    classes nnU-Net writes, named for what they are, and the regions are recorded
    (:func:`medcnn.regions.regions_from_nnunet`)."""
    labels = dict(dataset.get("labels") or {})
    if not labels:
        raise ConfigError.expected("'labels' in dataset.json", "none", path=path)
    labels.pop("ignore", None)
    regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for k, v in labels.items() if k != "background")
    if not regions:
        by_value = {int(v[0] if isinstance(v, (list, tuple)) else v): str(k) for k, v in labels.items()}
        if sorted(by_value) != list(range(len(by_value))):
            raise ConfigError.expected("consecutive label values 0..N-1 in dataset.json", f"{sorted(by_value)}",
                                       path=path)
        return by_value, len(by_value), "softmax", None
    from medcnn.regions import regions_from_nnunet

    classes, spec = regions_from_nnunet(dataset, path=path)
    return classes, len(spec.channels or ()), "sigmoid", spec.to_dict()


def _normalization(plans: Mapping[str, Any], conf: Mapping[str, Any], n: int, path: Path) -> list[dict[str, Any]]:
    schemes = list(conf.get("normalization_schemes") or [])
    masks = list(conf.get("use_mask_for_norm") or [False] * n)
    if len(schemes) != n:
        raise ConfigError.expected(f"{n} normalization_schemes (one per channel)", f"{schemes}", path=path)
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    out = []
    for c, scheme in enumerate(schemes):
        d: dict[str, Any] = {"scheme": str(scheme), "use_mask_for_norm": bool(masks[c])}
        if scheme == "CTNormalization":
            p = props.get(str(c)) or {}
            try:
                d.update(mean=float(p["mean"]), std=float(p["std"]), lower=float(p["percentile_00_5"]),
                         upper=float(p["percentile_99_5"]))
            except KeyError as exc:
                raise ConfigError.expected(f"foreground intensity property {exc.args[0]!r} of channel {c}",
                                           "no such key", path=path) from None
        out.append(d)
    return out


def _resampling(conf: Mapping[str, Any], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which, key in (("data", "resampling_fn_data"), ("probabilities", "resampling_fn_probabilities")):
        fn = conf.get(key, _RESAMPLING_FN)
        if fn != _RESAMPLING_FN:
            raise ConfigError.expected(f"{key} {_RESAMPLING_FN!r} (the one medcnn implements)", repr(fn), path=path)
        kw = dict(conf.get(key + "_kwargs") or {})
        if kw.get("is_seg"):
            raise ConfigError.expected(f"{key}_kwargs.is_seg false", "true", path=path)
        out[f"order_{which}"] = int(kw.get("order", 3 if which == "data" else 1))
        out[f"order_z_{which}"] = int(kw.get("order_z", 0))
        fs = kw.get("force_separate_z")
        if which == "data":
            out["force_separate_z"] = fs
        elif fs != out["force_separate_z"]:
            raise ConfigError.expected("the same force_separate_z for data and probabilities", f"{fs!r}", path=path)
    return out


def _postprocessing(folder: Path, folds: Sequence[Any], path_for_errors: Path) -> tuple[dict[str, Any] | None, str | None]:
    """PostprocessSpec dict from ``crossval_results_folds_<folds>/postprocessing.json``."""
    pp_file = folder / f"crossval_results_folds_{'_'.join(str(f) for f in folds)}" / "postprocessing.json"
    if not pp_file.is_file():
        return None, None
    d = read_json(pp_file)
    fns = list(d.get("postprocessing_fns") or [])
    kws = list(d.get("postprocessing_kwargs") or [])
    if len(fns) != len(kws):
        raise ConfigError.expected("as many postprocessing_kwargs as postprocessing_fns", f"{len(kws)} and {len(fns)}",
                                   path=pp_file)
    groups: list[list[int]] = []
    for fn, kw in zip(fns, kws):
        if fn != "remove_all_but_largest_component_from_segmentation":
            raise ConfigError.expected("postprocessing function remove_all_but_largest_component_from_segmentation",
                                       repr(fn), path=pp_file)
        lor = kw.get("labels_or_regions")
        items = lor if isinstance(lor, list) else [lor]
        group: list[int] = []
        for it in items:
            group += [int(v) for v in (it if isinstance(it, (list, tuple)) else [it])]
        groups.append(sorted(set(group)))
    if not groups:
        return None, str(pp_file.relative_to(folder))
    return {"keep_largest_groups": groups, "connectivity": 26}, str(pp_file.relative_to(folder))


def _fold_dirs(folder: Path, folds: Sequence[str] | None) -> list[tuple[str, Path]]:
    if folds:
        out = []
        for f in folds:
            p = folder / f"fold_{f}" / CHECKPOINT_NAME
            if not p.is_file():
                raise InputFileNotFoundError.expected(f"fold_{f}/{CHECKPOINT_NAME}", "no such file", path=folder)
            out.append((str(f), p))
        return out
    found = sorted((d for d in folder.glob("fold_*") if d.name != "fold_all" and (d / CHECKPOINT_NAME).is_file()),
                   key=lambda d: int(d.name[5:]) if d.name[5:].isdigit() else 10**6)
    if not found and (folder / "fold_all" / CHECKPOINT_NAME).is_file():
        found = [folder / "fold_all"]
    if not found:
        raise InputFileNotFoundError.expected(f"fold_N/{CHECKPOINT_NAME} files", "none", path=folder)
    return [(d.name[5:], d / CHECKPOINT_NAME) for d in found]


def import_nnunet(folder: Path, *, folds: Sequence[str] | None = None, postprocessing: bool = False) -> dict[str, Any]:
    """Translate an nnU-Net v2 result folder (see module docstring).

    Args:
        folder: the ``Trainer__Plans__configuration`` folder.
        folds: folds to ensemble (default: every ``fold_N`` with a checkpoint).
        postprocessing: also apply ``crossval_results_folds_<folds>/postprocessing.json``
            (what ``nnUNetv2_apply_postprocessing`` does; ``nnUNetv2_predict`` does not).

    Returns:
        keyword arguments for :func:`medcnn.models.save_bundle` (``model`` is the state dict).

    Raises:
        ConfigError: unsupported plans (cascade, custom class, reader, resampling), or
            ``postprocessing`` asked for without a ``postprocessing.json``.
        UnsafeModelFileError: a checkpoint referencing anything beyond tensors/plain types.
        BundleError: weights that do not match the network the plans describe.
    """
    import torch

    from medcnn.models.registry import build_network
    from medcnn.report.provenance import file_sha256

    folder = Path(folder)
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = read_json(plans_path), read_json(dataset_path)
    chosen = _fold_dirs(folder, folds)
    ckpts = []
    for f, p in chosen:
        ck = load_checkpoint(p)
        if not isinstance(ck, Mapping) or not isinstance(ck.get("network_weights"), Mapping):
            raise BundleError.expected("an nnU-Net checkpoint dict with 'network_weights'",
                                       f"{type(ck).__name__} with keys {sorted(ck)[:6] if isinstance(ck, Mapping) else ''}",
                                       path=p)
        ckpts.append((f, p, ck))
    first = ckpts[0][2]
    parts = folder.name.split("__")
    init = first.get("init_args") or {}
    conf_name = str(init.get("configuration") or (parts[2] if len(parts) == 3 else ""))
    trainer = str(first.get("trainer_name") or (parts[0] if len(parts) == 3 else ""))
    for f, p, ck in ckpts[1:]:
        c = str((ck.get("init_args") or {}).get("configuration") or conf_name)
        if c != conf_name:
            raise BundleError.expected(f"every fold trained with configuration {conf_name!r}", repr(c), path=p)
    if not conf_name:
        raise ConfigError.expected("the configuration name (checkpoint init_args or folder name "
                                   "Trainer__Plans__configuration)", "none", path=folder)
    conf = _configuration(plans, conf_name, plans_path)
    if conf.get("previous_stage") or "cascade" in conf_name:
        raise ConfigError.expected("a 2d or 3d_fullres/3d_lowres configuration (no cascade)",
                                   f"the cascade configuration {conf_name!r}", path=plans_path,
                                   hint="Import the previous stage and the cascade's own folder is not supported: "
                                        "its input includes the previous stage's segmentation")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in _READERS:
        raise ConfigError.expected(f"image_reader_writer among {', '.join(_READERS)}", repr(reader), path=plans_path,
                                   hint="Other readers reorient or read 2D formats in ways medcnn does not replicate")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    chan_names = [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
    if not chan_names:
        raise ConfigError.expected("channel_names in dataset.json", "none", path=dataset_path)
    labels, out_ch, activation, regions = _labels(dataset, dataset_path)
    spec = _network_spec(conf, len(chan_names), out_ch, plans_path)
    if len(ckpts) > 1:
        spec["n_members"] = len(ckpts)
    reference = build_network(spec, where=str(plans_path)).state_dict()
    state: dict[str, Any] = {}
    for i, (f, p, ck) in enumerate(ckpts):
        w = {k: v for k, v in ck["network_weights"].items()}
        if not all(isinstance(v, torch.Tensor) for v in w.values()):
            raise BundleError.expected("tensors in network_weights", "other values", path=p)
        prefix = f"members.{i}." if len(ckpts) > 1 else ""
        sub_ref = {k[len(prefix):]: v for k, v in reference.items() if k.startswith(prefix)}
        check_state_matches(w, sub_ref, path=p, what=f"{plans_path.name} ({conf_name})")
        state.update({prefix + k: v for k, v in w.items()})
    nd = spec["spatial_dims"]
    options = {"transpose_forward": [int(v) for v in plans.get("transpose_forward", [0, 1, 2])],
               "spacing": [float(v) for v in conf["spacing"]], "spatial_dims": nd,
               "normalization": _normalization(plans, conf, len(chan_names), plans_path),
               **_resampling(conf, plans_path)}
    mirror = first.get("inference_allowed_mirroring_axes")
    mirror_axes = [] if mirror is None else [int(a) for a in mirror]
    fold_names = [f for f, _p, _c in ckpts]
    pp_name = f"crossval_results_folds_{'_'.join(fold_names)}/postprocessing.json"
    available = (folder / pp_name).is_file()
    if postprocessing and not available:
        raise ConfigError.expected(f"{pp_name} for --nnunet-postprocessing (nnUNetv2_find_best_configuration "
                                   "writes it)", "no such file", path=folder)
    postprocess, pp_file = _postprocessing(folder, fold_names, plans_path) if postprocessing else (None, None)
    deviations = list(DEVIATIONS)
    if pp_file:
        deviations.append(f"{pp_file} is applied (--nnunet-postprocessing): nnUNetv2_predict does not apply it, "
                          "nnUNetv2_apply_postprocessing does")
    files = {"plans.json": file_sha256(plans_path), "dataset.json": file_sha256(dataset_path)}
    files.update({str(p.relative_to(folder)): file_sha256(p) for _f, p, _c in ckpts})
    if pp_file:
        files[pp_file] = file_sha256(folder / pp_file)
    licence = {k: dataset[k] for k in ("licence", "license", "reference", "release", "description", "name")
               if isinstance(dataset.get(k), str)}
    provenance = {"imported_from": {
        "format": "nnunet-v2", "source": folder.name, "dataset": plans.get("dataset_name") or folder.parent.name,
        "trainer": trainer, "plans": plans.get("plans_name") or (parts[1] if len(parts) == 3 else None),
        "configuration": conf_name, "folds": [f for f, _p, _c in ckpts],
        "network_class": spec["name"], "image_reader_writer": reader,
        "postprocessing": pp_file, "postprocessing_not_applied": pp_name if available and not pp_file else None,
        "files_sha256": files, "licence": licence or None,
        "reproduces": "nnUNetv2_predict at its defaults (mirroring over the allowed axes, no postprocessing)"
                      + (" + nnUNetv2_apply_postprocessing" if pp_file else ""),
        "deviations": deviations}}
    return {
        "model": state, "network": spec,
        "preprocess": {"orientation": None, "modalities": ["none"] * len(chan_names), "nnunet": options},
        "roi_size": [int(v) for v in conf["patch_size"]], "labels": labels, "channels": chan_names,
        "overlap": 0.5, "postprocess": postprocess, "provenance": provenance, "activation": activation,
        "mirror_axes": mirror_axes, "regions": regions,
        # contiguous tensors: channels-last ran nnU-Net's networks 0.26-0.99x as fast on the CPU
        # (benchmarks/bench_import_nnunet.py), unlike medcnn's MONAI UNets
        "inference": {"blend_mode": "nnunet", "window_placement": "nnunet", "memory_format": "contiguous",
                      **({"slice_axis": 0} if nd == 2 else {}),
                      # nnUNetv2_predict mirrors over the allowed axes unless --disable_tta
                      **({"tta_axes": "trained"} if mirror_axes else {})},
    }

