"""Masked Dice + CE: ignored voxels get no gradient; reference values from torch and MONAI."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from medcnn.train.losses import masked_dice_ce_loss  # noqa: E402


def _data(seed=0, b=2, k=3, shape=(6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((b, k, *shape), generator=g, requires_grad=True)
    target = torch.randint(0, k, (b, *shape), generator=g)
    return logits, target


def test_ignored_voxels_have_zero_gradient():
    logits, target = _data()
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[0, :, :, 1] = True
    ignore[1, 2:, 0, :] = True
    loss, _ = masked_dice_ce_loss(logits, target, ignore=ignore)
    loss.backward()
    grad = logits.grad
    ig = ignore.unsqueeze(1).expand_as(grad)
    assert torch.count_nonzero(grad[ig]) == 0
    assert torch.count_nonzero(grad[~ig]) > 0.9 * int((~ig).sum())


def test_ignored_voxels_do_not_change_the_loss():
    logits, target = _data(1)
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[:, :3] = True
    l1, _ = masked_dice_ce_loss(logits, target, ignore=ignore)
    t2 = target.clone()
    t2[ignore] = (t2[ignore] + 1) % 3  # change labels only where ignored
    l2, _ = masked_dice_ce_loss(logits, t2, ignore=ignore)
    assert torch.allclose(l1, l2)


def test_ce_term_matches_torch_cross_entropy_with_ignore_index():
    logits, target = _data(2)
    ignore = torch.rand(target.shape, generator=torch.Generator().manual_seed(5)) < 0.3
    _, parts = masked_dice_ce_loss(logits, target, ignore=ignore, dice_weight=0.0)
    ref = F.cross_entropy(logits, torch.where(ignore, torch.full_like(target, -100), target), ignore_index=-100)
    assert parts["ce"] == pytest.approx(float(ref.detach()), rel=1e-5)


def test_dice_term_matches_monai_batch_dice():
    from monai.losses import DiceLoss

    logits, target = _data(3)
    loss, parts = masked_dice_ce_loss(logits, target, ce_weight=0.0, smooth=1e-5)
    ref = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5,
                   smooth_dr=1e-5)(logits, target.unsqueeze(1))
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-4, abs=1e-6)


def test_unannotated_class_uses_marginal_background():
    """Case 0 does not annotate class 2: a voxel labelled 0 there may be class 2, so moving
    probability from background to class 2 must not change its cross-entropy."""
    logits = torch.zeros((1, 3, 4, 4))
    target = torch.zeros((1, 4, 4), dtype=torch.long)
    target[0, 0, 0] = 1
    ann = torch.tensor([[True, True, False]])
    shifted = logits.clone()
    shifted[0, 2] += 3.0  # more class 2 everywhere, background and class 1 logits unchanged
    _, pb = masked_dice_ce_loss(shifted, target, annotated=ann, dice_weight=0.0)
    # hand calculation: background voxels' marginal p(bg or 2) = (1 + e^3) / (2 + e^3); class-1 voxel p = 1/(2+e^3)
    e3 = float(torch.exp(torch.tensor(3.0)))
    expected = (-15 * torch.log(torch.tensor((1 + e3) / (2 + e3))) - torch.log(torch.tensor(1 / (2 + e3)))) / 16
    assert pb["ce"] == pytest.approx(float(expected), rel=1e-5)
    # with class 2 annotated, the same shift is penalised as "not background"
    _, pc = masked_dice_ce_loss(shifted, target, dice_weight=0.0)
    assert pc["ce"] > pb["ce"] + 1.0
    # and class 2's Dice term is dropped for that case (only class 1 counts)
    _, pd = masked_dice_ce_loss(logits, target, annotated=ann, ce_weight=0.0)
    probs1 = torch.full((16,), 1 / 3)
    t1 = (target == 1).float().flatten()
    dice1 = (2 * (probs1 * t1).sum() + 1e-5) / (probs1.sum() + t1.sum() + 1e-5)
    assert pd["dice"] == pytest.approx(float(dice1), rel=1e-5)


def test_fully_ignored_batch_gives_zero_loss_and_gradient():
    logits, target = _data(4)
    loss, _ = masked_dice_ce_loss(logits, target, ignore=torch.ones_like(target, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.count_nonzero(logits.grad) == 0
