"""Independent truncated normals on [a, b]^D: inverse-CDF sampling and log-density (spec §3.5)."""

from __future__ import annotations

import math

import torch


def _phi_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


class TruncatedNormal:
    """N(mu, sigma^2) truncated to [a, b], per dimension. mu, sigma: (D,)."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor, a: float = 0.0, b: float = 1.0):
        if mu.dim() != 1 or mu.shape != sigma.shape:
            raise ValueError(f"mu and sigma must be (D,) vectors of equal shape, got {tuple(mu.shape)}, {tuple(sigma.shape)}")
        if not b > a:
            raise ValueError(f"need b > a, got a={a}, b={b}")
        self.mu, self.sigma, self.a, self.b = mu, sigma, float(a), float(b)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) samples by inverse CDF; no gradient."""
        with torch.no_grad():
            alpha = _phi_cdf((self.a - self.mu) / self.sigma)
            beta = _phi_cdf((self.b - self.mu) / self.sigma)
            u = torch.rand(n, self.mu.numel(), generator=generator, dtype=self.mu.dtype)
            p = alpha + (beta - alpha) * u
            eps = torch.finfo(p.dtype).eps
            v = (2 * p - 1).clamp(-1 + eps, 1 - eps)
            x = self.mu + math.sqrt(2.0) * torch.erfinv(v) * self.sigma
            return x.clamp(self.a, self.b)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) per-dimension log-density; -inf outside [a, b]. Differentiable in mu and sigma."""
        z = (x - self.mu) / self.sigma
        log_norm = torch.log(_phi_cdf((self.b - self.mu) / self.sigma) - _phi_cdf((self.a - self.mu) / self.sigma))
        lp = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma) - log_norm
        inside = (x >= self.a) & (x <= self.b)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))
