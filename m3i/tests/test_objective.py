"""The M3I objective on hand-sized cases: each term's formula, target availability, A/B bookkeeping, reductions."""

import math

import pytest
import torch
import torch.nn.functional as F

from m3i.losses import M3IObjective, category_loss, clip_loss, dense_loss
from m3i.models.m3i import M3IOutput


def out(**kw):
    fields = dict.fromkeys(M3IOutput._fields)
    fields.update(kw)
    return M3IOutput(**fields)


def test_category_loss_is_label_smoothed_ce_over_labelled_rows_only():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    labels = torch.tensor([0, -1, 1])
    nll0, nll2 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(10))
    assert category_loss(logits, labels, 0.0).item() == pytest.approx((nll0 + nll2) / 2)
    lp = F.log_softmax(logits, -1)
    smooth = 0.9 * torch.stack([-lp[0, 0], -lp[2, 1]]) + 0.1 * torch.stack([-lp[0].mean(), -lp[2].mean()])
    assert category_loss(logits, labels, 0.1).item() == pytest.approx(smooth.mean().item(), rel=1e-6)
    assert category_loss(logits, torch.full((3,), -1), 0.1).item() == 0.0  # no label anywhere: no term


def test_clip_loss_hand_case_and_uncaptioned_rows_are_neither_anchors_nor_negatives():
    u = torch.eye(3)
    scale = torch.tensor(math.log(2.0))
    # two captioned images whose embeddings equal their captions': CE of logits 2*I
    two = clip_loss(u[:2], u[:2], scale)
    assert two.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    # a third image without caption changes nothing, whatever its embeddings
    junk = torch.tensor([[1.0, 0.2, 0.0]])
    three = clip_loss(torch.cat([u[:2], junk]), torch.cat([u[:2], junk]), scale, torch.tensor([True, True, False]))
    assert three.item() == pytest.approx(two.item(), rel=1e-6)
    assert clip_loss(u, u, scale, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_clip_loss_symmetric_is_the_mean_of_both_directions_and_the_scale_is_clamped_at_100():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    t = torch.tensor(math.log(1 / 0.07))
    un, tn = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    i2t = F.cross_entropy(un @ tn.T / 0.07, torch.arange(5))
    t2i = F.cross_entropy(tn @ un.T / 0.07, torch.arange(5))
    assert clip_loss(img, txt, t).item() == pytest.approx(0.5 * (i2t + t2i).item(), rel=1e-5)
    assert clip_loss(img, txt, t, symmetric=False).item() == pytest.approx(i2t.item(), rel=1e-5)
    big = clip_loss(img, txt, torch.tensor(10.0), symmetric=False)  # e^10 > 100 -> 100
    assert big.item() == pytest.approx(F.cross_entropy(100 * un @ tn.T, torch.arange(5)).item(), rel=1e-5)


def test_dense_loss_is_eq3_row_wise_and_l2_drops_the_decorrelation():
    p = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    corr = t.T @ t / 2
    pos = ((p - t) ** 2).sum(-1).mean()
    neg = torch.stack([p[r] @ corr @ p[r] for r in range(2)]).mean()
    assert dense_loss(p, t, "unigrad", 0.02).item() == pytest.approx(((pos + 0.02 * neg) / 2).item(), rel=1e-6)
    assert dense_loss(p, t, "l2").item() == pytest.approx((pos / 2).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown dense_loss 'cosine'; known: unigrad, l2"):
        dense_loss(p, t, "cosine")


def test_eq2_is_the_weighted_sum_and_a_single_target_reduces_to_its_own_loss():
    g = torch.Generator().manual_seed(1)
    o = out(pred_intra=torch.randn(4, 3, 8, generator=g), target_intra=torch.randn(4, 3, 8, generator=g),
            pred_inter=torch.randn(4, 6, 8, generator=g), target_inter=torch.randn(4, 6, 8, generator=g),
            logits_a=torch.randn(4, 5, generator=g), logits_b=torch.randn(4, 5, generator=g),
            global_a=torch.randn(4, 8, generator=g), global_b=torch.randn(4, 8, generator=g),
            text=torch.randn(4, 8, generator=g), logit_scale=torch.tensor(2.0))
    labels, has_text = torch.tensor([0, 3, -1, 2]), torch.tensor([True, False, True, True])
    full = M3IObjective(intra=0.5, inter=2.0, cls=1.5, txt=0.25)(o, labels, has_text)
    expect = 0.5 * full["loss_intra"] + 2.0 * full["loss_inter"] + 1.5 * full["loss_cls"] + 0.25 * full["loss_txt"]
    assert full["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    only_inter = M3IObjective(intra=0, inter=1, cls=0, txt=0)(o, labels, has_text)
    assert set(only_inter) == {"loss", "loss_inter"}
    assert only_inter["loss"].item() == pytest.approx(dense_loss(o.pred_inter, o.target_inter).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no active term"):
        M3IObjective(intra=0, inter=0, cls=0, txt=0)(o, labels, has_text)


def test_image_b_of_sample_i_is_scored_against_image_i_minus_1():
    labels = torch.tensor([0, 1, 2, 3])
    onehot = 20.0 * F.one_hot(labels, 4).float()
    obj = M3IObjective(intra=0, inter=0, cls=1, txt=0, label_smoothing=0.0)
    right = obj(out(logits_a=onehot, logits_b=onehot.roll(1, 0)), labels, None)["loss_cls"]
    wrong = obj(out(logits_a=onehot, logits_b=onehot), labels, None)["loss_cls"]
    assert right.item() < 1e-6 and wrong.item() > 10
    emb = 10 * torch.eye(4)
    txt_obj = M3IObjective(intra=0, inter=0, cls=0, txt=1)
    ok = txt_obj(out(global_a=emb, global_b=emb.roll(1, 0), text=emb, logit_scale=torch.tensor(4.6)), None,
                 torch.ones(4, dtype=torch.bool))["loss_txt"]
    bad = txt_obj(out(global_a=emb, global_b=emb, text=emb, logit_scale=torch.tensor(4.6)), None,
                  torch.ones(4, dtype=torch.bool))["loss_txt"]
    assert ok.item() < 0.01 and bad.item() > 1.0


def test_bad_weights_are_clear_errors():
    with pytest.raises(ValueError, match="loss weight cls must be >= 0"):
        M3IObjective(cls=-1)
    with pytest.raises(ValueError, match="unknown dense_loss"):
        M3IObjective(dense_loss="mse")
