"""Custom ops of m3i: the DCNv3 core of InternImage (PyTorch reference + Triton kernel, one signature)."""

from .dcnv3 import IMPLS, dcnv3_core, dcnv3_triton, triton_available
from .dcnv3_common import DCNv3Geometry
from .dcnv3_torch import dcnv3_reference

__all__ = ["IMPLS", "DCNv3Geometry", "dcnv3_core", "dcnv3_reference", "dcnv3_triton", "triton_available"]
