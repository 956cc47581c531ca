"""What a metric is worth when the reference or the prediction is empty.

Overlap and surface metrics are undefined when a structure is absent from one or both
masks, and tools disagree silently (DeepMind's package returns ``inf``, MONAI ``nan`` with
a warning, others ``0``). medcnn makes the choice explicit (after the Metrics Reloaded
recommendations, Maier-Hein et al., Nat Methods 2024) and writes the policy name next to
every value (``empty_policy`` column / field).

=============  =========================================  ==========================================
policy         both masks empty                           exactly one mask empty
=============  =========================================  ==========================================
best-worst     Dice = IoU = NSD = 1, distances = 0        Dice = IoU = NSD = 0, distances = diagonal
best-nan       Dice = IoU = NSD = 1, distances = 0        Dice = IoU = NSD = 0, distances = NaN
nan            every overlap and distance metric = NaN    Dice = IoU = NSD = 0, distances = NaN
=============  =========================================  ==========================================

"diagonal" is the length in mm of the reference image's diagonal,
``sqrt(sum((n_i * spacing_i)**2))``: no two surface points in the image can be farther
apart, so it is the worst possible distance. NaN values are left out of aggregates and
counted as missing.
"""

from __future__ import annotations

import math
from typing import Literal

from medcnn.errors import ConfigError
from medcnn.volume import Geometry

__all__ = ["EmptyPolicy", "EMPTY_POLICIES", "DEFAULT_EMPTY_POLICY", "check_policy", "empty_value",
           "image_diagonal_mm"]

EmptyPolicy = Literal["best-worst", "best-nan", "nan"]
EMPTY_POLICIES: tuple[str, ...] = ("best-worst", "best-nan", "nan")
DEFAULT_EMPTY_POLICY: EmptyPolicy = "best-worst"

#: One-line descriptions written into summary.json.
POLICY_DESCRIPTIONS = {
    "best-worst": "both empty: Dice=IoU=NSD=1, distances=0 mm (the BraTS challenge rule, e.g. a case without "
                  "enhancing tumour that the prediction also leaves empty scores Dice 1); one empty: Dice=IoU=NSD=0, "
                  "distances=image diagonal of the reference (mm)",
    "best-nan": "both empty: Dice=IoU=NSD=1, distances=0 mm; one empty: Dice=IoU=NSD=0, distances=NaN",
    "nan": "both empty: all overlap and distance metrics NaN; one empty: Dice=IoU=NSD=0, distances=NaN",
}


def check_policy(policy: str) -> EmptyPolicy:
    """Validate a policy name (raises :class:`ConfigError` naming the choices)."""
    if policy not in EMPTY_POLICIES:
        raise ConfigError.expected(f"an empty policy among {', '.join(EMPTY_POLICIES)}", repr(policy))
    return policy  # type: ignore[return-value]


def image_diagonal_mm(geometry: Geometry) -> float:
    """Length of the image diagonal in mm (outer voxel faces to outer voxel faces)."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(geometry.shape, geometry.spacing)))


def empty_value(kind: Literal["overlap", "distance"], *, ref_empty: bool, pred_empty: bool,
                policy: EmptyPolicy, diagonal_mm: float) -> float:
    """The value of a metric of ``kind`` when at least one mask is empty.

    Args:
        kind: ``"overlap"`` (Dice, IoU, NSD; 1 is best) or ``"distance"`` (HD, HD95, ASSD
            in mm; 0 is best).
        ref_empty, pred_empty: which masks are empty (at least one must be).
        policy: see the module table.
        diagonal_mm: worst-case distance for ``"best-worst"``.
    """
    check_policy(policy)
    if not (ref_empty or pred_empty):
        raise ValueError("expected at least one empty mask, got two non-empty masks")
    both = ref_empty and pred_empty
    if both:
        if policy == "nan":
            return math.nan
        return 1.0 if kind == "overlap" else 0.0
    if kind == "overlap":
        return 0.0
    return diagonal_mm if policy == "best-worst" else math.nan
