"""Ops that more than one paper package needs, each with a readable PyTorch reference and a fast kernel.

- :mod:`repro_shared.ops.msda`: multi-scale deformable attention (Deformable DETR, BEVFormer), the
  ``grid_sample`` reference (CPU path, ground truth) and a Triton forward/backward dispatched on CUDA.
"""

from .msda import msda_reference, msda_triton, multi_scale_deformable_attn, triton_available

__all__ = ["msda_reference", "msda_triton", "multi_scale_deformable_attn", "triton_available"]
