"""nnU-Net's networks (dynamic-network-architectures) behind JSON network specs.

Two registry names build the classes nnU-Net v2 trains, through the
``dynamic_network_architectures`` package (an optional dependency)::

    {"name": "plainconvunet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
     "n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
     "kernel_sizes": [[3, 3, 3], ...], "strides": [[1, 1, 1], [2, 2, 2], ...],
     "n_conv_per_stage": [2, ...], "n_conv_per_stage_decoder": [2, ...], "conv_bias": true,
     "norm_op": "InstanceNorm", "norm_op_kwargs": {"eps": 1e-05, "affine": true},
     "nonlin": "LeakyReLU", "nonlin_kwargs": {"inplace": true}, "n_members": 1}

``residualencoderunet`` takes ``n_blocks_per_stage`` (and ``block``: ``"BasicBlockD"`` or
``"BottleneckD"``, ``bottleneck_channels``, ``stem_channels``) instead of
``n_conv_per_stage``. Layer types are names from small allow-lists
(:data:`NORM_OPS`, :data:`NONLINS`, :data:`DROPOUT_OPS`), never import paths.
Deep supervision is always off (inference).

``n_members > 1`` builds a :class:`FoldEnsemble`: that many copies (one per
cross-validation fold) whose logits are averaged, as ``nnUNetPredictor`` averages its
folds; their weights are named ``members.<i>.<name>``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medcnn.errors import ConfigError

__all__ = ["DYNARCH_KEYS", "NORM_OPS", "NONLINS", "DROPOUT_OPS", "BLOCKS", "build_dynarch", "FoldEnsemble"]

NORM_OPS = ("InstanceNorm", "BatchNorm")
NONLINS = ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU")
DROPOUT_OPS = ("Dropout",)
BLOCKS = ("BasicBlockD", "BottleneckD")

_COMMON = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder", "conv_bias",
           "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "n_members")
#: Accepted spec keys (besides name/spatial_dims/in_channels/out_channels) per class.
DYNARCH_KEYS: dict[str, tuple[str, ...]] = {
    "PlainConvUNet": _COMMON + ("n_conv_per_stage", "nonlin_first"),
    "ResidualEncoderUNet": _COMMON + ("n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"),
}
REQUIRED = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder")


def _pick(value: Any, allowed: tuple[str, ...], what: str, where: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise ConfigError.expected(f"{what} one of {', '.join(allowed)} (or null)", repr(value), path=where)
    return str(value)


class FoldEnsemble(torch.nn.Module):
    """Averages the logits of several networks of the same architecture (one per fold)."""

    def __init__(self, members) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x):
        out = None
        for m in self.members:
            y = m(x)
            out = y if out is None else out + y
        return out / len(self.members)


def build_dynarch(cls_name: str, spec: Mapping[str, Any], *, where: str = "network spec"):
    """Build ``PlainConvUNet`` / ``ResidualEncoderUNet`` from a validated spec dict."""
    from torch import nn

    try:
        from dynamic_network_architectures.architectures import unet as dna_unet
        from dynamic_network_architectures.building_blocks import residual as dna_residual
    except ImportError as exc:
        raise ConfigError.expected("the package dynamic-network-architectures for nnU-Net networks",
                                   f"{type(exc).__name__}: {exc}", path=where,
                                   hint="pip install --no-deps dynamic-network-architectures "
                                        "(see scripts/setup_env.sh)") from exc
    nd = int(spec["spatial_dims"])
    kw = {k: v for k, v in spec.items() if k not in ("name", "spatial_dims", "in_channels", "out_channels",
                                                      "n_members")}
    norm = _pick(kw.pop("norm_op", None), NORM_OPS, "norm_op", where)
    nonlin = _pick(kw.pop("nonlin", None), NONLINS, "nonlin", where)
    dropout = _pick(kw.pop("dropout_op", None), DROPOUT_OPS, "dropout_op", where)
    kw["conv_op"] = {2: nn.Conv2d, 3: nn.Conv3d}[nd]
    kw["norm_op"] = None if norm is None else getattr(nn, f"{norm}{nd}d")
    kw["dropout_op"] = None if dropout is None else getattr(nn, f"Dropout{nd}d")
    kw["nonlin"] = None if nonlin is None else getattr(nn, nonlin)
    if cls_name == "ResidualEncoderUNet" and "block" in kw:
        kw["block"] = getattr(dna_residual, _pick(kw["block"], BLOCKS, "block", where))  # type: ignore[arg-type]
    cls = getattr(dna_unet, cls_name)
    n = int(spec.get("n_members", 1) or 1)
    if n < 1:
        raise ConfigError.expected("n_members >= 1", repr(spec.get("n_members")), path=where)

    def one():
        return cls(input_channels=int(spec["in_channels"]), num_classes=int(spec["out_channels"]),
                   deep_supervision=False, **kw)

    try:
        with torch.random.fork_rng():  # building must not disturb the caller's random stream
            nets = [one() for _ in range(n)]
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as exc:
        raise ConfigError.expected(f"values {cls_name} accepts", f"{type(exc).__name__}: {exc}", path=where) from exc
    return (nets[0] if n == 1 else FoldEnsemble(nets)).eval()
