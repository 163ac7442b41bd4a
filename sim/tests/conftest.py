"""Test setup: at most 2 threads (the machine is shared); helpers to run the entry points in-process."""

import os

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def compose_cfg(name: str, overrides: list[str], out_dir) -> "omegaconf.DictConfig":  # noqa: F821
    """The resolved config of entry point ``name`` with ``overrides``, writing to ``out_dir``."""
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sim.configs", version_base=None):
        cfg = compose(config_name=name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(out_dir)
    return cfg


@pytest.fixture
def compose_config():
    return compose_cfg
