"""Helpers: compose the package's Hydra configs in-process; a tiny, fast training configuration."""

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

import unigrad.cli  # noqa: F401  (registers the ${scale_to_dim:...} resolver)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

#: a few-second pre-training run: 128 digits, 2 steps per epoch, a 4-8-16 CNN, no probe
FAST = ["data.subset=128", "train.batch_size=64", "train.epochs=2", "model.tiny_widths=[4,8,16]",
        "model.projector_hidden_dim=32", "model.projector_output_dim=16", "train.log_every_steps=1", "eval.probe=false"]


def make_cfg(config_name: str, overrides: list[str], out_dir: Path):
    with initialize_config_module("unigrad.configs", version_base=None):
        return compose(config_name, overrides=[*overrides, f"+output_dir={out_dir}"])


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
