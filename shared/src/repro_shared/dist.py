"""Distributed initialisation and model wrapping.

One call, :func:`init`, reads whichever launcher started the process:

- ``torchrun`` / ``deepspeed`` launcher: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``;
- SLURM (``srun``, also through hydra-submitit-launcher): ``SLURM_PROCID``, ``SLURM_NTASKS``,
  ``SLURM_LOCALID``, ``SLURM_JOB_NODELIST`` (the first host becomes the master);
- nothing: a single process, no process group.

GPU processes use NCCL on ``cuda:LOCAL_RANK``; CPU processes use gloo.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None for a single process without a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_slurm_host(nodelist: str) -> str:
    """First host name of a SLURM node list such as ``gpu[03-05,07],cpu1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if m is None:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _launcher_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the environment, or None for a plain single process.

    Exports ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` for SLURM so that the
    ``env://`` rendezvous works the same way for every launcher.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "localhost"))))
        env.setdefault("MASTER_PORT", "29500")
        env["RANK"], env["WORLD_SIZE"] = str(rank), str(world)
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        return rank, world, int(env["LOCAL_RANK"])
    return None


def init(device: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Initialise the default process group if a launcher asked for one.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cuda"`` or ``"cpu"``.
        timeout_minutes: collective timeout.

    Returns:
        The :class:`DistInfo` of this process. Calling it again returns the same answer.
    """
    want_cuda = {"auto": torch.cuda.is_available(), "cuda": True, "cpu": False}.get(device)
    if want_cuda is None:
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but CUDA is not available; use device=cpu or device=auto")

    launched = _launcher_env()
    if launched is None:
        dev = torch.device("cuda", torch.cuda.current_device()) if want_cuda else torch.device("cpu")
        return DistInfo(0, 1, 0, dev, None)

    rank, world, local_rank = launched
    dev = torch.device("cuda", local_rank) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    backend = "nccl" if want_cuda else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if want_cuda else None,
        )
    return DistInfo(rank, world, local_rank, dev, tdist.get_backend())


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


def get_rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks (a new tensor; ``t`` itself is unchanged)."""
    if not tdist.is_initialized():
        return t.clone()
    out = t.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out / tdist.get_world_size()


def unwrap_model(model: Any) -> nn.Module:
    """The user's module inside a DDP or DeepSpeed wrapper (FSDP2 shards in place: returned as is)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def wrap_model(
    model: nn.Module,
    strategy: str = "ddp",
    *,
    shard_modules: Iterable[type[nn.Module]] = (),
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap ``model`` (already on its device) for data-parallel training.

    Args:
        strategy: ``"ddp"`` (DistributedDataParallel), ``"fsdp"`` (FSDP2 ``fully_shard`` on every
            submodule whose type is in ``shard_modules``, then on the root) or ``"none"``.
            Without a process group every strategy returns the model unchanged.
        shard_modules: block types to shard separately under FSDP2 (e.g. transformer blocks).
        find_unused_parameters: passed to DDP, for models with conditionally used branches.
    """
    if strategy not in ("ddp", "fsdp", "none"):
        raise ValueError(f"unknown strategy {strategy!r}; use 'ddp', 'fsdp' or 'none' (DeepSpeed: deepspeed_initialize)")
    if strategy == "none" or not tdist.is_initialized():
        return model
    if strategy == "ddp":
        dev = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    from torch.distributed.fsdp import fully_shard

    types = tuple(shard_modules)
    if types:
        for sub in model.modules():
            if sub is not model and isinstance(sub, types):
                fully_shard(sub)
    fully_shard(model)
    return model


def deepspeed_initialize(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    zero_stage: int = 2,
    train_micro_batch_size_per_gpu: int = 1,
    gradient_accumulation_steps: int = 1,
    gradient_clipping: float = 0.0,
    precision: str = "fp32",
    scheduler: Any = None,
    config_overrides: dict | None = None,
):
    """Build a DeepSpeed engine with ZeRO stage 0-3 around ``model`` and ``optimizer``.

    The process group must already exist (:func:`init`) or the job is a single process.
    Works on CPU with gloo for tests; on GPUs with NCCL.

    Returns:
        The DeepSpeed engine: call ``engine(x)``, ``engine.backward(loss)``, ``engine.step()``.
    """
    try:
        import deepspeed
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("DeepSpeed is not installed: pip install 'repro-shared[deepspeed]'") from e
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if not tdist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "gradient_clipping": gradient_clipping,  # stated explicitly: ZeRO otherwise clips at 1.0
        "steps_per_print": 10**9,
        # ZeRO partitions the optimizer state of any torch optimizer; DeepSpeed only lists a few as "tested"
        "zero_allow_untested_optimizer": True,
    }
    config.update(config_overrides or {})
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        model_parameters=None if optimizer is not None else model.parameters(),
        config=config,
    )
    return engine
