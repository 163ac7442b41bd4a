"""Stop training at the first non-finite loss or prediction, with one error that names the step and term.

A non-finite value is never replaced by a finite one: a NaN is a divergence (or a data fault) and continuing
would train on garbage. The checkpoint on disk is untouched by the failed step, so the last good one
stays the newest valid checkpoint.

```python
losses = criterion(outputs, targets)                   # {"loss": ..., "loss_cls": ..., "loss_box": ...}
check_finite(losses, step=global_step, epoch=epoch)    # raises NonFiniteError naming the first bad term
```
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from . import dist

__all__ = ["NonFiniteError", "check_finite", "check_finite_inputs"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss term or prediction; the message names the step and term."""


def _first_bad(values: Mapping[str, torch.Tensor | float]) -> tuple[str, str] | None:
    for name, v in values.items():
        if isinstance(v, torch.Tensor):
            if v.numel() and not bool(torch.isfinite(v.detach()).all()):
                bad = v.detach()[~torch.isfinite(v.detach())].flatten()[0].item()
                return name, f"{bad} ({int((~torch.isfinite(v.detach())).sum())} of {v.numel()} entries)"
        elif v is not None and not math.isfinite(float(v)):
            return name, str(float(v))
    return None


def check_finite(values: Mapping[str, torch.Tensor | float], *, step: int, epoch: int | None = None,
                 what: str = "loss term", all_ranks: bool = True) -> None:
    """Raise :class:`NonFiniteError` if any tensor / number in ``values`` holds a NaN or an infinity.

    Args:
        values: named loss terms or predictions (tensors of any shape, or floats).
        step: global optimizer step, named in the error.
        epoch: named in the error when given.
        what: the kind of value ("loss term", "prediction"), named in the error.
        all_ranks: under a process group, all-reduce the verdict so that every rank stops together
            (a rank that stopped alone would leave the others waiting in a collective).

    One host sync per call (the verdict); the offending entry is only looked up on failure.
    """
    tensors = [v.detach().float().reshape(-1) for v in values.values() if isinstance(v, torch.Tensor) and v.numel()]
    ok = bool(torch.isfinite(torch.cat([t.to(tensors[0].device) for t in tensors])).all()) if tensors else True
    ok = ok and all(math.isfinite(float(v)) for v in values.values() if v is not None and not isinstance(v, torch.Tensor))
    if all_ranks and dist.get_world_size() > 1:
        device = tensors[0].device if tensors else torch.device("cpu")
        if torch.distributed.get_backend() == "nccl" and device.type == "cpu":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = torch.tensor(0.0 if ok else 1.0, device=device)
        torch.distributed.all_reduce(flag)
        if flag.item() and ok:
            raise NonFiniteError(f"a non-finite {what} on another rank at step {step}"
                                 + (f" (epoch {epoch})" if epoch is not None else "") + "; training stopped")
    if ok:
        return
    name, value = _first_bad(values) or ("?", "?")
    where = f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")
    raise NonFiniteError(
        f"non-finite {what} '{name}' = {value} at {where}; training stopped before this step changed the weights "
        "(checkpoints already written are untouched). "
        "Lower the learning rate, clip gradients where the recipe allows it, or check the inputs of this step")


def check_finite_inputs(what: str, **tensors: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` if an input of a non-differentiable routine (a matcher, an assigner,
    a metric) holds a NaN or an infinity, naming the routine and the input, instead of failing deep
    inside a library (e.g. scipy's "matrix contains invalid numeric entries")."""
    for name, t in tensors.items():
        if t.numel() and not bool(torch.isfinite(t.detach()).all()):
            n_bad = int((~torch.isfinite(t.detach())).sum())
            raise NonFiniteError(f"{what}: input '{name}' holds {n_bad} non-finite values of {t.numel()} "
                                 "(the model diverged or the data is broken); training stopped")
