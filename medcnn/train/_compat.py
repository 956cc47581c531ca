"""Adapters onto ``medcnn.preprocess``, ``medcnn.models`` and ``medcnn.inference``.

Training must use exactly the preprocessing, network registry and bundle format that
inference uses. These functions call those modules; a small fallback (MONAI networks,
RAS reorientation + scipy resampling + z-scoring, a plain safetensors + JSON bundle)
is used only while a module is missing, so training can run on a partial checkout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["build_network", "make_preprocess", "save_bundle", "have_segmenter", "load_segmenter"]


# ---------------------------------------------------------------------------- networks
def build_network(spec: Mapping[str, Any]):
    """A ``torch.nn.Module`` from a JSON network spec (``{"name": "unet", ...}``)."""
    try:
        from medcnn import models as _m  # type: ignore[attr-defined]

        for fn in ("build_network", "build_model", "create_network"):
            if hasattr(_m, fn):
                return getattr(_m, fn)(dict(spec))
    except ImportError:
        pass
    from monai.networks import nets

    spec = dict(spec)
    name = str(spec.pop("name", "unet")).lower()
    table = {"unet": nets.UNet, "basicunet": nets.BasicUNet, "dynunet": nets.DynUNet,
             "segresnet": nets.SegResNet, "attentionunet": nets.AttentionUnet}
    if name not in table:
        from medcnn.errors import ConfigError

        raise ConfigError.expected(f"a network name in {sorted(table)}", repr(name))
    return table[name](**spec)


# ---------------------------------------------------------------------------- preprocessing
def make_preprocess(spec: Mapping[str, Any]):
    """``f(case) -> (image (C,X,Y,Z) float32, label (X,Y,Z) int, spacing mm)``."""
    from medcnn.io import read_volume

    pre = None
    try:
        from medcnn.preprocess import Preprocessor, PreprocessSpec  # type: ignore[attr-defined]

        pre = Preprocessor(PreprocessSpec.from_dict(dict(spec)))
    except ImportError:
        pre = None

    def run(case) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        channels = [read_volume(p, require_3d=True) for p in case.images]
        label_vol = read_volume(case.label, kind="label", require_3d=True) if case.label else None
        if label_vol is not None:
            label_vol.geometry.check_matches(channels[0].geometry, what=f"{case.case_id} label vs image")
        if pre is not None:
            image, record = pre.forward(channels)
            if label_vol is not None:
                label = np.asarray(record.to_model_grid(label_vol, order=0).array)
            else:
                label = np.zeros(image.shape[1:], np.int64)
            spacing = tuple(float(s) for s in record.model_geometry.spacing)
            return np.asarray(image, np.float32), label, spacing  # type: ignore[return-value]
        return _fallback(channels, label_vol, spec)

    return run


def _spec_kwargs(cls: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
    else:
        names = set(inspect.signature(cls).parameters)
    out = {}
    for k, v in spec.items():
        if k in names:
            out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _ras_permutation(direction: np.ndarray) -> tuple[list[int], list[bool]]:
    """Array axis order and flips that bring the grid closest to RAS."""
    order, flips, used = [], [], set()
    for world in range(3):
        cands = [(abs(direction[world, a]), a) for a in range(3) if a not in used]
        _, a = max(cands)
        used.add(a)
        order.append(a)
        flips.append(direction[world, a] < 0)
    return order, flips


def _to_ras(arr: np.ndarray, geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    order, flips = _ras_permutation(geometry.direction_matrix)
    out = np.transpose(arr, order)
    for ax, f in enumerate(flips):
        if f:
            out = np.flip(out, ax)
    spacing = tuple(float(geometry.spacing[a]) for a in order)
    return np.ascontiguousarray(out), spacing  # type: ignore[return-value]


def _target(vol, spec) -> tuple[float, float, float]:
    ts = spec.get("target_spacing")
    _, sp = _to_ras(np.zeros((1, 1, 1)), vol.geometry) if vol is not None else (None, (1.0, 1.0, 1.0))
    if not ts:
        return sp
    return tuple(float(t) if t and t > 0 else s for t, s in zip(ts, sp))  # type: ignore[return-value]


def _zoom(arr: np.ndarray, factors: Sequence[float], order: int, shape: Sequence[int]) -> np.ndarray:
    from scipy import ndimage

    if all(abs(f - 1) < 1e-6 for f in factors):
        return arr
    out = ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True)
    # exact target shape
    sl = tuple(slice(0, s) for s in shape)
    pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape)]
    return np.pad(out[sl], pad, mode="edge")


def _fallback(channels, label_vol, spec) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    imgs = []
    spacing = None
    target = None
    for vol in channels:
        arr, spacing = _to_ras(np.asarray(vol.array, np.float32), vol.geometry)
        target = _target(vol, spec)
        shape = [max(1, int(round(n * s / t))) for n, s, t in zip(arr.shape, spacing, target)]
        factors = [n2 / n for n2, n in zip(shape, arr.shape)]
        arr = _zoom(arr, factors, 1, shape)
        imgs.append(_normalise(arr, spec))
    image = np.stack(imgs).astype(np.float32)
    label = _fallback_label(label_vol, spec, image.shape[1:]) if label_vol is not None else np.zeros(image.shape[1:], np.int64)
    return image, label, target  # type: ignore[return-value]


def _fallback_label(label_vol, spec, shape) -> np.ndarray:
    arr, spacing = _to_ras(np.asarray(label_vol.array), label_vol.geometry)
    factors = [n2 / n for n2, n in zip(shape, arr.shape)]
    return _zoom(arr.astype(np.int16), factors, 0, shape).astype(np.int64)


def _normalise(arr: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    mods = [m.upper() for m in spec.get("modalities", ("MR",))]
    if "CT" in mods and spec.get("ct_window"):
        lo, hi = spec["ct_window"]
        arr = np.clip(arr, lo, hi)
        mean, std = spec.get("ct_mean") or 0.0, spec.get("ct_std") or 1.0
        return (arr - mean) / std
    mask = arr != 0
    vals = arr[mask] if mask.sum() > 100 else arr.ravel()
    return (arr - vals.mean()) / max(float(vals.std()), 1e-6)


# ---------------------------------------------------------------------------- bundles
def save_bundle(model, path: str | os.PathLike[str], *, network: Mapping[str, Any], preprocess: Mapping[str, Any],
                roi_size: Sequence[int], labels: Mapping[str, int], channels: Sequence[str],
                metadata: Mapping[str, Any], dtype: str = "float32", overlap: float = 0.5) -> Path:
    """Write ``model.safetensors`` + ``bundle.json`` in ``path`` (a folder) via ``medcnn.models``.

    ``labels`` maps class name -> value (the training config's spelling).
    """
    path = Path(path)
    try:
        from medcnn.models import save_bundle as _save  # type: ignore[attr-defined]
    except ImportError:
        _save = None
    if _save is not None:
        _save(model, path, network=dict(network), preprocess=dict(preprocess), roi_size=list(roi_size),
              labels={int(v): str(k) for k, v in labels.items()}, channels=list(channels), overlap=overlap,
              provenance=dict(metadata), weights_dtype=dtype, overwrite=True)
        return path
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype, torch.float32)
    state = {k: v.detach().to("cpu").to(tdtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    tmp = path / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, path / "model.safetensors")
    doc = {"format": "medcnn-bundle", "version": 1, "network": dict(network), "preprocess": dict(preprocess),
           "roi_size": list(roi_size), "labels": dict(labels), "channels": list(channels), **dict(metadata)}
    tmpj = path / "bundle.json.tmp"
    tmpj.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmpj, path / "bundle.json")
    return path


def have_segmenter() -> bool:
    try:
        from medcnn.inference import Segmenter  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def load_segmenter(path: str | os.PathLike[str], **kw: Any):
    from medcnn.inference import Segmenter  # type: ignore[attr-defined]

    return Segmenter.from_bundle(path, **kw)
