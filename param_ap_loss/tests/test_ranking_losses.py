"""AP-Loss and aLRP Loss (baseline rows): hand-computed cases, a per-positive loop reference, self-balancing."""

import pytest
import torch

from param_ap_loss.ranking_losses import ALRPLoss, alrp_loss, ap_loss

D = torch.float64


def _h(d, delta=1.0):
    return min(max(d / (2 * delta) + 0.5, 0.0), 1.0)


def _hand_case():
    """Positives s = (2, 0), negatives (2.5, -5), ignored (9): by hand, H(x) = clamp(x/2 + 1/2, 0, 1):

    i=0 (s=2): rank+ = 1 + H(0-2) = 1, N_FP = H(0.5) + H(-7) = 0.75, rank = 1.75, prec = 4/7
    i=1 (s=0): rank+ = 1 + H(2-0) = 2, N_FP = H(2.5) + H(-5) = 1,    rank = 3,    prec = 2/3
    """
    logits = torch.tensor([2.0, 2.5, 0.0, -5.0, 9.0], dtype=D, requires_grad=True)
    targets = torch.tensor([1, 0, 1, 0, -1])
    return logits, targets


def test_ap_loss_hand_case_plain():
    logits, targets = _hand_case()
    loss = ap_loss(logits, targets, interpolate=False)
    assert loss.item() == pytest.approx(1 - (4 / 7 + 2 / 3) / 2)  # = 8/21
    loss.backward()
    # positives: -(1 - prec_i)/|P|; negative 2.5: (H(0.5)/1.75 + H(2.5)/3)/|P| = (3/7 + 1/3)/2; ignored: 0
    want = torch.tensor([-(3 / 7) / 2, (3 / 7 + 1 / 3) / 2, -(1 / 3) / 2, 0.0, 0.0], dtype=D)
    torch.testing.assert_close(logits.grad, want)
    assert logits.grad[[0, 2]].sum().abs().item() == pytest.approx(logits.grad[[1, 3]].sum().item())  # balanced


def test_ap_loss_hand_case_interpolated():
    logits, targets = _hand_case()
    loss = ap_loss(logits, targets, interpolate=True)
    # ascending score: i=1 (prec 2/3) then i=0 (prec 4/7 < 2/3 -> interpolated 2/3); loss = 1 - 2/3
    assert loss.item() == pytest.approx(1 / 3)
    loss.backward()
    # i=0's primary terms rescaled by (1 - 2/3)/(1 - 4/7) = 7/9: negative 2.5 gets (0.75 * 7/9 / 1.75 + 1/3)/2 = 1/3
    want = torch.tensor([-(1 / 3) / 2, 1 / 3, -(1 / 3) / 2, 0.0, 0.0], dtype=D)
    torch.testing.assert_close(logits.grad, want)


def test_alrp_hand_case():
    logits, targets = _hand_case()
    e = torch.tensor([0.4, 0.2], dtype=D, requires_grad=True)  # E of the positives in logit order (s=2, s=0)
    cls, loc = alrp_loss(logits, targets, e)
    assert cls.item() == pytest.approx(8 / 21)
    # L_loc = mean_i (sum of E over positives scored >= s_i) / rank_i = (0.4/1.75 + 0.6/3)/2 = 3/14
    assert loc.item() == pytest.approx(3 / 14)
    (cls + loc).backward()
    # positive 0: -(sum_{k!=0} E_k H(x_0k) + N_FP)/rank = -(0.2*H(-2) + 0.75)/1.75 = -3/7, /|P|
    # positive 1: -(0.4*H(2) + 1)/3 = -7/15, /|P|; negative 2.5 gets (3/7 * 0.75/0.75 + 7/15 * 1/1)/2
    want = torch.tensor([-(3 / 7) / 2, (3 / 7 + 7 / 15) / 2, -(7 / 15) / 2, 0.0, 0.0], dtype=D)
    torch.testing.assert_close(logits.grad, want)
    # dL_loc/dE_k = sum over positives i ranked at or below k of 1/rank_i, / |P|
    torch.testing.assert_close(e.grad, torch.tensor([(1 / 1.75 + 1 / 3) / 2, (1 / 3) / 2], dtype=D))


def _loop_reference(logits, targets, e=None, delta=1.0, interpolate=False):
    """Per-positive loops over explicit pairs, written from the definitions (module docstring)."""
    s = [float(v) for v, t in zip(logits, targets) if t == 1]
    n = [float(v) for v, t in zip(logits, targets) if t == 0]
    p = len(s)
    rank_pos = [1 + sum(_h(s[k] - s[i], delta) for k in range(p) if k != i) for i in range(p)]
    n_fp = [sum(_h(v - s[i], delta) for v in n) for i in range(p)]
    rank = [a + b for a, b in zip(rank_pos, n_fp)]
    prec = [a / r for a, r in zip(rank_pos, rank)]
    g_pos, g_neg = [0.0] * p, [0.0] * len(n)
    if e is None:
        hat, scale = list(prec), [1.0] * p
        if interpolate:
            best = 0.0
            for i in sorted(range(p), key=lambda i: s[i]):
                best = max(best, prec[i])
                scale[i] = 1.0 if prec[i] >= best else (1 - best) / (1 - prec[i])
                hat[i] = best
        for i in range(p):
            g_pos[i] = -(1 - hat[i]) / p
            for j, v in enumerate(n):
                g_neg[j] += _h(v - s[i], delta) / rank[i] * scale[i] / p
        return 1 - sum(hat) / p, g_pos, g_neg
    for i in range(p):
        if n_fp[i] > 1e-5:
            g = -(sum(e[k] * _h(s[k] - s[i], delta) for k in range(p) if k != i) + n_fp[i]) / rank[i]
            g_pos[i] = g / p
            for j, v in enumerate(n):
                g_neg[j] += -g * _h(v - s[i], delta) / n_fp[i] / p
    loc = sum(sum(e[k] for k in range(p) if s[k] >= s[i]) / rank[i] for i in range(p)) / p
    return 1 - sum(prec) / p, g_pos, g_neg, loc


@pytest.mark.parametrize("interpolate", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_ap_loss_equals_loop_reference(seed, interpolate):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(40, 3, generator=g, dtype=D) * 1.5).requires_grad_()
    t = torch.zeros(40, 3, dtype=torch.long)
    t.view(-1)[torch.randperm(120, generator=g)[:9]] = 1
    t[torch.randperm(40, generator=g)[:4]] = -1
    t[t.sum(1) < -2] = -1
    loss = ap_loss(logits, t, interpolate=interpolate)
    loss.backward()
    want, g_pos, g_neg = _loop_reference(logits.detach().flatten().tolist(), t.flatten().tolist(),
                                         interpolate=interpolate)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    flat_t, grad = t.flatten(), logits.grad.flatten()
    torch.testing.assert_close(grad[flat_t == 1], torch.tensor(g_pos, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad[flat_t == 0], torch.tensor(g_neg, dtype=D), atol=1e-12, rtol=0)
    assert (grad[flat_t == -1] == 0).all()


def test_alrp_equals_loop_reference():
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(50, 2, generator=g, dtype=D) * 2).requires_grad_()
    t = torch.zeros(50, 2, dtype=torch.long)
    t.view(-1)[torch.randperm(100, generator=g)[:8]] = 1
    e = torch.rand(8, generator=g, dtype=D)
    cls, loc = alrp_loss(logits, t, e)
    cls.backward()
    want_cls, g_pos, g_neg, want_loc = _loop_reference(logits.detach().flatten().tolist(), t.flatten().tolist(),
                                                       e.tolist())
    assert cls.item() == pytest.approx(want_cls, abs=1e-12) and loc.item() == pytest.approx(want_loc, abs=1e-12)
    grad, flat_t = logits.grad.flatten(), t.flatten()
    torch.testing.assert_close(grad[flat_t == 1], torch.tensor(g_pos, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad[flat_t == 0], torch.tensor(g_neg, dtype=D), atol=1e-12, rtol=0)


def test_no_positive_gives_zero_with_graph():
    logits = torch.randn(6, 2, requires_grad=True)
    t = torch.zeros(6, 2)
    assert ap_loss(logits, t).item() == 0
    cls, loc = alrp_loss(logits, t, torch.zeros(0))
    (cls + loc).backward()
    assert logits.grad.abs().sum() == 0


def test_alrp_self_balancing_update_and_state():
    crit = ALRPLoss(head_weight=0.2, period=2, sb_init=50.0)
    logits, targets = _hand_case()
    e = torch.tensor([0.4, 0.2], dtype=D)
    out = crit(logits, targets, e)
    cls, loc = 0.2 * 8 / 21, 0.2 * 3 / 14
    assert out["loss_cls"].item() == pytest.approx(cls) and out["loss_bbox"].item() == pytest.approx(50 * loc)
    crit(logits, targets, e)  # second iteration completes the period: SB = (mean loc + mean cls) / mean loc
    assert crit.sb_weight.item() == pytest.approx((loc + cls) / loc) and crit.count.item() == 0
    assert {"sb_weight", "cls_sum", "loc_sum", "count"} <= set(crit.state_dict())  # saved with the model
    crit.eval()
    crit(logits, targets, e)
    assert crit.count.item() == 0  # no update outside training
