"""Triton kernels of the DCNv3 core (imported lazily by :mod:`m3i.ops.dcnv3`).

Layouts (all contiguous, channels last): input ``(N, H, W, G, Cg)``; offset ``(N, Ho, Wo, G, P, 2)``; mask
``(N, Ho, Wo, G, P)``; out / grad_out ``(N, Ho, Wo, G, Cg)``. The sampling position of every point is computed
in the kernel from the offsets (the equation of :mod:`m3i.ops.dcnv3_common`, CUDA padding convention), so
neither a padded input nor a table of positions is materialised.

Forward: one program per (block of ``BLOCK_Q`` output pixels, group ``g``, image ``n``). It loops over the
``P`` points (a run-time loop), gathers the 4 bilinear corners of each sample as ``Cg``-vectors (contiguous in
memory) and accumulates ``m * sample`` in fp32 registers.

Backward: same grid. ``grad_mask = <sample, grad_out>`` and ``grad_offset = os * m * <d sample / d(x, y),
grad_out>`` are written directly (each point belongs to one program); ``grad_input`` is scattered with fp32
atomic adds of ``Cg``-rows (relaxed ordering: only the sum matters, and the kernel boundary orders it before
any reader).

Sizes are not specialised (``do_not_specialize``): each kernel compiles once per (BLOCK_Q, BLOCK_C, dtypes,
kernel geometry), not once per feature-map size. Positions are clamped to ``[-2, size + 1]`` before the
integer conversion, which changes nothing (every corner of such a sample is outside the map) but keeps
offsets of any magnitude from overflowing. ``TRITON_INTERPRET=1`` before the first import runs the kernels on
CPU tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_DNS = ["H", "W", "G", "Cg", "Ho", "Wo", "P"]


@triton.jit
def _corner(inp_ptr, n, yy, xx, H, W, G, Cg, g, offs_c, mask_q, mask_c):
    """Input rows ``(BLOCK_Q, BLOCK_C)`` at integer pixel ``(yy, xx)`` (zeros outside), validity, offsets."""
    ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & mask_q
    pix = tl.where(ok, (n * H + yy) * W + xx, 0)
    offs = (pix[:, None] * G + g) * Cg + offs_c[None, :]
    return tl.load(inp_ptr + offs, mask=ok[:, None] & mask_c[None, :], other=0.0).to(tl.float32), ok, offs


@triton.jit
def _position(off_ptr, idx, mask_q, base_x, base_y, gx, gy, OS, H, W):
    """Sample position in pixels, split into the integer corner and the fractions ``(fx, fy, x0, y0)``."""
    dx = tl.load(off_ptr + 2 * idx, mask=mask_q, other=0.0).to(tl.float32)
    dy = tl.load(off_ptr + 2 * idx + 1, mask=mask_q, other=0.0).to(tl.float32)
    x = base_x + OS * (gx + dx)
    y = base_y + OS * (gy + dy)
    x = tl.minimum(tl.maximum(x, -2.0), W + 1.0)
    y = tl.minimum(tl.maximum(y, -2.0), H + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return x - x0f, y - y0f, x0f.to(tl.int32), y0f.to(tl.int32)


@triton.jit
def _point(p, P, KH, DH, DW, CH, CW, RC):
    """Fixed kernel offset ``(gx, gy)`` of point ``p`` (x-major, the centre skipped when ``RC``)."""
    kp = p + tl.where(p >= P // 2, RC, 0)
    i = kp // KH
    j = kp % KH
    return (i * DW - CW).to(tl.float32), (j * DH - CH).to(tl.float32)


@triton.jit(do_not_specialize=_DNS)
def _dcnv3_fwd(inp_ptr, off_ptr, msk_ptr, out_ptr, H, W, G, Cg, Ho, Wo, P, KH, SH, SW, PH, PW, DH, DW, CH, CW,
               RC, OS, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_q = tl.program_id(0)
    g = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    Q = Ho * Wo
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = tl.arange(0, BLOCK_C)
    mask_q = offs_q < Q
    mask_c = offs_c < Cg
    base_x = (CW - PW + (offs_q % Wo) * SW).to(tl.float32)
    base_y = (CH - PH + (offs_q // Wo) * SH).to(tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
    for p in range(P):
        gx, gy = _point(p, P, KH, DH, DW, CH, CW, RC)
        idx = ((n * Q + offs_q) * G + g) * P + p
        fx, fy, x0, y0 = _position(off_ptr, idx, mask_q, base_x, base_y, gx, gy, OS, H, W)
        m = tl.load(msk_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
        v00, _, _ = _corner(inp_ptr, n, y0, x0, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v01, _, _ = _corner(inp_ptr, n, y0, x0 + 1, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v10, _, _ = _corner(inp_ptr, n, y0 + 1, x0, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v11, _, _ = _corner(inp_ptr, n, y0 + 1, x0 + 1, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        s = ((1 - fy) * (1 - fx))[:, None] * v00 + ((1 - fy) * fx)[:, None] * v01 \
            + (fy * (1 - fx))[:, None] * v10 + (fy * fx)[:, None] * v11
        acc += m[:, None] * s
    out_offs = ((n * Q + offs_q[:, None]) * G + g) * Cg + offs_c[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_q[:, None] & mask_c[None, :])


@triton.jit(do_not_specialize=_DNS)
def _dcnv3_bwd(inp_ptr, off_ptr, msk_ptr, gout_ptr, ginp_ptr, goff_ptr, gmsk_ptr, H, W, G, Cg, Ho, Wo, P, KH, SH,
               SW, PH, PW, DH, DW, CH, CW, RC, OS, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_q = tl.program_id(0)
    g = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    Q = Ho * Wo
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = tl.arange(0, BLOCK_C)
    mask_q = offs_q < Q
    mask_c = offs_c < Cg
    base_x = (CW - PW + (offs_q % Wo) * SW).to(tl.float32)
    base_y = (CH - PH + (offs_q // Wo) * SH).to(tl.float32)
    go = tl.load(gout_ptr + ((n * Q + offs_q[:, None]) * G + g) * Cg + offs_c[None, :],
                 mask=mask_q[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    mc = mask_c[None, :]
    for p in range(P):
        gx, gy = _point(p, P, KH, DH, DW, CH, CW, RC)
        idx = ((n * Q + offs_q) * G + g) * P + p
        fx, fy, x0, y0 = _position(off_ptr, idx, mask_q, base_x, base_y, gx, gy, OS, H, W)
        m = tl.load(msk_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
        v00, ok00, o00 = _corner(inp_ptr, n, y0, x0, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v01, ok01, o01 = _corner(inp_ptr, n, y0, x0 + 1, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v10, ok10, o10 = _corner(inp_ptr, n, y0 + 1, x0, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        v11, ok11, o11 = _corner(inp_ptr, n, y0 + 1, x0 + 1, H, W, G, Cg, g, offs_c, mask_q, mask_c)
        w00 = (1 - fy) * (1 - fx)
        w01 = (1 - fy) * fx
        w10 = fy * (1 - fx)
        w11 = fy * fx
        s = w00[:, None] * v00 + w01[:, None] * v01 + w10[:, None] * v10 + w11[:, None] * v11
        tl.store(gmsk_ptr + idx, tl.sum(s * go, axis=1), mask=mask_q)
        gm = m[:, None] * go
        dsx = (1 - fy)[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
        dsy = (1 - fx)[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
        tl.store(goff_ptr + 2 * idx, OS * tl.sum(dsx * gm, axis=1), mask=mask_q)
        tl.store(goff_ptr + 2 * idx + 1, OS * tl.sum(dsy * gm, axis=1), mask=mask_q)
        tl.atomic_add(ginp_ptr + o00, w00[:, None] * gm, mask=ok00[:, None] & mc, sem="relaxed")
        tl.atomic_add(ginp_ptr + o01, w01[:, None] * gm, mask=ok01[:, None] & mc, sem="relaxed")
        tl.atomic_add(ginp_ptr + o10, w10[:, None] * gm, mask=ok10[:, None] & mc, sem="relaxed")
        tl.atomic_add(ginp_ptr + o11, w11[:, None] * gm, mask=ok11[:, None] & mc, sem="relaxed")


def _blocks(cg: int) -> tuple[int, int]:
    block_c = triton.next_power_of_2(max(cg, 1))
    return max(16, min(128, 2048 // block_c)), block_c


def _geometry_args(geo) -> tuple:
    (cy, cx), (py, px) = geo.centre, geo.pads
    return (geo.kernel_h, geo.stride_h, geo.stride_w, py, px, geo.dilation_h, geo.dilation_w, cy, cx,
            int(bool(geo.remove_center)), float(geo.offset_scale))


def forward(inp: torch.Tensor, off: torch.Tensor, msk: torch.Tensor, geo, ho: int, wo: int) -> torch.Tensor:
    """Contiguous ``(N, H, W, C)``, offsets, masks -> ``(N, Ho, Wo, C)`` in ``inp.dtype`` (fp32 accumulation)."""
    n, h, w, c = inp.shape
    g, cg, p = geo.group, geo.group_channels, geo.points
    out = torch.empty(n, ho, wo, c, device=inp.device, dtype=inp.dtype)
    if out.numel() == 0:
        return out.zero_()
    block_q, block_c = _blocks(cg)
    _dcnv3_fwd[(triton.cdiv(ho * wo, block_q), g, n)](inp, off, msk, out, h, w, g, cg, ho, wo, p,
                                                      *_geometry_args(geo), BLOCK_Q=block_q, BLOCK_C=block_c)
    return out


def backward(inp: torch.Tensor, off: torch.Tensor, msk: torch.Tensor, grad_out: torch.Tensor, geo, ho: int,
             wo: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> ``grad_input``, ``grad_offset``, ``grad_mask``, all float32."""
    n, h, w, c = inp.shape
    g, cg, p = geo.group, geo.group_channels, geo.points
    ginp = torch.zeros(inp.shape, device=inp.device, dtype=torch.float32)
    goff = torch.zeros(off.shape, device=inp.device, dtype=torch.float32)
    gmsk = torch.zeros(msk.shape, device=inp.device, dtype=torch.float32)
    if gmsk.numel() == 0:
        return ginp, goff, gmsk
    block_q, block_c = _blocks(cg)
    _dcnv3_bwd[(triton.cdiv(ho * wo, block_q), g, n)](inp, off, msk, grad_out, ginp, goff, gmsk, h, w, g, cg, ho,
                                                      wo, p, *_geometry_args(geo), BLOCK_Q=block_q,
                                                      BLOCK_C=block_c)
    return ginp, goff, gmsk
