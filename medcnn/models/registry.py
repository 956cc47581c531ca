"""Network registry: build MONAI networks from a JSON-able spec.

A *network spec* is a plain dict that survives ``json.dumps``/``json.loads``::

    {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
     "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2}

``name`` picks a class of :mod:`monai.networks.nets`; every other key is a keyword
argument of that class. Unknown names, unknown keys, keys whose values are not JSON
values and missing required keys raise :class:`medcnn.errors.ConfigError` naming the key
and what was expected.

``spatial_dims=2`` builds the 2D variant of a network; :mod:`medcnn.inference` then
runs it slice by slice along the coarsest axis of the (preprocessed) volume.

:func:`plan_dynunet` chooses DynUNet kernels and strides from the voxel spacing and the
patch size the way nnU-Net plans its networks (pool an axis only while its spacing is
within a factor 2 of the finest one and while it has at least ``2 * min_size`` voxels;
use 1-voxel kernels along axes that are much coarser than the finest one).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from medcnn.errors import ConfigError

__all__ = [
    "NETWORK_NAMES",
    "build_network",
    "validate_network_spec",
    "network_patch_divisor",
    "plan_dynunet",
    "dynunet_spec",
]


@dataclass(frozen=True)
class _Entry:
    cls_name: str
    #: keyword arguments that cannot be described in JSON (refused in specs)
    blocked: frozenset[str] = frozenset()
    #: spec keys that must be present (beyond name/spatial_dims/in/out channels)
    required: tuple[str, ...] = ()
    #: optional packages MONAI imports lazily for this network (checked before building)
    needs: tuple[str, ...] = ()
    #: built by :mod:`medcnn.models._dynarch` (nnU-Net's networks) instead of MONAI
    dynarch: bool = False


_REGISTRY: dict[str, _Entry] = {
    "unet": _Entry("UNet", required=("channels", "strides")),
    "basicunet": _Entry("BasicUNet"),
    "dynunet": _Entry("DynUNet", required=("kernel_size", "strides", "upsample_kernel_size")),
    "segresnet": _Entry("SegResNet"),
    "attentionunet": _Entry("AttentionUnet", required=("channels", "strides")),
    "unetr": _Entry("UNETR", required=("img_size",), needs=("einops",)),
    "swinunetr": _Entry("SwinUNETR", blocked=frozenset({"norm_layer", "downsample"}), needs=("einops",)),
    # nnU-Net v2's networks, from dynamic-network-architectures (see medcnn.models._dynarch)
    "plainconvunet": _Entry("PlainConvUNet", dynarch=True, needs=("dynamic_network_architectures",)),
    "residualencoderunet": _Entry("ResidualEncoderUNet", dynarch=True, needs=("dynamic_network_architectures",)),
}

#: Names accepted in ``spec["name"]``.
NETWORK_NAMES: tuple[str, ...] = tuple(_REGISTRY)

_COMMON = ("spatial_dims", "in_channels", "out_channels")


def _monai_class(entry: _Entry) -> Callable[..., Any]:
    from monai.networks import nets

    return getattr(nets, entry.cls_name)


def _is_json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def validate_network_spec(spec: Mapping[str, Any], *, where: str = "network spec") -> dict[str, Any]:
    """Check a network spec and return a normalised copy (``spatial_dims`` filled in).

    Raises:
        ConfigError: not a mapping, unknown ``name``, unknown or non-JSON keyword,
            missing required key, or bad ``spatial_dims`` / channel counts.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError.expected("a network spec dict with a 'name' key", f"{type(spec).__name__}", path=where)
    spec = dict(spec)
    name = spec.get("name")
    if not isinstance(name, str):
        raise ConfigError.expected(f"key 'name' set to one of {', '.join(NETWORK_NAMES)}",
                                   "no 'name'" if name is None else repr(name), path=where)
    key = name.lower()
    if key not in _REGISTRY:
        raise ConfigError.expected(f"'name' to be one of {', '.join(NETWORK_NAMES)}", repr(name), path=where)
    spec["name"] = key
    entry = _REGISTRY[key]
    spec.setdefault("spatial_dims", 3)
    if spec["spatial_dims"] not in (2, 3) or isinstance(spec["spatial_dims"], bool):
        raise ConfigError.expected("'spatial_dims' 2 or 3", repr(spec["spatial_dims"]), path=where)
    for k in ("in_channels", "out_channels"):
        v = spec.get(k)
        if v is None:
            raise ConfigError.expected(f"key {k!r} (a positive integer)", "no such key", path=where)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError.expected(f"{k!r} a positive integer", repr(v), path=where)
    if entry.dynarch:
        from medcnn.models._dynarch import DYNARCH_KEYS, REQUIRED

        accepted = list(_COMMON) + list(DYNARCH_KEYS[entry.cls_name])
        entry = _Entry(entry.cls_name, required=REQUIRED, dynarch=True)
    else:
        params = inspect.signature(_monai_class(entry).__init__).parameters
        accepted = [p for p in params if p != "self" and p not in entry.blocked]
    for k, v in spec.items():
        if k == "name":
            continue
        if k not in accepted:
            raise ConfigError.expected(
                f"keys of {name} ({', '.join(sorted(accepted))})", f"unknown key {k!r}", path=where,
                hint="Check the spelling against " + ("dynamic_network_architectures" if entry.dynarch
                                                      else "monai.networks.nets") + "." + entry.cls_name)
        if not _is_json_value(v):
            raise ConfigError.expected(f"a JSON value for {k!r}", f"{type(v).__name__}", path=where)
    for k in entry.required:
        if k not in spec:
            raise ConfigError.expected(f"key {k!r} for network {name!r}", "no such key", path=where)
    return spec


def _to_monai_kwargs(value: Any) -> Any:
    """JSON lists → tuples (MONAI checks ``isinstance(x, tuple)`` for (name, args) pairs)."""
    if isinstance(value, list):
        return tuple(_to_monai_kwargs(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_monai_kwargs(v) for k, v in value.items()}
    return value


def build_network(spec: Mapping[str, Any], *, where: str = "network spec"):
    """Build a ``torch.nn.Module`` (in eval mode) from a JSON-able network spec.

    Args:
        spec: ``{"name": ..., "spatial_dims": 3|2, "in_channels": int, "out_channels": int,
            **kwargs}``; see :data:`NETWORK_NAMES`.
        where: name used in error messages (e.g. the bundle path).

    Raises:
        ConfigError: see :func:`validate_network_spec`; also when MONAI rejects the
            combination of values (its message is included).
    """
    spec = validate_network_spec(spec, where=where)
    entry = _REGISTRY[spec["name"]]
    kwargs = {k: _to_monai_kwargs(v) for k, v in spec.items() if k != "name"}
    for pkg in entry.needs:
        if importlib.util.find_spec(pkg) is None:
            raise ConfigError.expected(f"the optional packages MONAI's {entry.cls_name} needs",
                                       f"missing module {pkg!r}", path=where, hint=f"Install it (pip install {pkg})")
    if entry.dynarch:
        from medcnn.models._dynarch import build_dynarch

        return build_dynarch(entry.cls_name, spec, where=where)
    try:
        net = _monai_class(entry)(**kwargs)
    except ImportError as exc:  # MONAI's OptionalImportError (e.g. einops for UNETR/SwinUNETR)
        found = re.search(r"No module named '([^']+)'", str(exc))
        missing = found.group(1) if found else str(exc).splitlines()[0]
        raise ConfigError.expected(f"the optional packages MONAI's {entry.cls_name} needs",
                                   f"missing module {missing!r}", path=where,
                                   hint=f"Install it (pip install {missing.split('.')[0]})") from exc
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError.expected(f"values MONAI's {entry.cls_name} accepts", f"{type(exc).__name__}: {exc}",
                                   path=where) from exc
    return net.eval()


def network_patch_divisor(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """Per spatial axis, the number the patch (ROI) size must be divisible by.

    UNet-like networks downsample by the product of their strides; transformer networks
    need multiples of their patch/window grids.
    """
    spec = validate_network_spec(spec)
    nd = spec["spatial_dims"]
    name = spec["name"]

    def prod_strides(strides: Sequence[Any]) -> tuple[int, ...]:
        div = [1] * nd
        for s in strides:
            s = [int(s)] * nd if isinstance(s, (int, float)) else [int(v) for v in s]
            div = [d * v for d, v in zip(div, s)]
        return tuple(div)

    if name in ("unet", "attentionunet", "dynunet", "plainconvunet", "residualencoderunet"):
        return prod_strides(spec["strides"])
    if name == "basicunet":
        return (16,) * nd
    if name == "segresnet":
        return (2 ** (len(spec.get("blocks_down", (1, 2, 2, 4))) - 1),) * nd
    if name == "unetr":
        return (16,) * nd
    if name == "swinunetr":
        return (32,) * nd
    return (1,) * nd  # pragma: no cover - every registered name is handled above


def plan_dynunet(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    *,
    min_size: int = 4,
    max_levels: int = 5,
    anisotropy_factor: float = 2.0,
) -> dict[str, list[list[int]]]:
    """nnU-Net-like kernel sizes and strides for DynUNet from spacing and patch size.

    At each level an axis is pooled (stride 2) only if (a) its current spacing is less
    than ``anisotropy_factor`` times the finest current spacing and (b) it still has at
    least ``2 * min_size`` voxels. Its kernel is 3 while its spacing is within
    ``anisotropy_factor`` of the finest spacing, else 1 (a coarse through-plane axis gets
    in-plane-only convolutions until pooling has caught the other axes up). Planning
    stops after ``max_levels`` poolings or when no axis can be pooled.

    Args:
        spacing: voxel spacing in mm of the network's input grid, one per axis.
        patch_size: ROI in voxels, one per axis.

    Returns:
        ``{"kernel_size": [...], "strides": [...], "upsample_kernel_size": [...]}`` with one
        ``[k_x, k_y, k_z]`` per level (first stride is ``[1, 1, 1]``), ready to merge
        into a ``"dynunet"`` spec.
    """
    sp = [float(s) for s in spacing]
    size = [int(s) for s in patch_size]
    if len(sp) != len(size) or len(sp) not in (2, 3):
        raise ConfigError.expected("spacing and patch size with 2 or 3 matching entries",
                                   f"spacing {tuple(spacing)} and patch size {tuple(patch_size)}")
    if any(s <= 0 or not math.isfinite(s) for s in sp) or any(s < 1 for s in size):
        raise ConfigError.expected("positive spacing and patch size",
                                   f"spacing {tuple(spacing)} and patch size {tuple(patch_size)}")

    def kernel(cur: list[float]) -> list[int]:
        finest = min(cur)
        return [3 if s < anisotropy_factor * finest else 1 for s in cur]

    kernels = [kernel(sp)]
    strides = [[1] * len(sp)]
    cur_sp, cur_size = list(sp), list(size)
    for _ in range(max_levels):
        finest = min(cur_sp)
        stride = [2 if (s < anisotropy_factor * finest and n >= 2 * min_size) else 1
                  for s, n in zip(cur_sp, cur_size)]
        if not any(v == 2 for v in stride):
            break
        cur_sp = [s * v for s, v in zip(cur_sp, stride)]
        cur_size = [n // v for n, v in zip(cur_size, stride)]
        strides.append(stride)
        kernels.append(kernel(cur_sp))
    return {"kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:]}


def dynunet_spec(
    *,
    in_channels: int,
    out_channels: int,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    filters: Sequence[int] | None = None,
    base_filters: int = 32,
    max_filters: int = 320,
    **plan_options: Any,
) -> dict[str, Any]:
    """A complete ``"dynunet"`` network spec planned with :func:`plan_dynunet`.

    Filters double per level from ``base_filters`` up to ``max_filters`` (nnU-Net's
    defaults) unless given.
    """
    plan = plan_dynunet(spacing, patch_size, **plan_options)
    n = len(plan["strides"])
    if filters is None:
        filters = [min(base_filters * 2**i, max_filters) for i in range(n)]
    elif len(filters) != n:
        raise ConfigError.expected(f"{n} filters (one per level of the plan)", f"{len(filters)}")
    return {"name": "dynunet", "spatial_dims": len(plan["strides"][0]), "in_channels": int(in_channels),
            "out_channels": int(out_channels), **plan, "filters": [int(f) for f in filters],
            "norm_name": ["instance", {"affine": True}]}
