"""MSDA op: reference vs naive loop, gradcheck, properties, Triton (interpreter) vs reference."""
import os
import subprocess
import sys

import pytest
import torch

from bevformer_v2.ops.msda import msda_naive, msda_reference, multi_scale_deformable_attn


def make_inputs(B=2, M=2, D=3, Q=5, P=3, shapes=((4, 6), (2, 3)), dtype=torch.float64, seed=0, spread=1.4):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long)
    starts = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    S = int((ss[:, 0] * ss[:, 1]).sum())
    L = len(shapes)
    value = torch.randn(B, S, M, D, generator=g, dtype=dtype)
    loc = torch.rand(B, Q, M, L, P, 2, generator=g, dtype=dtype) * spread - (spread - 1) / 2
    attn = torch.rand(B, Q, M, L, P, generator=g, dtype=dtype).softmax(-1)
    return value, ss, starts, loc, attn


def test_reference_equals_naive_loop():
    args = make_inputs()
    torch.testing.assert_close(msda_reference(*args), msda_naive(*args), atol=1e-12, rtol=0)


def test_gradcheck_reference():
    value, ss, starts, loc, attn = make_inputs(B=1, Q=3, P=2, spread=0.9)
    value.requires_grad_(); loc.requires_grad_(); attn.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, l, a: msda_reference(v, ss, starts, l, a), (value, loc, attn))


def test_pixel_centre_picks_pixel_and_far_outside_is_zero():
    value, ss, starts, loc, attn = make_inputs(B=1, M=1, Q=1, P=1, shapes=((4, 6),))
    i, j = 2, 5
    loc[..., 0] = (j + 0.5) / 6
    loc[..., 1] = (i + 0.5) / 4
    attn.fill_(1.0)
    out = msda_reference(value, ss, starts, loc, attn)
    torch.testing.assert_close(out[0, 0], value[0, i * 6 + j, 0])
    loc.fill_(5.0)
    assert msda_reference(value, ss, starts, loc, attn).abs().max() == 0


def test_constant_map_gives_inside_footprint_fraction():
    # value == 1 everywhere -> output = sum_p A_p * (bilinear weight mass on in-map pixels)
    value, ss, starts, loc, attn = make_inputs(B=1, M=1, Q=1, P=1, shapes=((4, 6),))
    value.fill_(1.0)
    attn.fill_(1.0)
    loc[..., 0] = 0.25 / 6  # x = -0.25 pixels: left column gets weight 0.75
    loc[..., 1] = 0.5
    out = msda_reference(value, ss, starts, loc, attn)
    torch.testing.assert_close(out, torch.full_like(out, 0.75))


TRITON_SCRIPT = r"""
import torch, sys
sys.path.insert(0, %r)
from test_msda import make_inputs
from bevformer_v2.ops.msda import msda_reference, msda_triton
for shapes, spread in (((4, 6), (2, 3)), 1.6), (((5, 7), (3, 4), (1, 2)), 1.0):
    v, ss, st, loc, a = make_inputs(B=2, M=2, D=5, Q=37, P=3, shapes=shapes, dtype=torch.float32, seed=3, spread=spread)
    tensors = [t.clone().requires_grad_() for t in (v, loc, a)]
    ref = msda_reference(tensors[0], ss, st, tensors[1], tensors[2])
    go = torch.randn_like(ref)
    gr = torch.autograd.grad(ref, tensors, go)
    tt = [t.clone().requires_grad_() for t in (v, loc, a)]
    out = msda_triton(tt[0], ss, st, tt[1], tt[2])
    gt = torch.autograd.grad(out, tt, go)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for x, y in zip(gt, gr):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
print("TRITON_OK")
"""


def test_triton_matches_reference_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT % here], env=env, capture_output=True, text=True,
                         timeout=300)
    assert "TRITON_OK" in res.stdout, res.stdout + res.stderr


@pytest.mark.gpu
def test_triton_matches_reference_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    v, ss, st, loc, a = make_inputs(B=2, M=8, D=32, Q=900, P=4, shapes=((50, 50),), dtype=torch.float32)
    v, ss, st, loc, a = (t.cuda() for t in (v, ss, st, loc, a))
    torch.testing.assert_close(multi_scale_deformable_attn(v, ss, st, loc, a),
                               msda_reference(v, ss, st, loc, a), atol=1e-5, rtol=1e-5)
