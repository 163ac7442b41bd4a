"""Schedules at chosen steps as the official loops compute them, and LARS (timm) vs a hand-computed step."""

import math

import pytest
import timm.optim
import torch

from unigrad.schedules import ema_momentum, lineval_lr, pretrain_lr, scaled_lr

# the 100-epoch ImageNet run: 1,281,167 images // 1024 = 1251 steps per epoch
ITERS = 1_281_167 // 1024
W, T = 5 * ITERS, 100 * ITERS


def lr(step, **kw):
    return pretrain_lr(step, init_lr=scaled_lr(0.05, 1024), warmup_steps=W, total_steps=T, **kw)


def test_pretrain_lr_warmup_and_cosine_with_the_official_quirk():
    assert scaled_lr(0.05, 1024) == pytest.approx(0.2)
    assert lr(0) == pytest.approx(2e-4)                          # first step runs at min_lr = 1e-3 * lr
    assert lr(1) == pytest.approx((0.2 - 2e-4) / W + 2e-4)
    assert lr(W // 2) == pytest.approx((0.2 - 2e-4) * 0.5 + 2e-4, rel=1e-3)
    assert lr(W) == pytest.approx(0.2)                           # peak right after warm-up
    # cosine over T (not T - W): the last step ends at ~1.43e-3, not at min_lr
    last = 2e-4 + 0.5 * (0.2 - 2e-4) * (1 + math.cos(math.pi * (T - 1 - W) / T))
    assert lr(T - 1) == pytest.approx(last) and lr(T - 1) == pytest.approx(1.43e-3, rel=0.01)
    assert lr(T - 1, cosine_denominator="after_warmup") == pytest.approx(2e-4, rel=1e-3)
    with pytest.raises(ValueError, match="cosine_denominator"):
        lr(0, cosine_denominator="cycles")


def test_ema_momentum_cosine_from_base_to_one():
    assert ema_momentum(0, total_steps=T, base=0.996) == pytest.approx(0.996)
    assert ema_momentum(T // 2, total_steps=T, base=0.996) == pytest.approx(0.998, abs=1e-7)
    assert ema_momentum(T, total_steps=T, base=0.996) == pytest.approx(1.0)


def test_lineval_lr_per_epoch_cosine_without_warmup():
    init = scaled_lr(0.1, 4096)
    assert init == pytest.approx(1.6)
    assert lineval_lr(0, init_lr=init, epochs=90) == pytest.approx(1.6)
    assert lineval_lr(45, init_lr=init, epochs=90) == pytest.approx(0.8)
    assert lineval_lr(89, init_lr=init, epochs=90) == pytest.approx(1.6 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def _lars(params, lr=1.6, wd=0.0, always_adapt=True):
    return timm.optim.Lars(params, lr=lr, momentum=0.9, weight_decay=wd, trust_coeff=0.001, trust_clip=False,
                           always_adapt=always_adapt)


@pytest.mark.parametrize("wd", [0.0, 1e-4])
def test_timm_lars_equals_apex_larc_without_clipping_by_hand(wd):
    """apex LARC(trust 0.001, clip=False) over SGD(momentum 0.9): per tensor with |w| != 0 and |g| != 0,
    d = (g + wd w) * 0.001 |w| / (|g| + wd |w| + 1e-8); buf = d (first step) else 0.9 buf + d; w -= lr buf.
    A zero tensor (the fc bias at step 0) gets the plain SGD step."""
    w0 = torch.tensor([[0.3, -0.4, 0.0], [0.1, 0.2, -0.2]], dtype=torch.float64)
    b0 = torch.zeros(2, dtype=torch.float64)
    grads = [(torch.tensor([[1.0, 2.0, -2.0], [0.5, 0.0, 1.0]], dtype=torch.float64), torch.tensor([0.3, -0.1], dtype=torch.float64)),
             (torch.tensor([[-1.0, 0.5, 0.5], [2.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor([0.2, 0.4], dtype=torch.float64))]
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = _lars([w, b], wd=wd)
    hw, hb, buf_w, buf_b = w0.clone(), b0.clone(), None, None
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        # hand computation
        def scaled(p, g):
            pn, gn = float(p.norm()), float(g.norm())
            if pn == 0 or gn == 0:
                return g.clone()
            return (g + wd * p) * (0.001 * pn / (gn + wd * pn + 1e-8))
        dw, db = scaled(hw, gw), scaled(hb, gb)
        buf_w = dw if buf_w is None else 0.9 * buf_w + dw
        buf_b = db if buf_b is None else 0.9 * buf_b + db
        hw, hb = hw - 1.6 * buf_w, hb - 1.6 * buf_b
        torch.testing.assert_close(w.detach(), hw, rtol=0, atol=1e-15)
        torch.testing.assert_close(b.detach(), hb, rtol=0, atol=1e-15)
    # the zero-initialised bias got the raw lr at step 0
    assert float(hb[0]) != 0.0


def test_timm_lars_without_always_adapt_is_plain_sgd_at_zero_weight_decay():
    """Why the package passes always_adapt=True: timm only adapts the lr when weight decay != 0 by default,
    and the linear protocol has weight decay 0 (apex LARC always adapts)."""
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    opt = _lars([w], lr=0.1, always_adapt=False)
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.9, 4.0]))
