"""Every objective: the vectorised gradient == the literal formula, == autograd of the method's loss, and the
gradient-as-loss identity dL/du = g / (2n). float64, hand-sized cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from unigrad.losses import (BarlowTwinsGradLoss, BarlowTwinsLoss, BYOLDirectPredGradLoss, BYOLLoss, InfoNCELoss,
                            MoCoGradLoss, SimCLRGradLoss, UniGradLoss, VICRegGradLoss, VICRegLoss, grad_as_loss,
                            symmetric_grad_loss)
from unigrad.losses import reference as ref
from unigrad.models.siamese import SiameseOutput

D = torch.float64


def unit(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, c, generator=g, dtype=D), dim=1)


@pytest.fixture
def batch():
    n, c = 5, 4
    return unit(n, c, 1), unit(n, c, 2), unit(n, c, 3), unit(n, c, 4)  # u1, u2, t1, t2


def test_gradient_as_loss_identity_dL_du_is_g_over_2n(batch):
    u1, u2, _, _ = batch
    u1, u2 = u1.clone().requires_grad_(), u2.clone().requires_grad_()
    g1, g2 = unit(5, 4, 7) * 3, unit(5, 4, 8) * 2
    symmetric_grad_loss(u1, g1, u2, g2).backward()
    torch.testing.assert_close(u1.grad, g1 / (2 * 5), rtol=0, atol=1e-15)
    torch.testing.assert_close(u2.grad, g2 / (2 * 5), rtol=0, atol=1e-15)
    # the value is a surrogate: the gradient does not flow into g
    g = g1.clone().requires_grad_()
    grad_as_loss(u1, g).backward()
    assert g.grad is None or torch.count_nonzero(g.grad) == 0


def test_unigrad_hand_computed_two_samples_two_dims():
    # first step: F = F_b = (t1^T t1 + t2^T t2) / (2n) with t1 = [e1, e2], t2 = [e1, e2] -> F = I / 2
    e1, e2 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    t1 = t2 = torch.stack([e1, e2])
    u1 = torch.stack([e1, F.normalize(torch.tensor([1.0, 1.0], dtype=D), dim=0)])
    loss = UniGradLoss(2, lambd=4.0, rho=0.9).double()
    g1, _ = loss.gradients(u1, u1, t1, t2)
    torch.testing.assert_close(loss.F, 0.5 * torch.eye(2, dtype=D))
    # g1_0 = -e1 + 4 * (I/2) e1 = e1 ; g1_1 = -e2 + 2 * (1, 1)/sqrt2 = (sqrt2, sqrt2 - 1)
    torch.testing.assert_close(g1[0], torch.tensor([1.0, 0.0], dtype=D))
    torch.testing.assert_close(g1[1], torch.tensor([math.sqrt(2), math.sqrt(2) - 1], dtype=D))


def test_unigrad_F_init_ema_order_and_formula_over_history():
    """F starts at the first batch's correlation, is updated BEFORE use, and g matches the literal
    sum over every past target weighted by its EMA weight rho_v."""
    loss = UniGradLoss(4, lambd=3.0, rho=0.9).double()
    assert not bool(loss.F_initialized)
    history = []
    for step in range(3):
        u1, u2, t1, t2 = unit(5, 4, 10 * step), unit(5, 4, 10 * step + 1), unit(5, 4, 10 * step + 2), unit(5, 4, 10 * step + 3)
        history.append(torch.cat([t1, t2]))
        g1, g2 = loss.gradients(u1, u2, t1, t2)
        torch.testing.assert_close(g1, ref.unigrad(u1, t2, history, 3.0, 0.9), rtol=0, atol=1e-12)
        torch.testing.assert_close(g2, ref.unigrad(u2, t1, history, 3.0, 0.9), rtol=0, atol=1e-12)
        if step == 0:
            torch.testing.assert_close(loss.F, history[0].T @ history[0] / 10, rtol=0, atol=1e-15)
    assert bool(loss.F_initialized)
    assert abs(float(torch.trace(loss.F)) - 1.0) < 1e-12  # unit vectors: tr F = 1


def test_unigrad_autograd_of_paper_loss_equals_gradient(batch):
    """grad_u1 [-u1.t2 + lambda/2 u1^T F u1] = -t2 + lambda F u1 (F held fixed, symmetric)."""
    u1, u2, t1, t2 = batch
    loss = UniGradLoss(4, lambd=7.0, rho=0.99).double()
    g1, _ = loss.gradients(u1, u2, t1, t2)
    u = u1.clone().requires_grad_()
    paper = (-(u * t2).sum() + 3.5 * torch.einsum("nc,cd,nd->", u, loss.F, u))
    paper.backward()
    torch.testing.assert_close(u.grad, g1, rtol=0, atol=1e-12)


def test_unigrad_lambda_zero_keeps_only_the_positive_term(batch):
    u1, u2, t1, t2 = batch
    g1, g2 = UniGradLoss(4, lambd=0.0).double().gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1, -t2)
    torch.testing.assert_close(g2, -t1)


def test_simclr_gradient_equals_formula_and_infonce_autograd(batch):
    u1, u2, t1, t2 = batch
    g1, g2 = SimCLRGradLoss(tau=0.2).gradients(u1, u2, t1, t2)
    v = torch.cat([t1, t2])
    torch.testing.assert_close(g1, ref.simclr(u1, t2, v, 0.2), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, ref.simclr(u2, t1, v, 0.2), rtol=0, atol=1e-12)
    u = u1.clone().requires_grad_()
    logits = u @ v.T / 0.2
    F.cross_entropy(logits, torch.arange(5, 10), reduction="sum").backward()
    torch.testing.assert_close(u.grad, g1, rtol=0, atol=1e-12)


def test_original_infonce_and_simclr_gradient_form_send_the_same_gradient(batch):
    """'original vs gradient form': with detached candidates both objectives give dL/dz identical."""
    _, _, t1, t2 = batch
    z1, z2 = (torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(s)) for s in (11, 12))
    grads = []
    for loss in (InfoNCELoss(tau=0.2, target="momentum"), SimCLRGradLoss(tau=0.2, target="momentum")):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss(SiameseOutput(a, b, t1 * 2.0, t2 * 3.0))["loss"].backward()
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-12)


def test_forward_backpropagates_g_over_2n_through_the_normalisation(batch):
    """dL/dz = (I - u u^T) g / (2n ||z||): the surrogate's gradient reaches the projector output exactly."""
    _, _, t1, t2 = batch
    z1 = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(5)).requires_grad_()
    z2 = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(6)).requires_grad_()
    loss = UniGradLoss(4, lambd=5.0).double()
    loss(SiameseOutput(z1, z2, t1, t2))["loss"].backward()
    u1 = F.normalize(z1.detach(), dim=1)
    g1 = -t2 + 5.0 * u1 @ loss.F
    proj = g1 - (g1 * u1).sum(-1, keepdim=True) * u1
    torch.testing.assert_close(z1.grad, proj / (2 * 5) / z1.detach().norm(dim=1, keepdim=True), rtol=0, atol=1e-12)


def test_moco_gradient_formula_and_queue_order():
    u1, u2, t1, t2 = unit(4, 3, 1), unit(4, 3, 2), unit(4, 3, 3), unit(4, 3, 4)
    loss = MoCoGradLoss(3, queue_size=16, tau=0.2).double()
    q0 = loss.queue.clone()
    g1, g2 = loss.gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1, ref.moco(u1, t2, q0, 0.2), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, ref.moco(u2, t1, q0, 0.2), rtol=0, atol=1e-12)
    # autograd of MoCo's InfoNCE (logits [pos, queue]) with the keys held fixed
    u = u1.clone().requires_grad_()
    logits = torch.cat([(u * t2).sum(-1, keepdim=True), u @ q0.T], 1) / 0.2
    F.cross_entropy(logits, torch.zeros(4, dtype=torch.long), reduction="sum").backward()
    torch.testing.assert_close(u.grad, g1, rtol=0, atol=1e-12)
    # enqueued after use: rows 0..7 now hold cat(t1, t2), the pointer moved on, then wraps
    torch.testing.assert_close(loss.queue[:8], torch.cat([t1, t2]))
    torch.testing.assert_close(loss.queue[8:], q0[8:])
    assert int(loss.queue_ptr) == 8
    loss.gradients(u1, u2, t2, t1)
    assert int(loss.queue_ptr) == 0
    with pytest.raises(ValueError, match="multiple of the 8 keys"):
        MoCoGradLoss(3, queue_size=12).double().gradients(u1, u2, t1, t2)


def test_byol_directpred_gradient_formula_and_its_approximation(batch):
    u1, u2, t1, t2 = batch
    loss = BYOLDirectPredGradLoss(4, rho=0.99, eps=0.3).double()
    g1, g2 = loss.gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1, ref.byol_directpred(u1, t2, loss.F, 0.3), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, ref.byol_directpred(u2, t1, loss.F, 0.3), rtol=0, atol=1e-12)
    assert (g1 * u1).sum(-1).abs().max() < 1e-12  # g is orthogonal to u: the surrogate value is ~0
    w_p, m = loss.predictor()
    # M = W_p^2 - 2 eps F^(1/2)/sqrt(s_max): the dropped cross term (W_p = F^(1/2)/sqrt(s_max) + eps I here)
    torch.testing.assert_close(m, w_p @ w_p - 2 * 0.3 * (w_p - 0.3 * torch.eye(4, dtype=D)), rtol=0, atol=1e-12)
    # with the exact W_p^2 in place of M, the formula is the autograd gradient of -cos(W_p u1, t2)
    u = u1.clone().requires_grad_()
    (-F.cosine_similarity(u @ w_p, t2, dim=1)).sum().backward()
    torch.testing.assert_close(u.grad, loss._direction(u1, t2, w_p, w_p @ w_p), rtol=0, atol=1e-12)


def test_barlow_twins_gradient_formula_and_autograd(batch):
    u1, u2, t1, t2 = batch
    g1, g2 = BarlowTwinsGradLoss(lambd=50.0).gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1, ref.barlow_twins(t2, u1, t2, 50.0, 5), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, ref.barlow_twins(t1, u2, t1, 50.0, 5), rtol=0, atol=1e-12)
    # L = -2 tr W + lambda ||W||_F^2, W = B1^T B2t / N (diagonal correction dropped): dL/du1_i = g1_i / N
    u = u1.clone().requires_grad_()
    w = u.T @ t2 / 5
    (-2 * torch.trace(w) + 50.0 * w.pow(2).sum()).backward()
    torch.testing.assert_close(u.grad * 5, g1, rtol=0, atol=1e-12)
    # the official code's N is the configured whole batch size
    g1n, _ = BarlowTwinsGradLoss(lambd=50.0, batch_size=10).gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1n, ref.barlow_twins(t2, u1, t2, 50.0, 10), rtol=0, atol=1e-12)


def test_vicreg_gradient_formula_and_autograd(batch):
    u1, u2, t1, t2 = batch
    g1, g2 = VICRegGradLoss(lambd=9.0).gradients(u1, u2, t1, t2)
    torch.testing.assert_close(g1, ref.vicreg(u1, t2, t1, 9.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, ref.vicreg(u2, t1, t2, 9.0), rtol=0, atol=1e-12)
    u = u1.clone().requires_grad_()
    (-(u * t2).sum() + 9.0 / (2 * 5) * (u @ t1.T).pow(2).sum()).backward()
    torch.testing.assert_close(u.grad, g1, rtol=0, atol=1e-12)


def test_correlation_state_round_trips_exactly_through_a_state_dict(batch):
    u1, u2, t1, t2 = batch
    a = UniGradLoss(4, rho=0.9)
    for s in range(3):
        a.gradients(u1.float(), u2.float(), unit(5, 4, s).float(), t2.float())
    b = UniGradLoss(4, rho=0.9)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.F, b.F) and bool(b.F_initialized)
    ga, gb = a.gradients(u1.float(), u2.float(), t1.float(), t2.float()), b.gradients(u1.float(), u2.float(), t1.float(), t2.float())
    assert torch.equal(ga[0], gb[0]) and torch.equal(a.F, b.F)


def test_targets_and_bad_configurations():
    z = torch.randn(4, 3)
    out = SiameseOutput(z, z)
    with pytest.raises(ValueError, match="momentum branch"):
        UniGradLoss(3)(out)
    with pytest.raises(ValueError, match="takes target in"):
        UniGradLoss(3, target="online")
    with pytest.raises(ValueError, match="predictor"):
        BYOLLoss()(SiameseOutput(z, z, z, z))
    with pytest.raises(ValueError, match="rho"):
        UniGradLoss(3, rho=1.0)


@pytest.mark.parametrize("make", [lambda: UniGradLoss(4), lambda: SimCLRGradLoss(), lambda: MoCoGradLoss(4, queue_size=16),
                                  lambda: BarlowTwinsGradLoss(), lambda: VICRegGradLoss(), lambda: InfoNCELoss(target="momentum"),
                                  lambda: BarlowTwinsLoss(target="momentum"), lambda: VICRegLoss(target="momentum")])
def test_state_follows_the_module_and_forward_runs_on_its_device(make):
    """Buffers (F, queue) move with .to(); the forward uses no host-side value (runs on the meta device)."""
    loss = make().to("meta")
    assert all(b.device.type == "meta" for b in loss.buffers())
    z = [torch.randn(4, 4, device="meta", requires_grad=True) for _ in range(2)]
    terms = loss(SiameseOutput(z[0], z[1], torch.randn(4, 4, device="meta"), torch.randn(4, 4, device="meta")))
    assert terms["loss"].device.type == "meta" and terms["pos_sim"].device.type == "meta"


def test_original_losses_have_the_textbook_values():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 4, dtype=D), torch.randn(8, 4, dtype=D)
    # Barlow Twins on identical standardised views: c = correlation matrix, diag 1 -> only the off-diagonal term
    out = BarlowTwinsLoss(lambd=0.5)(SiameseOutput(z1, z1))
    zn = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    c = zn.T @ zn / 8
    expect = (torch.diagonal(c) - 1).pow(2).sum() + 0.5 * (c.pow(2).sum() - torch.diagonal(c).pow(2).sum())
    torch.testing.assert_close(out["loss"], expect)
    # VICReg: MSE + variance hinge + covariance
    v = VICRegLoss()(SiameseOutput(z1, z2))["loss"]
    std = lambda z: torch.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()  # noqa: E731
    cov = lambda z: (torch.cov(z.T).pow(2).sum() - torch.cov(z.T).diagonal().pow(2).sum()) / 4  # noqa: E731
    torch.testing.assert_close(v, 25 * F.mse_loss(z1, z2) + 25 * (std(z1) + std(z2)) / 2 + cov(z1) + cov(z2))
    # NT-Xent: the anchor never counts itself
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    nt = InfoNCELoss(tau=0.5, target="online")(SiameseOutput(z1, z2))["loss"]
    allz = torch.cat([u1, u2])
    sim = allz @ allz.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(8, 16), torch.arange(8)])
    torch.testing.assert_close(nt, F.cross_entropy(sim, labels))


def test_cutmix_mixes_the_positive_targets_and_not_F(batch):
    from unigrad.losses import MixInfo

    u1, u2, t1, t2 = batch
    mix = MixInfo(torch.tensor([1, 2, 3, 4, 0]), 0.7)
    loss = UniGradLoss(4, lambd=5.0).double()
    g1, g2 = loss.gradients(u1, u2, t1, t2, mix)
    torch.testing.assert_close(loss.F, torch.cat([t1, t2]).T @ torch.cat([t1, t2]) / 10)  # un-mixed targets
    torch.testing.assert_close(g1, -(0.7 * t2 + 0.3 * t2[mix.perm]) + 5.0 * u1 @ loss.F)
    with pytest.raises(ValueError, match="does not support CutMix"):
        SimCLRGradLoss()(SiameseOutput(u1, u2, t1, t2), mix=mix)
