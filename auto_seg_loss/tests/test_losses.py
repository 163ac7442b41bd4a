"""Surrogates: truth-table property against the exact evaluator, monotonicity, gradients, bad input."""

import pytest
import torch

from auto_seg_loss.labels import one_hot
from auto_seg_loss.losses import NUM_CURVES, NUM_PIECES, SURROGATES, AutoSegLoss
from auto_seg_loss.metrics import evaluate_maps
from auto_seg_loss.ops.bezier import theta_to_control_points

METRICS = list(SURROGATES)


def _blobs(n, k, h, w, seed, ignore_frac=0.0):
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, k, (n, 1, h // 4, w // 4), generator=g).float()
    lab = torch.nn.functional.interpolate(low, size=(h, w), mode="nearest")[:, 0].long()
    return lab.masked_fill(torch.rand(n, h, w, generator=g) < ignore_frac, 255)


def _random_cp(metric, seed):
    g = torch.Generator().manual_seed(seed)
    n = NUM_PIECES[metric]
    th = torch.rand(NUM_CURVES[metric] * 2 * (2 * n - 1), generator=g, dtype=torch.float64).clamp(0.02, 0.98)
    return theta_to_control_points(th, n).tolist()


def _all_present(lab, k):
    return all(bool((lab == c).any()) for c in range(k))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("cp", ["searched", "identity", "random"])
@pytest.mark.parametrize("impl", ["reference", "select", "lut"])
@pytest.mark.parametrize("reduction", ["onehot", "gather"])
def test_truth_table_one_hot_equals_evaluator(metric, cp, impl, reduction):
    k, tol = 4, 2
    gt = _blobs(2, k, 32, 32, seed=11, ignore_frac=0.05)
    pred = _blobs(2, k, 32, 32, seed=12)
    assert _all_present(gt, k) and _all_present(pred, k)
    probs = one_hot(pred, k, torch.float64)
    for drop_bg in (False, True):
        control = _random_cp(metric, 3) if cp == "random" else cp
        loss = AutoSegLoss(k, metric, control, drop_bg=drop_bg, tol=tol, bezier_impl=impl, reduction=reduction)
        want = evaluate_maps(pred, gt, k, drop_bg=drop_bg, tol=tol, radius=tol)[metric]
        assert float(loss.surrogate(probs, gt)) == pytest.approx(want, abs=1e-6), (metric, drop_bg)
        # through the loss itself: softmax of 100 * one-hot is one-hot to float64 precision
        assert 1.0 - float(loss(100.0 * probs, gt)) == pytest.approx(want, abs=1e-6), (metric, drop_bg)


def test_truth_table_mean_conventions_with_absent_classes():
    """Surrogates average over all K classes: x (#classes present / K) relative to the nanmean evaluator."""
    k = 5
    gt = _blobs(2, k, 32, 32, seed=5).clamp(max=2)  # classes 3, 4 absent from GT
    pred = _blobs(2, k, 32, 32, seed=6).clamp(max=3)  # class 4 absent from prediction too
    probs = one_hot(pred, k, torch.float64)
    ev = evaluate_maps(pred, gt, k, tol=1, radius=1)
    s = {m: float(AutoSegLoss(k, m, "searched", tol=1).surrogate(probs, gt)) for m in METRICS}
    assert s["mIoU"] == pytest.approx(ev["mIoU"] * 4 / 5)  # class 4: neither GT nor prediction
    assert s["mAcc"] == pytest.approx(ev["mAcc"] * 3 / 5)  # classes 3, 4 have no GT
    for m in ("FWIoU", "gAcc", "BF1"):
        assert s[m] == pytest.approx(ev[m], abs=1e-6)


def test_surrogate_monotone_in_prediction():
    """d surrogate / d p_c >= 0 at pixels of class c and <= 0 elsewhere (mIoU, FWIoU, mAcc, gAcc)."""
    k = 3
    gt = _blobs(2, k, 16, 16, seed=1, ignore_frac=0.1)
    y = one_hot(gt, k, torch.float64).bool()
    for metric in ("mIoU", "FWIoU", "mAcc", "gAcc"):
        for seed in range(3):
            p = torch.rand(2, k, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            p.requires_grad_()
            loss = AutoSegLoss(k, metric, _random_cp(metric, seed), bezier_impl="select")
            (g,) = torch.autograd.grad(loss.surrogate(p, gt), p)
            assert bool((g[y] >= -1e-12).all()), metric
            assert bool((g[~y] <= 1e-12).all()), metric


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck_surrogates(metric):
    k = 3
    gt = _blobs(1, k, 12, 12, seed=2, ignore_frac=0.05)
    loss = AutoSegLoss(k, metric, _random_cp(metric, 1), tol=1, drop_bg=metric == "BIoU", bezier_impl="select")
    logits = torch.randn(1, k, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: loss(z, gt), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_impls_agree_and_loss_in_range(metric):
    k = 4
    gt = _blobs(2, k, 32, 32, seed=7, ignore_frac=0.05)
    logits = torch.randn(2, k, 32, 32, requires_grad=True)
    vals, grads = [], []
    for impl in ("reference", "select", "lut"):
        loss = AutoSegLoss(k, metric, "searched", loss_weight=0.4, bezier_impl=impl)(logits, gt)
        (g,) = torch.autograd.grad(loss, logits)
        vals.append(float(loss.detach())); grads.append(g)
        assert 0.0 <= vals[-1] <= 0.4 + 1e-6 and torch.isfinite(g).all()
    assert vals[0] == pytest.approx(vals[1], abs=1e-5) and vals[0] == pytest.approx(vals[2], abs=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[2], atol=1e-3, rtol=1e-2)


def test_bad_inputs():
    loss = AutoSegLoss(3, "mIoU")
    logits = torch.randn(2, 3, 8, 8)
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    bad = lab.clone(); bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        loss(logits, bad)
    with pytest.raises(ValueError, match="does not match"):
        loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        loss(torch.randn(2, 4, 8, 8), lab)
    with pytest.raises(ValueError, match="unknown metric"):
        AutoSegLoss(3, "Dice")
    with pytest.raises(ValueError, match="needs 2 curve"):
        AutoSegLoss(3, "mIoU", [0.5, 0.5])
    ok = lab.clone(); ok[0, 0, 0] = 255  # ignore label is fine
    assert torch.isfinite(loss(logits, ok))


@pytest.mark.parametrize("metric", ["mIoU", "FWIoU", "BIoU", "mAcc", "gAcc"])
def test_gather_reduction_equals_onehot_form(metric):
    k = 5
    gt = _blobs(2, k, 24, 24, seed=9, ignore_frac=0.1)
    logits = torch.randn(2, k, 24, 24, dtype=torch.float64, requires_grad=True)
    out = []
    for red in ("onehot", "gather"):
        loss = AutoSegLoss(k, metric, _random_cp(metric, 4), tol=2, drop_bg=metric == "BIoU", bezier_impl="select",
                           reduction=red)(logits, gt)
        out.append((loss.detach(), torch.autograd.grad(loss, logits)[0]))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-12)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-12)


def test_trimap_from_labels_equals_one_hot_trimap():
    from auto_seg_loss.losses import trimap, trimap_from_labels

    for seed in range(3):
        gt = _blobs(2, 4, 20, 24, seed=seed, ignore_frac=0.1)
        valid = gt != 255
        for drop_bg in (False, True):
            for r in (0, 2):
                want = trimap(one_hot(gt, 4), valid, r, drop_bg)
                assert torch.equal(trimap_from_labels(gt, valid, r, drop_bg), want)
