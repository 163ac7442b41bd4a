"""Selective scan: every form equals the sequential reference (forward, backward, last state)."""

import pytest
import torch

from defocus.ops.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
)

triton = pytest.importorskip("triton")
from defocus.ops.selective_scan_triton import selective_scan_triton  # noqa: E402


def make_inputs(b, E, L, N, dtype, seed=0, full=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    u = r(b, E, L)
    delta = torch.rand(b, E, L, generator=g, dtype=dtype) * 0.5
    A = -(torch.rand(E, N, generator=g, dtype=dtype) * 2 + 0.1)
    B, C = r(b, N, L), r(b, N, L)
    D, z, db = (r(E), r(b, E, L), r(E)) if full else (None, None, None)
    ts = [u, delta, A, B, C, D, z, db]
    return [t.to(device).requires_grad_() if t is not None else None for t in ts]


def run(fn, ins, weights, **kw):
    out, last = fn(*ins, delta_softplus=ins[7] is not None, return_last_state=True, **kw)
    loss = (out * weights).sum() + 0.3 * (last * last).sum()
    grads = torch.autograd.grad(loss, [t for t in ins if t is not None])
    return out, last, grads


@pytest.mark.parametrize("shape", [(2, 3, 1, 4), (2, 5, 13, 4), (1, 4, 37, 16), (3, 2, 64, 2)])
@pytest.mark.parametrize("chunk", [None, 1, 4, 8, 100])
def test_chunked_equals_reference_float64(shape, chunk):
    ins = make_inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    ref = run(selective_scan_ref, ins, w)
    got = run(selective_scan_chunked, ins, w, chunk_size=chunk)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_reference_matches_hand_recurrence():
    """Two tokens, one channel, one state: closed form of Eq. 2-4 with D, z, bias, softplus."""
    u = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.3, -0.2]]], dtype=torch.float64)
    A = torch.tensor([[-1.5]], dtype=torch.float64)
    B = torch.tensor([[[0.5, -1.0]]], dtype=torch.float64)
    C = torch.tensor([[[2.0, 3.0]]], dtype=torch.float64)
    D = torch.tensor([0.7], dtype=torch.float64)
    z = torch.tensor([[[0.1, -0.4]]], dtype=torch.float64)
    db = torch.tensor([0.25], dtype=torch.float64)
    sp = torch.nn.functional.softplus
    d = sp(delta + 0.25)[0, 0]
    h0 = d[0] * 0.5 * 1.0
    h1 = torch.exp(d[1] * -1.5) * h0 + d[1] * -1.0 * 2.0
    y = torch.stack([2.0 * h0, 3.0 * h1]) + 0.7 * u[0, 0]
    y = y * torch.nn.functional.silu(z[0, 0])
    out, last = selective_scan_ref(u, delta, A, B, C, D, z, db, True, True)
    torch.testing.assert_close(out[0, 0], y)
    torch.testing.assert_close(last[0, 0, 0], h1)


def test_gradcheck_reference_and_chunked():
    ins = make_inputs(1, 2, 5, 2, torch.float64)
    f_ref = lambda *a: selective_scan_ref(*a, delta_softplus=True, return_last_state=True)  # noqa: E731
    f_chk = lambda *a: selective_scan_chunked(*a, delta_softplus=True, return_last_state=True, chunk_size=2)  # noqa: E731
    assert torch.autograd.gradcheck(f_ref, tuple(ins))
    assert torch.autograd.gradcheck(f_chk, tuple(ins))


def test_long_sequence_is_finite():
    """Large decays over long sequences must not overflow the chunked form (no exp(-S) trick)."""
    ins = make_inputs(1, 2, 300, 4, torch.float32, full=False)
    with torch.no_grad():
        ins[1].mul_(20.0)  # delta*A down to -40 per step
    out_ref = selective_scan_ref(*ins)
    out = selective_scan_chunked(*ins, chunk_size=32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 13, 4), (1, 70, 9, 16), (2, 3, 1, 3)])
def test_triton_equals_reference(shape):
    """Triton kernels (interpreter on CPU) vs the float64 reference, forward and backward."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ins64 = make_inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    ref = run(selective_scan_ref, ins64, w)
    ins32 = [t.detach().float().to(device).requires_grad_() if t is not None else None for t in ins64]
    got = run(selective_scan_triton, ins32, w.float().to(device))
    torch.testing.assert_close(got[0].double().cpu(), ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1].double().cpu(), ref[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-4, atol=1e-4)


def test_dispatch_and_bad_input():
    ins = make_inputs(1, 2, 4, 2, torch.float32, full=False)
    torch.testing.assert_close(selective_scan(*ins, impl="chunked"), selective_scan(*ins, impl="ref"))
    with pytest.raises(ValueError, match="unknown impl"):
        selective_scan(*ins, impl="cuda-magic")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(ins[0], ins[1], ins[2], ins[3][:, :, :3], ins[4])


@pytest.mark.slow  # compiles the C++ extension on first use (about a minute)
@pytest.mark.parametrize("shape", [(2, 5, 13, 4), (1, 3, 1, 2), (3, 7, 40, 16)])
def test_cpu_kernel_equals_reference_float64(shape):
    from defocus.ops.selective_scan_cpu import cpu_kernel_available, selective_scan_cpu

    if not cpu_kernel_available():
        pytest.skip("no C++ compiler for the fused CPU kernel")
    ins = make_inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    ref = run(selective_scan_ref, ins, w)
    got = run(selective_scan_cpu, ins, w)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    f = lambda *a: selective_scan_cpu(*a, delta_softplus=True, return_last_state=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(make_inputs(1, 2, 5, 2, torch.float64)))
    torch.testing.assert_close(selective_scan(*ins[:5], impl="cpu"), selective_scan_ref(*ins[:5]))
