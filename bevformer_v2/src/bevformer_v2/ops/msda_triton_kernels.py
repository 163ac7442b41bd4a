"""Triton kernels of the MSDA op (spec §6.1 (b)): one program per (query block, head, batch).

Forward: loop over the L*P samples, gather the 4 bilinear corners as D-vectors, accumulate A * sample.
Backward: grad_attn = <sample, grad_out>, grad_loc = A * <d sample/d(x, y), grad_out> * (W, H),
grad_value scattered with atomic adds. Imported lazily by ``msda.py``; ``TRITON_INTERPRET=1`` before the
import runs the kernels on CPU (tests).
"""

import triton
import triton.language as tl


@triton.jit
def _corner(value_ptr, base_row, yy, xx, H, W, m, M, D, offs_d, mask_q, mask_d):
    ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & mask_q
    row = base_row + tl.where(ok, yy * W + xx, 0)
    ptr = value_ptr + (row[:, None] * M + m) * D + offs_d[None, :]
    return tl.load(ptr, mask=ok[:, None] & mask_d[None, :], other=0.0), ok, row

@triton.jit
def _fwd(value_ptr, shapes_ptr, start_ptr, loc_ptr, attn_ptr, out_ptr, S, Q, M, D,
         L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    m = tl.program_id(1)
    b = tl.program_id(2)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < Q
    mask_d = offs_d < D
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in tl.static_range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        base_row = b * S + tl.load(start_ptr + lvl)
        for p in tl.static_range(P):
            idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
            lx = tl.load(loc_ptr + 2 * idx, mask=mask_q, other=0.0).to(tl.float32)
            ly = tl.load(loc_ptr + 2 * idx + 1, mask=mask_q, other=0.0).to(tl.float32)
            a = tl.load(attn_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
            x = tl.minimum(tl.maximum(lx * W - 0.5, -2.0), W + 1.0)
            y = tl.minimum(tl.maximum(ly * H - 0.5, -2.0), H + 1.0)
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            v00, _o, _r = _corner(value_ptr, base_row, y0, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v01, _o, _r = _corner(value_ptr, base_row, y0, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
            v10, _o, _r = _corner(value_ptr, base_row, y0 + 1, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v11, _o, _r = _corner(value_ptr, base_row, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
            s = ((1 - fy) * (1 - fx))[:, None] * v00 + ((1 - fy) * fx)[:, None] * v01 \
                + (fy * (1 - fx))[:, None] * v10 + (fy * fx)[:, None] * v11
            acc += a[:, None] * s
    out_ptr_q = out_ptr + ((b * Q + offs_q[:, None]) * M + m) * D + offs_d[None, :]
    tl.store(out_ptr_q, acc, mask=mask_q[:, None] & mask_d[None, :])

@triton.jit
def _scatter(gv_ptr, row, m, M, D, offs_d, ok, mask_d, contrib):
    ptr = gv_ptr + (row[:, None] * M + m) * D + offs_d[None, :]
    tl.atomic_add(ptr, contrib, mask=ok[:, None] & mask_d[None, :])

@triton.jit
def _bwd(value_ptr, shapes_ptr, start_ptr, loc_ptr, attn_ptr, gout_ptr, gv_ptr, gloc_ptr, gattn_ptr,
         S, Q, M, D, L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    m = tl.program_id(1)
    b = tl.program_id(2)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < Q
    mask_d = offs_d < D
    go = tl.load(gout_ptr + ((b * Q + offs_q[:, None]) * M + m) * D + offs_d[None, :],
                 mask=mask_q[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    for lvl in tl.static_range(L):
        H = tl.load(shapes_ptr + 2 * lvl)
        W = tl.load(shapes_ptr + 2 * lvl + 1)
        base_row = b * S + tl.load(start_ptr + lvl)
        for p in tl.static_range(P):
            idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
            lx = tl.load(loc_ptr + 2 * idx, mask=mask_q, other=0.0).to(tl.float32)
            ly = tl.load(loc_ptr + 2 * idx + 1, mask=mask_q, other=0.0).to(tl.float32)
            a = tl.load(attn_ptr + idx, mask=mask_q, other=0.0).to(tl.float32)
            x = tl.minimum(tl.maximum(lx * W - 0.5, -2.0), W + 1.0)
            y = tl.minimum(tl.maximum(ly * H - 0.5, -2.0), H + 1.0)
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            v00, o00, r00 = _corner(value_ptr, base_row, y0, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v01, o01, r01 = _corner(value_ptr, base_row, y0, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
            v10, o10, r10 = _corner(value_ptr, base_row, y0 + 1, x0, H, W, m, M, D, offs_d, mask_q, mask_d)
            v11, o11, r11 = _corner(value_ptr, base_row, y0 + 1, x0 + 1, H, W, m, M, D, offs_d, mask_q, mask_d)
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
            _scatter(gv_ptr, r00, m, M, D, offs_d, o00, mask_d, w00[:, None] * ga)
            _scatter(gv_ptr, r01, m, M, D, offs_d, o01, mask_d, w01[:, None] * ga)
            _scatter(gv_ptr, r10, m, M, D, offs_d, o10, mask_d, w10[:, None] * ga)
            _scatter(gv_ptr, r11, m, M, D, offs_d, o11, mask_d, w11[:, None] * ga)

