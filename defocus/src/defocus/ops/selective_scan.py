"""Selective-scan dispatch: one signature, four backends (spec §6.1, §10).

| impl | where | what |
|---|---|---|
| ``ref`` | any device | sequential PyTorch reference (:mod:`.selective_scan_torch`) |
| ``chunked`` | any device | two-level chunked PyTorch form (same module) |
| ``cpu`` | CPU | fused C++ kernel (:mod:`.selective_scan_cpu`), compiled on first use |
| ``triton`` | CUDA (or the interpreter) | chunked parallel scan, epilogue fused (:mod:`.selective_scan_triton`) |

Semantics and shapes: :mod:`.scan_common`. The backends import only ``scan_common``; this module imports the
backends (the compiled ones lazily, so that importing the package neither needs Triton nor a compiler).
"""

from __future__ import annotations

from torch import Tensor

from .selective_scan_torch import selective_scan_chunked, selective_scan_ref

__all__ = ["selective_scan", "IMPLS"]

IMPLS = ("auto", "ref", "chunked", "triton", "cpu")


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
    group_size: int = 0,
    impl: str = "auto",
):
    """Run the selective scan with backend ``impl`` (one of :data:`IMPLS`).

    "auto" picks the Triton kernel for CUDA tensors when Triton imports, otherwise the sequential reference:
    on CPU the scan is memory-bound and the chunked form (more elementwise passes over (b, E, L, N) tensors)
    measured slower than the sequential loop (benchmarks/bench_scan.py). "cpu", the fused C++ kernel (>= 10x
    the reference), is opt-in because its first use compiles it (about a minute).

    Raises:
        ValueError: unknown ``impl`` (the known ones are listed) or shapes that do not fit (``check_scan_inputs``).
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, group_size)
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
    raise ValueError(f"selective_scan: unknown impl {impl!r}; use one of {', '.join(repr(i) for i in IMPLS)}")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
