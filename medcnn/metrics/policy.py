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
brats          Dice = IoU = NSD = 1, distances = 0        Dice = IoU = NSD = 0, distances = 373.13 mm
=============  =========================================  ==========================================

"diagonal" is the length in mm of the reference image's diagonal,
``sqrt(sum((n_i * spacing_i)**2))``: no two surface points in the image can be farther
apart, so it is the worst possible distance. NaN values are left out of aggregates and
counted as missing.

``brats`` is the rule of the BraTS challenge evaluation (2018-2021, per region WT / TC /
ET; it matters mostly for enhancing tumour, absent from some gliomas): a region empty in
the reference scores Dice 1 and HD95 0 when the prediction is empty too, Dice 0 and HD95
373.13 mm when it is not; a region missed by the prediction also scores Dice 0 and HD95
373.13 mm. The constant :data:`BRATS_EMPTY_DISTANCE_MM` = ``sqrt(240² + 240² + 155²)`` =
373.12866 mm is the diagonal of the BraTS image grid (240 x 240 x 155 voxels of 1 mm), so
on BraTS images ``brats`` and ``best-worst`` give the same numbers; on other grids
``brats`` keeps the challenge's constant. Source: the challenge's evaluation as
reimplemented in nnU-Net (v1, ``nnunet/dataset_conversion/Task082_BraTS_2020.py``:
``compute_BraTS_dice``, ``compute_BraTS_HD95``, "attempting to reimplement the brats
evaluation scheme"; discussed in MIC-DKFZ/nnUNet issue #380 and Isensee et al.,
arXiv:2011.00848). BraTS defines Dice and HD95 only; medcnn scores IoU and NSD like Dice
and HD and ASSD like HD95.
"""

from __future__ import annotations

import math
from typing import Literal

from medcnn.errors import ConfigError
from medcnn.volume import Geometry

__all__ = ["EmptyPolicy", "EMPTY_POLICIES", "DEFAULT_EMPTY_POLICY", "BRATS_EMPTY_DISTANCE_MM", "BRATS_EMPTY_RULE",
           "check_policy", "empty_value", "image_diagonal_mm"]

EmptyPolicy = Literal["best-worst", "best-nan", "nan", "brats"]
EMPTY_POLICIES: tuple[str, ...] = ("best-worst", "best-nan", "nan", "brats")
DEFAULT_EMPTY_POLICY: EmptyPolicy = "best-worst"

#: Distance (mm) the BraTS evaluation gives when exactly one mask of a region is empty:
#: the diagonal of the BraTS grid, 240 x 240 x 155 voxels of 1 mm (373.12866 mm).
BRATS_EMPTY_DISTANCE_MM: float = math.sqrt(240.0 ** 2 + 240.0 ** 2 + 155.0 ** 2)

#: BraTS's rule for an empty region, in words and numbers (written into summary.json).
BRATS_EMPTY_RULE: dict[str, object] = {
    "rule": "BraTS challenge evaluation (2018-2021), per region (WT, TC, ET): if the reference region is empty, "
            "Dice = 1 and HD95 = 0 mm when the prediction is also empty, Dice = 0 and HD95 = 373.13 mm when it is "
            "not; if the reference is not empty and the prediction is, Dice = 0 and HD95 = 373.13 mm",
    "reference_empty_prediction_empty": {"dice": 1.0, "hd95_mm": 0.0},
    "reference_empty_prediction_not_empty": {"dice": 0.0, "hd95_mm": BRATS_EMPTY_DISTANCE_MM},
    "reference_not_empty_prediction_empty": {"dice": 0.0, "hd95_mm": BRATS_EMPTY_DISTANCE_MM},
    "worst_distance_mm": BRATS_EMPTY_DISTANCE_MM,
    "worst_distance_is": "sqrt(240^2 + 240^2 + 155^2): the diagonal of the BraTS image grid (240 x 240 x 155 "
                         "voxels of 1 mm)",
    "source": "the BraTS evaluation as reimplemented in nnU-Net v1 (nnunet/dataset_conversion/Task082_BraTS_2020.py: "
              "compute_BraTS_dice, compute_BraTS_HD95); MIC-DKFZ/nnUNet issue #380; Isensee et al., "
              "arXiv:2011.00848",
}

#: One-line descriptions written into summary.json.
POLICY_DESCRIPTIONS = {
    "best-worst": "both empty: Dice=IoU=NSD=1, distances=0 mm (as the BraTS challenge rule, e.g. a case without "
                  "enhancing tumour that the prediction also leaves empty scores Dice 1); one empty: Dice=IoU=NSD=0, "
                  "distances=image diagonal of the reference (mm; 373.13 mm on BraTS's 240x240x155 1 mm grid)",
    "best-nan": "both empty: Dice=IoU=NSD=1, distances=0 mm; one empty: Dice=IoU=NSD=0, distances=NaN",
    "nan": "both empty: all overlap and distance metrics NaN; one empty: Dice=IoU=NSD=0, distances=NaN",
    "brats": "the BraTS challenge rule (2018-2021): both empty: Dice=IoU=NSD=1, distances=0 mm; one empty: "
             "Dice=IoU=NSD=0, distances=373.13 mm (sqrt(240^2+240^2+155^2), the diagonal of the BraTS grid, on "
             "any grid)",
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
        diagonal_mm: worst-case distance for ``"best-worst"`` (``"brats"`` uses
            :data:`BRATS_EMPTY_DISTANCE_MM` instead).
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
    if policy == "brats":
        return BRATS_EMPTY_DISTANCE_MM
    return diagonal_mm if policy == "best-worst" else math.nan
