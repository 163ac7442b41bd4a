"""The training loop shared by every stage (tokenizer, teacher, ADDP): nothing but the loop.

Per optimizer step ``i`` of epoch ``e`` (official ``engine_pretrain.train_one_epoch`` order):

1. ``seed_step(seed, e, i)``: dropout, masks and any other randomness of the step derive from
   (seed, epoch, step), so a run killed anywhere and resumed is bit-identical (``repro_shared.data``);
2. the learning rate of every group is set from the fractional epoch ``e + i / len(loader)`` *before*
   the step (official ``lr_sched.adjust_learning_rate``: linear warm-up, then half-cosine to ``min_lr``);
3. forward under autocast (fp16 with a GradScaler as the official runs, or bf16, or fp32);
4. :func:`repro_shared.guards.check_finite` on every loss term and the predictions: the first NaN or
   infinity stops the run with an error naming the step and the term (the last checkpoint stays the
   newest valid one);
5. backward, optional clipping of the global gradient norm, optimizer step;
6. a checkpoint every ``ckpt_every`` optimizer steps (also mid-epoch) holding model, optimizer, scaler,
   step, the running epoch sums and the per-epoch evaluation history, written atomically (at the end of
   an epoch after its evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from repro_shared import checkpoint, dist
from repro_shared.data import ResumableLoader, seed_step
from repro_shared.finetune import half_cosine_lr, set_lr
from repro_shared.guards import check_finite
from repro_shared.train import PRECISIONS, autocast

__all__ = ["LoopConfig", "lr_at", "train_loop"]



@dataclass
class LoopConfig:
    """Schedule and bookkeeping of one training stage.

    ``lr`` is the absolute peak learning rate (``blr * global_batch / 256`` is computed by the caller);
    ``clip_grad`` 0/None = no clipping; ``ckpt_every`` in optimizer steps; ``log_every`` in steps.
    """

    epochs: int
    lr: float
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    clip_grad: float | None = None
    precision: str = "fp32"
    grad_scaler_growth_interval: int = 2000
    ckpt_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    resume: str | None = "auto"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")


def lr_at(epoch: float, cfg: LoopConfig) -> float:
    """Official per-iteration schedule at fractional epoch ``epoch`` (``repro_shared.finetune.half_cosine_lr``):
    ``lr * epoch / warmup`` during warm-up, then half-cosine from ``lr`` to ``min_lr``."""
    return half_cosine_lr(epoch, cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.min_lr)


StepFn = Callable[[Any], Mapping[str, torch.Tensor]]


def train_loop(*, name: str, model: nn.Module, step_fn: StepFn, optimizer: torch.optim.Optimizer,
               loader: ResumableLoader, cfg: LoopConfig, ckpt_dir: str | Path, device: torch.device,
               metrics=None, log=None, predictions: tuple[str, ...] = (), config: Any = None,
               on_epoch_end: Callable[[int], dict[str, float]] | None = None,
               history: list[dict] | None = None, scheduler: Any = None) -> dict[str, float]:
    """Train ``model`` for ``cfg.epochs`` epochs, resuming from ``ckpt_dir`` when it holds a checkpoint.

    Args:
        name: stage name, used in log lines and as the ``stage`` field of the metrics rows.
        model: the unwrapped trainable module (what is checkpointed); ``step_fn`` may call a DDP wrapper of it.
        step_fn: ``batch -> {"loss": scalar, other scalar terms..., prediction tensors...}``; runs under
            autocast; the batch is moved to ``device`` by ``step_fn`` itself.
        predictions: keys of ``step_fn``'s output that are predictions (checked for finiteness, not logged).
        on_epoch_end: ``epoch -> {name: value}`` called after every epoch (e.g. a validation pass); its
            result, with ``epoch``, is logged and appended to ``history``.
        history: a list that receives those records; it is saved in the checkpoints and refilled on resume,
            so a resumed run knows the evaluations of the epochs before the kill.
        scheduler: a per-iteration timm scheduler (``step_update(num_updates)``, e.g. the detection multi-step
            or the segmentation poly schedule) used instead of the half-cosine of ``cfg``; it sets each group's
            lr (times its ``lr_scale``) before every step.

    Returns:
        the mean of every logged term over the last epoch.

    Raises:
        repro_shared.guards.NonFiniteError: at the first non-finite loss term or prediction.
    """
    ckpt_dir = Path(ckpt_dir)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16",
                                  growth_interval=cfg.grad_scaler_growth_interval)
    state = checkpoint.resume(ckpt_dir, cfg.resume, model=model, optimizer=optimizer, scaler=scaler, restore_rng=False)
    step = 0 if state is None else int(state["step"])
    sums: dict[str, float] = {} if state is None else dict(state["extra"].get("epoch_sums", {}))
    if history is not None and state is not None:
        history[:] = list(state["extra"].get("history", []))
    iters = len(loader)
    start_epoch, start_batch = divmod(step, iters)
    if state is not None and log is not None:
        log.info("%s: resumed at optimizer step %d (epoch %d, batch %d)", name, step, start_epoch, start_batch)
    params = [p for p in model.parameters() if p.requires_grad]
    means: dict[str, float] = {}

    def save(epoch: int) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, step), model=model, optimizer=optimizer,
                                   scaler=scaler, epoch=epoch, step=step, config=config,
                                   extra={"epoch_sums": dict(sums), "history": list(history or [])},
                                   keep_last=cfg.keep_last)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        if epoch != start_epoch:
            sums = {}
        for i, batch in enumerate(loader, start=loader.start_batch):
            seed_step(cfg.seed, epoch, i)
            if scheduler is None:
                lr = lr_at(epoch + i / iters, cfg)
                set_lr(optimizer, lr)
            else:
                scheduler.step_update(step)
                lr = max(g["lr"] / g.get("lr_scale", 1.0) for g in optimizer.param_groups)
            with autocast(device, cfg.precision):
                out = step_fn(batch)
            terms = {k: v for k, v in out.items() if k not in predictions}
            check_finite(dict(terms), step=step, epoch=epoch)
            check_finite({k: out[k] for k in predictions}, step=step, epoch=epoch, what="prediction")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            grad_norm = None
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            values = {k: float(v.detach()) for k, v in terms.items()}
            values["count"] = 1.0
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if metrics is not None and (step % cfg.log_every == 0 or i == iters - 1):
                row = {"stage": name, "epoch": epoch, "lr": lr, **{k: v for k, v in values.items() if k != "count"}}
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                metrics.log(row, step=step)
            if step % cfg.ckpt_every == 0 and i < iters - 1:   # mid-epoch; the epoch's last step saves below
                save(epoch)
        means = {k: v / sums["count"] for k, v in sums.items() if k != "count"}
        if log is not None and dist.is_main():
            log.info("%s epoch %d/%d | %s", name, epoch + 1, cfg.epochs,
                     " | ".join(f"{k} {v:.4f}" for k, v in means.items()))
        if on_epoch_end is not None:
            record = {"epoch": epoch, **on_epoch_end(epoch)}
            if history is not None:
                history.append(record)
            if metrics is not None:
                metrics.log({"stage": name, **record}, step=step)
            if log is not None and dist.is_main():
                log.info("%s epoch %d/%d | %s", name, epoch + 1, cfg.epochs,
                         " | ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if step % cfg.ckpt_every == 0 or step == cfg.epochs * iters:
            save(epoch)
    if not means and sums.get("count"):
        means = {k: v / sums["count"] for k, v in sums.items() if k != "count"}
    return means
