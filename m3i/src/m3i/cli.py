"""Hydra entry points (config -> objects -> engine): ``m3i-pretrain``, ``m3i-finetune``, ``m3i-linprobe``,
``m3i-convert``.

Each reads ``configs/<name>.yaml`` from inside the package; paper rows are ``experiment=<group>/<row>``
(``configs/experiment/``), e.g. ``m3i-finetune experiment=finetune/internimage_h_22kto1k_640 data.root=/data/in1k``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from repro_shared.checkpoint import CheckpointError
from repro_shared.data import DataError
from repro_shared.guards import NonFiniteError

_CONFIGS = "configs"

# Errors whose message says what was wrong and what to do (bad input, missing weights, a diverged run): printed as
# one line, without the traceback (HYDRA_FULL_ERROR=1 keeps it). Anything else is a bug and keeps its traceback.
USER_ERRORS = (FileNotFoundError, ValueError, DataError, CheckpointError, NonFiniteError)


def report_user_errors(main):
    """Decorator for a Hydra task function: a :data:`USER_ERRORS` exception becomes the single line
    ``error: <Type>: <message>`` on stderr (also written to the run's ``log.txt`` when it has one) and exit status 1.

    Raises:
        SystemExit: code 1 after a user error; the original exception when ``HYDRA_FULL_ERROR=1``.
    """

    @functools.wraps(main)
    def wrapper(cfg: DictConfig) -> None:
        try:
            main(cfg)
        except USER_ERRORS as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            log = logging.getLogger("m3i")
            record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: %s", (type(e).__name__, e), None)
            for handler in log.handlers:  # the run's log.txt only; the console gets the line below
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
            print(f"error: {type(e).__name__}: {e}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="pretrain")
@report_user_errors
def pretrain(cfg: DictConfig) -> None:
    """``m3i-pretrain``: M3I pre-training; default = tiny ViT on the embedded captioned shapes, CPU, about a minute."""
    from .tasks.pretrain import run_pretrain

    run_pretrain(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="finetune")
@report_user_errors
def finetune(cfg: DictConfig) -> None:
    """``m3i-finetune``: end-to-end classification fine-tuning (InternImage recipe or MAE recipe for ViTs)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="finetune")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="linprobe")
@report_user_errors
def linprobe(cfg: DictConfig) -> None:
    """``m3i-linprobe``: linear probing of a frozen pre-trained backbone (MAE protocol: LARS, BN head)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="linprobe")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="convert")
@report_user_errors
def convert(cfg: DictConfig) -> None:
    """``m3i-convert``: released InternImage checkpoints (or our pre-training checkpoints) -> our weights."""
    from .tasks.convert import run_convert

    run_convert(cfg)
