"""Masked Dice + cross-entropy for partially annotated data.

Two kinds of missing annotation are handled:

* **Ignored voxels** (``ignore`` mask, e.g. slices the expert did not contour): they
  contribute nothing to either term, so their gradient is exactly zero.
* **Unannotated classes** per case (``annotated[b, k] == False``, e.g. no myocardium
  contour in end-systolic Sunnybrook maps): a voxel labelled 0 in such a case means
  "background *or* one of the unannotated classes". The cross-entropy uses the
  *marginal* likelihood of that set, ``log(p_0 + sum_k p_k)`` over unannotated ``k``
  (the "marginal loss" of Shi et al., MedIA 2021, and Fidon et al., 2021), so the network
  is never taught that myocardium is background, and the Dice term of class ``k`` is
  dropped for that case. Voxels labelled with an annotated class keep the ordinary loss.

The Dice term is a soft "batch Dice" over foreground classes (background excluded, as in
nnU-Net), summing intersections over the cases that annotate the class.

**Region training** (:func:`region_dice_bce_loss`, nnU-Net's BraTS configuration): one
sigmoid output per region (a set of label values, e.g. whole tumour = {1, 2, 4}); the loss
is the binary cross-entropy of every region channel (mean over voxels) plus one minus the
mean soft Dice of the regions (batch Dice, smooth 1e-5), both over the voxels that are
not ignored and the regions a case annotates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_dice_ce_loss", "DiceCELoss", "region_targets", "region_annotated", "region_dice_bce_loss"]


def masked_dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore: torch.Tensor | None = None,
    annotated: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dice + CE over the voxels that are not ignored.

    Args:
        logits: ``(B, K, *spatial)`` raw network outputs.
        target: ``(B, *spatial)`` integer class indices in ``[0, K)``.
        ignore: ``(B, *spatial)`` bool, True where the loss must not look.
        annotated: ``(B, K)`` bool, False for classes not annotated in that case.

    Returns:
        (scalar loss, {"ce": ..., "dice": ...} as floats for logging).
    """
    b, k = logits.shape[:2]
    logits = logits.float()
    target = target.long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore is None else ~ignore.bool()
    if annotated is None:
        annotated = torch.ones((b, k), dtype=torch.bool, device=logits.device)
    annotated = annotated.bool().clone()
    annotated[:, 0] = True
    spatial = (1,) * (logits.ndim - 2)

    log_p = F.log_softmax(logits, dim=1)
    # -- cross-entropy, with label 0 meaning "background or any unannotated class"
    tgt_logp = log_p.gather(1, target.clamp(0, k - 1).unsqueeze(1)).squeeze(1)
    if bool(annotated.all()):
        bg_logp = tgt_logp  # every class annotated: label 0 means background only
    else:
        bg_set = ~annotated
        bg_set[:, 0] = True
        neg_inf = torch.finfo(log_p.dtype).min
        masked = log_p.masked_fill(~bg_set.view(b, k, *spatial), neg_inf)
        bg_logp = torch.logsumexp(masked, dim=1)
    nll = -torch.where(target == 0, bg_logp, tgt_logp)
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    n_valid = valid.sum()
    ce = nll.sum() / n_valid.clamp_min(1)

    # -- soft Dice over foreground classes, batch-wise, only where annotated
    probs = log_p.exp() * valid.unsqueeze(1)
    onehot = F.one_hot(target.clamp(0, k - 1), k).movedim(-1, 1).to(probs.dtype) * valid.unsqueeze(1)
    dims = tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)  # (B, K)
    denom = probs.sum(dims) + onehot.sum(dims)
    w = annotated.to(probs.dtype)
    w[:, 0] = 0.0
    inter_k = (inter * w).sum(0)
    denom_k = (denom * w).sum(0)
    used = w.sum(0) > 0
    if bool(used.any()):
        dice_k = (2 * inter_k + smooth) / (denom_k + smooth)
        dice = dice_k[used].mean()
    else:
        dice = probs.sum() * 0.0 + 1.0
    loss = ce_weight * ce + dice_weight * (1.0 - dice)
    if n_valid == 0:
        loss = logits.sum() * 0.0
    return loss, {"ce": float(ce.detach()), "dice": float(dice.detach())}


class DiceCELoss(torch.nn.Module):
    """Module wrapper of :func:`masked_dice_ce_loss` (returns only the loss tensor)."""

    def __init__(self, *, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None,
                annotated: torch.Tensor | None = None) -> torch.Tensor:
        return masked_dice_ce_loss(logits, target, ignore=ignore, annotated=annotated,
                                   dice_weight=self.dice_weight, ce_weight=self.ce_weight)[0]


def region_targets(label: torch.Tensor, regions: "list[list[int]] | tuple[tuple[int, ...], ...]") -> torch.Tensor:
    """Region membership ``(B, R, *spatial)`` float (0/1) of a label map ``(B, *spatial)``
    of label values: channel ``r`` is 1 where the label is one of ``regions[r]``."""
    label = label.long()
    top = max([int(label.max()) if label.numel() else 0] + [int(v) for members in regions for v in members])
    lut = torch.zeros((top + 1, len(regions)), dtype=torch.float32, device=label.device)
    for r, members in enumerate(regions):
        lut[[int(v) for v in members], r] = 1.0
    return lut[label.clamp_min(0)].movedim(-1, 1)


def region_annotated(annotated: torch.Tensor, regions: "list[list[int]] | tuple[tuple[int, ...], ...]"
                     ) -> torch.Tensor:
    """``(B, R)`` bool: a case annotates a region when it annotates every label value of it
    (``annotated``: ``(B, K)`` over label values ``0..K-1``)."""
    annotated = annotated.bool()
    return torch.stack([annotated[:, [int(v) for v in members]].all(1) for members in regions], 1)


def region_dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore: torch.Tensor | None = None,
    annotated: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    smooth: float = 1e-5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + soft Dice per region (nnU-Net's loss for region-based training).

    ``loss = bce_weight * BCE + dice_weight * (1 - mean_r Dice_r)`` where BCE is the mean of
    ``-[t log s + (1 - t) log(1 - s)]`` (``s = sigmoid(logit)``) over every counted
    (case, region, voxel) and ``Dice_r = (2 sum(s t) + smooth) / (sum(s) + sum(t) + smooth)``
    with the sums over the batch's counted voxels of region ``r`` (batch Dice).

    Args:
        logits: ``(B, R, *spatial)`` raw outputs, one per region.
        target: ``(B, R, *spatial)`` region membership 0/1 (:func:`region_targets`).
        ignore: ``(B, *spatial)`` bool, True where the loss must not look.
        annotated: ``(B, R)`` bool, False for regions a case does not annotate
            (:func:`region_annotated`).

    Returns:
        (scalar loss, ``{"ce": BCE, "dice": mean Dice, "dice_per_region": [...]}``).
    """
    b, r = logits.shape[:2]
    logits = logits.float()
    target = target.float()
    spatial = (1,) * (logits.ndim - 2)
    valid = torch.ones((b,) + tuple(logits.shape[2:]), dtype=torch.bool, device=logits.device) if ignore is None \
        else ~ignore.bool()
    if annotated is None:
        annotated = torch.ones((b, r), dtype=torch.bool, device=logits.device)
    w = (valid.unsqueeze(1) & annotated.bool().view(b, r, *spatial)).to(logits.dtype)  # (B, R, *S)
    bce_all = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    n = w.sum()
    bce = (bce_all * w).sum() / n.clamp_min(1)
    probs = torch.sigmoid(logits) * w
    tgt = target * w
    dims = tuple(range(2, logits.ndim))
    inter = (probs * tgt).sum(dims).sum(0)  # (R,)
    denom = (probs.sum(dims) + tgt.sum(dims)).sum(0)
    used = annotated.bool().any(0)
    dice_r = (2 * inter + smooth) / (denom + smooth)
    dice = dice_r[used].mean() if bool(used.any()) else probs.sum() * 0.0 + 1.0
    loss = bce_weight * bce + dice_weight * (1.0 - dice)
    if n == 0:
        loss = logits.sum() * 0.0
    return loss, {"ce": float(bce.detach()), "dice": float(dice.detach()),
                  "dice_per_region": [float(v) if u else float("nan") for v, u in zip(dice_r.detach(), used)]}
