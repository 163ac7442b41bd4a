"""Triton selective scan: chunked parallel scan, fused delta prologue and epilogue, bf16/fp16 in and out.

Same signature and semantics as ``selective_scan_ref`` (:mod:`.scan_common`). One program per (batch, block of
``BLOCK_E`` channels) walks the sequence in chunks of ``BLOCK_T`` tokens with the (BLOCK_E, N) state in
registers (fp32 whatever the input dtype). Inside a chunk each state n is a first-order linear recurrence
``h_t = a_t h_{t-1} + x_t`` solved for all T tokens at once by ``tl.associative_scan`` with the operator
``(a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2)``; the chunk's incoming state is added as ``h_t = X_t + A_t h_in``.

Fused in the forward kernel (one read of every input, one write of ``out``; no fp32 copies in HBM):
* prologue: ``delta = softplus(delta + delta_bias)`` in fp32;
* epilogue: head-wise RMS norm over ``group_size`` channels (a block holds whole groups), ``+ D u``,
  ``* silu(z)``, cast to the output dtype.

Backward (no second forward over the sequence): the forward saves the state entering every chunk (b, E, L/T, N)
and the pre-epilogue ``y`` (b, E, L) in fp32. The backward kernel walks the chunks in reverse; per chunk it
undoes the epilogue (RMS-norm / gate / D gradients), recomputes the chunk's states from the saved boundary state
with one forward scan, and solves the adjoint recurrence with one reverse scan:

    g_t = C_t dy_t + a_{t+1} g_{t+1}          (g at the chunk end receives the next chunk's a g, or d last_state)
    du_t = delta_t <g_t, B_t> ;  d delta_t = u_t <g_t, B_t> + <g_t a_t h_{t-1}, A>,  a_t h_{t-1} = h_t - x_t
    dA = sum_t g_t a_t h_{t-1} delta_t ;  dB_t = sum_e g_t delta_t u_t ;  dC_t = sum_e dy_t h_t

then chains through the softplus and the delta bias. dB/dC/dA/dD/d bias are written as per-program partial sums
and reduced in PyTorch (no atomics: deterministic). On CPU tensors the kernels run under the Triton
interpreter (``TRITON_INTERPRET=1`` set before this module is imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .scan_common import GROUP_NORM_EPS, check_scan_inputs, compute_dtype, epilogue

__all__ = ["selective_scan_triton", "fuses_epilogue"]

MAX_FUSED_GROUP = 128  # largest head-wise norm group a program holds (BLOCK_E = max(group, min(64, E)))


@triton.jit
def _combine(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _column(tile, n_idx, n):
    """tile[:, n] of a (BLOCK_E, BLOCK_N) register tile."""
    return tl.sum(tl.where(n_idx[None, :] == n, tile, 0.0), axis=1)


@triton.jit
def _delta(dt_raw, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """softplus(dt + bias) in fp32 (torch's threshold 20); returns (delta, pre-softplus value)."""
    pre = dt_raw
    if HAS_BIAS:
        pre = pre + bias[:, None]
    delta = pre
    if SOFTPLUS:  # log1p(exp(pre)) without a log1p: log(1 + x) * x / ((1 + x) - 1) is accurate for small x
        x = tl.exp(tl.minimum(pre, 20.0))
        one_x = 1.0 + x
        log1p = tl.where(one_x == 1.0, x, tl.log(one_x) * x / (one_x - 1.0))
        delta = tl.where(pre <= 20.0, log1p, pre)
    return delta, pre


@triton.jit
def _group_rms(y, GROUP: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr, EPS: tl.constexpr):
    """(BLOCK_E, BLOCK_T) -> rsqrt(mean over each GROUP of channels of y^2 + eps), broadcast back to the tile."""
    y3 = tl.reshape(y, (BLOCK_E // GROUP, GROUP, BLOCK_T))
    r = 1.0 / tl.sqrt(tl.sum(y3 * y3, axis=1) / GROUP + EPS)
    return tl.reshape(tl.broadcast_to(r[:, None, :], (BLOCK_E // GROUP, GROUP, BLOCK_T)), (BLOCK_E, BLOCK_T))


@triton.jit
def _group_mean(v, GROUP: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr):
    v3 = tl.reshape(v, (BLOCK_E // GROUP, GROUP, BLOCK_T))
    m = tl.sum(v3, axis=1) / GROUP
    return tl.reshape(tl.broadcast_to(m[:, None, :], (BLOCK_E // GROUP, GROUP, BLOCK_T)), (BLOCK_E, BLOCK_T))


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, y_ptr, states_ptr, last_ptr,
    E, L, N, NC,
    s_ub, s_ue, s_ut, s_db, s_de, s_dt, s_Bb, s_Bn, s_Bt, s_Cb, s_Cn, s_Ct, s_zb, s_ze, s_zt,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    GROUP: tl.constexpr, SAVE: tl.constexpr, EPS: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_b = tl.program_id(0)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    n_idx = tl.arange(0, BLOCK_N)
    tl_idx = tl.arange(0, BLOCK_T)
    me = e < E
    men = me[:, None] & (n_idx[None, :] < N)
    bias = tl.zeros((BLOCK_E,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)
    Dv = tl.zeros((BLOCK_E,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + e, mask=me, other=0.0).to(tl.float32)
    h = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for c in range(0, NC):
        t = c * BLOCK_T + tl_idx
        mt = t < L
        m2 = me[:, None] & mt[None, :]
        if SAVE:  # state entering chunk c: (b, E, NC, N)
            tl.store(states_ptr + ((pid_b * E + e[:, None]) * NC + c) * N + n_idx[None, :], h, mask=men)
        u = tl.load(u_ptr + pid_b * s_ub + e[:, None] * s_ue + t[None, :] * s_ut, mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + pid_b * s_db + e[:, None] * s_de + t[None, :] * s_dt, mask=m2, other=0.0).to(tl.float32)
        delta, _ = _delta(dt, bias, HAS_BIAS, SOFTPLUS)
        delta = tl.where(m2, delta, 0.0)  # padding: a = 1, x = 0 carries the state unchanged
        du = delta * u
        y = tl.zeros((BLOCK_E, BLOCK_T), dtype=tl.float32)
        for n in range(0, N):
            A_n = tl.load(A_ptr + e * N + n, mask=me, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + pid_b * s_Bb + n * s_Bn + t * s_Bt, mask=mt, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + pid_b * s_Cb + n * s_Cn + t * s_Ct, mask=mt, other=0.0).to(tl.float32)
            a_s, x_s = tl.associative_scan((tl.exp(delta * A_n[:, None]), du * B_n[None, :]), axis=1,
                                           combine_fn=_combine)
            hs = x_s + a_s * _column(h, n_idx, n)[:, None]
            y += hs * C_n[None, :]
            h_end = tl.sum(tl.where(tl_idx[None, :] == BLOCK_T - 1, hs, 0.0), axis=1)
            h = tl.where(n_idx[None, :] == n, h_end[:, None], h)
        if SAVE:
            tl.store(y_ptr + (pid_b * E + e[:, None]) * L + t[None, :], y, mask=m2)
        if GROUP > 0:
            y = y * _group_rms(y, GROUP, BLOCK_E, BLOCK_T, EPS)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * s_zb + e[:, None] * s_ze + t[None, :] * s_zt, mask=m2, other=0.0)
            z = z.to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        tl.store(out_ptr + (pid_b * E + e[:, None]) * L + t[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
    tl.store(last_ptr + (pid_b * E + e[:, None]) * N + n_idx[None, :], h, mask=men)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    dout_ptr, y_ptr, states_ptr, dlast_ptr,
    du_ptr, ddt_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    E, L, N, NC, NUM_EB,
    s_ub, s_ue, s_ut, s_db, s_de, s_dt, s_Bb, s_Bn, s_Bt, s_Cb, s_Cn, s_Ct, s_zb, s_ze, s_zt, s_ob, s_oe, s_ot,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    GROUP: tl.constexpr, HAS_DLAST: tl.constexpr, EPS: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n_idx = tl.arange(0, BLOCK_N)
    tl_idx = tl.arange(0, BLOCK_T)
    me = e < E
    men = me[:, None] & (n_idx[None, :] < N)
    bias = tl.zeros((BLOCK_E,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)
    Dv = tl.zeros((BLOCK_E,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + e, mask=me, other=0.0).to(tl.float32)
    if HAS_DLAST:  # W = a_{t+1} g_{t+1} entering the last chunk = d last_state
        W = tl.load(dlast_ptr + (pid_b * E + e[:, None]) * N + n_idx[None, :], mask=men, other=0.0)
    else:
        W = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    part = (pid_b * NUM_EB + pid_e) * N  # row of the (b, NUM_EB, N, L) partial sums of dB, dC
    for i in range(0, NC):
        c = NC - 1 - i
        t = c * BLOCK_T + tl_idx
        mt = t < L
        m2 = me[:, None] & mt[None, :]
        mt1 = (t + 1) < L
        m21 = me[:, None] & mt1[None, :]
        u = tl.load(u_ptr + pid_b * s_ub + e[:, None] * s_ue + t[None, :] * s_ut, mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + pid_b * s_db + e[:, None] * s_de + t[None, :] * s_dt, mask=m2, other=0.0).to(tl.float32)
        delta, pre = _delta(dt, bias, HAS_BIAS, SOFTPLUS)
        delta = tl.where(m2, delta, 0.0)
        dt1 = tl.load(dt_ptr + pid_b * s_db + e[:, None] * s_de + (t[None, :] + 1) * s_dt, mask=m21, other=0.0)
        delta1, _ = _delta(dt1.to(tl.float32), bias, HAS_BIAS, SOFTPLUS)
        delta1 = tl.where(m21, delta1, 0.0)  # delta_{t+1}; a_{t+1} = 1 past the end
        # ---- epilogue backward: out = (norm(y) + D u) * silu(z)
        dout = tl.load(dout_ptr + pid_b * s_ob + e[:, None] * s_oe + t[None, :] * s_ot, mask=m2, other=0.0)
        dpre = dout.to(tl.float32)
        y = tl.load(y_ptr + (pid_b * E + e[:, None]) * L + t[None, :], mask=m2, other=0.0)
        yn = y
        if GROUP > 0:
            r = _group_rms(y, GROUP, BLOCK_E, BLOCK_T, EPS)
            yn = y * r
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * s_zb + e[:, None] * s_ze + t[None, :] * s_zt, mask=m2, other=0.0)
            z = z.to(tl.float32)
            sig = tl.sigmoid(z)
            pre_gate = yn
            if HAS_D:
                pre_gate += Dv[:, None] * u
            tl.store(dz_ptr + (pid_b * E + e[:, None]) * L + t[None, :],
                     (dpre * pre_gate * sig * (1.0 + z * (1.0 - sig))).to(dz_ptr.dtype.element_ty), mask=m2)
            dpre = dpre * z * sig
        du_acc = tl.zeros((BLOCK_E, BLOCK_T), dtype=tl.float32)
        if HAS_D:
            dD_acc += tl.sum(dpre * u, axis=1)
            du_acc += dpre * Dv[:, None]
        dy = dpre
        if GROUP > 0:  # RMS norm without affine: dy = r (dn - n mean_G(dn n))
            dy = r * (dpre - yn * _group_mean(dpre * yn, GROUP, BLOCK_E, BLOCK_T))
        dy = tl.where(m2, dy, 0.0)
        # ---- scan backward for every state n
        ddelta_acc = tl.zeros((BLOCK_E, BLOCK_T), dtype=tl.float32)
        du = delta * u
        for n in range(0, N):
            A_n = tl.load(A_ptr + e * N + n, mask=me, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + pid_b * s_Bb + n * s_Bn + t * s_Bt, mask=mt, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + pid_b * s_Cb + n * s_Cn + t * s_Ct, mask=mt, other=0.0).to(tl.float32)
            h_in = tl.load(states_ptr + ((pid_b * E + e) * NC + c) * N + n, mask=me, other=0.0)
            a = tl.exp(delta * A_n[:, None])
            x = du * B_n[None, :]
            a_s, x_s = tl.associative_scan((a, x), axis=1, combine_fn=_combine)
            hs = x_s + a_s * h_in[:, None]
            coef = tl.where(tl_idx[None, :] == BLOCK_T - 1, 1.0, tl.exp(delta1 * A_n[:, None]))
            p_s, v_s = tl.associative_scan((coef, C_n[None, :] * dy), axis=1, combine_fn=_combine, reverse=True)
            g = v_s + p_s * _column(W, n_idx, n)[:, None]
            gB = g * B_n[None, :]
            du_acc += delta * gB
            da = g * (hs - x)  # g_t a_t h_{t-1}
            ddelta_acc += u * gB + da * A_n[:, None]
            dA_acc = tl.where(n_idx[None, :] == n, dA_acc + tl.sum(da * delta, axis=1)[:, None], dA_acc)
            tl.store(dB_ptr + (part + n) * L + t, tl.sum(g * du, axis=0), mask=mt)
            tl.store(dC_ptr + (part + n) * L + t, tl.sum(hs * dy, axis=0), mask=mt)
            w_first = tl.sum(tl.where(tl_idx[None, :] == 0, a * g, 0.0), axis=1)
            W = tl.where(n_idx[None, :] == n, w_first[:, None], W)
        if SOFTPLUS:
            ddelta_acc = ddelta_acc * tl.sigmoid(pre)
        ddelta_acc = tl.where(m2, ddelta_acc, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddelta_acc, axis=1)
        tl.store(du_ptr + (pid_b * E + e[:, None]) * L + t[None, :], du_acc.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddt_ptr + (pid_b * E + e[:, None]) * L + t[None, :], ddelta_acc.to(ddt_ptr.dtype.element_ty), mask=m2)
    tl.store(dA_ptr + (pid_b * E + e[:, None]) * N + n_idx[None, :], dA_acc, mask=men)
    if HAS_D:
        tl.store(dD_ptr + pid_b * E + e, dD_acc, mask=me)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * E + e, dbias_acc, mask=me)


def fuses_epilogue(group_size: int) -> bool:
    """Whether the kernel can fuse the head-wise norm of ``group_size`` (power of 2, <= 128; 0 = no norm)."""
    return group_size == 0 or (group_size <= MAX_FUSED_GROUP and group_size & (group_size - 1) == 0)


def _config(E: int, N: int, group_size: int) -> dict:
    block_e = max(group_size, min(64, triton.next_power_of_2(E)))
    return dict(BLOCK_E=block_e, BLOCK_N=triton.next_power_of_2(N), BLOCK_T=32, num_warps=8 if block_e >= 64 else 4)


def _strides(t: Tensor | None) -> tuple[int, int, int]:
    return tuple(t.stride()) if t is not None else (0, 0, 0)


class _SelectiveScanFn(torch.autograd.Function):
    """Inputs in their own dtypes and strides; returns (out in u's dtype (b, E, L), last state fp32 (b, E, N))."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, z, bias, softplus: bool, group_size: int, save: bool):
        bsz, E, L = u.shape
        N = A.shape[1]
        cfg = _config(E, N, group_size)
        NC = triton.cdiv(L, cfg["BLOCK_T"])
        dev = u.device
        A32 = A.float().contiguous()
        out = torch.empty(bsz, E, L, dtype=u.dtype, device=dev)
        last = torch.empty(bsz, E, N, dtype=torch.float32, device=dev)
        y = torch.empty(bsz, E, L, dtype=torch.float32, device=dev) if save else last
        states = torch.empty(bsz, E, NC, N, dtype=torch.float32, device=dev) if save else last
        grid = (bsz, triton.cdiv(E, cfg["BLOCK_E"]))
        _scan_fwd_kernel[grid](
            u, dt, A32, B, C, D if D is not None else last, z if z is not None else u,
            bias if bias is not None else last, out, y, states, last, E, L, N, NC,
            *u.stride(), *dt.stride(), *B.stride(), *C.stride(), *_strides(z),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
            GROUP=group_size, SAVE=save, EPS=GROUP_NORM_EPS, **cfg)
        if save:
            ctx.save_for_backward(u, dt, A32, B, C, D, z, bias, y, states)
        ctx.softplus, ctx.group_size, ctx.A_dtype = softplus, group_size, A.dtype
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, dt, A32, B, C, D, z, bias, y, states = ctx.saved_tensors
        bsz, E, L = u.shape
        N = A32.shape[1]
        cfg = _config(E, N, ctx.group_size)
        NC = states.shape[2]
        num_eb = triton.cdiv(E, cfg["BLOCK_E"])
        dev = u.device
        if dout is None:
            dout = torch.zeros_like(u)
        f32 = dict(dtype=torch.float32, device=dev)
        du, ddt = torch.empty(bsz, E, L, dtype=u.dtype, device=dev), torch.empty(bsz, E, L, dtype=dt.dtype, device=dev)
        dz = torch.empty(bsz, E, L, dtype=z.dtype, device=dev) if z is not None else None
        dA_part = torch.empty(bsz, E, N, **f32)
        dD_part, dbias_part = torch.empty(bsz, E, **f32), torch.empty(bsz, E, **f32)
        dB_part, dC_part = torch.empty(bsz, num_eb, N, L, **f32), torch.empty(bsz, num_eb, N, L, **f32)
        dummy = dA_part
        _scan_bwd_kernel[(bsz, num_eb)](
            u, dt, A32, B, C, D if D is not None else dummy, z if z is not None else u,
            bias if bias is not None else dummy, dout, y, states,
            dlast.float().contiguous() if dlast is not None else dummy,
            du, ddt, dz if dz is not None else du, dA_part, dD_part, dbias_part, dB_part, dC_part,
            E, L, N, NC, num_eb,
            *u.stride(), *dt.stride(), *B.stride(), *C.stride(), *_strides(z), *dout.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=ctx.softplus,
            GROUP=ctx.group_size, HAS_DLAST=dlast is not None, EPS=GROUP_NORM_EPS, **cfg)
        dA = dA_part.sum(0).to(ctx.A_dtype)
        dB, dC = dB_part.sum(1).to(B.dtype), dC_part.sum(1).to(C.dtype)
        dD = dD_part.sum(0).to(D.dtype) if D is not None else None
        dbias = dbias_part.sum(0).to(bias.dtype) if bias is not None else None
        return du, ddt, dA, dB, dC, dD, dz, dbias, None, None, None


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
    group_size: int = 0,
):
    """Triton selective scan; semantics of :mod:`defocus.ops.scan_common` (same as ``selective_scan_ref``).

    u, delta, z, B, C may be fp32, bf16 or fp16 with any strides; the state and all arithmetic are fp32; ``out``
    has u's dtype. float64 inputs are computed in fp32 (use ``selective_scan_ref`` for float64 accuracy). A
    ``group_size`` that a program cannot hold (not a power of 2, or > 128) runs the norm in PyTorch afterwards.

    Raises:
        ValueError: shapes that do not fit (``check_scan_inputs``).
    """
    check_scan_inputs(u, delta, A, B, C, group_size)
    in_dtype = u.dtype
    if in_dtype == torch.float64:
        u, delta, B, C, z = (t.float() if t is not None else None for t in (u, delta, B, C, z))
    fused = fuses_epilogue(group_size)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    # save the chunk states / pre-epilogue y only when a backward can follow (not under no_grad / inference)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    out, last = _SelectiveScanFn.apply(u, delta, A, B, C, D if fused else None, z if fused else None, delta_bias,
                                       bool(delta_softplus), group_size if fused else 0, save)
    if not fused:
        out = epilogue(out, u, D, z, torch.float32, group_size).to(u.dtype)
    out = out.to(in_dtype)
    return (out, last.to(compute_dtype(out))) if return_last_state else out
