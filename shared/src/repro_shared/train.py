"""Pieces of an exactly resumable training loop that several packages share.

- :func:`autocast`: the autocast context of a ``precision`` string (``fp32`` | ``bf16`` | ``fp16``).
- :func:`new_epoch_stats`, :func:`accumulate`, :func:`epoch_means`: running sums of one epoch as plain numbers,
  so that a mid-epoch checkpoint stores them and the resumed epoch reports the same means as an uninterrupted one.
- :class:`StepCheckpointer`: checkpoints every ``every`` optimizer steps inside an epoch and at epoch ends, holding
  the running epoch statistics and whatever the caller adds (results so far, EMA weights).

The loop itself (what a step computes) stays in each package; with :func:`repro_shared.data.build_loader` and
:func:`repro_shared.data.seed_step` these pieces make a run killed mid-epoch and resumed bit-identical.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import checkpoint

__all__ = ["PRECISIONS", "StepCheckpointer", "accumulate", "autocast", "epoch_means", "new_epoch_stats"]

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str):
    """Autocast context of ``precision``: ``fp16``, ``bf16`` or ``fp32`` (no autocast, a null context).

    Raises:
        ValueError: an unknown precision (lists the known ones).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def new_epoch_stats() -> dict:
    """Running sums of one epoch: ``{"sums": {term: float}, "steps": int, "skipped": int}`` (plain numbers)."""
    return {"sums": {}, "steps": 0, "skipped": 0}


def accumulate(stats: dict, record: dict[str, float]) -> None:
    """Add one step's ``record`` (term -> float) to ``stats`` and count the step."""
    for k, v in record.items():
        stats["sums"][k] = stats["sums"].get(k, 0.0) + float(v)
    stats["steps"] += 1


def epoch_means(stats: dict) -> dict[str, float]:
    """Per-term means over the steps of ``stats``, plus ``skipped`` (samples dropped as unreadable)."""
    out = {k: v / max(stats["steps"], 1) for k, v in stats["sums"].items()}
    out["skipped"] = stats["skipped"]
    return out


class StepCheckpointer:
    """Step checkpoints of one run in ``ckpt_dir``: every ``every`` optimizer steps inside an epoch (the caller
    saves the epoch's last step itself, after its end-of-epoch bookkeeping), each holding model, optimizer,
    scaler, the running epoch statistics and ``extra()``.

    Args:
        ckpt_dir: folder of ``ckpt_<step>.pt`` files (``RunContext.checkpoint_dir``).
        iters: optimizer steps per epoch (``epoch = steps_done // iters`` in the file).
        every: mid-epoch cadence in optimizer steps (0: epoch ends only).
        keep_last: checkpoints kept (older ones pruned).
        config: the run config stored in each file.
        extra: returns a dict stored with each checkpoint (results so far, EMA weights, ...).
    """

    def __init__(self, ckpt_dir: str | Path, *, model: nn.Module, optimizer, scaler, iters: int, every: int,
                 keep_last: int, config: Any, extra: Callable[[], dict[str, Any]] = dict):
        self.ckpt_dir, self.model, self.optimizer, self.scaler = Path(ckpt_dir), model, optimizer, scaler
        self.iters, self.every, self.keep_last, self.config, self.extra = iters, every, keep_last, config, extra

    def save(self, steps_done: int, epoch_stats: dict | None) -> None:
        """Write ``ckpt_<steps_done>.pt`` atomically (``epoch_stats``: running sums of an unfinished epoch)."""
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(self.ckpt_dir, steps_done), model=self.model,
                                   optimizer=self.optimizer, scaler=self.scaler, epoch=steps_done // self.iters,
                                   step=steps_done, config=self.config,
                                   extra={**self.extra(), "epoch_stats": epoch_stats}, keep_last=self.keep_last)

    def after_step(self, steps_done: int, epoch_stats: dict) -> None:
        """Mid-epoch checkpoint when ``steps_done`` is a multiple of ``every`` (never at an epoch end)."""
        if self.every and steps_done % self.every == 0 and steps_done % self.iters:
            self.save(steps_done, epoch_stats)

    def resume(self, spec: str | None) -> dict | None:
        """Load the newest valid checkpoint (``"auto"``), a given file, or nothing (``None`` / ``""``); returns the
        checkpoint dict or ``None``. No RNG state is restored: randomness derives from (seed, epoch, step)."""
        return checkpoint.resume(self.ckpt_dir, spec, model=self.model, optimizer=self.optimizer,
                                 scaler=self.scaler, restore_rng=False)

    def restore(self, spec: str | None, log: Any) -> tuple[int, dict | None, dict]:
        """:meth:`resume`, then where to continue: ``(optimizer steps done, running sums of the unfinished epoch or
        None, the checkpoint's extra dict)``, ``(0, None, {})`` for a fresh start. Logs the resumed position; when
        ``spec == "auto"`` finds nothing, logs where it looked and how to continue an earlier run (Hydra gives every
        launch a new timestamped folder, so only the same ``hydra.run.dir`` resumes)."""
        state = self.resume(spec)
        if state is None:
            if str(spec) == "auto":
                log.info("train.resume=auto: no checkpoint in %s, starting at step 0 (to continue a killed run, "
                         "launch the same command with hydra.run.dir=<that run's folder>)", self.ckpt_dir)
            return 0, None, {}
        step, extra = int(state["step"]), state.get("extra") or {}
        log.info("resumed from step %d (epoch %d, batch %d of %d)", step, step // self.iters, step % self.iters,
                 self.iters)
        return step, extra.get("epoch_stats"), extra
