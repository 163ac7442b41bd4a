"""Bezier curve: values, derivatives, degenerate branch, monotonicity, theta map, LUT error, gradcheck."""

import pytest
import torch

from auto_seg_loss.losses import NUM_CURVES, SEARCHED_CONTROL_POINTS
from auto_seg_loss.ops.bezier import (
    BezierCurve, BezierLUT, build_lut, bezier_lut, bezier_reference, bezier_select, check_monotone,
    identity_theta, theta_to_control_points,
)


def _curves():
    for metric, cp in SEARCHED_CONTROL_POINTS.items():
        per = len(cp) // NUM_CURVES[metric]
        for k in range(NUM_CURVES[metric]):
            yield f"{metric}[{k}]", torch.tensor(cp[k * per:(k + 1) * per], dtype=torch.float64)


CURVES = list(_curves())


def _analytic(x, ctrl):
    """h and h' from the parametric form, by bisection on t (independent of the closed-form root)."""
    pts = torch.cat([torch.zeros(2, dtype=torch.float64), ctrl, torch.ones(2, dtype=torch.float64)]).view(-1, 2)
    n = (len(pts) - 1) // 2
    ys, ds = [], []
    for xv in x.tolist():
        j = 0
        while j < n - 1 and xv > pts[2 * j + 2, 0]:
            j += 1
        p0, p1, p2 = pts[2 * j], pts[2 * j + 1], pts[2 * j + 2]
        lo, hi = 0.0, 1.0
        for _ in range(100):
            t = 0.5 * (lo + hi)
            xt = (1 - t) ** 2 * p0[0] + 2 * t * (1 - t) * p1[0] + t * t * p2[0]
            lo, hi = (t, hi) if xt < xv else (lo, t)
        t = 0.5 * (lo + hi)
        ys.append(float((1 - t) ** 2 * p0[1] + 2 * t * (1 - t) * p1[1] + t * t * p2[1]))
        dx = 2 * (1 - t) * (p1[0] - p0[0]) + 2 * t * (p2[0] - p1[0])
        dy = 2 * (1 - t) * (p1[1] - p0[1]) + 2 * t * (p2[1] - p1[1])
        ds.append(float(dy / dx))
    return torch.tensor(ys, dtype=torch.float64), torch.tensor(ds, dtype=torch.float64)


@pytest.mark.parametrize("name,ctrl", CURVES, ids=[c[0] for c in CURVES])
def test_values_and_derivatives_match_parametric_form(name, ctrl):
    x = torch.linspace(0.013, 0.987, 37, dtype=torch.float64)
    y_ref, d_ref = _analytic(x, ctrl)
    for fn in (bezier_reference, bezier_select):
        xx = x.clone().requires_grad_()
        y = fn(xx, ctrl)
        (d,) = torch.autograd.grad(y.sum(), xx)
        assert torch.allclose(y, y_ref, atol=1e-10), name
        assert torch.allclose(d, d_ref, rtol=1e-6, atol=1e-8), name


def test_released_curve_values_from_spec():
    x = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    cp = torch.tensor(SEARCHED_CONTROL_POINTS["mIoU"], dtype=torch.float64)
    assert torch.allclose(bezier_reference(x, cp[:6]), torch.tensor([.41, .68, .76, .86, .97], dtype=torch.float64), atol=6e-3)
    assert torch.allclose(bezier_reference(x, cp[6:]), torch.tensor([.002, .04, .19, .61, .985], dtype=torch.float64), atol=6e-3)
    macc = torch.tensor(SEARCHED_CONTROL_POINTS["mAcc"], dtype=torch.float64)
    assert torch.allclose(bezier_reference(x, macc), torch.tensor([.40, .73, .83, .90, .98], dtype=torch.float64), atol=6e-3)


def test_end_points_fixed_and_degenerate_branch():
    x = torch.rand(1000, dtype=torch.float64)
    # identity curves take the a == 1/2 branch on every piece and are exactly y = x
    for n in (1, 2, 3):
        cp = theta_to_control_points(identity_theta(n), n)
        if n < 3:  # n = 3: a = 1/2 only up to rounding -> the official form cancels (2a - 1 ~ 1e-16)
            assert torch.allclose(bezier_reference(x, cp), x, atol=1e-12)
        assert torch.allclose(bezier_select(x, cp), x, atol=1e-12)
    cp3 = theta_to_control_points(identity_theta(3), 3)
    assert float((bezier_reference(x, cp3) - x).abs().max()) > 1e-3  # documented official weakness
    # mixed: piece 0 degenerate (a = 1/2), piece 1 not
    cp = torch.tensor([0.2, 0.5, 0.4, 0.6, 0.5, 0.9], dtype=torch.float64)
    xx = x.clone().requires_grad_()
    y_ref, d_ref = _analytic(x, cp)
    for fn in (bezier_reference, bezier_select):
        y = fn(xx, cp)
        (d,) = torch.autograd.grad(y.sum(), xx)
        assert torch.allclose(y, y_ref, atol=1e-10)
        assert torch.allclose(d, d_ref, rtol=1e-6)
    for _, c in CURVES:
        ends = bezier_reference(torch.tensor([0.0, 1.0], dtype=torch.float64), c)
        assert ends.tolist() == [0.0, 1.0]
        assert bezier_lut(torch.tensor([0.0, 1.0]), c).tolist() == [0.0, 1.0]


def test_searched_and_random_curves_are_monotone():
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    thetas = torch.rand(200, 12, generator=g, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    cps = theta_to_control_points(thetas, 2)
    for cp in list(cps.view(-1, 6)) + [c for _, c in CURVES]:
        check_monotone(cp)
        y = bezier_select(grid, cp)
        assert bool((y[1:] >= y[:-1] - 1e-12).all())
        assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0 + 1e-12


def test_theta_map_matches_recursion_and_rejects_bad_length():
    th = torch.tensor([0.5, 0.2, 0.5, 0.5, 0.1, 1.0])
    cp = theta_to_control_points(th, 2)
    assert torch.allclose(cp, torch.tensor([0.5, 0.2, 0.75, 0.6, 0.775, 1.0]))
    with pytest.raises(ValueError, match="multiple"):
        theta_to_control_points(torch.rand(5), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        BezierCurve([0.5, 0.5, 0.4, 0.6, 0.7, 0.8])


def test_reference_and_select_agree_everywhere():
    x = torch.rand(100000, dtype=torch.float64)
    x[:10] = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.75, 1e-9, 1 - 1e-9, 0.3386, 0.6253, 0.8342], dtype=torch.float64)
    for name, c in CURVES:
        assert torch.allclose(bezier_reference(x, c), bezier_select(x, c), atol=1e-12), name


def test_lut_error_bound():
    """LUT with 2^16 bins: error < 2e-3 overall (near-vertical piece ends), < 1e-4 for x > 0.01, <1e-6 for BF1/mAcc
    curves."""
    x = torch.rand(200000, dtype=torch.float64)
    for name, c in CURVES:
        err = (bezier_lut(x, c) - bezier_reference(x, c)).abs()
        assert float(err.max()) < 2e-3, name
        assert float(err[x > 0.01].max()) < 1e-4, name
        if name.startswith(("BF1", "mAcc", "gAcc")):
            assert float(err.max()) < 1e-6, name


def test_gradcheck_reference_select_lut():
    c = torch.tensor(SEARCHED_CONTROL_POINTS["mIoU"][6:], dtype=torch.float64)
    x = (torch.rand(40, dtype=torch.float64) * 0.98 + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: bezier_reference(z, c), (x,))
    assert torch.autograd.gradcheck(lambda z: bezier_select(z, c), (x,))
    values, steps, layout = build_lut(c, 1 << 10)
    # keep away from table nodes (the interpolant has kinks there)
    xl = ((torch.randint(1, 1000, (40,)).double() + 0.5) / 1024).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: BezierLUT.apply(z, values, steps, layout), (xl,))

def test_lut_backward_close_to_true_derivative():
    torch.manual_seed(0)  # unseeded, 1 run in ~10 drew a point 1e-4..1.4e-4 right of FWIoU/BIoU's junction (CI)
    x = torch.rand(5000, dtype=torch.float64) * 0.98 + 0.01
    for name, c in CURVES:
        xx = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(BezierCurve(c, "lut")(xx).sum(), xx)
        xr = x.clone().requires_grad_()
        (gr,) = torch.autograd.grad(bezier_reference(xr, c).sum(), xr)
        # junction bins included (each piece has its own bins); the first bins of the near-vertical start of
        # FWIoU/BIoU's h_or right piece (a = 0.011: large curvature) reach 4.8 % up to 1.4e-4 right of the
        # junction (measured over 400k points), farther away < 2 %
        assert torch.allclose(g, gr, rtol=5e-2, atol=1e-3), name
        far = ((x[:, None] - torch.tensor(_junctions(c), dtype=x.dtype)[None]).abs() > 3e-4).all(1)
        assert torch.allclose(g[far], gr[far], rtol=2e-2, atol=1e-3), name



def _value_and_slope(fn, x):
    x = x.clone().requires_grad_()
    y = fn(x)
    (d,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), d


def _junctions(ctrl):
    return torch.cat([ctrl.new_zeros(2), ctrl, ctrl.new_ones(2)]).view(-1, 2)[2:-1:2, 0].tolist()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,ctrl", CURVES, ids=[c[0] for c in CURVES])
def test_lut_never_interpolates_across_a_junction(name, ctrl, dtype):
    """Value and slope on both sides of every junction equal the exact piece (issue 15.3): the table
    used to interpolate across the junction bin (e.g. slope 23.0 on both sides where the exact one-sided
    slopes are 0.816 / 33.7)."""
    lut = BezierCurve(ctrl, "lut")
    for e in _junctions(ctrl):
        ef = float(torch.tensor(e, dtype=dtype))  # the junction as the input dtype sees it
        tiny = float(torch.finfo(dtype).eps) * 2
        x = torch.tensor([ef - 5e-6, ef + 5e-6, ef - 1e-6, ef + 1e-6, ef * (1 - tiny), ef, ef * (1 + tiny)],
                         dtype=dtype)
        y_ref, d_ref = _value_and_slope(lambda z: bezier_select(z, ctrl), x)
        y, d = _value_and_slope(lut, x)
        assert torch.allclose(y, y_ref, atol=1e-5, rtol=0), (name, e, y - y_ref)
        # sub-bin chord of the correct piece: within 5 % of the exact one-sided slope (both sides, also one
        # float step away from the junction and at it, where the official mask takes the left piece)
        assert torch.allclose(d, d_ref, rtol=0.05, atol=2e-3), (name, e, d.tolist(), d_ref.tolist())
        left, right = d_ref[[0, 2, 4, 5]], d_ref[[1, 3, 6]]
        assert not torch.allclose(left.mean(), right.mean(), rtol=0.05)  # the two sides really differ


def test_lut_junction_numbers_from_issue():
    """The released union curves: BIoU/FWIoU junction x = 0.560551 (slopes 0.816 left / about 33.7 right,
    where the old table gave 23.0 on both sides) and the mIoU union curve right of x = 0.834171 (0.162; the
    old table gave 1.44)."""
    fw = BezierCurve(SEARCHED_CONTROL_POINTS["FWIoU"][6:], "lut")
    _, d = _value_and_slope(fw, torch.tensor([0.560551 - 5e-6, 0.560551465 + 1e-6], dtype=torch.float64))
    assert d[0].item() == pytest.approx(0.816, abs=1e-3)
    assert d[1].item() == pytest.approx(33.7, rel=0.05)
    assert BezierCurve(SEARCHED_CONTROL_POINTS["BIoU"][6:], "lut")(torch.tensor([0.5605])).item() == pytest.approx(
        fw(torch.tensor([0.5605])).item())
    mi = BezierCurve(SEARCHED_CONTROL_POINTS["mIoU"][6:], "lut")
    for dtype in (torch.float32, torch.float64):
        _, d = _value_and_slope(mi, torch.tensor([0.834171 + 5e-6], dtype=dtype))
        assert d.item() == pytest.approx(0.162, abs=2e-3)


def test_lut_many_pieces_and_coarse_tables():
    """Curves with 3 pieces (two junctions; one piece narrower than a bin) and a coarse table: on each side of
    every junction the table's slope is a chord of that side's piece only, i.e. lies within the range of the
    exact derivative over one bin on that side (mean-value theorem); values stay close to the curve."""
    g = torch.Generator().manual_seed(1)
    cps = [theta_to_control_points(identity_theta(3), 3),
           torch.tensor([0.1, 0.3, 0.2, 0.35, 0.2004, 0.5, 0.5, 0.9, 0.9, 0.95], dtype=torch.float64)]
    cps += list(theta_to_control_points(torch.rand(5, 10, generator=g, dtype=torch.float64).clamp(0.01, 0.99), 3))
    x = torch.rand(20000, generator=g, dtype=torch.float64)
    for cp in cps:
        for bins in (1 << 8, 1 << 16):
            lut, span = BezierCurve(cp, "lut", lut_bins=bins), 1.0 / bins
            ends = [0.0] + _junctions(cp) + [1.0]
            for k, e in enumerate(ends[1:-1], start=1):
                for side in (-1, 1):  # one bin (or the whole piece, if narrower) on each side, inside that piece
                    reach = min(span, abs(ends[k + side] - e))
                    fine = e + side * torch.linspace(1e-12, reach, 201, dtype=torch.float64)
                    _, d_exact = _value_and_slope(lambda z: bezier_select(z, cp), fine)
                    _, d = _value_and_slope(lut, fine[:100])
                    lo, hi = float(d_exact.min()), float(d_exact.max())
                    assert bool(((d >= lo - 1e-6 * (1 + hi)) & (d <= hi + 1e-6 * (1 + hi))).all()), (cp, e, side)
                y, _ = _value_and_slope(lut, torch.tensor([e], dtype=torch.float64))
                assert float(y) == pytest.approx(float(bezier_select(torch.tensor([e], dtype=torch.float64), cp)),
                                                 abs=1e-12)
            err = (lut(x) - bezier_select(x, cp)).abs()
            assert float(err[(x > 0.02) & (x < 0.98)].max()) < (1e-2 if bins == 256 else 1e-4), (cp, bins)
    nodes = torch.arange(0, 257, dtype=torch.float64) / 256
    assert torch.allclose(BezierCurve(cps[0], "lut", 256)(nodes), nodes, atol=1e-12)  # identity curve: exact
    with pytest.raises(ValueError, match="power of two"):
        BezierCurve(cps[0], "lut", lut_bins=1000)


@pytest.mark.parametrize("impl", ["lut", "select"])
def test_curve_tables_follow_the_input_device(impl):
    """Issue 18: on CUDA the table stayed on the CPU ("indices should be either on cpu or on the same device").
    The tables are registered buffers (moved with the module) and are also moved to the input's device at use:
    checked with the "meta" device, which like CUDA refuses to mix with CPU tensors."""
    cp = SEARCHED_CONTROL_POINTS["mIoU"][:6]
    x = torch.rand(7, device="meta", requires_grad=True)
    y = BezierCurve(cp, impl)(x)  # module left on the CPU, input elsewhere
    y.sum().backward()
    assert y.device.type == "meta" and x.grad.device.type == "meta"
    moved = BezierCurve(cp, impl).to("meta")
    assert {b.device.type for b in moved.buffers()} == {"meta"}
    assert moved(torch.rand(7, device="meta")).device.type == "meta"
    # half precision in, same dtype out, computed in float32
    xh = torch.tensor([0.0, 0.3, 1.0], dtype=torch.bfloat16)
    assert BezierCurve(cp, impl)(xh).dtype == torch.bfloat16
    assert BezierCurve(cp, impl)(xh)[[0, 2]].tolist() == [0.0, 1.0]


def test_nan_input_propagates_without_an_index_error():
    """A diverged network's NaN probabilities must not crash the table lookup with an out-of-range index (a
    device-side assert on CUDA): lut/select return NaN. The official masked form (reference) maps NaN to a
    finite value (no mask selects it), which hides it from the loss: the engine therefore checks the logits
    themselves (test_train.py::test_nan_prediction_stops_with_named_error)."""
    x = torch.tensor([0.2, float("nan"), 0.9])
    for impl in ("lut", "select"):
        y = BezierCurve(SEARCHED_CONTROL_POINTS["mIoU"][6:], impl)(x)
        assert torch.isnan(y[1]) and torch.isfinite(y[[0, 2]]).all(), impl
    assert torch.isfinite(BezierCurve(SEARCHED_CONTROL_POINTS["mIoU"][6:], "reference")(x)).all()
