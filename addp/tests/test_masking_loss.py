"""Spec §3.1 (mask-ratio table, nested masks) and §3.2 step 7 (the loss and its gradient) on hand-sized cases."""

import math

import pytest
import torch

from addp.losses import addp_soft_ce, masked_token_ce, vq_losses
from addp.masking import mask_ratio_table, nested_masks, sample_mask_counts, truncnorm_ratio_sampler


def test_mask_ratio_table_matches_the_official_values():
    ratios, probs = mask_ratio_table()
    assert ratios.dtype == torch.float32 and probs.dtype == torch.float64
    assert len(ratios) == 66 and bool((ratios[1:] > ratios[:-1]).all())
    assert ratios[0].item() == pytest.approx(0.509041, abs=1e-6)
    assert ratios[-1].item() == pytest.approx(0.999877, abs=1e-6)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert probs[0].item() == pytest.approx(0.028065, abs=1e-6)
    assert int(probs.argmax()) == 3 and probs.max().item() == pytest.approx(0.028444, abs=1e-6)
    assert probs[-1].item() == pytest.approx(0.005634, abs=1e-6)
    # the grid is cos(pi/2 k/100) for k = 1..66, ascending
    k = torch.arange(66, 0, -1, dtype=torch.float32)
    torch.testing.assert_close(ratios, torch.cos(math.pi / 2 * k / 100))


def test_mask_counts_follow_the_table_and_the_offset():
    ratios, probs = mask_ratio_table()
    counts = [math.ceil(float(r * 256)) for r in ratios]
    g = torch.Generator().manual_seed(0)
    seen_k = []
    for _ in range(400):
        n_t, n_next = sample_mask_counts(256, ratios, probs, generator=g)
        ks = [k for k, c in enumerate(counts) if c == n_t]          # several top ratios round up to 256
        assert n_next in {counts[min(k + d, 65)] for k in ks for d in range(1, 6)} and n_next >= n_t
        seen_k.append(ks[0])
    assert 131 <= min(counts) and max(counts) == 256
    # the empirical index distribution is close to the table (400 draws)
    hist = torch.bincount(torch.tensor(seen_k), minlength=66).double() / 400
    assert (hist[:33].sum() - probs[:33].sum()).abs() < 0.1


def test_nested_masks_have_exact_counts_and_are_nested():
    g = torch.Generator().manual_seed(1)
    m_t, m_next = nested_masks(5, 16, (6, 11), generator=g)
    assert m_t.dtype == torch.bool and m_t.shape == (5, 16)
    assert m_t.sum(1).tolist() == [6] * 5 and m_next.sum(1).tolist() == [11] * 5
    assert not (m_t & ~m_next).any()
    with pytest.raises(ValueError, match="outside 1..16"):
        nested_masks(1, 16, (0,))


def test_nested_masks_redraw_ties(monkeypatch):
    """A noise map with ties would break the exact counts: it is redrawn (official loop)."""
    draws = [torch.tensor([[0.5, 0.5, 0.5, 0.9]]), torch.tensor([[0.3, 0.1, 0.2, 0.9]])]
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.pop(0) if draws else real_rand(*a, **k))
    (m,) = nested_masks(1, 4, (2,))
    assert m.tolist() == [[False, True, True, False]]
    assert not draws


def test_truncnorm_ratio_stays_in_range():
    draw = truncnorm_ratio_sampler()
    g = torch.Generator().manual_seed(0)
    vals = [draw(g) for _ in range(200)]
    assert 0.5 <= min(vals) and max(vals) <= 1.0 and 0.6 < sum(vals) / 200 < 0.75


def test_addp_loss_hand_case_and_gradient():
    """V = 3, K = 2, eps = 0.1: q' = 0.9 q_pad + 0.1 / 3; l_i = -sum q' log_softmax; mean over masked positions."""
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]], requires_grad=True)
    q = torch.tensor([[[0.75, 0.25], [1.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    loss = addp_soft_ce(logits, q, mask, 0.1)
    lsm = torch.log_softmax(torch.tensor([2.0, 0.0, -1.0]), -1)
    q_s = 0.9 * torch.tensor([0.75, 0.25, 0.0]) + 0.1 / 3
    assert loss.item() == pytest.approx(float(-(q_s * lsm).sum()), abs=1e-6)
    loss.backward()
    expected = torch.zeros(1, 2, 3)
    expected[0, 0] = torch.softmax(torch.tensor([2.0, 0.0, -1.0]), -1) - q_s  # d/dlogits of CE = p - q'
    torch.testing.assert_close(logits.grad, expected)
    # averaging is over the masked positions of the whole batch, not per sample
    logits2 = torch.randn(2, 4, 5)
    q2 = torch.softmax(torch.randn(2, 4, 3), -1)
    m2 = torch.tensor([[True, False, False, False], [True, True, True, False]])
    per = torch.stack([addp_soft_ce(logits2[b:b + 1, i:i + 1], q2[b:b + 1, i:i + 1], torch.ones(1, 1, dtype=torch.bool))
                       for b in range(2) for i in range(4)]).view(2, 4)
    assert addp_soft_ce(logits2, q2, m2).item() == pytest.approx(float(per[m2].mean()), abs=1e-6)


def test_masked_token_and_vq_losses():
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]])
    ids = torch.tensor([[1, 2]])
    mask = torch.tensor([[True, False]])
    lsm = torch.log_softmax(torch.tensor([1.0, 2.0, 0.0]), -1)
    expected = -(0.9 * lsm[1] + 0.1 * lsm.mean())
    assert masked_token_ce(logits, ids, mask).item() == pytest.approx(float(expected), abs=1e-6)
    x, z = torch.zeros(1, 3, 2, 2), torch.ones(1, 2, 1, 1)
    out = vq_losses(x, x + 0.5, z, z * 3, beta=0.25)
    assert out["rec"].item() == pytest.approx(0.25) and out["codebook"].item() == pytest.approx(4.0)
    assert out["loss"].item() == pytest.approx(0.25 + 4.0 + 0.25 * 4.0)
