"""Selective scan in plain PyTorch: the sequential reference and the chunked two-level form (spec §6.1).

Both follow the semantics of :mod:`defocus.ops.scan_common` and compute in float32 (float64 for float64
inputs). The read-out ``y_t = <C_t, h_t>`` is one elementwise multiply-and-sum over the (b, E, L, N) states,
not an einsum: PyTorch lowers that einsum to many tiny batched matrix products, whose threading collapsed
on a shared machine (83 ms -> 14.8 s at E 768, L 1024).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan_common import check_scan_inputs, compute_dtype, epilogue, prepare_delta

__all__ = ["selective_scan_ref", "selective_scan_chunked"]


def _readout(hs: Tensor, C: Tensor) -> Tensor:
    """y[b, e, t] = sum_n hs[b, e, t, n] * C[b, n, t]; hs (b, E, L, N), C (b, N, L) -> (b, E, L)."""
    return (hs * C.transpose(1, 2).unsqueeze(1)).sum(-1)


def selective_scan_ref(
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
    """Exact sequential reference: one recurrence step per token (spec §6.1, form 1).

    Args: see :mod:`defocus.ops.scan_common`. Returns ``out`` (b, E, L) in ``u``'s dtype and, with
    ``return_last_state``, ``h_{L-1}`` (b, E, N) in the compute dtype.

    Uses ``unbind`` over time so the backward does not allocate one full-size gradient per step.
    """
    check_scan_inputs(u, delta, A, B, C, group_size)
    dtype = compute_dtype(u)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    a = torch.exp(delta.unsqueeze(-1) * A.to(dtype)[None, :, None, :])  # (b, E, L, N)
    x = (delta * u.to(dtype)).unsqueeze(-1) * B.to(dtype).transpose(1, 2)[:, None, :, :]
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=dtype, device=u.device)
    states = []
    for a_t, x_t in zip(a.unbind(2), x.unbind(2)):
        h = a_t * h + x_t
        states.append(h)
    y = _readout(torch.stack(states, dim=2), C.to(dtype))
    out = epilogue(y, u, D, z, dtype, group_size).to(u.dtype)
    return (out, h) if return_last_state else out


def _chunk_size_for(L: int) -> int:
    """sqrt(L) balances the within-chunk loop (T steps) and the carry loop (L/T steps)."""
    return max(1, int(math.ceil(math.sqrt(L))))


def selective_scan_chunked(
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
    chunk_size: int | None = None,
):
    """Chunked two-level scan, same result as :func:`selective_scan_ref` (spec §6.1, form 3).

    The sequence is cut into ``nc = ceil(L/T)`` chunks of ``T`` tokens.
    1. Local scan with zero initial state, all chunks at once: a loop over the T positions of a chunk,
       each step on (b, E, nc, N) tensors.
    2. Carry: H_c = P_c * H_{c-1} + hloc_c[T-1], with P_c the product of the chunk's decays, a loop
       over nc chunks on (b, E, N) tensors.
    3. h_t = hloc_t + exp(cumsum_{j<=t} delta_j A) * H_{c-1}; the exponent is a sum of log-decays
       (<= 0), so nothing overflows (no division by a decay anywhere).
    Python loop count is T + nc ~ 2 sqrt(L) instead of L.
    """
    check_scan_inputs(u, delta, A, B, C, group_size)
    dtype = compute_dtype(u)
    bsz, E, L = u.shape
    N = A.shape[1]
    T = chunk_size or _chunk_size_for(L)
    nc = -(-L // T)
    pad = nc * T - L
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    dA = delta.unsqueeze(-1) * A.to(dtype)[None, :, None, :]  # (b, E, L, N), log of the decay
    x = (delta * u.to(dtype)).unsqueeze(-1) * B.to(dtype).transpose(1, 2)[:, None, :, :]
    if pad:
        # padded steps: decay 1 (log 0) and no input, so the state is carried unchanged to the end
        dA = F.pad(dA, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    dA = dA.view(bsz, E, nc, T, N)
    x = x.view(bsz, E, nc, T, N)
    cum = torch.cumsum(dA, dim=3)  # (b, E, nc, T, N)
    a = torch.exp(dA)
    # 1. local scan inside every chunk
    h = torch.zeros(bsz, E, nc, N, dtype=dtype, device=u.device)
    local = []
    for a_t, x_t in zip(a.unbind(3), x.unbind(3)):
        h = a_t * h + x_t
        local.append(h)
    hloc = torch.stack(local, dim=3)  # (b, E, nc, T, N)
    # 2. carry between chunks
    decay_chunk = torch.exp(cum[:, :, :, -1])  # (b, E, nc, N)
    H = torch.zeros(bsz, E, N, dtype=dtype, device=u.device)
    carried = []
    for p_c, last_c in zip(decay_chunk.unbind(2), hloc[:, :, :, -1].unbind(2)):
        carried.append(H)
        H = p_c * H + last_c
    H_in = torch.stack(carried, dim=2)  # (b, E, nc, N): state entering each chunk
    # 3. full states and read-out
    hs = hloc + torch.exp(cum) * H_in.unsqueeze(3)
    y = _readout(hs.view(bsz, E, nc * T, N)[:, :, :L], C.to(dtype))
    out = epilogue(y, u, D, z, dtype, group_size).to(u.dtype)
    return (out, H) if return_last_state else out
