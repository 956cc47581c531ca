"""The training loop: config, patch training, validation, checkpoints, bundle export.

``train(config, ...)`` runs one fold. Every step draws its patches and augmentations from
generators seeded by ``(seed, rank, step)`` and resets torch's generator the same way, so
``--resume`` from a checkpoint at step ``s`` continues exactly as the uninterrupted run.

Checkpoints hold no pickles: ``checkpoint/weights.safetensors`` stores model and optimizer
tensors, ``checkpoint/state.json`` the scalars (step, best Dice, optimizer hyper-parameters).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Sequence

import numpy as np
import torch

from medcnn.config import to_dict
from medcnn.errors import ConfigError
from medcnn.train import _compat
from medcnn.train.augment import IGNORE_INDEX, AugmentConfig, PatchSampler, augment_batch, build_augmentation, step_seed
from medcnn.train.datasets import (Case, PreparedCase, check_case_channels, dataset_channel_names, kfold_split,
                                   load_cases, prepare_case)
from medcnn.train.distributed import DistContext, barrier, unwrap_model, wrap_model
from medcnn.train.losses import masked_dice_ce_loss, region_annotated, region_dice_bce_loss, region_targets

__all__ = ["DataConfig", "ExtraDataConfig", "split_cases", "RunSplit", "split_run_cases", "PreprocessConfig", "OptimConfig", "TrainConfig", "TrainResult", "train", "finalise_run",
           "save_checkpoint", "load_checkpoint", "poly_lr", "hardware_description", "training_loss", "preprocess_spec"]


@dataclass
class ExtraDataConfig:
    """A further dataset beside ``data.dataset``, with its own label options: always
    trained on (``role: train``), or only evaluated as an external test set
    (``role: external``, e.g. other scanners; ``medcnn train --train-on-external`` trains on
    it too, for a final model). It uses the same label values as the main dataset."""

    dataset: str = field(metadata={"help": "dataset.json / CSV manifest / folder, relative to --data"})
    role: Literal["train", "external"] = "train"
    reported_as: Literal["external test", "selection"] = field(default="external test", metadata={
        "help": "role external: the kind its evaluation is reported as; selection when its results shaped the recipe "
                "(data used to choose a recipe is never an external test)"})
    annotated_classes: Optional[tuple[int, ...]] = field(default=None, metadata={
        "help": "label values its cases annotate (others are not learnt from it); None: all, or per entry"})
    ignore_unlabelled_slices: Optional[bool] = field(default=None, metadata={"help": "None: as data.*"})
    absent_classes_unannotated: Optional[bool] = field(default=None, metadata={"help": "None: as data.*"})


@dataclass
class DataConfig:
    """Where the cases are and how their labels are read."""

    dataset: str = field(metadata={"help": "dataset.json / CSV manifest / folder; relative paths are "
                                           "resolved against --data (else the config's folder)"})
    channels: tuple[str, ...] = field(default=("MR",), metadata={"help": "channel names, in order"})
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0, "foreground": 1},
                                   metadata={"help": "class name -> network output index (0 = background); with "
                                                     "regions: class name -> label value in the dataset's convention "
                                                     "(e.g. BraTS 1, 2, 4), the values the model writes"})
    regions: dict[str, list[int]] = field(default_factory=dict, metadata={
        "help": "region training: region name -> the label values it unites (nested or disjoint, outer first, as "
                "nnU-Net's dataset.json labels with lists), one sigmoid output each, trained with BCE + soft Dice "
                "per region; empty: softmax over the classes of labels"})
    regions_class_order: list[int] = field(default_factory=list, metadata={
        "help": "with regions: the label value each region's output writes where its sigmoid > 0.5, painted in "
                "region order (a later region wins; nnU-Net's regions_class_order)"})
    label_map: dict[int, int] = field(default_factory=dict,
                                      metadata={"help": "raw label value -> class index; empty = identity"})
    ignore_unlabelled_slices: bool = field(default=False, metadata={
        "help": "slices (coarsest axis) without any label are ignored by the loss (partial annotation)"})
    absent_classes_unannotated: bool = field(default=False, metadata={
        "help": "a class absent from a case's labelled voxels is treated as not annotated there"})
    group_pattern: Optional[str] = field(default=None, metadata={
        "help": "regex whose first group is the patient id in the case id (keeps patients in one fold)"})
    n_folds: int = 1
    fold: int = field(default=0, metadata={"help": "the test fold: held out, evaluated and reported as `test`"})
    selection_fold: Optional[int] = field(default=None, metadata={
        "help": "another fold of the same split held out for model selection (training-time validation, "
                "checkpoint: best_selection), never trained on and never reported as test; None: no selection split"})
    split_seed: int = 0
    stratify_by: Optional[str] = field(default=None, metadata={
        "help": "dataset entry field whose values every fold holds in proportion (e.g. ACDC's pathology 'group')"})
    extra: list[ExtraDataConfig] = field(default_factory=list, metadata={
        "help": "further datasets with their own label options: a list of {dataset, role: train | external, "
                "annotated_classes, ignore_unlabelled_slices, absent_classes_unannotated} (see ExtraDataConfig)"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "preprocessed-case cache (default <out>/cache)"})


@dataclass
class PreprocessConfig:
    """Mirror of ``medcnn.preprocess.PreprocessSpec`` (stored in the bundle)."""

    orientation: Optional[str] = field(default="RAS", metadata={"help": "None keeps the array order (2D cine stacks)"})
    target_spacing: Optional[tuple[float, float, float]] = None
    modalities: tuple[str, ...] = ("MR",)
    ct_window: Optional[tuple[float, float]] = None
    ct_mean: Optional[float] = None
    ct_std: Optional[float] = None
    crop_foreground: bool = False
    image_order: int = 3
    anisotropy_threshold: float = 3.0
    anisotropic_order: int = 1
    mr_foreground: Optional[str] = field(default=None, metadata={"help": (
        "voxels an MR channel's z-score statistics come from (outside: 0): None/nonzero = the channel's own non-zero "
        "voxels; nonzero_any = non-zero in any channel (skull-stripped scans); border_mode = differing in any "
        "channel from its most frequent border value (constant non-zero background)")})


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    poly_power: float = 0.9
    warmup_steps: int = 0
    grad_clip: float = 12.0


@dataclass
class TrainConfig:
    """One training run (a fold). Read with ``load_config(TrainConfig, "configs/x.yaml")``."""

    name: str
    data: DataConfig
    network: dict[str, Any] = field(metadata={"help": "network spec for medcnn.models (name, spatial_dims, ...)"})
    patch_size: tuple[int, ...] = field(metadata={"help": "training patch = inference roi_size (voxels)"})
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    description: str = ""
    licence: str = field(default="", metadata={"help": "licence terms of the training data, recorded in the bundle"})
    batch_size: int = 2
    max_steps: int = 1000
    steps_per_epoch: int = 50
    val_every_epochs: int = field(default=2, metadata={"help": (
        "training-time validation interval (epochs): on the selection split when data.selection_fold is set, "
        "else on the test fold for the log only (it never chooses the checkpoint)")})
    checkpoint: Literal["final", "best_selection"] = field(default="final", metadata={"help": (
        "which weights the bundle holds: final = after max_steps (no selection); best_selection = best "
        "training-time Dice on the selection split (needs data.selection_fold), never on the test fold")})
    checkpoint_every: int = 100
    fg_fraction: float = field(default=1 / 3, metadata={"help": "share of patches centred on foreground"})
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    num_threads: Optional[int] = None
    sw_overlap: float = 0.5
    sw_batch_size: int = 4
    export_dtype: Literal["float32", "float16"] = "float16"
    progress: bool = True
    postprocess: Optional[dict[str, Any]] = field(default=None, metadata={"help": (
        "medcnn.postprocess.PostprocessSpec written into the exported bundle, e.g. {keep_largest: true}; "
        "applied at inference and in the held-out evaluation (not in training-time validation)")})

    def __post_init__(self) -> None:
        sd = int(self.network.get("spatial_dims", 3))
        if len(self.patch_size) != sd:
            raise ConfigError.expected(f"patch_size with {sd} values (network.spatial_dims)", str(list(self.patch_size)))
        if self.batch_size < 1 or self.max_steps < 1 or self.steps_per_epoch < 1:
            raise ConfigError.expected("batch_size, max_steps, steps_per_epoch >= 1",
                                       f"{self.batch_size}, {self.max_steps}, {self.steps_per_epoch}")
        if not 0 <= self.fg_fraction <= 1:
            raise ConfigError.expected("fg_fraction in [0, 1]", str(self.fg_fraction))
        if self.postprocess is not None:
            from medcnn.postprocess import PostprocessSpec

            self.postprocess = PostprocessSpec.from_dict(dict(self.postprocess)).to_dict()
        if self.checkpoint == "best_selection" and self.data.selection_fold is None:
            raise ConfigError.expected("data.selection_fold set for checkpoint: best_selection (a selection split "
                                       "separate from the reported test fold)", "no selection_fold",
                                       hint="use checkpoint: final, or set data.selection_fold")
        sel = self.data.selection_fold
        if sel is not None and (self.data.n_folds < 3 or sel == self.data.fold or not 0 <= sel < self.data.n_folds):
            raise ConfigError.expected(f"data.selection_fold in 0..{self.data.n_folds - 1}, other than data.fold "
                                       f"({self.data.fold}), with n_folds >= 3", f"{sel} (n_folds {self.data.n_folds})")
        flips = [int(a) for a in self.augment.flip_axes]
        if any(not 0 <= a < sd for a in flips) or len(set(flips)) != len(flips):
            raise ConfigError.expected(f"augment.flip_axes: distinct patch axes among 0..{sd - 1}", str(flips))
        from medcnn.preprocess._intensity import check_mr_foreground

        check_mr_foreground(self.preprocess.mr_foreground)
        self._check_regions()

    def _check_regions(self) -> None:
        d = self.data
        if not d.regions:
            if d.regions_class_order:
                raise ConfigError.expected("data.regions_class_order only with data.regions", "no data.regions")
            return
        spec = self.region_spec
        if spec is None:  # pragma: no cover - data.regions is set here
            return
        values = {int(v) for v in d.labels.values()}
        if 0 not in values or len(values) != len(d.labels):
            raise ConfigError.expected("data.labels with background 0 and one distinct label value per class",
                                       str(dict(d.labels)))
        spec.check_labels({int(v): k for k, v in d.labels.items()})
        unused = sorted(values - {0} - {v for m in spec.regions.values() for v in m})
        if unused:
            raise ConfigError.expected("every label value of data.labels in some region", f"{unused} in none",
                                       hint="add them to a region or drop them from data.labels")
        stray = sorted({int(v) for v in d.label_map.values()} - values)
        if stray:
            raise ConfigError.expected(f"data.label_map values among the label values {sorted(values)}", f"{stray}")
        out = int(self.network.get("out_channels", len(d.regions)))
        if out != len(d.regions):
            raise ConfigError.expected(f"network.out_channels {len(d.regions)} (one sigmoid output per region)",
                                       str(out))
        if d.absent_classes_unannotated or any(e.absent_classes_unannotated for e in d.extra):
            raise ConfigError.expected("absent_classes_unannotated false with data.regions (a case without "
                                       "enhancing tumour still annotates the whole tumour)", "true")

    @property
    def mirror_axes(self) -> list[int]:
        """Patch axes the augmentation mirrors (recorded in the bundle for test-time augmentation)."""
        return sorted({int(a) for a in self.augment.flip_axes}) if self.augment.enabled else []

    @property
    def n_classes(self) -> int:
        """Softmax models: the network's outputs (classes). Region models: the label values
        ``0..max`` a prepared label map may hold (``max(data.labels) + 1``)."""
        if self.data.regions:
            return max(int(v) for v in self.data.labels.values()) + 1
        return int(self.network.get("out_channels", max(self.data.labels.values()) + 1))

    @property
    def region_spec(self):
        """:class:`medcnn.regions.RegionSpec` of a region model (``None`` without
        ``data.regions``): channel ``r`` predicts the ``r``-th region and writes
        ``regions_class_order[r]``, painted in region order (nnU-Net's rule)."""
        if not self.data.regions:
            return None
        from medcnn.regions import RegionSpec

        order = [int(v) for v in self.data.regions_class_order]
        if len(order) != len(self.data.regions):
            raise ConfigError.expected(f"data.regions_class_order with one label value per region "
                                       f"({len(self.data.regions)})", str(order))
        try:
            return RegionSpec(regions={k: list(v) for k, v in self.data.regions.items()},
                              channels=tuple(self.data.regions), channel_labels=tuple(order),
                              paint_order=tuple(range(len(order))))
        except ConfigError as exc:
            raise ConfigError(f"data.regions / regions_class_order: {exc}") from None

    @property
    def region_members(self) -> list[list[int]]:
        """The label values of each region, in output-channel order (empty without regions)."""
        return [[int(v) for v in m] for m in self.data.regions.values()]

    @property
    def spatial_dims(self) -> int:
        return int(self.network.get("spatial_dims", 3))


@dataclass
class TrainResult:
    out_dir: Path
    bundle: Path | None
    step: int
    best_val_dice: float | None
    history: list[dict[str, Any]]
    wall_s: float
    validation: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def poly_lr(step: int, *, base_lr: float, max_steps: int, power: float = 0.9, warmup_steps: int = 0) -> float:
    """nnU-Net's polynomial decay, optionally after a linear warm-up."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr * (1 - min(step, max_steps) / max_steps) ** power


def hardware_description(device: str) -> dict[str, Any]:
    from medcnn.hardware import cpu_flags, cpu_model

    out: dict[str, Any] = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def _autocast(cfg: TrainConfig, device: str):
    kind = cfg.amp
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    if kind == "auto":
        kind = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if dev_type == "cuda" else "none"
    if kind == "none":
        return None, None
    dtype = torch.bfloat16 if kind == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if (kind == "fp16" and dev_type == "cuda") else None
    return (lambda: torch.autocast(dev_type, dtype=dtype)), scaler


def _make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: Mapping[str, Any]) -> Path:
    """Write ``folder/weights.safetensors`` (model + optimizer tensors) and ``folder/state.json``.

    Written to a temporary folder first and renamed, so a crash never leaves half a checkpoint.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, st in opt["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    save_file(tensors, str(tmp / "weights.safetensors"))
    doc = {"format": "medcnn-checkpoint", "version": 1, **dict(state),
           "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    (tmp / "state.json").write_text(json.dumps(doc, indent=1, default=_json_default))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)
    return folder


def _finite_json(value: Any) -> Any:
    """NaN/inf → None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_checkpoint(folder: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> dict[str, Any]:
    """Restore model (and optimizer) from :func:`save_checkpoint`; returns the JSON state."""
    from safetensors.torch import load_file

    folder = Path(folder)
    wfile, sfile = folder / "weights.safetensors", folder / "state.json"
    if not wfile.is_file() or not sfile.is_file():
        raise ConfigError.expected("a checkpoint folder with weights.safetensors and state.json",
                                   "missing files", path=folder, hint="start without --resume")
    tensors = load_file(str(wfile))
    doc = json.loads(sfile.read_text())
    net = unwrap_model(model)
    dev = next(net.parameters()).device
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    net.load_state_dict(msd, strict=True)
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v.to(dev) if key != "step" else v
        for k, v in doc["optimizer"]["scalars"].items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer"]["param_groups"]})
    return doc


# ---------------------------------------------------------------------------- loss
def training_loss(cfg: TrainConfig, logits: torch.Tensor, label: torch.Tensor, *, ignore: torch.Tensor,
                  annotated: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """The run's loss on one batch: masked Dice + cross-entropy over softmax classes, or,
    with ``data.regions``, BCE + soft Dice per region (``ce_weight`` weighs the BCE).

    Args:
        logits: ``(B, K, *P)`` network outputs (K classes, or one per region).
        label: ``(B, *P)`` class indices, or label values for region models (ignored voxels 0).
        ignore: ``(B, *P)`` bool. annotated: ``(B, n_classes)`` bool per class / label value.
    """
    if not cfg.data.regions:
        return masked_dice_ce_loss(logits, label, ignore=ignore, annotated=annotated, dice_weight=cfg.dice_weight,
                                   ce_weight=cfg.ce_weight)
    members = cfg.region_members
    return region_dice_bce_loss(logits, region_targets(label, members), ignore=ignore,
                                annotated=region_annotated(annotated, members), dice_weight=cfg.dice_weight,
                                bce_weight=cfg.ce_weight)


# ---------------------------------------------------------------------------- validation
def _predict_array(model: torch.nn.Module, image: np.ndarray, spacing: Sequence[float], cfg: TrainConfig,
                   device: str) -> np.ndarray:
    """Labels ``(X, Y, Z)`` for a preprocessed image ``(C, X, Y, Z)`` by sliding windows;
    for region models the region masks ``(R, X, Y, Z)`` bool (each output's sigmoid > 0.5,
    i.e. logit > 0, as nnU-Net's online evaluation: not yet painted into labels, so a
    half-trained network whose regions are not nested yet is still scored region by region).

    Uses :meth:`medcnn.inference.Segmenter.predict_array`, the sliding window inference uses
    (2D networks run slice by slice along the coarsest axis there).
    """
    from medcnn.inference import Segmenter

    model.eval()
    regions = bool(cfg.data.regions)
    seg = Segmenter(model, roi_size=tuple(cfg.patch_size), preprocess=preprocess_spec(cfg), network=cfg.network,
                    overlap=cfg.sw_overlap, device=device, precision="fp32", sw_batch_size=cfg.sw_batch_size,
                    activation="sigmoid" if regions else None)
    with torch.no_grad():
        res = seg.predict_array(np.ascontiguousarray(image, dtype=np.float32), spacing=spacing,
                                outputs=("logits",) if regions else ("labels",))
    if regions:
        return np.asarray(res.logits) > 0
    return np.asarray(res.labels).astype(np.int64)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, *, n_classes: int, valid: np.ndarray | None = None
                   ) -> dict[int, float]:
    """Dice of each foreground class (NaN where both are empty)."""
    if valid is not None:
        pred, truth = pred[valid], truth[valid]
    out = {}
    for k in range(1, n_classes):
        p, t = pred == k, truth == k
        s = p.sum() + t.sum()
        out[k] = float(2 * (p & t).sum() / s) if s else float("nan")
    return out


def validate(model: torch.nn.Module, cases: Sequence[PreparedCase], cfg: TrainConfig, device: str) -> dict[str, Any]:
    """Mean foreground Dice on the network grid (ignored voxels and unannotated classes skipped);
    for region models the mean Dice of the regions (``per_class`` then holds one per region)."""
    if cfg.data.regions:
        return _validate_regions(model, cases, cfg, device)
    per_class: dict[int, list[float]] = {k: [] for k in range(1, cfg.n_classes)}
    for c in cases:
        pred = _predict_array(model, c.image, c.spacing, cfg, device)
        d = dice_per_class(pred, c.label, n_classes=cfg.n_classes, valid=~c.ignore)
        for k, v in d.items():
            if c.annotated[k] and not math.isnan(v):
                per_class[k].append(v)
    names = {v: k for k, v in cfg.data.labels.items()}
    means = {names.get(k, str(k)): float(np.mean(v)) for k, v in per_class.items() if v}
    return {"dice": float(np.mean(list(means.values()))) if means else float("nan"), "per_class": means}


def _validate_regions(model: torch.nn.Module, cases: Sequence[PreparedCase], cfg: TrainConfig, device: str
                      ) -> dict[str, Any]:
    """Per-region Dice on the network grid: each output's sigmoid > 0.5 against the union of
    its label values (ignored voxels and regions a case does not annotate skipped)."""
    per_region: dict[str, list[float]] = {name: [] for name in cfg.data.regions}
    for c in cases:
        masks = _predict_array(model, c.image, c.spacing, cfg, device)
        valid = ~c.ignore
        for r, (name, members) in enumerate(zip(cfg.data.regions, cfg.region_members)):
            if not all(c.annotated[v] for v in members):
                continue
            p, t = masks[r] & valid, np.isin(c.label, members) & valid
            s = int(p.sum()) + int(t.sum())
            if s:
                per_region[name].append(float(2 * (p & t).sum() / s))
    means = {name: float(np.mean(v)) for name, v in per_region.items() if v}
    return {"dice": float(np.mean(list(means.values()))) if means else float("nan"), "per_class": means}


# ---------------------------------------------------------------------------- the loop
def _resolve_dataset(dataset: str, data_dir: str | os.PathLike[str] | None, config_dir: Path | None) -> Path:
    p = Path(dataset)
    if p.is_absolute():
        return p
    base = Path(data_dir) if data_dir else (config_dir or Path.cwd())
    return base / p


@dataclass
class RunSplit:
    """The cases of one run by purpose: ``train`` (trained on), ``selection`` (training-time
    validation and checkpoint choice; ``data.selection_fold``), ``test`` (the held-out fold,
    evaluated and reported) and ``external`` (another dataset, evaluated only). Disjoint."""

    train: list[Case]
    selection: list[Case]
    test: list[Case]
    external: list[Case]


def split_cases(cfg: TrainConfig, data_dir: str | os.PathLike[str] | None, config_dir: Path | None,
                *, train_on_external: bool = False) -> tuple[list[Case], list[Case], list[Case]]:
    """``(train, test, external)`` cases of the run (see :func:`split_run_cases`; the
    selection cases, if any, are in none of the three)."""
    s = split_run_cases(cfg, data_dir, config_dir, train_on_external=train_on_external)
    return s.train, s.test, s.external


def split_run_cases(cfg: TrainConfig, data_dir: str | os.PathLike[str] | None, config_dir: Path | None,
                    *, train_on_external: bool = False) -> RunSplit:
    """The run's cases by purpose: the main dataset split by fold (grouped by patient,
    stratified when ``data.stratify_by`` is set; ``data.fold`` is the test fold,
    ``data.selection_fold`` the selection fold), the ``data.extra`` datasets added to training
    (``role: train``) or kept as the external test set."""
    main_path = _resolve_dataset(cfg.data.dataset, data_dir, config_dir)
    cases = load_cases(main_path, channels=None, group_pattern=cfg.data.group_pattern)
    _check_channels(cases, cfg, main_path)
    train_cases, val_cases = kfold_split(cases, n_folds=cfg.data.n_folds, fold=cfg.data.fold,
                                         seed=cfg.data.split_seed, stratify_by=cfg.data.stratify_by)
    selection: list[Case] = []
    if cfg.data.selection_fold is not None:
        _, selection = kfold_split(cases, n_folds=cfg.data.n_folds, fold=cfg.data.selection_fold,
                                   seed=cfg.data.split_seed, stratify_by=cfg.data.stratify_by)
        chosen = {c.case_id for c in selection}
        train_cases = [c for c in train_cases if c.case_id not in chosen]
    external: list[Case] = []
    seen = {c.case_id: main_path for c in cases}
    for extra in cfg.data.extra:
        path = _resolve_dataset(extra.dataset, data_dir, config_dir)
        more = load_cases(path, channels=None, group_pattern=cfg.data.group_pattern)
        _check_channels(more, cfg, path)
        more = [dataclasses.replace(
            c, annotated_classes=c.annotated_classes if extra.annotated_classes is None else extra.annotated_classes,
            ignore_unlabelled_slices=extra.ignore_unlabelled_slices,
            absent_classes_unannotated=extra.absent_classes_unannotated) for c in more]
        for c in more:
            if c.case_id in seen:
                raise ConfigError.expected("case ids unique across data.dataset and data.extra",
                                           f"{c.case_id!r} in {seen[c.case_id]} and {path}", path=path)
            seen[c.case_id] = path
        (train_cases if extra.role == "train" or train_on_external else external).extend(more)
    return RunSplit(train_cases, selection, val_cases, external)


def _check_channels(cases: Sequence[Case], cfg: TrainConfig, path: Path) -> None:
    """One existing image per channel for every case, in the dataset's declared channel
    order (:func:`medcnn.train.datasets.check_case_channels`), before anything is read."""
    check_case_channels(cases, cfg.data.channels, source=path, declared=dataset_channel_names(path))


def preprocess_spec(cfg: TrainConfig) -> dict[str, Any]:
    """The run's preprocessing as a :class:`medcnn.preprocess.PreprocessSpec` dict
    (``mr_foreground`` only when set: other runs' cache keys and bundles stay as they were)."""
    spec = to_dict(cfg.preprocess)
    if spec.get("mr_foreground") in (None, "nonzero"):
        spec.pop("mr_foreground", None)
    return spec


def prepare_cases(cases: Sequence[Case], cfg: TrainConfig, cache_dir: Path, *, log: Callable[[str], None]
                  ) -> list[PreparedCase]:
    spec = preprocess_spec(cfg)
    pre = _compat.make_preprocess(spec)
    out = []
    t0 = time.perf_counter()
    allowed = sorted(int(v) for v in cfg.data.labels.values()) if cfg.data.regions else None
    for i, c in enumerate(cases):
        out.append(prepare_case(c, preprocess=pre, spec=spec, label_map=cfg.data.label_map,
                                n_classes=cfg.n_classes, ignore_unlabelled_slices=cfg.data.ignore_unlabelled_slices,
                                absent_classes_unannotated=cfg.data.absent_classes_unannotated, cache_dir=cache_dir,
                                label_values=allowed))
        if (i + 1) % 50 == 0:
            log(f"prepared {i + 1}/{len(cases)} cases ({time.perf_counter() - t0:.0f} s)")
    return out


def train(
    cfg: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    ctx: DistContext | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    train_on_external: bool = False,
) -> TrainResult:
    """Train one fold of ``cfg``; write checkpoints, ``log.csv`` and ``bundle/`` in ``out_dir``.

    Args:
        max_steps: overrides ``cfg.max_steps`` (the LR schedule follows it).
        stop_after: stop (with a checkpoint) after this many steps without shortening the
            schedule; used to test resumption.
        train_on_external: train on the ``data.extra`` datasets of role ``external`` too
            (a final model; its external test then is no longer independent).
    """
    t_start = time.perf_counter()
    ctx = ctx or DistContext(device="cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                             ("cpu" if cfg.device == "auto" else cfg.device))
    device = ctx.device
    out = Path(out_dir)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    say = log if ctx.is_main else (lambda s: None)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=int(max_steps))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    elif device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    # -- data: every case listed with all its sequences, checked before the run folder exists
    split = split_run_cases(cfg, data_dir, Path(config_dir) if config_dir else None,
                            train_on_external=train_on_external)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    train_cases, sel_cases, val_cases, external = split.train, split.selection, split.test, split.external
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    if not cache_dir.is_absolute() and cfg.data.cache_dir and config_dir:
        cache_dir = Path(config_dir) / cache_dir
    say(f"{cfg.name}: {len(train_cases)} training / {len(sel_cases)} selection / {len(val_cases)} test / "
        f"{len(external)} external test cases (test fold {cfg.data.fold} of {cfg.data.n_folds}; checkpoint: "
        f"{cfg.checkpoint}); preprocessing into {cache_dir}")
    # training-time validation: the selection split when there is one, else the test fold for the
    # log only (it never chooses the exported weights: checkpoint "best_selection" needs a selection split)
    monitor_cases = sel_cases if sel_cases else val_cases
    select_on_monitor = cfg.checkpoint == "best_selection"
    # rank 0 fills the cache first, the others then read it
    if ctx.is_main:
        prep_train = prepare_cases(train_cases, cfg, cache_dir, log=say)
        prep_val = prepare_cases(monitor_cases, cfg, cache_dir, log=say)
    barrier(ctx)
    if not ctx.is_main:
        prep_train = prepare_cases(train_cases, cfg, cache_dir, log=say)
        prep_val = []
    sampler = PatchSampler(prep_train, cfg.patch_size, spatial_dims=cfg.spatial_dims, fg_fraction=cfg.fg_fraction,
                           n_classes=cfg.n_classes)
    aug = build_augmentation(cfg.augment, spatial_dims=cfg.spatial_dims)

    # -- model
    torch.manual_seed(cfg.seed)
    net = _compat.build_network(cfg.network).to(device)
    optimizer = _make_optimizer(net, cfg.optim)
    step, best, history = 0, -1.0, []
    ckpt = out / "checkpoint"
    if resume:
        doc = load_checkpoint(ckpt, net, optimizer)
        step, best = int(doc["step"]), float(doc.get("best_val_dice", -1.0))
        t_start -= float(doc.get("elapsed_s", 0.0))  # wall time counts every segment of the run
        history = list(doc.get("history", []))
        say(f"resumed from {ckpt} at step {step}")
    model = wrap_model(net, ctx)
    autocast, scaler = _autocast(cfg, device)

    # -- logging
    csv_path = out / "log.csv"
    fields = ["step", "epoch", "lr", "loss", "ce", "dice_loss_term", "val_dice", "seconds"]
    if ctx.is_main and (not resume or not csv_path.exists()):
        with csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(fields)
    elif ctx.is_main:  # resuming: drop rows logged after the checkpoint
        with csv_path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        with csv_path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    bar = None
    if ctx.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=cfg.name, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    run_meta = {"config": to_dict(cfg), "command": command, "hardware": hardware_description(device),
                "world_size": ctx.world_size, "train_cases": [c.case_id for c in train_cases],
                "val_cases": [c.case_id for c in val_cases], "selection_cases": [c.case_id for c in sel_cases],
                "external_test_cases": [c.case_id for c in external], "train_on_external": bool(train_on_external),
                "checkpoint": cfg.checkpoint,
                "training_time_validation_on": "selection" if sel_cases else ("test (log only)" if val_cases else None)}
    bundle_dir = out / "bundle"
    last_val: float | None = None
    running: list[float] = []
    t_loop = time.perf_counter()
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    while step < end:
        model.train()
        lr = poly_lr(step, base_lr=cfg.optim.lr, max_steps=cfg.max_steps, power=cfg.optim.poly_power,
                     warmup_steps=cfg.optim.warmup_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        s = step_seed(cfg.seed, ctx.rank, step)
        rng = np.random.default_rng(s)
        torch.manual_seed(s)
        batch = sampler.sample(rng, cfg.batch_size)
        batch = augment_batch(batch, aug, seed=step_seed(cfg.seed, ctx.rank, step, 1))
        x = torch.from_numpy(batch["image"]).to(device)
        y = torch.from_numpy(batch["label"]).to(device)
        ignore = y == IGNORE_INDEX
        y = torch.where(ignore, torch.zeros_like(y), y)
        ann = torch.from_numpy(batch["annotated"]).to(device)
        optimizer.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast():
                logits = model(x)
        else:
            logits = model(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        if logits.ndim == x.ndim + 1:  # DynUNet deep supervision stack (B, S, K, ...)
            logits = logits[:, 0]
        loss, parts = training_loss(cfg, logits, y, ignore=ignore, annotated=ann)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.name}: non-finite loss at step {step}; lower optim.lr or set amp: none")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
        step += 1
        lval = float(loss.detach())
        running.append(lval)
        row: dict[str, Any] = {"step": step, "epoch": (step - 1) // cfg.steps_per_epoch, "lr": lr, "loss": lval,
                               "ce": parts["ce"], "dice_loss_term": 1 - parts["dice"], "val_dice": "",
                               "seconds": round(time.perf_counter() - t_start, 2)}
        epoch_end = step % cfg.steps_per_epoch == 0
        do_val = (epoch_end and (step // cfg.steps_per_epoch) % cfg.val_every_epochs == 0) or step == cfg.max_steps
        if do_val and ctx.is_main:
            if prep_val:
                v = validate(unwrap_model(model), prep_val, cfg, device)
                last_val = v["dice"]
                row["val_dice"] = round(last_val, 5)
                history.append({"step": step, "val_dice": last_val, "per_class": v["per_class"],
                                "train_loss": float(np.mean(running[-cfg.steps_per_epoch:]))})
                say(f"step {step}: train loss {np.mean(running[-cfg.steps_per_epoch:]):.4f}, "
                    f"{'selection' if sel_cases else 'test-fold (log only)'} Dice {last_val:.4f} {v['per_class']}")
                if not math.isnan(last_val) and last_val > best:
                    best = last_val
                    if select_on_monitor:
                        _compat.save_bundle(unwrap_model(model), bundle_dir,
                                            **_bundle_kwargs(cfg, run_meta, step, best, history, t_start))
            if step == cfg.max_steps and not (select_on_monitor and (bundle_dir / "bundle.json").exists()):
                _compat.save_bundle(unwrap_model(model), bundle_dir,  # final step: nothing was selected
                                    **_bundle_kwargs(cfg, run_meta, step, None, history, t_start))
        if ctx.is_main:
            with csv_path.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=fields).writerow(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}",
                                val_dice="-" if last_val is None else f"{last_val:.3f}", refresh=False)
        if ctx.is_main and (step % cfg.checkpoint_every == 0 or step == end):
            save_checkpoint(ckpt, model, optimizer, {"step": step, "best_val_dice": best, "history": history,
                                                     "elapsed_s": round(time.perf_counter() - t_start, 2),
                                                     "config": to_dict(cfg)})
        barrier(ctx) if do_val else None
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start
    validation: dict[str, Any] = {}
    if ctx.is_main:
        say(f"{cfg.name}: {step} steps in {wall:.0f} s ({(time.perf_counter() - t_loop) / max(step, 1):.2f} s/step)"
            + (f", best val Dice {best:.4f}" if best >= 0 else ""))
        if step == cfg.max_steps and (bundle_dir / "bundle.json").exists():
            validation = _finalise_bundle(bundle_dir, cfg, split, device=device, train_wall_s=wall, say=say)
    barrier(ctx)
    return TrainResult(out, bundle_dir if (bundle_dir / "bundle.json").exists() else None, step,
                       best if best >= 0 else None, history, wall, validation)


def finalise_run(cfg: TrainConfig, *, out_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                 config_dir: str | os.PathLike[str] | None = None, device: str = "cpu",
                 log: Callable[[str], None] | None = None, train_on_external: bool = False) -> dict[str, Any]:
    """(Re)run the held-out (and external test) evaluation of ``<out_dir>/bundle`` and record
    it in its provenance.

    The training wall time is read from the run's checkpoint (all segments of a resumed run).
    """
    out = Path(out_dir)
    split = split_run_cases(cfg, data_dir, Path(config_dir) if config_dir else None,
                            train_on_external=train_on_external)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    return _finalise_bundle(out / "bundle", cfg, split, device=device,
                            train_wall_s=float(state.get("elapsed_s", float("nan"))),
                            say=log or (lambda s: print(s, file=sys.stderr, flush=True)))


def _finalise_bundle(bundle_dir: Path, cfg: TrainConfig, split: RunSplit, *, device: str, train_wall_s: float,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Evaluate the exported bundle on the test fold (original grids; ``validation``, kind
    ``test``), on the selection split (``validation["selection"]``, kind ``selection``) and on
    the external test cases (``validation["external"]``, kind ``external test``) when there are
    any; record the results, which case served which purpose (``provenance["data_use"]``),
    the total training wall time and the hardware in its provenance."""
    from medcnn.models import load_bundle, update_bundle
    from medcnn.report.data_use import data_use_record
    from medcnn.train.evaluate import evaluate_bundle

    val_cases, external = split.test, split.external

    b = load_bundle(bundle_dir)
    if b.postprocess != cfg.postprocess:  # the config decides (e.g. --evaluate-only after adding a rule)
        say(f"bundle postprocessing set from the config: {cfg.postprocess}")
        update_bundle(bundle_dir, postprocess=cfg.postprocess)  # weights untouched
    t0 = time.perf_counter()
    validation: dict[str, Any] = {}
    opts = dict(labels=cfg.data.labels, label_map=cfg.data.label_map,
                ignore_unlabelled_slices=cfg.data.ignore_unlabelled_slices,
                absent_classes_unannotated=cfg.data.absent_classes_unannotated, device=device,
                regions=dict(cfg.data.regions) or None)
    if val_cases:
        validation = evaluate_bundle(bundle_dir, val_cases, **opts)
        validation["grid"] = "original image grid (full inference path)"
        validation["held_out_groups"] = sorted({c.group for c in val_cases})
        validation["kind"] = "test"
        say(f"test-fold evaluation ({len(val_cases)} cases, {time.perf_counter() - t0:.0f} s): {_summary(validation)}")
    if split.selection:
        sel = evaluate_bundle(bundle_dir, split.selection, **opts)
        sel["grid"] = "original image grid (full inference path)"
        sel["kind"] = "selection"
        sel["note"] = ("the selection split: it " + ("chose the exported checkpoint" if cfg.checkpoint == "best_selection"
                       else "was watched during training") + "; optimistic, not a held-out figure")
        validation["selection"] = sel
        say(f"selection split ({len(split.selection)} cases): {_summary(sel)}")
    # a pooled external figure is only as good as its weakest part
    ext_kind = "selection" if any(e.role == "external" and e.reported_as == "selection" for e in cfg.data.extra) \
        else "external test"
    if external:
        ext = evaluate_bundle(bundle_dir, external, **opts)
        ext["grid"] = "original image grid (full inference path)"
        ext["groups"] = sorted({c.group for c in external})
        ext["kind"] = ext_kind
        if ext_kind == "selection":
            ext["note"] = "data.extra reported_as: selection (its results shaped the recipe): not an external test"
        validation["external"] = ext
        say(f"external test ({len(external)} cases): {_summary(ext)}")
    prov = load_bundle(bundle_dir).provenance
    prov.setdefault("training", {})["wall_time_s"] = round(train_wall_s, 1)
    step = prov.get("training", {}).get("step")
    chosen = (f"best training-time Dice on the selection split (step {step} of {cfg.max_steps})"
              if cfg.checkpoint == "best_selection" else f"final step {step} (no checkpoint selection)")
    prov["data_use"] = data_use_record(
        training=[c.case_id for c in split.train], selection=[c.case_id for c in split.selection],
        test=[c.case_id for c in val_cases], checkpoint=chosen,
        **({"external_test": [c.case_id for c in external]} if ext_kind == "external test"
           else {"recipe_selection": [c.case_id for c in external]}))
    prov["validation"] = _finite_json(json.loads(json.dumps(validation, default=_json_default)))
    update_bundle(bundle_dir, provenance=prov)  # the weights file (and its sha256) stays as exported
    return validation


def _summary(v: Mapping[str, Any]) -> str:
    out = f"{'region ' if v.get('mean_class_dice') is not None else ''}Dice {v['mean_dice']}"
    if v.get("failed_cases"):
        out += (f", {len(v['failed_cases'])} case(s) not scored (outputs not nested: "
                + ", ".join(f["case_id"] for f in v["failed_cases"]) + ")")
    for key, what in (("mean_abs_ef_error_points", "|EF error|"), ("mean_abs_rv_ef_error_points", "|RV EF error|")):
        if key in v:
            out += f", {what} {v[key]:.1f} points"
    if v.get("mean_foreground_volume_error_percent") is not None:
        out += f", foreground volume error {v['mean_foreground_volume_error_percent']:.1f}%"
    return out


def normalisation_record(cfg: TrainConfig) -> dict[str, Any]:
    """How the run normalises intensities, said in words for the bundle's provenance:
    the method per channel and where the foreground mask comes from."""
    from medcnn.preprocess import describe_mr_foreground
    from medcnn.preprocess._intensity import check_modality

    out: dict[str, Any] = {"channels": {}}
    for name, modality in zip(cfg.data.channels, cfg.preprocess.modalities):
        m = check_modality(modality)
        if m == "MR":
            out["channels"][name] = "z-score: (x - mean) / std with the mean and std of the channel inside the mask; 0 outside"
        elif m == "CT":
            out["channels"][name] = "CT: clip to ct_window, then z-score with the dataset (or volume) statistics"
        else:
            out["channels"][name] = "none (cast to float32)"
    if any(check_modality(m) == "MR" for m in cfg.preprocess.modalities):
        out["mr_foreground"] = cfg.preprocess.mr_foreground or "nonzero"
        out["mask"] = describe_mr_foreground(cfg.preprocess.mr_foreground)
    return out


def _bundle_kwargs(cfg: TrainConfig, run_meta: Mapping[str, Any], step: int, best: float | None,
                   history: Sequence[Mapping[str, Any]], t_start: float) -> dict[str, Any]:
    pre = preprocess_spec(cfg)
    meta = {"name": cfg.name, "description": cfg.description, **({"licence": cfg.licence} if cfg.licence else {}),
            "inference": {"slice_axis": "coarsest"} if cfg.spatial_dims == 2 else {},
            "normalisation": normalisation_record(cfg),
            "training": {**run_meta, "step": step, "best_val_dice_network_grid": best,
                         "wall_time_s_at_export": round(time.perf_counter() - t_start, 1),
                         "history": list(history)}}
    spec = cfg.region_spec
    if spec is not None:
        meta["training"]["loss"] = ("BCE + soft Dice per region (one sigmoid output per region, batch Dice, "
                                    f"weights {cfg.ce_weight} and {cfg.dice_weight})")
    return {"network": dict(cfg.network), "preprocess": pre, "roi_size": list(cfg.patch_size),
            "labels": dict(cfg.data.labels), "channels": list(cfg.data.channels), "metadata": meta,
            "dtype": cfg.export_dtype, "overlap": cfg.sw_overlap,
            "mirror_axes": cfg.mirror_axes, "postprocess": cfg.postprocess,
            **({"activation": "sigmoid", "regions": spec.to_dict()} if spec is not None else {})}
