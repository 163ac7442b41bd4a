"""Mamba-1 selective scan: sequential reference, chunked PyTorch form, dispatch.

Semantics follow mamba-ssm v1.2.0 ``selective_scan_fn`` (spec §6.1), which is what the official
De-focus Mamba calls:

    delta <- softplus(delta + delta_bias)           (each step optional)
    a[b,e,t,n] = exp(delta[b,e,t] * A[e,n])          (ZOH for A)
    x[b,e,t,n] = delta[b,e,t] * B[b,n,t] * u[b,e,t]  (Euler for B, as the kernel does)
    h_t = a_t * h_{t-1} + x_t,   h_{-1} = 0          (paper Eq. 2-3)
    y[b,e,t] = sum_n C[b,n,t] * h_t[b,e,n]           (paper Eq. 4)
    out = (y + D[e] * u) * silu(z)

Shapes: ``u, delta, z`` (b, E, L); ``A`` (E, N); ``B, C`` (b, N, L) (one group shared by all E
channels); ``D, delta_bias`` (E,). Returns ``out`` (b, E, L) in ``u``'s dtype and, if asked, the last
state ``h_{L-1}`` (b, E, N) in float32 (float64 for float64 inputs).

All forms compute in float32 (or float64 when the inputs are float64) and share one signature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_chunked", "check_scan_inputs"]


def check_scan_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """Raise a ValueError naming the offending tensor if the shapes do not fit together."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (b, E, L), got shape {tuple(u.shape)}")
    b, E, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"selective_scan: A must be (E={E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (b, N, L):
            raise ValueError(f"selective_scan: {name} must be (b={b}, N={N}, L={L}), got {tuple(t.shape)}")


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _epilogue(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype) -> Tensor:
    """out = (y + D*u) * silu(z), computed in ``dtype``; y (b, E, L)."""
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y


def _discretise(u, delta, A, B, dtype):
    """Return a = exp(delta*A) and x = delta*B*u, both (b, E, L, N)."""
    a = torch.exp(delta.unsqueeze(-1) * A.to(dtype)[None, :, None, :])
    x = (delta * u.to(dtype)).unsqueeze(-1) * B.to(dtype).transpose(1, 2)[:, None, :, :]
    return a, x


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
):
    """Exact sequential reference: one recurrence step per token (spec §6.1, form 1).

    Uses ``unbind`` over time so the backward does not allocate one full-size gradient per step.
    """
    check_scan_inputs(u, delta, A, B, C)
    dtype = _compute_dtype(u)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    a, x = _discretise(u, delta, A, B, dtype)
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=dtype, device=u.device)
    states = []
    for a_t, x_t in zip(a.unbind(2), x.unbind(2)):
        h = a_t * h + x_t
        states.append(h)
    hs = torch.stack(states, dim=2)  # (b, E, L, N)
    y = torch.einsum("beln,bnl->bel", hs, C.to(dtype))
    out = _epilogue(y, u, D, z, dtype).to(u.dtype)
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
    check_scan_inputs(u, delta, A, B, C)
    dtype = _compute_dtype(u)
    bsz, E, L = u.shape
    N = A.shape[1]
    T = chunk_size or _chunk_size_for(L)
    nc = -(-L // T)
    pad = nc * T - L
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
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
    hs = hs.view(bsz, E, nc * T, N)[:, :, :L]
    y = torch.einsum("beln,bnl->bel", hs, C.to(dtype))
    out = _epilogue(y, u, D, z, dtype).to(u.dtype)
    return (out, H) if return_last_state else out


def selective_scan(
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
    impl: str = "auto",
):
    """Dispatch: ``impl`` in {"auto", "ref", "chunked", "triton", "cpu"}.

    "auto" picks the Triton kernel for CUDA tensors when Triton imports, otherwise the sequential
    reference: on CPU the scan is memory-bound, and the chunked form (more elementwise passes over
    (b, E, L, N) tensors) measured slower than the sequential loop (benchmarks/bench_scan.py).
    "cpu" is the fused C++ kernel (about 10x the reference at L = 1024); it is opt-in because its
    first use compiles it (about a minute).
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl == "auto":
        impl = "triton" if (u.is_cuda and _triton_available()) else "ref"
    if impl == "ref":
        return selective_scan_ref(*args)
    if impl == "chunked":
        return selective_scan_chunked(*args)
    if impl == "triton":
        from .selective_scan_triton import selective_scan_triton

        return selective_scan_triton(*args)
    if impl == "cpu":
        from .selective_scan_cpu import selective_scan_cpu

        return selective_scan_cpu(*args)
    raise ValueError(f"selective_scan: unknown impl {impl!r}; use one of 'auto', 'ref', 'chunked', 'triton', 'cpu'")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
