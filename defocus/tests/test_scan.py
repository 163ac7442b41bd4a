"""Selective scan: every form equals the float64 sequential reference (forward, backward, last state), including
the fused head-wise RMS norm / D / gate epilogue and the delta bias + softplus prologue."""

import pytest
import torch

from defocus.ops import selective_scan, selective_scan_chunked, selective_scan_ref
from defocus.ops.scan_common import epilogue, head_rms_norm

triton = pytest.importorskip("triton")
from defocus.ops.selective_scan_triton import fuses_epilogue, selective_scan_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the Triton interpreter (conftest)


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


def run(fn, ins, weights, group_size=0, **kw):
    out, last = fn(*ins, delta_softplus=ins[7] is not None, return_last_state=True, group_size=group_size, **kw)
    loss = (out.double() * weights.to(out.device)).sum() + 0.3 * (last.double() * last.double()).sum()
    grads = torch.autograd.grad(loss, [t for t in ins if t is not None])
    return out, last, grads


def assert_matches(got, ref, tol):
    names = ["out", "last"] + [f"grad {i}" for i in range(len(ref[2]))]
    for name, a, b in zip(names, [got[0], got[1], *got[2]], [ref[0], ref[1], *ref[2]]):
        torch.testing.assert_close(a.double().cpu(), b.double(), rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("shape", [(2, 3, 1, 4), (2, 5, 13, 4), (1, 4, 37, 16), (3, 2, 64, 2)])
@pytest.mark.parametrize("chunk", [None, 1, 4, 8, 100])
def test_chunked_equals_reference_float64(shape, chunk):
    ins = make_inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    assert_matches(run(selective_scan_chunked, ins, w, chunk_size=chunk), run(selective_scan_ref, ins, w), 1e-9)


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


def test_head_rms_norm_epilogue_by_hand():
    """group_size G: y <- y / sqrt(mean over each G channels of y^2 + 1e-6), then + D u, then * silu(z)."""
    y = torch.tensor([[[3.0], [4.0], [1.0], [0.0]]], dtype=torch.float64)  # (1, 4, 1), groups {3, 4}, {1, 0}
    n = head_rms_norm(y, 2)[0, :, 0]
    torch.testing.assert_close(n, torch.tensor([3, 4, 1, 0], dtype=torch.float64)
                               / torch.tensor([12.5 + 1e-6, 12.5 + 1e-6, 0.5 + 1e-6, 0.5 + 1e-6]).double().sqrt())
    u, z, D = torch.ones_like(y), torch.zeros_like(y), torch.full((4,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(epilogue(y, u, D, z, torch.float64, 2)[0, :, 0], (n + 2.0) * 0.0)
    torch.testing.assert_close(epilogue(y, u, D, None, torch.float64, 2)[0, :, 0], n + 2.0)


def test_gradcheck_reference_and_chunked():
    ins = make_inputs(1, 4, 5, 2, torch.float64)
    f_ref = lambda *a: selective_scan_ref(*a, delta_softplus=True, return_last_state=True, group_size=2)  # noqa: E731
    f_chk = lambda *a: selective_scan_chunked(*a, delta_softplus=True, return_last_state=True,  # noqa: E731
                                              chunk_size=2, group_size=2)
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


# (b, E, L, N, group_size): L = 1, a partial chunk and two 32-token chunks; E across two 64-channel blocks (not a
# multiple); head-wise norm groups. Sizes are small because the interpreter runs every program in Python.
TRITON_CASES = [(2, 5, 13, 4, 0), (1, 70, 9, 2, 0), (2, 3, 1, 3, 0), (1, 16, 40, 4, 8)]


@pytest.mark.parametrize("case", TRITON_CASES + [pytest.param((2, 32, 70, 16, 16), marks=pytest.mark.slow)])
def test_triton_equals_float64_reference_fwd_bwd(case):
    """The Triton kernels (interpreter on CPU, compiled on CUDA) vs the float64 reference: out, last state and
    the gradients of u, delta, A, B, C, D, z and delta_bias, with the fused epilogue."""
    *shape, group = case
    ins64 = make_inputs(*shape, torch.float64)
    w = torch.randn(*shape[:3], dtype=torch.float64)
    ref = run(selective_scan_ref, ins64, w, group)
    ins32 = [t.detach().float().to(DEVICE).requires_grad_() if t is not None else None for t in ins64]
    assert_matches(run(selective_scan_triton, ins32, w, group), ref, 2e-4)


def test_triton_plain_scan_and_strided_inputs():
    """No D / z / bias (the bare scan) and non-contiguous inputs (transposed views, as the mixer passes them)."""
    ins64 = make_inputs(1, 6, 40, 3, torch.float64, full=False)
    w = torch.randn(1, 6, 40, dtype=torch.float64)
    ref = run(selective_scan_ref, ins64, w)
    u, delta, A, B, C = (t.detach().float().to(DEVICE) for t in ins64[:5])
    views = [u.transpose(1, 2).contiguous().transpose(1, 2), delta, A, B.transpose(1, 2).contiguous().transpose(1, 2),
             C]
    assert not views[0].is_contiguous() and not views[3].is_contiguous()
    views = [v.requires_grad_() for v in views]
    assert_matches(run(selective_scan_triton, views + [None] * 3, w), ref, 2e-4)


def test_triton_bf16_io_fp32_state():
    """bf16 in and out with fp32 state inside: close to the float64 reference at bf16 precision."""
    ins64 = make_inputs(1, 16, 40, 4, torch.float64)
    w = torch.randn(1, 16, 40, dtype=torch.float64)
    ref = run(selective_scan_ref, ins64, w, 8)
    ins = [t.detach().to(DEVICE, torch.bfloat16 if i not in (2, 5, 7) else torch.float32).requires_grad_()
           if t is not None else None for i, t in enumerate(ins64)]
    got = run(selective_scan_triton, ins, w, 8)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert got[2][0].dtype == torch.bfloat16 and got[2][2].dtype == torch.float32  # du bf16, dA fp32
    scale = ref[0].abs().max()
    assert (got[0].double().cpu() - ref[0]).abs().max() < 0.03 * scale
    for a, b in zip(got[2], ref[2]):
        assert (a.double().cpu() - b).abs().max() < 0.05 * b.abs().max() + 1e-3


def test_triton_unfusable_group_falls_back():
    assert fuses_epilogue(64) and fuses_epilogue(0) and not fuses_epilogue(48) and not fuses_epilogue(256)
    ins64 = make_inputs(1, 6, 7, 4, torch.float64)
    w = torch.randn(1, 6, 7, dtype=torch.float64)
    ref = run(selective_scan_ref, ins64, w, 3)
    ins32 = [t.detach().float().to(DEVICE).requires_grad_() if t is not None else None for t in ins64]
    assert_matches(run(selective_scan_triton, ins32, w, 3), ref, 2e-4)


def test_dispatch_and_bad_input():
    ins = make_inputs(1, 2, 4, 2, torch.float32, full=False)
    torch.testing.assert_close(selective_scan(*ins, impl="chunked"), selective_scan(*ins, impl="ref"))
    with pytest.raises(ValueError, match="unknown impl 'cuda-magic'; use one of 'auto', 'ref'"):
        selective_scan(*ins, impl="cuda-magic")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(ins[0], ins[1], ins[2], ins[3][:, :, :3], ins[4])
    with pytest.raises(ValueError, match="group_size 3 does not divide the 2 channels"):
        selective_scan(*ins, group_size=3)


def test_no_import_cycle_between_backends():
    """Backends import only scan_common; the dispatcher imports the backends (issue 16.3)."""
    import ast
    from pathlib import Path

    import defocus.ops as ops

    root = Path(ops.__file__).parent
    for backend in ("selective_scan_torch", "selective_scan_cpu", "selective_scan_triton"):
        tree = ast.parse((root / f"{backend}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert imported <= {"scan_common"}, (backend, imported)


@pytest.mark.slow  # compiles the C++ extension on first use (about a minute)
@pytest.mark.parametrize("shape", [(2, 5, 13, 4), (1, 3, 1, 2), (3, 7, 40, 16), (1, 4, 9, 16)])
def test_cpu_kernel_equals_reference_float64(shape):
    from defocus.ops.selective_scan_cpu import cpu_kernel_available, selective_scan_cpu

    if not cpu_kernel_available():
        pytest.skip("no C++ compiler for the fused CPU kernel")
    ins = make_inputs(*shape, torch.float64)
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    assert_matches(run(selective_scan_cpu, ins, w), run(selective_scan_ref, ins, w), 1e-9)
    f = lambda *a: selective_scan_cpu(*a, delta_softplus=True, return_last_state=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(make_inputs(1, 2, 5, 2, torch.float64)))
    torch.testing.assert_close(selective_scan(*ins[:5], impl="cpu"), selective_scan_ref(*ins[:5]))
    ins32 = [t.detach().float().requires_grad_() if t is not None else None for t in ins]
    assert_matches(run(selective_scan_cpu, ins32, w.float()), run(selective_scan_ref, ins, w), 1e-4)
