"""Multi-scale deformable attention core (MSDA): Deformable DETR (Zhu et al., ICLR 2021, Eq. 3) and
BEVFormer's spatial / temporal / decoder attention (mmcv ``multi_scale_deformable_attn``).

One signature for every implementation::

    value               (B, S, M, D)        S = sum_l H_l W_l; levels concatenated, each row-major over (y, x)
    spatial_shapes      (L, 2) int tensor on any device, or a sequence of (H_l, W_l)
    level_start_index   (L,) int tensor or sequence: first row of each level in S (None: derived)
    sampling_locations  (B, Q, M, L, P, 2)  normalised (x in [0, 1] across W_l, y across H_l); outside allowed
    attention_weights   (B, Q, M, L, P)     already normalised (softmax over L * P)
    returns             (B, Q, M * D)       channel index m * D + d (head-major), dtype of ``value``

    out[b, q, m] = sum_l sum_p A[b, q, m, l, p] * bilinear(V_l[b, :, :, m], x W_l - 0.5, y H_l - 0.5)

where every integer pixel outside the map reads as zero: exactly ``F.grid_sample(mode='bilinear',
padding_mode='zeros', align_corners=False)`` on grid ``2 loc - 1``, which is the reference below (the
formulation of mmcv's ``multi_scale_deformable_attn_pytorch``; the CUDA op of the official code
computes the same sum in fp32). An empty level (H_l W_l = 0) contributes zero.

Implementations:

- :func:`msda_reference`: per-level ``grid_sample``, differentiable by autograd. The CPU path and the
  ground truth. fp16 / bf16 inputs are computed in fp32 and the result cast back (as the official CUDA
  op's fp16 wrapper does).
- :func:`msda_triton`: fused Triton kernels (:mod:`repro_shared.ops.msda_triton_kernels`), fp32
  accumulation, fp16 / bf16 / fp32 inputs; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
- :func:`multi_scale_deformable_attn`: dispatch. ``impl="auto"`` takes Triton for CUDA tensors of
  fp32 / fp16 / bf16 when Triton is importable, the reference otherwise (CPU, float64).

Host syncs: the Triton path reads the level shapes on the device (none); the reference needs them on the
host, so a CUDA ``spatial_shapes`` tensor costs one device-to-host copy per call there.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["multi_scale_deformable_attn", "msda_reference", "msda_triton", "triton_available", "IMPLS"]

IMPLS = ("auto", "reference", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ShapesLike = torch.Tensor | Sequence[Sequence[int]]


def _shape_list(spatial_shapes: ShapesLike) -> list[tuple[int, int]]:
    """Level shapes as host ints (a device-to-host copy when ``spatial_shapes`` is a CUDA tensor)."""
    rows = spatial_shapes.tolist() if isinstance(spatial_shapes, torch.Tensor) else spatial_shapes
    return [(int(h), int(w)) for h, w in rows]


def _check_shapes(value: torch.Tensor, loc: torch.Tensor, attn: torch.Tensor, num_levels: int | None) -> None:
    """Raise ``ValueError`` naming the tensor whose shape disagrees with the signature."""
    if value.dim() != 4:
        raise ValueError(f"value must be (B, S, M, D), got shape {tuple(value.shape)}")
    B, _, M, _ = value.shape
    if loc.dim() != 6 or loc.shape[-1] != 2 or loc.shape[0] != B or loc.shape[2] != M:
        raise ValueError(f"sampling_locations must be (B={B}, Q, M={M}, L, P, 2), got {tuple(loc.shape)}")
    if tuple(attn.shape) != tuple(loc.shape[:-1]):
        raise ValueError(f"attention_weights must be {tuple(loc.shape[:-1])} (= sampling_locations without the "
                         f"last axis), got {tuple(attn.shape)}")
    if num_levels is not None and loc.shape[3] != num_levels:
        raise ValueError(f"sampling_locations has {loc.shape[3]} levels but spatial_shapes has {num_levels}")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Common dtype of the inputs, at least float32 (fp16 / bf16 are computed in fp32)."""
    dt = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    return torch.promote_types(dt, torch.float32)


def msda_reference(value: torch.Tensor, spatial_shapes: ShapesLike, level_start_index: ShapesLike | None,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """MSDA by per-level ``F.grid_sample`` (the module docstring's equation); autograd gives the backward.

    ``level_start_index`` is not needed here (levels are split by their sizes) and may be None.

    Returns:
        (B, Q, M * D) in ``value.dtype``.

    Raises:
        ValueError: inconsistent shapes, or ``S`` != sum of ``H_l W_l``.
    """
    shapes = _shape_list(spatial_shapes)
    _check_shapes(value, sampling_locations, attention_weights, len(shapes))
    B, S, M, D = value.shape
    Q, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != S:
        raise ValueError(f"value has S={S} rows but the level shapes {shapes} hold {sum(sizes)}")
    ct = _compute_dtype(value, sampling_locations, attention_weights)
    grids = 2.0 * sampling_locations.to(ct) - 1.0
    levels = [lvl for lvl, n in enumerate(sizes) if n > 0]  # an empty level contributes zero
    if not levels or Q == 0:
        return value.new_zeros(B, Q, M * D)
    samples = []
    values = value.to(ct).split(sizes, dim=1)
    for lvl in levels:
        h, w = shapes[lvl]
        v = values[lvl].flatten(2).transpose(1, 2).reshape(B * M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Q, P, 2)
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(samples, dim=-2).flatten(-2)  # (B*M, D, Q, L'*P)
    attn = attention_weights.to(ct)
    if len(levels) < L:
        attn = attn[:, :, :, levels]
    weights = attn.transpose(1, 2).reshape(B * M, 1, Q, len(levels) * P)
    out = (stacked * weights).sum(-1).view(B, M * D, Q)
    return out.transpose(1, 2).contiguous().to(value.dtype)


@functools.cache
def triton_available() -> bool:
    """True when ``triton`` can be imported (the fast path's only requirement besides CUDA tensors)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _int32_table(values: tuple, device: torch.device) -> torch.Tensor:
    """A small int32 table on ``device``, built once per (values, device) instead of once per call."""
    return torch.tensor(values, dtype=torch.int32, device=device)


def _device_tables(spatial_shapes: ShapesLike, level_start_index: ShapesLike | None, device: torch.device):
    """(L, 2) shapes and (L,) starts as int32 on ``device`` without a device-to-host copy."""
    if isinstance(spatial_shapes, torch.Tensor):
        shapes = spatial_shapes.to(device=device, dtype=torch.int32).contiguous()
    else:
        shapes = _int32_table(tuple((int(h), int(w)) for h, w in spatial_shapes), device)
    if level_start_index is None:
        sizes = shapes[:, 0] * shapes[:, 1]
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]).to(torch.int32)
    elif isinstance(level_start_index, torch.Tensor):
        starts = level_start_index.to(device=device, dtype=torch.int32).contiguous()
    else:
        starts = _int32_table(tuple(int(s) for s in level_start_index), device)
    return shapes, starts


class _MSDATriton(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; saves the (contiguous) inputs, recomputes in the backward."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, loc, attn):
        from . import msda_triton_kernels as kernels

        shapes, starts = _device_tables(spatial_shapes, level_start_index, value.device)
        value, loc, attn = value.contiguous(), loc.contiguous(), attn.contiguous()
        out = kernels.forward(value, shapes, starts, loc, attn)
        ctx.save_for_backward(value, shapes, starts, loc, attn)
        B, Q, M, D = out.shape
        return out.view(B, Q, M * D)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        from . import msda_triton_kernels as kernels

        value, shapes, starts, loc, attn = ctx.saved_tensors
        gv, gloc, gattn = kernels.backward(value, shapes, starts, loc, attn, grad_out.contiguous())
        return gv.to(value.dtype), None, None, gloc.to(loc.dtype), gattn.to(attn.dtype)


def msda_triton(value: torch.Tensor, spatial_shapes: ShapesLike, level_start_index: ShapesLike | None,
                sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """MSDA by the fused Triton kernels (forward and backward); fp32 accumulation.

    Inputs may be fp32, fp16 or bf16 (each read in its own dtype); CUDA tensors, or CPU tensors with
    ``TRITON_INTERPRET=1`` set before Triton is first imported. ``S`` is not checked against the level
    shapes when these are a CUDA tensor (that would cost a host sync).

    Returns:
        (B, Q, M * D) in ``value.dtype``.

    Raises:
        ValueError: inconsistent shapes or an unsupported dtype.
        ImportError: Triton is not installed.
    """
    num_levels = None if isinstance(spatial_shapes, torch.Tensor) and spatial_shapes.is_cuda else \
        len(_shape_list(spatial_shapes))
    _check_shapes(value, sampling_locations, attention_weights, num_levels)
    if num_levels is not None:
        total = sum(h * w for h, w in _shape_list(spatial_shapes))
        if total != value.shape[1]:
            raise ValueError(f"value has S={value.shape[1]} rows but the level shapes hold {total}")
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if t.dtype not in _TRITON_DTYPES:
            raise ValueError(f"the Triton MSDA takes float32 / float16 / bfloat16; {name} is {t.dtype} "
                             "(use impl='reference' for float64)")
    if not triton_available():
        raise ImportError("impl='triton' needs the triton package: pip install triton")
    return _MSDATriton.apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def multi_scale_deformable_attn(value: torch.Tensor, spatial_shapes: ShapesLike,
                                level_start_index: ShapesLike | None, sampling_locations: torch.Tensor,
                                attention_weights: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """MSDA with the signature of the module docstring; returns (B, Q, M * D) in ``value.dtype``.

    Args:
        impl: ``"auto"`` (Triton for CUDA fp32 / fp16 / bf16 tensors when Triton is importable, else the
            reference), ``"reference"`` or ``"triton"``.

    Raises:
        ValueError: an unknown ``impl`` (the known ones are listed) or inconsistent shapes.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown MSDA impl {impl!r}; known: {', '.join(IMPLS)}")
    if impl == "auto":
        fast = value.is_cuda and triton_available() and all(
            t.dtype in _TRITON_DTYPES for t in (value, sampling_locations, attention_weights))
        impl = "triton" if fast else "reference"
    fn = msda_triton if impl == "triton" else msda_reference
    return fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
