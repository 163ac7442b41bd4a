"""Unconditional generation by alternating denoising (spec §3.3, official ``masked_generate_multi_step_addp``).

State: token ids ``Z`` (B, N), mask ``m`` (B, N; True = unknown) and an image ``x``. Start with every
token unknown. Each step s = 0..T-1:

1. ``logits = G(E(x), Z, m)[..., :K]`` (pixel-to-token);
2. sample ``Z_hat ~ Categorical(logits)`` per position, ``Z = where(m, Z_hat, Z)`` (known tokens stay);
3. confidence ``c = log p(Z)`` at unknown positions, ``+inf`` at known ones;
4. next unknown count ``n = clip(ceil(N * r), 1, N)`` with ``r = cos(pi/2 (s+1)/T)`` or ``1 - (s+1)/T``;
5. the ``n`` lowest ``c + tau * g`` (g ~ Gumbel, ``tau = tau0 (1 - (s+1)/T)`` "dynamic" or ``tau0`` "static")
   become the next mask ``m'``;
6. token-to-pixel: ``x = VQ.decode(where(m', softmax(logits) @ codebook, codebook[Z]))``.

With every token unknown the encoder features are all replaced by the mask token, so the initial image
has no effect (we start from zeros; the official code passes a validation image).

Randomness comes from :class:`SampleRNG`: one generator per sample, seeded by ``(seed, sample index)``,
so a sample does not depend on the batch it is generated in, on the number of processes, or on a
restart. Tests inject their own noise through it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from repro_shared.data import derive_seed

__all__ = ["SCHEDULES", "TEMPERATURE_MODES", "SAMPLINGS", "SampleRNG", "unknown_count", "choice_temperature",
           "remask", "sample_ids", "alternating_generate", "generate_addp", "generate_teacher",
           "to_uint8", "save_pngs", "save_grid"]

SCHEDULES = ("cosine", "linear")
TEMPERATURE_MODES = ("dynamic", "static")
SAMPLINGS = ("categorical", "top_p")


class SampleRNG:
    """Independent uniform noise per sample: ``rand(*shape)`` -> (B, *shape), row ``b`` drawn from the
    generator seeded by ``derive_seed(seed, indices[b])`` on ``device``."""

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(derive_seed(seed, int(i))) for i in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def gumbel(self, *shape: int) -> torch.Tensor:
        """Standard Gumbel noise ``-log(-log(u))`` (B, *shape)."""
        return -torch.log(-torch.log(self.rand(*shape)))


def unknown_count(step: int, steps: int, num_tokens: int, schedule: str = "cosine") -> int:
    """Unknown tokens after step ``step`` (0-based) of ``steps``: ``clip(ceil(N r), 1, N)`` (spec §3.3 step 4).

    For N = 256, T = 20, cosine: 256, 253, 249, ..., 41, 21, 1.

    Raises:
        ValueError: for an unknown schedule.
    """
    frac = (step + 1) / steps
    if schedule == "cosine":
        r = math.cos(math.pi / 2.0 * frac)
    elif schedule == "linear":
        r = 1.0 - frac
    else:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    return int(min(max(math.ceil(num_tokens * r), 1), num_tokens))


def choice_temperature(step: int, steps: int, tau0: float = 6.0, mode: str = "dynamic") -> float:
    """Re-masking temperature: ``tau0 (1 - (s+1)/T)`` ("dynamic") or ``tau0`` ("static").

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "dynamic":
        return tau0 * (1.0 - (step + 1) / steps)
    if mode == "static":
        return tau0
    raise ValueError(f"unknown temperature mode {mode!r}; known: {', '.join(TEMPERATURE_MODES)}")


def remask(probs: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, count: int, temperature: float,
           gumbel: torch.Tensor) -> torch.Tensor:
    """Next mask: the ``count`` lowest ``log p(ids) + temperature * gumbel`` per row, known tokens at +inf.

    Args:
        probs: (B, N, K) code probabilities of this step.
        ids: (B, N) the current ids (just sampled at unknown positions).
        mask: (B, N) bool, True = unknown before this step.
        count: number of positions to mark unknown in the next state.
        gumbel: (B, N) noise.

    Returns:
        (B, N) bool with exactly ``count`` True per row, a subset of ``mask`` when ``count`` does not
        exceed the unknown count.
    """
    chosen = probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    conf = torch.where(mask, chosen.double(), torch.full_like(chosen, math.inf, dtype=torch.float64)).float().log()
    score = conf + temperature * gumbel.to(conf)
    lowest = score.topk(count, dim=-1, largest=False).indices
    return torch.zeros_like(mask).scatter_(1, lowest, True)


def sample_ids(logits: torch.Tensor, uniform: torch.Tensor, sampling: str = "categorical", top_p: float = 1.0) -> torch.Tensor:
    """Draw one id per position from ``softmax(logits)`` by the Gumbel-max trick with the given uniform noise.

    ``top_p`` keeps the smallest set of most likely codes whose mass reaches ``top_p`` (plus the first
    code beyond it, as the official nucleus sampler).

    Shapes: logits (B, N, K), uniform (B, N, K) -> ids (B, N) int64.

    Raises:
        ValueError: for an unknown sampling mode.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; known: {', '.join(SAMPLINGS)}")
    logits = logits.float()
    if sampling == "top_p":
        sorted_p, order = F.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        inside = sorted_p.cumsum(-1) < top_p
        inside = torch.cat([torch.ones_like(inside[..., :1]), inside[..., :-1]], dim=-1)
        keep = torch.zeros_like(inside).scatter(-1, order, inside)
        logits = logits.masked_fill(~keep, -math.inf)
    return (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)


PredictFn = Callable[[torch.Tensor | None, torch.Tensor, torch.Tensor], torch.Tensor]
RenderFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def alternating_generate(predict: PredictFn, render: RenderFn | None, *, batch: int, num_tokens: int, codebook_size: int,
                         rng: SampleRNG, steps: int = 20, schedule: str = "cosine", tau0: float = 6.0,
                         temperature_mode: str = "dynamic", sampling: str = "categorical", top_p: float = 1.0,
                         x_init: torch.Tensor | None = None, device: torch.device | str = "cpu"):
    """The generation loop of spec §3.3 for any predictor.

    Args:
        predict: ``(x, ids, mask) -> logits (B, N, >=K)``; ADDP reads the image ``x``, the token-space
            teacher ignores it.
        render: ``(ids, probs, soft_mask) -> image``; called after every step when given (ADDP needs the
            image for its next prediction), otherwise the final ids are returned without an image.
        rng: per-sample noise (its length must equal ``batch``).
        x_init: the initial image (zeros when None); it has no effect because every token starts unknown.

    Returns:
        ``(x, ids, mask)``: the last rendered image (or None), ids (B, N) and the final mask (one unknown
        position per row: the schedule's minimum is 1).
    """
    if len(rng) != batch:
        raise ValueError(f"rng holds {len(rng)} generators for a batch of {batch}")
    ids = torch.zeros(batch, num_tokens, dtype=torch.long, device=device)
    mask = torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
    x = x_init
    for s in range(steps):
        logits = predict(x, ids, mask)[..., :codebook_size].float()
        ids = torch.where(mask, sample_ids(logits, rng.rand(num_tokens, codebook_size), sampling, top_p), ids)
        probs = F.softmax(logits, dim=-1)
        n = unknown_count(s, steps, num_tokens, schedule)
        tau = choice_temperature(s, steps, tau0, temperature_mode)
        mask = remask(probs, ids, mask, n, tau, rng.gumbel(num_tokens))
        if render is not None:
            x = render(ids, probs, mask)
    return x, ids, mask


def generate_addp(model, tokenizer, rng: SampleRNG, *, image_size: int, x_init: torch.Tensor | None = None,
                  **kwargs) -> torch.Tensor:
    """Images (B, 3, H, W), not clamped, from ADDP (``model``) and its tokenizer; ``kwargs`` as
    :func:`alternating_generate` (steps, schedule, tau0, temperature_mode, sampling, top_p)."""
    B = len(rng)
    device = next(model.parameters()).device
    x0 = torch.zeros(B, 3, image_size, image_size, device=device) if x_init is None else x_init

    def predict(x, ids, mask):
        return model(x, ids, mask)

    x, _, _ = alternating_generate(predict, tokenizer.decode_mixed, batch=B, num_tokens=model.num_tokens,
                                   codebook_size=tokenizer.codebook_size, rng=rng, x_init=x0, device=device, **kwargs)
    return x


def generate_teacher(teacher, tokenizer, rng: SampleRNG, **kwargs) -> torch.Tensor:
    """Images from the token predictor alone (MaskGIT-style decoding in token space, same schedule), as a
    reference for ADDP's samples; the tokens are rendered once at the end."""
    device = next(teacher.parameters()).device
    _, ids, _ = alternating_generate(lambda x, ids, mask: teacher(ids, mask), None, batch=len(rng),
                                     num_tokens=teacher.num_tokens, codebook_size=tokenizer.codebook_size, rng=rng,
                                     device=device, **kwargs)
    return tokenizer.decode_ids(ids)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in ~[0, 1] -> (B, H, W, 3) uint8 on the CPU, ``clamp(x * 255, 0, 255)`` truncated
    as the official writer."""
    return (images.float() * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_pngs(images: torch.Tensor, directory: str | Path, indices: Sequence[int]) -> list[Path]:
    """Write ``images`` as RGB PNGs ``<directory>/<index:06d>.png`` (atomic per file)."""
    from PIL import Image

    from repro_shared.fsio import atomic_open

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, i in zip(to_uint8(images).numpy(), indices):
        path = directory / f"{int(i):06d}.png"
        with atomic_open(path, "wb") as f:
            Image.fromarray(img, mode="RGB").save(f, format="PNG")
        paths.append(path)
    return paths


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> Path:
    """Write a grid PNG of ``images`` (B, 3, H, W) in [0, 1] (upscaled ``scale`` x, nearest)."""
    from torchvision.utils import save_image

    imgs = images.float().clamp(0, 1).cpu()
    if scale > 1:
        imgs = F.interpolate(imgs, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(imgs, path, nrow=nrow, padding=2, pad_value=1.0)
    return path
