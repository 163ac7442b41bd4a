"""repro_shared.ops.msda: reference vs a literal bilinear loop, gradcheck, hand cases, empty levels, low
precision, dispatch; the Triton kernels (interpreter on CPU, CUDA when present) vs the reference,
forward and all three gradients."""
import os
import subprocess
import sys

import pytest
import torch

from repro_shared.ops import msda_reference, multi_scale_deformable_attn
from repro_shared.ops.msda import msda_triton

HERE = os.path.dirname(os.path.abspath(__file__))


def make_inputs(B=2, M=2, D=3, Q=5, P=3, shapes=((4, 6), (2, 3)), dtype=torch.float64, seed=0, spread=1.4,
                device="cpu"):
    """value (B, S, M, D), shapes (L, 2), starts (L,), loc (B, Q, M, L, P, 2) in [-(spread-1)/2, (spread+1)/2],
    attn softmaxed over P."""
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long).reshape(-1, 2)
    sizes = ss[:, 0] * ss[:, 1]
    starts = torch.cat([ss.new_zeros(1), sizes.cumsum(0)[:-1]])
    L = len(shapes)
    value = torch.randn(B, int(sizes.sum()), M, D, generator=g, dtype=dtype)
    loc = torch.rand(B, Q, M, L, P, 2, generator=g, dtype=dtype) * spread - (spread - 1) / 2
    attn = torch.rand(B, Q, M, L, P, generator=g, dtype=dtype).softmax(-1)
    return tuple(t.to(device) for t in (value, ss, starts, loc, attn))


def naive_msda(value, spatial_shapes, level_start, loc, attn):
    """The equation read literally: 4 corners per sample, pixels outside the map are zero."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = value.new_zeros(B, Q, M, D)
    for b in range(B):
        for q in range(Q):
            for m in range(M):
                for lvl in range(L):
                    h, w = (int(t) for t in spatial_shapes[lvl])
                    start = int(level_start[lvl])
                    for p in range(P):
                        x = float(loc[b, q, m, lvl, p, 0]) * w - 0.5
                        y = float(loc[b, q, m, lvl, p, 1]) * h - 0.5
                        x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
                        fx, fy = x - x0, y - y0
                        for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                                           (1, 1, fy * fx)):
                            yy, xx = y0 + dy, x0 + dx
                            if 0 <= yy < h and 0 <= xx < w:
                                out[b, q, m] += attn[b, q, m, lvl, p] * wt * value[b, start + yy * w + xx, m]
    return out.reshape(B, Q, M * D)


def test_reference_equals_the_literal_bilinear_loop_including_far_outside_and_empty_levels():
    args = make_inputs(spread=3.0, shapes=((4, 6), (0, 5), (2, 3)))
    torch.testing.assert_close(msda_reference(*args), naive_msda(*args), atol=1e-12, rtol=0)


def test_gradcheck_reference_float64():
    value, ss, starts, loc, attn = make_inputs(B=1, Q=3, P=2, spread=0.9)
    for t in (value, loc, attn):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, lo, a: msda_reference(v, ss, starts, lo, a), (value, loc, attn))


def test_pixel_centre_picks_the_pixel_and_far_outside_reads_zero():
    value, ss, starts, loc, attn = make_inputs(B=1, M=1, Q=1, P=1, shapes=((4, 6),))
    i, j = 2, 5
    loc[..., 0], loc[..., 1] = (j + 0.5) / 6, (i + 0.5) / 4
    attn.fill_(1.0)
    torch.testing.assert_close(msda_reference(value, ss, starts, loc, attn)[0, 0], value[0, i * 6 + j, 0])
    for far in (5.0, -3.0, 1e6, -1e6):
        loc.fill_(far)
        assert msda_reference(value, ss, starts, loc, attn).abs().max() == 0


def test_constant_map_gives_the_in_map_fraction_of_the_bilinear_footprint():
    value, ss, starts, loc, attn = make_inputs(B=1, M=1, Q=1, P=1, shapes=((4, 6),))
    value.fill_(1.0)
    attn.fill_(1.0)
    loc[..., 0], loc[..., 1] = 0.25 / 6, 0.5  # x = -0.25 px: the first column carries weight 0.75
    out = msda_reference(value, ss, starts, loc, attn)
    torch.testing.assert_close(out, torch.full_like(out, 0.75))


def test_an_empty_level_contributes_nothing():
    value, ss, starts, loc, attn = make_inputs(shapes=((4, 6), (2, 3)))
    with_empty = ((4, 6), (0, 7), (2, 3))
    loc3 = torch.cat([loc[:, :, :, :1], torch.rand_like(loc[:, :, :, :1]), loc[:, :, :, 1:]], 3)
    attn3 = torch.cat([attn[:, :, :, :1], torch.rand_like(attn[:, :, :, :1]), attn[:, :, :, 1:]], 3)
    torch.testing.assert_close(msda_reference(value, with_empty, None, loc3, attn3),
                               msda_reference(value, ss, starts, loc, attn), atol=1e-12, rtol=0)
    empty_only = msda_reference(value[:, :0], ((0, 3),), None, loc[:, :, :, :1], attn[:, :, :, :1])
    assert empty_only.shape == (2, 5, 6) and empty_only.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_computes_low_precision_in_float32(dtype):
    value, ss, starts, loc, attn = (t.to(dtype) if t.is_floating_point() else t
                                    for t in make_inputs(dtype=torch.float32))
    out = msda_reference(value, ss, starts, loc, attn)
    assert out.dtype == dtype
    exact = msda_reference(value.float(), ss, starts, loc.float(), attn.float())
    torch.testing.assert_close(out, exact.to(dtype), atol=0, rtol=0)


def test_shape_tuple_and_tensor_give_the_same_result_and_errors_are_clear():
    value, ss, starts, loc, attn = make_inputs()
    torch.testing.assert_close(multi_scale_deformable_attn(value, ((4, 6), (2, 3)), None, loc, attn),
                               multi_scale_deformable_attn(value, ss, starts, loc, attn), atol=0, rtol=0)
    with pytest.raises(ValueError, match="known: auto, reference, triton"):
        multi_scale_deformable_attn(value, ss, starts, loc, attn, impl="cuda")
    with pytest.raises(ValueError, match="S=30 rows"):
        msda_reference(value, ((4, 6), (2, 4)), None, loc, attn)
    with pytest.raises(ValueError, match="attention_weights must be"):
        msda_reference(value, ss, starts, loc, attn[..., :1])
    with pytest.raises(ValueError, match="float64"):
        msda_triton(value, ss, starts, loc, attn)


def test_auto_dispatch_uses_the_reference_for_cpu_tensors(monkeypatch):
    import repro_shared.ops.msda as msda

    def boom(*a):
        raise AssertionError("the Triton path must not run on CPU tensors")

    monkeypatch.setattr(msda, "msda_triton", boom)
    args = make_inputs(dtype=torch.float32)
    assert torch.equal(msda.multi_scale_deformable_attn(*args), msda_reference(*args))


# ------------------------------------------------------------------------------------- Triton
TRITON_SCRIPT = r"""
import sys, torch
sys.path.insert(0, {here!r})
from test_msda import make_inputs
from repro_shared.ops.msda import msda_reference, msda_triton

def check(name, args, dtypes=(torch.float32,) * 3, tol=(1e-5, 1e-4), shapes=None, starts="given"):
    v, ss, st, loc, a = args
    v, loc, a = (t.to(d) for t, d in zip((v, loc, a), dtypes))
    ss_arg = ss if shapes is None else shapes
    st_arg = st if starts == "given" else None
    tr = [t.clone().requires_grad_() for t in (v, loc, a)]
    out = msda_triton(tr[0], ss_arg, st_arg, tr[1], tr[2])
    assert out.dtype == v.dtype, (name, out.dtype)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    gt = torch.autograd.grad(out, tr, go)
    rf = [t.detach().float().requires_grad_() for t in (v, loc, a)]   # same rounded inputs, fp32 reference
    ref = msda_reference(rf[0], ss, st, rf[1], rf[2])
    gr = torch.autograd.grad(ref, rf, go.float())
    torch.testing.assert_close(out.float(), ref, atol=tol[0], rtol=tol[0])
    for nm, x, y, t in zip(("value", "loc", "attn"), gt, gr, tr):
        assert x.dtype == t.dtype, (name, nm)
        scale = max(float(y.abs().max()), 1.0)
        torch.testing.assert_close(x.float(), y, atol=tol[1] * scale, rtol=tol[1], msg=lambda m: f"{{name}} grad_{{nm}}: {{m}}")
    print("ok", name)

check("2 levels", make_inputs(B=2, M=2, D=5, Q=37, P=3, dtype=torch.float32, seed=3, spread=1.6))
check("3 levels, D=32", make_inputs(B=1, M=3, D=32, Q=40, P=2, shapes=((5, 7), (3, 4), (1, 2)), dtype=torch.float32))
far = make_inputs(B=1, M=2, D=4, Q=33, P=4, dtype=torch.float32, seed=4, spread=9.0)
far[3][0, :5] = 1e6
far[3][0, 5:9] = -1e6
check("far outside [-4, 5] and +-1e6", far)
check("empty level, tuple shapes, starts derived", make_inputs(B=2, M=2, D=8, Q=20, P=2, shapes=((4, 6), (0, 5), (2, 3)),
      dtype=torch.float32, seed=5), shapes=((4, 6), (0, 5), (2, 3)), starts=None)
for dt, tol in ((torch.float16, (4e-3, 1e-2)), (torch.bfloat16, (3e-2, 5e-2))):
    check(f"{{dt}}", make_inputs(B=1, M=2, D=16, Q=35, P=3, dtype=torch.float32, seed=6), (dt,) * 3, tol)
check("fp16 value, fp32 loc/attn", make_inputs(B=1, M=2, D=16, Q=35, P=3, dtype=torch.float32, seed=7),
      (torch.float16, torch.float32, torch.float32), (4e-3, 1e-2))
print("TRITON_OK")
"""


def test_triton_kernels_match_the_reference_under_the_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT.format(here=HERE)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert "TRITON_OK" in res.stdout, res.stdout + res.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_the_reference_on_cuda(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    v, ss, st, loc, a = make_inputs(B=2, M=8, D=32, Q=900, P=4, shapes=((50, 50), (25, 25), (13, 13), (0, 4)),
                                    dtype=torch.float32, spread=1.3, device="cuda")
    tr = [t.to(dtype).requires_grad_() for t in (v, loc, a)]
    out = multi_scale_deformable_attn(tr[0], ss, st, tr[1], tr[2])  # auto -> Triton on CUDA
    go = torch.randn_like(out)
    gt = torch.autograd.grad(out, tr, go)
    rf = [t.detach().float().requires_grad_() for t in tr]
    ref = msda_reference(rf[0], ss, st, rf[1], rf[2])
    gr = torch.autograd.grad(ref, rf, go.float())
    tol = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    for x, y in zip(gt, gr):
        torch.testing.assert_close(x.float(), y, atol=10 * tol * max(float(y.abs().max()), 1.0), rtol=10 * tol)
