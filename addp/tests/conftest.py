"""Test setup: one thread per process (the machine is shared), helpers on the path, one tiny chain per session."""

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))  # helpers / official_layout under --import-mode=importlib


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """One tiny addp-train run (tokenizer -> teacher -> ADDP -> eval); its cache is reused by other tests."""
    from helpers import SMALL, cfg_of

    from addp.cli import run_train

    root = tmp_path_factory.mktemp("chain")
    cache = root / "cache"
    metrics = run_train(cfg_of(*SMALL, f"cache_dir={cache}", f"+output_dir={root}/run1"))
    return root, cache, metrics
