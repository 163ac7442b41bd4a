"""What every Hydra entry point does first and last.

```python
@hydra.main(version_base=None, config_path="configs", config_name="train")
@run.report_user_errors("mypkg")    # bad input / divergence: one line "error: ..." and exit 1, no traceback
def main(cfg):
    ctx = run.setup_run(cfg)        # output folder, config.yaml, seed, device, process group, logger
    ...
    run.write_metrics(ctx.out_dir, {"top1": top1})
```
"""

from __future__ import annotations

import functools
import json
import logging as _pylogging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import dist
from .fsio import atomic_write_text
from .logging import MetricsWriter, _to_number, get_logger


@dataclass
class RunContext:
    """Everything an entry point needs about its run."""

    out_dir: Path
    device: torch.device
    dist: dist.DistInfo
    log: _pylogging.Logger
    metrics: MetricsWriter

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (all devices) with ``seed + rank``; returns the seed used."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} was requested but CUDA is not available; use device=cpu or device=auto")
    return dev


def hydra_output_dir() -> Path | None:
    """The current Hydra run's output folder, or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover
        pass
    return None


def planned_output_dir(cfg: Any) -> Path | None:
    """The output folder :func:`setup_run` will use when it is known before the run starts (Hydra's run folder,
    or ``output_dir`` outside Hydra), so that an existing folder can be checked before anything is written."""
    out = hydra_output_dir() or (cfg.get("output_dir") if hasattr(cfg, "get") else None)
    return Path(str(out)) if out else None


def setup_run(cfg: Any, *, name: str | None = None) -> RunContext:
    """Prepare a run from its config.

    Reads ``cfg.seed`` (default 0), ``cfg.device`` (default ``"auto"``) and, outside Hydra,
    ``cfg.output_dir``. Creates the output folder, writes the resolved config to
    ``config.yaml`` (rank 0), initialises the process group if launched distributed, seeds every
    RNG with ``seed + rank``, and opens the logger and the metrics writer.
    """
    from omegaconf import OmegaConf

    get = (lambda k, d: OmegaConf.select(cfg, k, default=d)) if OmegaConf.is_config(cfg) else (lambda k, d: cfg.get(k, d))
    info = dist.init(str(get("device", "auto")))
    device = info.device if info.backend is not None else pick_device(str(get("device", "auto")))
    out_dir = hydra_output_dir() or Path(get("output_dir", None) or f"outputs/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        text = OmegaConf.to_yaml(cfg, resolve=True) if OmegaConf.is_config(cfg) else json.dumps(cfg, indent=2, default=str)
        atomic_write_text(out_dir / "config.yaml", text)
    seed_everything(int(get("seed", 0)), info.rank)
    log = get_logger(name or "repro", out_dir)
    log.info("output folder %s | device %s | rank %d/%d", out_dir, device, info.rank, info.world_size)
    return RunContext(out_dir=out_dir, device=device, dist=info, log=log, metrics=MetricsWriter(out_dir))


def check_required_init(init: Any, *, key: str = "init") -> Path | None:
    """Refuse to start a paper-row run whose initial weights are missing; call it before building anything.

    ``init`` is the config node ``{required, path, source, converter}``: ``required`` says the row needs
    initial weights (e.g. an ImageNet- or COCO-pretrained backbone), ``path`` where the file is expected,
    ``source`` where to get it and ``converter`` the command that turns it into our format. Tiny / demo
    configs set ``required: false`` (or have no ``init`` node) and start from random weights.

    Returns:
        The path of the weights file, or None when none is configured and none is required.

    Raises:
        FileNotFoundError: ``required`` is true and ``path`` is unset or not a file; the message says which
            file, where to get it and which converter to run.
    """
    from omegaconf import OmegaConf

    if init is None:
        return None
    get = (lambda k: OmegaConf.select(init, k, default=None)) if OmegaConf.is_config(init) else init.get
    path = get("path")
    if path and Path(str(path)).expanduser().is_file():
        return Path(str(path)).expanduser()
    if not get("required"):
        if path:
            raise FileNotFoundError(f"{key}.path={path!r} does not exist")
        return None
    where = f" Get it from {get('source')}." if get("source") else ""
    conv = f" Convert it with `{get('converter')}`." if get("converter") else ""
    problem = f"{key}.path={path!r} is not a file" if path else f"{key}.path is not set"
    raise FileNotFoundError(
        f"this experiment starts from pretrained weights, but {problem}.{where}{conv} "
        f"Then pass {key}.path=/path/to/weights "
        f"(or {key}.required=false to train from random weights, which will not reproduce the paper)")


def data_root(data_cfg: Any, layout: str, *, key: str = "data.root") -> Path:
    """``data_cfg.root`` as a path, for experiments whose data set lives outside the package.

    Args:
        data_cfg: the ``data`` config node (or mapping) holding ``root``.
        layout: what the folder must contain, e.g. ``"train2017/ and annotations/instances_train2017.json"``;
            it goes into the error message.

    Raises:
        FileNotFoundError: ``root`` is unset; the message names ``key`` and the expected ``layout`` (the paper
            rows leave the data folder to the command line).
    """
    root = data_cfg.get("root")
    if not root:
        raise FileNotFoundError(f"{key} is not set; pass {key}=/path/to/data with {layout}")
    return Path(str(root)).expanduser()


def write_metrics(out_dir: str | os.PathLike, metrics: Mapping[str, Any], filename: str = "metrics.json") -> Path:
    """Atomically write the run's final evaluation results as JSON (rank 0 only)."""
    path = Path(out_dir) / filename
    if dist.is_main():
        plain = {k: (_to_number(v) if not isinstance(v, Mapping) else {kk: _to_number(vv) for kk, vv in v.items()})
                 for k, v in metrics.items()}
        atomic_write_text(path, json.dumps(plain, indent=2, sort_keys=True) + "\n")
    return path


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message already says what was wrong and what to do: bad paths and values, unreadable
    data (:class:`repro_shared.data.DataError`), bad checkpoints, a diverged run
    (:class:`repro_shared.guards.NonFiniteError`), and a mandatory ``???`` config value left unset."""
    from omegaconf.errors import MissingMandatoryValue

    from .checkpoint import CheckpointError
    from .data import DataError
    from .guards import NonFiniteError

    return (FileNotFoundError, ValueError, DataError, CheckpointError, NonFiniteError, MissingMandatoryValue)


def report_user_errors(logger_name: str, extra: tuple[type[BaseException], ...] = ()) -> Callable:
    """Decorator for a Hydra task function (put it under ``@hydra.main``): an exception of :func:`user_errors`
    (or of ``extra``) ends the command with the single line ``error: <message>`` on stderr, the same line in the
    run's ``log.txt`` (the FileHandlers of logger ``logger_name``) and exit status 1, instead of a traceback.
    A ``???`` value left unset also names the override to pass. Programming errors are not caught;
    ``HYDRA_FULL_ERROR=1`` re-raises user errors too, with their traceback.

    Raises:
        SystemExit: code 1 after a user error.
    """
    def decorate(task: Callable) -> Callable:
        @functools.wraps(task)
        def wrapper(cfg: Any) -> Any:
            from omegaconf.errors import MissingMandatoryValue

            try:
                return task(cfg)
            except user_errors() + tuple(extra) as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                message = str(e)
                if isinstance(e, MissingMandatoryValue):  # a ``???`` of the config
                    message = (f"{e.full_key} must be set: pass {e.full_key}=<value> on the command line (the entry "
                               "point's config says what it is)")
                log = _pylogging.getLogger(logger_name)
                record = log.makeRecord(log.name, _pylogging.ERROR, __file__, 0, "%s: %s",
                                        (type(e).__name__, message), None)
                for handler in log.handlers:  # the run's log.txt; the console gets the line below once
                    if isinstance(handler, _pylogging.FileHandler):
                        handler.handle(record)
                print(f"error: {message}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
                raise SystemExit(1) from None

        return wrapper

    return decorate
