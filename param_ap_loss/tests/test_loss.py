"""PAP loss: piecewise-linear functions, exactness vs brute-force AP, fast == reference, gradients, bad input."""

import math

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou, sigmoid_focal_loss
from torchvision.models.detection._utils import BoxCoder

from param_ap_loss.losses import (COCO_TAUS, PAPLoss, exact_ap_loss, exact_ap_loss_reference, grad_scale,
                                  pap_loss_fast, pap_loss_reference, sigmoid_focal_loss_sum)
from param_ap_loss.ops.boxes import decode_unit_anchor, giou_aligned, localisation_quality
from param_ap_loss.ops.piecewise import IDENTITY_THETA, piecewise_linear, theta_to_ctrl, validate_ctrl_points
from param_ap_loss.presets import IDENTITY_ROW, PRESETS, get_preset

D = torch.float64


def _problem(m=300, c=3, n_pos=20, n_ign=30, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, c, generator=g, dtype=dtype) * 1.5
    t = torch.zeros(m, c, dtype=dtype)
    perm = torch.randperm(m, generator=g)
    pos, ign = perm[:n_pos], perm[n_pos:n_pos + n_ign]
    t[pos, torch.randint(0, c, (n_pos,), generator=g)] = 1
    t[ign] = -1
    q = torch.rand(m, generator=g, dtype=dtype) * 0.7 + 0.3
    return logits, q, t


def _ious(q, t):
    return q[:, None] * t.clamp(min=0)


# ------------------------------------------------------------------ piecewise linear
ROW = torch.tensor([0, 0, .2, .1, .4, .5, .5, .5, .8, .6, 1, 1], dtype=D)


def test_piecewise_values_between_and_at_breakpoints():
    x = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.65, 0.8, 0.9, 1.0], dtype=D)
    want = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.5, 0.5, 0.5, 0.55, 0.6, 0.8, 1.0], dtype=D)
    torch.testing.assert_close(piecewise_linear(x, ROW), want)


def test_piecewise_derivative_is_left_slope_at_breakpoints():
    # slopes of the segments: 0.5, 2, 0, 1/3, 2
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0], dtype=D, requires_grad=True)
    piecewise_linear(x, ROW).sum().backward()
    want = torch.tensor([0.5, 0.5, 2.0, 2.0, 0.0, 1 / 3, 1 / 3, 2.0, 2.0], dtype=D)
    torch.testing.assert_close(x.grad, want)


def test_piecewise_zero_with_duplicate_zero_breakpoint():
    row = torch.tensor([0, 0, 0, .3, .5, .6, .6, .7, .8, .9, 1, 1], dtype=D)
    out = piecewise_linear(torch.tensor([0.0, 0.25], dtype=D), row)
    torch.testing.assert_close(out, torch.tensor([0.3, 0.45], dtype=D))  # official: f(0) = y_1


def test_theta_identity_maps_to_identity_line():
    ctrl = theta_to_ctrl(torch.tensor(IDENTITY_THETA, dtype=D))
    torch.testing.assert_close(ctrl, torch.tensor(IDENTITY_ROW, dtype=D), atol=1e-4, rtol=0)


def test_theta_random_gives_valid_monotone_points():
    theta = torch.rand(100, 8, dtype=D)
    ctrl = theta_to_ctrl(theta)
    validate_ctrl_points(ctrl, num_functions=())


# ------------------------------------------------------------------ exactness
def _brute_force_one_minus_ap(z, u, s_idx, tau):
    order = sorted(range(len(z)), key=lambda k: -z[k])
    rank_of = {k: r for r, k in enumerate(order)}
    ap = 0.0
    for i in s_idx:
        if u[i] < tau:
            continue
        r = rank_of[i] + 1
        tp = sum(1 for k in order[:r] if u[k] >= tau)
        ap += tp / r
    return 1 - ap / len(s_idx)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_mode_equals_brute_force_one_minus_ap(seed):
    logits, q, t = _problem(seed=seed)
    ious = _ious(q, t)
    valid = (t != -1).flatten()
    z = logits.flatten()[valid].tolist()
    u = ious.flatten()[valid].tolist()
    pos_idx = [k for k, tv in enumerate(t.flatten()[valid].tolist()) if tv == 1]
    for tau in (0.5, 0.75, 0.9):
        want = _brute_force_one_minus_ap(z, u, pos_idx, tau)
        assert exact_ap_loss(logits, ious, t, taus=[tau]).item() == pytest.approx(want, abs=1e-12)
        assert exact_ap_loss_reference(logits, ious, t, taus=[tau]).item() == pytest.approx(want, abs=1e-12)
    coco = sum(_brute_force_one_minus_ap(z, u, pos_idx, tau) for tau in COCO_TAUS) / len(COCO_TAUS)
    assert exact_ap_loss(logits, ious, t).item() == pytest.approx(coco, abs=1e-12)


def test_exact_mode_perfect_ranking_gives_zero():
    logits, q, t = _problem(seed=3)
    logits = torch.where(t == 1, logits.abs() + 100, logits)
    assert exact_ap_loss(logits, t.clamp(min=0), t, taus=[0.5]).item() == pytest.approx(0.0)


# ------------------------------------------------------------------ fast == reference
CASES = [("searched", p, rows) for p in PRESETS for rows in (5, 4)] + [("linear", None, 0), ("sigmoid", None, 0),
                                                                       ("square", None, 0)]


@pytest.mark.parametrize("form,preset,rows", CASES)
@pytest.mark.parametrize("topk", [1e5, 200])
def test_fast_equals_reference_values_and_grads(form, preset, rows, topk):
    logits, q, t = _problem(seed=7)
    ctrl = torch.tensor(get_preset(preset).ctrl_points, dtype=D)[:rows] if preset else None
    out = []
    for fn in (pap_loss_reference, pap_loss_fast):
        z, qq = logits.clone().requires_grad_(), q.clone().requires_grad_()
        loss = fn(z, _ious(qq, t), t, ctrl, topk, form)
        loss.backward()
        out.append((loss.detach(), z.grad, qq.grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1][2], out[0][2], rtol=0, atol=1e-10)


def test_fast_equals_reference_degenerate_points_and_ties():
    rows = torch.tensor([[0, 0, 0, .2, .5, .3, .5, .7, .9, .9, 1, 1]] * 5, dtype=D)  # x_1 = 0, a jump at 0.5
    logits, q, t = _problem(seed=11)
    logits = (logits * 4).round() / 4  # many exact ties in the logits
    out = []
    for fn in (pap_loss_reference, pap_loss_fast):
        z, qq = logits.clone().requires_grad_(), q.clone().requires_grad_()
        loss = fn(z, _ious(qq, t), t, rows)
        loss.backward()
        out.append((loss.detach(), z.grad, qq.grad))
    for a, b in zip(out[0], out[1]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


def test_fast_float32_matches_reference_float64():
    logits, q, t = _problem(m=2000, c=4, n_pos=100, seed=5)
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, dtype=D)
    want = pap_loss_reference(logits, _ious(q, t), t, ctrl)
    got = pap_loss_fast(logits.float(), _ious(q, t).float(), t.float(), ctrl.float())
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_gradcheck_fast():
    # 4-function variant: the normaliser is a step (sign), whose derivative is 0 almost everywhere, so
    # finite differences see exactly the stop-gradient semantics of the loss
    logits, q, t = _problem(m=40, c=2, n_pos=6, n_ign=4, seed=2)
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, dtype=D)[:4]
    z, qq = logits.clone().requires_grad_(), q.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: pap_loss_fast(a, _ious(b, t), t, ctrl), (z, qq), eps=1e-7, atol=1e-6)


def test_no_positive_keeps_graph():
    z = torch.randn(10, 3, requires_grad=True)
    loss = pap_loss_fast(z, torch.zeros(10, 3), torch.zeros(10, 3), torch.tensor(get_preset("retinanet").ctrl_points))
    loss.backward()
    assert loss.item() == 0 and z.grad is not None


def test_module_preset_and_reg_weight():
    m = PAPLoss(preset="retinanet")
    assert m.reg_weight == pytest.approx(4.1231)
    logits, q, t = _problem(seed=1)
    ref = PAPLoss(preset="retinanet", impl="reference")
    assert m(logits, _ious(q, t), t).item() == pytest.approx(ref(logits, _ious(q, t), t).item(), abs=1e-6)


# ------------------------------------------------------------------ boxes, GradScale, baselines
def test_unit_anchor_giou_equals_image_space_giou():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=D) * 100
    wh = torch.rand(50, 2, generator=g, dtype=D) * 50 + 5
    anchors = torch.cat([xy, xy + wh], 1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    d_pred = torch.randn(50, 4, generator=g, dtype=D)
    d_tgt = torch.randn(50, 4, generator=g, dtype=D)
    img_pred, img_tgt = coder.decode_single(d_pred, anchors), coder.decode_single(d_tgt, anchors)
    want = generalized_box_iou(img_pred, img_tgt).diagonal()
    got = giou_aligned(decode_unit_anchor(d_pred), decode_unit_anchor(d_tgt))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(localisation_quality(img_pred, img_tgt, "iou"), box_iou(img_pred, img_tgt).diagonal(),
                               atol=1e-6, rtol=0)
    assert ((localisation_quality(img_pred, img_tgt) >= 0) & (localisation_quality(img_pred, img_tgt) <= 1)).all()


def test_grad_scale_multiplies_only_box_gradient():
    a, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    ca, cb = grad_scale(a, b, 4.0)
    (ca.sum() + cb.sum()).backward()
    torch.testing.assert_close(a.grad, torch.ones(3))
    torch.testing.assert_close(b.grad, torch.full((3,), 4.0))


def test_focal_matches_torchvision():
    z, y = torch.randn(30, 5), (torch.rand(30, 5) > 0.8).float()
    torch.testing.assert_close(sigmoid_focal_loss_sum(z, y), sigmoid_focal_loss(z, y, reduction="sum"))


# ------------------------------------------------------------------ bad input
def test_unknown_preset_error():
    with pytest.raises(ValueError, match="unknown PAP-loss preset 'retina'.*known presets: faster_rcnn_roi"):
        PAPLoss(preset="retina")


def test_wrong_number_of_control_points_error():
    with pytest.raises(ValueError, match="6 control points"):
        PAPLoss(ctrl_points=[[0, 0, .5, .5, 1, 1]] * 5)
    with pytest.raises(ValueError, match="expected 4 or 5 functions"):
        PAPLoss(ctrl_points=[IDENTITY_ROW] * 3)


def test_non_monotone_control_points_error():
    bad = [list(IDENTITY_ROW) for _ in range(5)]
    bad[2][5] = 0.1  # y_2 < y_1
    with pytest.raises(ValueError, match=r"y coordinates of function row\(s\) \[2\] are not non-decreasing"):
        PAPLoss(ctrl_points=bad)
    bad = [list(IDENTITY_ROW) for _ in range(5)]
    bad[0][0:2] = [0.1, 0.0]
    with pytest.raises(ValueError, match=r"start at \(0, 0\)"):
        PAPLoss(ctrl_points=bad)


def test_unknown_loss_form_error():
    with pytest.raises(ValueError, match="unknown loss_form 'cubic'"):
        PAPLoss(preset="identity", loss_form="cubic")
    assert math.isfinite(PAPLoss(loss_form="linear")(*_problem()[0:1], torch.zeros(300, 3), torch.zeros(300, 3)).item())


def test_surrogate_agrees_with_exact_ap_spearman():
    """Spec §8.3: 1 - L ranks synthetic detection sets like the exact AP (measured here: linear 0.92,
    sigmoid 0.86, square 0.98, searched 5 fn 0.92, 4 fn 0.91 over 100 sets)."""
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, dtype=D)
    forms = {"linear": ("linear", None), "sigmoid": ("sigmoid", None), "square": ("square", None),
             "searched5": ("searched", ctrl), "searched4": ("searched", ctrl[:4])}
    surrogate, exact = {k: [] for k in forms}, []
    for _ in range(100):  # 300 predictions, 20 positives, random separation and score-IoU correlation
        t = torch.zeros(300, 1, dtype=D)
        t[:20] = 1
        iou = torch.zeros(300, 1, dtype=D)
        iou[:20, 0] = 0.3 + 0.68 * torch.rand(20, generator=g, dtype=D)
        sep, corr = 3 * torch.rand(1, generator=g).item(), 2 * torch.rand(1, generator=g).item() - 1
        z = torch.randn(300, 1, generator=g, dtype=D)
        z[:20, 0] += sep + corr * (iou[:20, 0] - 0.65) * 4
        exact.append(1 - exact_ap_loss(z, iou, t).item())
        for k, (form, c) in forms.items():
            surrogate[k].append(1 - pap_loss_fast(z, iou, t, c, 1e5, form).item())
    for k in forms:
        assert spearmanr(surrogate[k], exact).correlation > 0.85, k
