"""DCNv3 core: one signature (the official ``dcnv3_core_pytorch`` argument list), two implementations.

- :func:`m3i.ops.dcnv3_torch.dcnv3_reference`: ``F.grid_sample``, differentiable by autograd; the CPU path
  and the ground truth.
- :func:`dcnv3_triton`: fused Triton kernels, forward and backward (:mod:`.dcnv3_triton_kernels`); CUDA
  tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
- :func:`dcnv3_core`: dispatch. ``impl="auto"`` takes Triton for CUDA tensors of fp32 / fp16 / bf16 when Triton
  is importable, the reference otherwise.

Both follow the CUDA padding convention when called through :func:`dcnv3_core` with ``swap_pad=False``; the
reference's default ``swap_pad=True`` is the official pure-PyTorch one. With ``pad_h == pad_w`` (every
InternImage model) the two are the same op.
"""

from __future__ import annotations

import functools

import torch

from .dcnv3_common import DCNv3Geometry, check_inputs
from .dcnv3_torch import dcnv3_reference

__all__ = ["IMPLS", "dcnv3_core", "dcnv3_triton", "triton_available"]

IMPLS = ("auto", "reference", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """True when ``triton`` is installed (the fast path's only requirement besides CUDA tensors)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


class _DCNv3Triton(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; saves the contiguous inputs and recomputes in the backward."""

    @staticmethod
    def forward(ctx, inp, off, msk, geo):
        from . import dcnv3_triton_kernels as kernels

        ho, wo = check_inputs(inp, off, msk, geo)
        inp, off, msk = inp.contiguous(), off.contiguous(), msk.contiguous()
        ctx.save_for_backward(inp, off, msk)
        ctx.geo, ctx.size = geo, (ho, wo)
        return kernels.forward(inp, off, msk, geo, ho, wo)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        from . import dcnv3_triton_kernels as kernels

        inp, off, msk = ctx.saved_tensors
        gi, go, gm = kernels.backward(inp, off, msk, grad_out.contiguous(), ctx.geo, *ctx.size)
        return gi.to(inp.dtype), go.to(off.dtype), gm.to(msk.dtype), None


def dcnv3_triton(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
                 stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
                 group: int, group_channels: int, offset_scale: float, remove_center: int = 0) -> torch.Tensor:
    """DCNv3 core by the Triton kernels (CUDA padding convention), fp32 accumulation.

    Inputs may be fp32, fp16 or bf16, each read in its own dtype (the official module casts the mask to the
    input dtype before the call; :class:`m3i.models.dcnv3.DCNv3` does the same).

    Returns:
        ``(N, Ho, Wo, G*Cg)`` in ``input.dtype``.

    Raises:
        ValueError: inconsistent shapes or an unsupported dtype. ImportError: Triton is not installed.
    """
    for name, t in (("input", input), ("offset", offset), ("mask", mask)):
        if t.dtype not in _TRITON_DTYPES:
            raise ValueError(f"the Triton DCNv3 takes float32 / float16 / bfloat16; {name} is {t.dtype} "
                             "(use impl='reference' for float64)")
    if not triton_available():
        raise ImportError("impl='triton' needs the triton package: pip install 'm3i[triton]'")
    geo = DCNv3Geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                        group_channels, float(offset_scale), int(remove_center), swap_pad=False)
    return _DCNv3Triton.apply(input, offset, mask, geo)


def dcnv3_core(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
               stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int,
               group_channels: int, offset_scale: float, remove_center: int = 0, *, impl: str = "auto") -> torch.Tensor:
    """DCNv3 core, ``(N, H, W, G*Cg) -> (N, Ho, Wo, G*Cg)`` (equation in :mod:`.dcnv3_common`).

    Args:
        impl: ``"auto"`` (Triton for CUDA fp32/fp16/bf16 tensors when importable, else the reference),
            ``"reference"`` or ``"triton"``. Both use the CUDA padding convention here.

    Raises:
        ValueError: an unknown ``impl`` (lists the known ones) or inconsistent shapes.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown DCNv3 impl {impl!r}; known: {', '.join(IMPLS)}")
    args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            offset_scale, remove_center)
    use_triton = impl == "triton" or (impl == "auto" and input.is_cuda and triton_available()
                                      and all(t.dtype in _TRITON_DTYPES for t in (input, offset, mask)))
    if use_triton:
        return dcnv3_triton(input, offset, mask, *args)
    return dcnv3_reference(input, offset, mask, *args, swap_pad=False)
