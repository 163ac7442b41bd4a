"""Multi-scale deformable attention core (MSDA), spec §6.1.

Shapes (all functions share one signature):
    value           (B, S, M, D)      S = sum_l H_l * W_l, levels concatenated, each row-major over (y, x)
    spatial_shapes  (L, 2) long       (H_l, W_l)
    level_start     (L,) long         first row of each level in S
    loc             (B, Q, M, L, P, 2) normalised (x in [0,1] across W_l, y across H_l); outside allowed
    attn            (B, Q, M, L, P)   already softmaxed
    returns         (B, Q, M * D)     channel index m * D + d (head-major)

out[b,q,m] = sum_l sum_p attn[b,q,m,l,p] * bilinear(V_l[b,:,:,m], x*W_l - 0.5, y*H_l - 0.5)   (spec §6.1)
with every integer pixel outside the map read as zero (= grid_sample, zeros padding, align_corners=False).

Three implementations: ``msda_reference`` (per-level grid_sample, the CPU path and the ground truth),
``msda_naive`` (explicit per-sample bilinear loop, for tests only) and ``msda_triton`` (fused Triton
kernel, forward + backward). ``multi_scale_deformable_attn`` dispatches: Triton on CUDA tensors when
available, the reference otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def msda_reference(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start: torch.Tensor,
                   loc: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """grid_sample formulation of MSDA (spec §6.1); differentiable by autograd. Returns (B, Q, M*D)."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    values = value.split(sizes, dim=1)
    grids = 2.0 * loc - 1.0
    samples = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(B * M, D, int(h), int(w))
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Q, P, 2)
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(samples, dim=-2).flatten(-2)  # (B*M, D, Q, L*P)
    w = attn.transpose(1, 2).reshape(B * M, 1, Q, L * P)
    out = (stacked * w).sum(-1).view(B, M * D, Q)
    return out.transpose(1, 2).contiguous()


def msda_naive(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start: torch.Tensor,
               loc: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Literal per-sample bilinear interpolation loop (slow; tests and benchmarks only). Returns (B, Q, M*D)."""
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
                        x = loc[b, q, m, lvl, p, 0] * w - 0.5
                        y = loc[b, q, m, lvl, p, 1] * h - 0.5
                        x0, y0 = int(torch.floor(x)), int(torch.floor(y))
                        fx, fy = x - x0, y - y0
                        acc = value.new_zeros(D)
                        for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
                            yy, xx = y0 + dy, x0 + dx
                            if 0 <= yy < h and 0 <= xx < w:
                                acc = acc + wt * value[b, start + yy * w + xx, m]
                        out[b, q, m] = out[b, q, m] + attn[b, q, m, lvl, p] * acc
    return out.reshape(B, Q, M * D)


# ----------------------------------------------------------------------------------------------- Triton
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _launch_cfg(Q: int, D: int):
    import triton

    block_d = max(triton.next_power_of_2(D), 2)
    block_q = 32 if block_d <= 64 else 16
    return block_q, block_d


class _MSDATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start, loc, attn):
        B, S, M, D = value.shape
        Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
        value_c, loc_c, attn_c = value.contiguous(), loc.contiguous(), attn.contiguous()
        shapes = spatial_shapes.to(torch.int32).contiguous()
        starts = level_start.to(torch.int32).contiguous()
        out = torch.empty(B, Q, M, D, device=value.device, dtype=torch.float32)
        block_q, block_d = _launch_cfg(Q, D)
        from .msda_triton_kernels import _fwd as fwd
        grid = ((Q + block_q - 1) // block_q, M, B)
        fwd[grid](value_c, shapes, starts, loc_c, attn_c, out, S, Q, M, D,
                  L=L, P=P, BLOCK_Q=block_q, BLOCK_D=block_d)
        ctx.save_for_backward(value_c, shapes, starts, loc_c, attn_c)
        return out.to(value.dtype).view(B, Q, M * D)

    @staticmethod
    def backward(ctx, grad_out):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        B, S, M, D = value.shape
        Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
        gv = torch.zeros(B, S, M, D, device=value.device, dtype=torch.float32)
        gloc = torch.zeros(loc.shape, device=value.device, dtype=torch.float32)
        gattn = torch.zeros(attn.shape, device=value.device, dtype=torch.float32)
        block_q, block_d = _launch_cfg(Q, D)
        from .msda_triton_kernels import _bwd as bwd
        grid = ((Q + block_q - 1) // block_q, M, B)
        bwd[grid](value, shapes, starts, loc, attn, grad_out.contiguous(), gv, gloc, gattn, S, Q, M, D,
                  L=L, P=P, BLOCK_Q=block_q, BLOCK_D=block_d)
        return gv.to(value.dtype), None, None, gloc.to(loc.dtype), gattn.to(attn.dtype)


def msda_triton(value, spatial_shapes, level_start, loc, attn):
    """Fused Triton MSDA (forward + backward with atomic scatter into grad_value). Returns (B, Q, M*D).

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
    """
    return _MSDATriton.apply(value, spatial_shapes, level_start, loc, attn)


def multi_scale_deformable_attn(value, spatial_shapes, level_start, loc, attn, impl: str = "auto"):
    """Dispatch: ``auto`` = Triton on CUDA tensors when Triton is importable, else the grid_sample reference."""
    if impl == "reference" or (impl == "auto" and not (value.is_cuda and triton_available())):
        return msda_reference(value, spatial_shapes, level_start, loc, attn)
    if impl in ("auto", "triton"):
        return msda_triton(value, spatial_shapes, level_start, loc, attn)
    raise ValueError(f"unknown MSDA impl {impl!r}; use 'auto', 'reference' or 'triton'")
