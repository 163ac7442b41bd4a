"""The forward process of the discrete diffusion: mask ratios ("timesteps") and nested masks (spec §3.1).

ADDP snaps MAGE's truncated-normal mask ratio onto a 100-step cosine grid so that "t" and "t+1" are
neighbouring grid points:

- :func:`mask_ratio_table` - the 66 ratios ``cos(pi/2 * k/100)`` in [0.5, 1.0), ascending, with
  truncnorm(mu 0.55, sigma 0.25, [0.5, 1]) pdf weights normalised to probabilities;
- :func:`sample_mask_counts` - one ratio index ``k`` for the whole local batch, an offset
  ``delta ~ U{1..5}``, and the masked-token counts ``n_t = ceil(N r_k)``, ``n_{t+1} = ceil(N r_{min(k+delta, 65)})``;
- :func:`nested_masks` - masks of exactly those counts per row from one uniform noise map, so that
  ``m_t ⊆ m_{t+1}``.

Mask convention everywhere: True (1) = masked / unknown / unreliable.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["mask_ratio_table", "sample_mask_counts", "nested_masks", "truncnorm_ratio_sampler"]


def mask_ratio_table(ratio_min: float = 0.5, ratio_max: float = 1.0, mu: float = 0.55, std: float = 0.25,
                     num_steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-grid mask ratios and their truncated-normal probabilities (official ``compute_mask_ratio_probs``).

    Returns:
        ``ratios`` float32 (M,) ascending (M = 66 with the defaults, ratios[0] = 0.509041,
        ratios[-1] = 0.999877) and ``probs`` float64 (M,) summing to 1.

    Raises:
        ValueError: if no grid ratio lies in ``[ratio_min, ratio_max)``.
    """
    from scipy import stats

    k = torch.arange(num_steps + 1, dtype=torch.float32) / num_steps
    grid = torch.clamp(torch.cos(math.pi / 2.0 * k), 0.0, 1.0)            # float32, as the official table
    kept = grid[(grid >= ratio_min) & (grid < ratio_max)].flip(0)
    if kept.numel() == 0:
        raise ValueError(f"no cosine-grid ratio lies in [{ratio_min}, {ratio_max})")
    dist = stats.truncnorm((ratio_min - mu) / std, (ratio_max - mu) / std, loc=mu, scale=std)
    pdf = torch.from_numpy(np.asarray(dist.pdf(kept.double().numpy()), dtype=np.float64))
    return kept, pdf / pdf.sum()


def sample_mask_counts(num_tokens: int, ratios: torch.Tensor, probs: torch.Tensor, max_offset: int = 5,
                       generator: torch.Generator | None = None) -> tuple[int, int]:
    """Draw ``(n_t, n_{t+1})`` for one local batch (spec §3.1 steps 1-3).

    ``k ~ Categorical(probs)``, ``delta ~ U{1..max_offset}``; ``n = ceil(num_tokens * ratio)`` with the
    float32 ratio as the official code. Uses the global torch RNG unless ``generator`` is given.
    """
    k = int(torch.multinomial(probs, 1, generator=generator))
    delta = int(torch.randint(1, max_offset + 1, (1,), generator=generator))
    k_next = min(k + delta, len(ratios) - 1)
    n_t = int(math.ceil(float(ratios[k] * num_tokens)))
    n_next = int(math.ceil(float(ratios[k_next] * num_tokens)))
    return n_t, n_next


def nested_masks(batch: int, num_tokens: int, counts: list[int] | tuple[int, ...], *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Masks with exactly ``counts[j]`` True per row, all cut from one noise map ``u ~ U(0,1)^(B x N)``:
    ``m_j = u <= sort(u)[:, counts[j] - 1]``. Larger counts give supersets (nested masks).

    Ties in ``u`` (which would break the exact counts) are redrawn, as the official loop does.

    Returns:
        one (B, N) bool tensor per count.

    Raises:
        ValueError: for a count outside ``1..num_tokens``.
    """
    for n in counts:
        if not 1 <= n <= num_tokens:
            raise ValueError(f"mask count {n} is outside 1..{num_tokens}")
    while True:
        if generator is None:
            u = torch.rand(batch, num_tokens, device=device)
        else:
            u = torch.rand(batch, num_tokens, generator=generator).to(device)
        sorted_u = u.sort(dim=1).values
        masks = [u <= sorted_u[:, n - 1: n] for n in counts]
        if all(int(m.sum()) == batch * n for m, n in zip(masks, counts)):
            return masks


def truncnorm_ratio_sampler(ratio_min: float = 0.5, ratio_max: float = 1.0, mu: float = 0.55, std: float = 0.25):
    """MAGE's continuous mask-ratio distribution (truncnorm); returns ``draw(generator) -> float``.

    The draw is ``ppf(u)`` of a torch uniform ``u``, so it follows the torch RNG (seeded per step).
    """
    from scipy import stats

    dist = stats.truncnorm((ratio_min - mu) / std, (ratio_max - mu) / std, loc=mu, scale=std)

    def draw(generator: torch.Generator | None = None) -> float:
        return float(dist.ppf(float(torch.rand((), generator=generator))))

    return draw
