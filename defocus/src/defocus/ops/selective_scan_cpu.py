"""Fused CPU selective scan (C++ via ``torch.utils.cpp_extension.load_inline``), same signature as the reference.

The PyTorch forms are memory-bound on CPU: they materialise the (b, E, L, N) decay and input tensors
and walk them with one Python step per token. This kernel keeps the (N,) state of one (batch,
channel) row in registers and fuses discretisation, recurrence and read-out (spec §10), parallel over
(batch, channel) rows with ``at::parallel_for``:

    forward   h = exp(delta_t A) * h + delta_t u_t B_t ;  y_t = <C_t, h>       (paper Eq. 2-4)
    backward  per row, recompute the (L, N) states into a local buffer, then walk back in time:
              g_t = C_t dy_t + a_{t+1} g_{t+1};  du_t = delta_t <g_t, B_t>;
              d delta_t = u_t <g_t, B_t> + <g_t h_{t-1} a_t, A>;  dA += g_t h_{t-1} a_t delta_t
              dB_t = sum_e g_t delta_t u_t, dC_t = sum_e dy_t h_t, accumulated per channel block (no races)
              and summed over the blocks in PyTorch.

Compiled on first use (about a minute; cached under ``TORCH_EXTENSIONS_DIR``). :func:`cpu_kernel_available`
says whether a compiler is present; the dispatcher falls back to the reference otherwise.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .selective_scan import _compute_dtype, _epilogue, _prepare_delta, check_scan_inputs

__all__ = ["selective_scan_cpu", "cpu_kernel_available"]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// u, delta: (b, E, L); A: (E, N); Bt, Ct: (b, L, N). Returns y (b, E, L), last (b, E, N).
std::vector<torch::Tensor> scan_fwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
                                    torch::Tensor Ct) {
  const int64_t b = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1);
  auto y = torch::empty_like(u);
  auto last = torch::zeros({b, E, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_fwd", [&] {
    const scalar_t* pu = u.data_ptr<scalar_t>();
    const scalar_t* pd = delta.data_ptr<scalar_t>();
    const scalar_t* pA = A.data_ptr<scalar_t>();
    const scalar_t* pB = Bt.data_ptr<scalar_t>();
    const scalar_t* pC = Ct.data_ptr<scalar_t>();
    scalar_t* py = y.data_ptr<scalar_t>();
    scalar_t* plast = last.data_ptr<scalar_t>();
    at::parallel_for(0, b * E, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> h(N);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t bi = row / E, e = row % E;
        const scalar_t* Ae = pA + e * N;
        std::fill(h.begin(), h.end(), scalar_t(0));
        for (int64_t t = 0; t < L; ++t) {
          const scalar_t d = pd[row * L + t], du = d * pu[row * L + t];
          const scalar_t* Bv = pB + (bi * L + t) * N;
          const scalar_t* Cv = pC + (bi * L + t) * N;
          scalar_t acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            h[n] = std::exp(d * Ae[n]) * h[n] + du * Bv[n];
            acc += Cv[n] * h[n];
          }
          py[row * L + t] = acc;
        }
        std::copy(h.begin(), h.end(), plast + row * N);
      }
    });
  });
  return {y, last};
}

// Backward. Work items are (batch, channel block); each recomputes the states of its rows into a local
// (L, N) buffer, walks back in time, and accumulates dB/dC into its own partial (b, P, L, N) slice.
// Returns du, ddelta (b, E, L), dA_part (b, E, N), dB_part, dC_part (b, P, L, N).
std::vector<torch::Tensor> scan_bwd(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
                                    torch::Tensor Ct, torch::Tensor dy, torch::Tensor dlast, int64_t P) {
  const int64_t b = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1);
  auto du = torch::empty_like(u);
  auto dd = torch::empty_like(u);
  auto dA = torch::zeros({b, E, N}, u.options());
  auto dB = torch::zeros({b, P, L, N}, u.options());
  auto dC = torch::zeros({b, P, L, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_bwd", [&] {
    const scalar_t* pu = u.data_ptr<scalar_t>();
    const scalar_t* pd = delta.data_ptr<scalar_t>();
    const scalar_t* pA = A.data_ptr<scalar_t>();
    const scalar_t* pB = Bt.data_ptr<scalar_t>();
    const scalar_t* pC = Ct.data_ptr<scalar_t>();
    const scalar_t* pdy = dy.data_ptr<scalar_t>();
    const scalar_t* pdl = dlast.data_ptr<scalar_t>();
    scalar_t* pdu = du.data_ptr<scalar_t>();
    scalar_t* pdd = dd.data_ptr<scalar_t>();
    scalar_t* pdA = dA.data_ptr<scalar_t>();
    scalar_t* pdB = dB.data_ptr<scalar_t>();
    scalar_t* pdC = dC.data_ptr<scalar_t>();
    at::parallel_for(0, b * P, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> hs_buf(L * N), carry_buf(N), a_buf(N), g_buf(N);
      scalar_t* __restrict__ hs = hs_buf.data();
      scalar_t* __restrict__ carry = carry_buf.data();
      scalar_t* __restrict__ a = a_buf.data();
      scalar_t* __restrict__ g = g_buf.data();
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / P, p = item % P;
        scalar_t* __restrict__ dBp = pdB + item * L * N;
        scalar_t* __restrict__ dCp = pdC + item * L * N;
        for (int64_t e = p * E / P; e < (p + 1) * E / P; ++e) {
          const int64_t row = bi * E + e;
          const scalar_t* __restrict__ Ae = pA + e * N;
          scalar_t* __restrict__ dAe = pdA + row * N;
          // recompute the states of this row (t = 0 starts from h = 0)
          {
            const scalar_t du0 = pd[row * L] * pu[row * L];
            for (int64_t n = 0; n < N; ++n) hs[n] = du0 * pB[bi * L * N + n];
          }
          for (int64_t t = 1; t < L; ++t) {
            const scalar_t d = pd[row * L + t], du_ = d * pu[row * L + t];
            const scalar_t* __restrict__ Bv = pB + (bi * L + t) * N;
            const scalar_t* __restrict__ hprev = hs + (t - 1) * N;
            scalar_t* __restrict__ h = hs + t * N;
            for (int64_t n = 0; n < N; ++n) h[n] = std::exp(d * Ae[n]) * hprev[n] + du_ * Bv[n];
          }
          for (int64_t n = 0; n < N; ++n) carry[n] = pdl[row * N + n];
          for (int64_t t = L - 1; t >= 0; --t) {
            const scalar_t d = pd[row * L + t], uu = pu[row * L + t], g_y = pdy[row * L + t], du_ = d * uu;
            const scalar_t* __restrict__ Bv = pB + (bi * L + t) * N;
            const scalar_t* __restrict__ Cv = pC + (bi * L + t) * N;
            const scalar_t* __restrict__ h = hs + t * N;
            scalar_t* __restrict__ dBt = dBp + t * N;
            scalar_t* __restrict__ dCt = dCp + t * N;
            scalar_t gB = 0, gdA = 0;
            for (int64_t n = 0; n < N; ++n) a[n] = std::exp(d * Ae[n]);
            for (int64_t n = 0; n < N; ++n) g[n] = carry[n] + Cv[n] * g_y;
            for (int64_t n = 0; n < N; ++n) {
              gB += g[n] * Bv[n];
              dBt[n] += g[n] * du_;
              dCt[n] += g_y * h[n];
            }
            if (t > 0) {
              const scalar_t* __restrict__ hp = hs + (t - 1) * N;
              for (int64_t n = 0; n < N; ++n) {
                const scalar_t da = g[n] * hp[n] * a[n];
                gdA += da * Ae[n];
                dAe[n] += da * d;
              }
            }
            for (int64_t n = 0; n < N; ++n) carry[n] = a[n] * g[n];
            pdu[row * L + t] = gB * d;
            pdd[row * L + t] = gB * uu + gdA;
          }
        }
      }
    });
  });
  return {du, dd, dA, dB, dC};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scan_fwd", &scan_fwd, "selective scan forward (CPU)");
  m.def("scan_bwd", &scan_bwd, "selective scan backward (CPU)");
}
"""


@functools.lru_cache(maxsize=1)
def _module():
    from torch.utils.cpp_extension import load_inline

    return load_inline(name="defocus_selective_scan_cpu_v3", cpp_sources=[_SOURCE],
                       extra_cflags=["-O3", "-ffast-math", "-march=native", "-fopenmp"],
                       extra_ldflags=["-fopenmp"], with_cuda=False, verbose=False)


@functools.lru_cache(maxsize=1)
def cpu_kernel_available() -> bool:
    """True if the C++ kernel compiles (or is cached) on this machine."""
    try:
        _module()
    except Exception:  # noqa: BLE001 - no compiler / build failure: fall back to the PyTorch forms
        return False
    return True


class _ScanCPU(torch.autograd.Function):
    """(u, delta (b,E,L), A (E,N), Bt, Ct (b,L,N)) -> (y (b,E,L), last (b,E,N)); one dtype, contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct):
        y, last = _module().scan_fwd(u, delta, A, Bt, Ct)
        ctx.save_for_backward(u, delta, A, Bt, Ct)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, Bt, Ct = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.to(u.dtype).contiguous()
        dlast = (torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype) if dlast is None
                 else dlast.to(u.dtype).contiguous())
        parts = max(1, min(u.shape[1], torch.get_num_threads()))  # channel blocks per batch element
        du, ddelta, dA, dB, dC = _module().scan_bwd(u, delta, A, Bt, Ct, dy, dlast, parts)
        return du, ddelta, dA.sum(0), dB.sum(1), dC.sum(1)


def selective_scan_cpu(
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
):
    """Fused CPU scan; semantics of :func:`defocus.ops.selective_scan.selective_scan_ref`."""
    check_scan_inputs(u, delta, A, B, C)
    if u.is_cuda:
        raise ValueError("selective_scan_cpu needs CPU tensors; use impl='triton' on CUDA")
    dtype = _compute_dtype(u)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)

    def c(t: Tensor) -> Tensor:
        return t.to(dtype).contiguous()

    y, last = _ScanCPU.apply(c(u), c(delta), c(A), c(B.transpose(1, 2)), c(C.transpose(1, 2)))
    out = _epilogue(y, u, D, z, dtype).to(u.dtype)
    return (out, last) if return_last_state else out
