"""Custom ops: the Mamba-1 selective scan (reference, chunked PyTorch, fused C++ on CPU, Triton on GPU)."""

from .selective_scan import selective_scan
from .selective_scan_torch import selective_scan_chunked, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_chunked"]
