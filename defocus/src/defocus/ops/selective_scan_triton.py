"""Triton selective scan (forward and backward kernels), same signature as ``selective_scan_ref``.

One program per (batch, block of BLOCK_E channels) walks the sequence with the (BLOCK_E, N) state in
registers (spec §10). The backward recomputes the states into a transient (b, E, L, N) buffer and then
walks the sequence in reverse:

    g_t  = dL/dh_t = C_t dy_t + a_{t+1} g_{t+1}      (g_{L-1} also receives d last_state)
    du_t = delta_t * sum_n g_t B_t ;  d delta_t = u_t * sum_n g_t B_t + sum_n g_t h_{t-1} a_t A
    dB_t = sum_e g_t delta_t u_t ;     dC_t = sum_e dy_t h_t ;  dA = sum_t g_t h_{t-1} a_t delta_t

dB/dC are reduced over channel blocks and dA over the batch in PyTorch (per-program partial sums, no
atomics, so results are deterministic). The kernels compute in float32. On CPU tensors the kernels run
under the Triton interpreter (``TRITON_INTERPRET=1`` set before this module is imported); D, z,
delta_bias and softplus are applied in PyTorch around the core kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .selective_scan import _compute_dtype, _epilogue, _prepare_delta, check_scan_inputs

__all__ = ["selective_scan_triton"]


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, y_ptr, last_ptr, states_ptr,
    E, L, N,
    STORE_STATES: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    me = e < E
    mn = n < N
    men = me[:, None] & mn[None, :]
    A = tl.load(A_ptr + e[:, None] * N + n[None, :], mask=men, other=0.0)
    row = (pid_b * E + e) * L  # offset of (b, e, 0) in a (b, E, L) tensor
    col = pid_b * N * L + n * L  # offset of (b, n, 0) in a (b, N, L) tensor
    h = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for t in range(0, L):
        u = tl.load(u_ptr + row + t, mask=me, other=0.0)
        d = tl.load(delta_ptr + row + t, mask=me, other=0.0)
        Bt = tl.load(B_ptr + col + t, mask=mn, other=0.0)
        Ct = tl.load(C_ptr + col + t, mask=mn, other=0.0)
        a = tl.exp(d[:, None] * A)
        h = a * h + (d * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        tl.store(y_ptr + row + t, y, mask=me)
        if STORE_STATES:
            tl.store(states_ptr + (row[:, None] + t) * N + n[None, :], h, mask=men)
    tl.store(last_ptr + (pid_b * E + e[:, None]) * N + n[None, :], h, mask=men)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, dy_ptr, dlast_ptr, states_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr,
    E, L, N, NUM_EB,
    HAS_DLAST: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    me = e < E
    mn = n < N
    men = me[:, None] & mn[None, :]
    A = tl.load(A_ptr + e[:, None] * N + n[None, :], mask=men, other=0.0)
    row = (pid_b * E + e) * L
    col = pid_b * N * L + n * L
    part = ((pid_b * NUM_EB + pid_e) * N + n) * L  # (b, NUM_EB, N, L) partial sums for dB, dC
    if HAS_DLAST:
        g_carry = tl.load(dlast_ptr + (pid_b * E + e[:, None]) * N + n[None, :], mask=men, other=0.0)
    else:
        g_carry = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for i in range(0, L):
        t = L - 1 - i
        u = tl.load(u_ptr + row + t, mask=me, other=0.0)
        d = tl.load(delta_ptr + row + t, mask=me, other=0.0)
        dy = tl.load(dy_ptr + row + t, mask=me, other=0.0)
        Bt = tl.load(B_ptr + col + t, mask=mn, other=0.0)
        Ct = tl.load(C_ptr + col + t, mask=mn, other=0.0)
        h_t = tl.load(states_ptr + (row[:, None] + t) * N + n[None, :], mask=men, other=0.0)
        t_prev = tl.maximum(t - 1, 0)
        has_prev = (t > 0).to(tl.float32)
        h_prev = tl.load(states_ptr + (row[:, None] + t_prev) * N + n[None, :], mask=men, other=0.0) * has_prev
        a = tl.exp(d[:, None] * A)
        g = g_carry + Ct[None, :] * dy[:, None]
        gB = tl.sum(g * Bt[None, :], axis=1)
        da = g * h_prev * a  # dL/d(delta*A) through the decay
        tl.store(du_ptr + row + t, gB * d, mask=me)
        tl.store(ddelta_ptr + row + t, gB * u + tl.sum(da * A, axis=1), mask=me)
        tl.store(dB_ptr + part + t, tl.sum(g * (d * u)[:, None], axis=0), mask=mn)
        tl.store(dC_ptr + part + t, tl.sum(h_t * dy[:, None], axis=0), mask=mn)
        dA_acc += da * d[:, None]
        g_carry = a * g
    tl.store(dA_ptr + (pid_b * E + e[:, None]) * N + n[None, :], dA_acc, mask=men)


def _blocks(E: int, N: int) -> tuple[int, int]:
    return min(64, triton.next_power_of_2(E)), triton.next_power_of_2(N)


def _launch_fwd(u, delta, A, B, C, store_states: bool):
    bsz, E, L = u.shape
    N = A.shape[1]
    BLOCK_E, BLOCK_N = _blocks(E, N)
    y = torch.empty_like(u)
    last = torch.empty(bsz, E, N, dtype=torch.float32, device=u.device)
    states = torch.empty(bsz, E, L, N, dtype=torch.float32, device=u.device) if store_states else y
    grid = (bsz, triton.cdiv(E, BLOCK_E))
    _scan_fwd_kernel[grid](u, delta, A, B, C, y, last, states, E, L, N,
                           STORE_STATES=store_states, BLOCK_E=BLOCK_E, BLOCK_N=BLOCK_N)
    return y, last, states


class _SelectiveScanCore(torch.autograd.Function):
    """(u, delta, A, B, C) -> (y, last_state), all float32 contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        y, last, _ = _launch_fwd(u, delta, A, B, C, store_states=False)
        ctx.save_for_backward(u, delta, A, B, C)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C = ctx.saved_tensors
        bsz, E, L = u.shape
        N = A.shape[1]
        BLOCK_E, BLOCK_N = _blocks(E, N)
        num_eb = triton.cdiv(E, BLOCK_E)
        _, _, states = _launch_fwd(u, delta, A, B, C, store_states=True)
        dy = torch.zeros_like(u) if dy is None else dy.float().contiguous()
        has_dlast = dlast is not None
        dlast = dlast.float().contiguous() if has_dlast else dy
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dA_part = torch.empty(bsz, E, N, dtype=torch.float32, device=u.device)
        dB_part = torch.empty(bsz, num_eb, N, L, dtype=torch.float32, device=u.device)
        dC_part = torch.empty_like(dB_part)
        _scan_bwd_kernel[(bsz, num_eb)](
            u, delta, A, B, C, dy, dlast, states, du, ddelta, dA_part, dB_part, dC_part,
            E, L, N, num_eb, HAS_DLAST=has_dlast, BLOCK_E=BLOCK_E, BLOCK_N=BLOCK_N,
        )
        return du, ddelta, dA_part.sum(0), dB_part.sum(1), dC_part.sum(1)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Triton selective scan; see :func:`defocus.ops.selective_scan.selective_scan_ref` for semantics."""
    check_scan_inputs(u, delta, A, B, C)
    dtype = _compute_dtype(u)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, torch.float32)

    def f32(t: Tensor) -> Tensor:
        return t.float().contiguous()

    y, last = _SelectiveScanCore.apply(f32(u), f32(delta), f32(A), f32(B), f32(C))
    out = _epilogue(y.to(dtype), u, D, z, dtype).to(u.dtype)
    return (out, last.to(dtype)) if return_last_state else out
