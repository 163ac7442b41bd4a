"""Triton kernels of multi-scale deformable attention (imported lazily by :mod:`repro_shared.ops.msda`).

Layouts (all contiguous): value (B, S, M, D); loc (B, Q, M, L, P, 2); attn (B, Q, M, L, P);
out / grad_out (B, Q, M, D); shapes (L, 2) int32 = (H_l, W_l); starts (L,) int32.

Forward: one program per (block of BLOCK_Q queries, head m, batch b); it loops over the L levels and
P points (run-time loops), gathers the 4 bilinear corners of each sample as D-vectors and accumulates
``A * sample`` in fp32 registers.

Backward: one program per (query block, head, (batch, level)): the (batch, level) split gives L times
more programs than the forward, so small query counts (the decoder: 900 queries) still fill the GPU.
grad_attn = <sample, grad_out> and grad_loc = A <d sample / d(x, y), grad_out> (W, H) are written
directly (each sample belongs to exactly one program); grad_value is scattered with fp32 atomic adds of
D-contiguous rows (one coalesced 4*D-byte reduction per corner) with *relaxed* memory ordering: Triton's
default ``acq_rel`` adds a fence to every atomic, which the scatter does not need (only the sum matters,
and the kernel boundary orders it before any reader).

No kernel argument that changes with the input size is specialised (``do_not_specialize``) and the
level / point loops are run-time loops: each kernel compiles once per (BLOCK_Q, BLOCK_D, dtypes), not
once per call shape, level count or point count (BEVFormer's SCA, TSA and decoder share one binary).
``TRITON_INTERPRET=1`` before the first import runs the kernels on CPU tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_DNS = ["S", "Q", "M", "D", "L", "P"]


@triton.jit
def _corner(value_ptr, row0, yy, xx, H, W, m, M, D, offs_d, mask_q, mask_d):
    """Value rows (BLOCK_Q, BLOCK_D) at integer pixel (yy, xx) of a level (zeros outside), validity, offsets."""
    ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & mask_q
    row = row0 + tl.where(ok, yy * W + xx, 0)
    offs = (row[:, None] * M + m) * D + offs_d[None, :]
    return tl.load(value_ptr + offs, mask=ok[:, None] & mask_d[None, :], other=0.0).to(tl.float32), ok, offs


@triton.jit
def _pixel_coords(loc_ptr, idx, mask_q, H, W):
    """Sample position in pixels (x = lx W - 0.5, y = ly H - 0.5), clamped to [-2, size + 1] so that the
    integer conversion cannot overflow for locations far outside the map (every corner is then outside)."""
    lx = tl.load(loc_ptr + 2 * idx, mask=mask_q, other=0.0).to(tl.float32)
    ly = tl.load(loc_ptr + 2 * idx + 1, mask=mask_q, other=0.0).to(tl.float32)
    x = tl.minimum(tl.maximum(lx * W - 0.5, -2.0), W + 1.0)
    y = tl.minimum(tl.maximum(ly * H - 0.5, -2.0), H + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return x - x0f, y - y0f, x0f.to(tl.int32), y0f.to(tl.int32)


@triton.jit(do_not_specialize=_DNS)
def _msda_fwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, S, Q, M, D, L, P,
              BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < Q
    mask_d = offs_d < D
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        row0 = b * S + tl.load(starts_ptr + lvl)
        for p in range(P):
            idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
            fx, fy, x0, y0 = _pixel_coords(loc_ptr, idx, mask_q, H, W)
            a = tl.load(attn_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
            v00, _, _ = _corner(value_ptr, row0, y0, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v01, _, _ = _corner(value_ptr, row0, y0, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
            v10, _, _ = _corner(value_ptr, row0, y0 + 1, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v11, _, _ = _corner(value_ptr, row0, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
            s = ((1 - fy) * (1 - fx))[:, None] * v00 + ((1 - fy) * fx)[:, None] * v01 \
                + (fy * (1 - fx))[:, None] * v10 + (fy * fx)[:, None] * v11
            acc += a[:, None] * s
    out_offs = ((b * Q + offs_q[:, None]) * M + m) * D + offs_d[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_q[:, None] & mask_d[None, :])


@triton.jit(do_not_specialize=_DNS)
def _msda_bwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, gout_ptr, gv_ptr, gloc_ptr, gattn_ptr,
              S, Q, M, D, L, P, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    m = tl.program_id(1)
    pid_bl = tl.program_id(2)
    b = (pid_bl // L).to(tl.int64)
    lvl = pid_bl % L
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < Q
    mask_d = offs_d < D
    go = tl.load(gout_ptr + ((b * Q + offs_q[:, None]) * M + m) * D + offs_d[None, :],
                 mask=mask_q[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    H = tl.load(shapes_ptr + 2 * lvl)
    W = tl.load(shapes_ptr + 2 * lvl + 1)
    row0 = b * S + tl.load(starts_ptr + lvl)
    for p in range(P):
        idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
        fx, fy, x0, y0 = _pixel_coords(loc_ptr, idx, mask_q, H, W)
        a = tl.load(attn_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
        v00, o00, p00 = _corner(value_ptr, row0, y0, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
        v01, o01, p01 = _corner(value_ptr, row0, y0, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
        v10, o10, p10 = _corner(value_ptr, row0, y0 + 1, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
        v11, o11, p11 = _corner(value_ptr, row0, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
        w00 = (1 - fy) * (1 - fx)
        w01 = (1 - fy) * fx
        w10 = fy * (1 - fx)
        w11 = fy * fx
        s = w00[:, None] * v00 + w01[:, None] * v01 + w10[:, None] * v10 + w11[:, None] * v11
        tl.store(gattn_ptr + idx, tl.sum(s * go, axis=1), mask=mask_q)
        ga = a[:, None] * go
        dsx = (1 - fy)[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
        dsy = (1 - fx)[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
        tl.store(gloc_ptr + 2 * idx, tl.sum(dsx * ga, axis=1) * W, mask=mask_q)
        tl.store(gloc_ptr + 2 * idx + 1, tl.sum(dsy * ga, axis=1) * H, mask=mask_q)
        md = mask_d[None, :]
        tl.atomic_add(gv_ptr + p00, w00[:, None] * ga, mask=o00[:, None] & md, sem="relaxed")
        tl.atomic_add(gv_ptr + p01, w01[:, None] * ga, mask=o01[:, None] & md, sem="relaxed")
        tl.atomic_add(gv_ptr + p10, w10[:, None] * ga, mask=o10[:, None] & md, sem="relaxed")
        tl.atomic_add(gv_ptr + p11, w11[:, None] * ga, mask=o11[:, None] & md, sem="relaxed")


def _blocks(D: int) -> tuple[int, int]:
    block_d = triton.next_power_of_2(max(D, 1))
    return (32 if block_d <= 64 else 16), block_d


def forward(value: torch.Tensor, shapes: torch.Tensor, starts: torch.Tensor, loc: torch.Tensor,
            attn: torch.Tensor) -> torch.Tensor:
    """Contiguous inputs -> out (B, Q, M, D) in ``value.dtype`` (fp32 accumulation)."""
    B, S, M, D = value.shape
    Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
    out = torch.empty(B, Q, M, D, device=value.device, dtype=value.dtype)
    if out.numel() == 0:
        return out.zero_()
    block_q, block_d = _blocks(D)
    _msda_fwd[(triton.cdiv(Q, block_q), M, B)](value, shapes, starts, loc, attn, out, S, Q, M, D, L, P,
                                               BLOCK_Q=block_q, BLOCK_D=block_d)
    return out


def backward(value: torch.Tensor, shapes: torch.Tensor, starts: torch.Tensor, loc: torch.Tensor,
             attn: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> grad_value (B, S, M, D), grad_loc, grad_attn, all float32."""
    B, S, M, D = value.shape
    Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
    gv = torch.zeros(B, S, M, D, device=value.device, dtype=torch.float32)
    gloc = torch.empty(loc.shape, device=value.device, dtype=torch.float32)
    gattn = torch.empty(attn.shape, device=value.device, dtype=torch.float32)
    if gattn.numel() == 0 or D == 0:
        return gv, gloc.zero_(), gattn.zero_()
    block_q, block_d = _blocks(D)
    _msda_bwd[(triton.cdiv(Q, block_q), M, B * L)](value, shapes, starts, loc, attn, grad_out, gv, gloc, gattn,
                                                   S, Q, M, D, L, P, BLOCK_Q=block_q, BLOCK_D=block_d)
    return gv, gloc, gattn
