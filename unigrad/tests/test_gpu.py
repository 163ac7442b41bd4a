"""GPU smoke tests (marked ``gpu``; skipped without CUDA): the default entry point on CUDA, every tensor of the
network and the objective on the GPU, the objectives on CUDA against float64 CPU references."""

import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_default_train_runs_on_cuda_with_every_tensor_on_the_gpu(tmp_path):
    import gpu_check

    assert gpu_check.check_training(torch.device("cuda")) == []


def test_train_entry_point_picks_cuda_with_device_auto(tmp_path):
    from unigrad import cli

    res = cli.run_train(make_cfg("train", [*FAST, "device=auto", "precision=bf16"], tmp_path))
    assert res["steps"] == 4 and res["knn_top1"] > 0
    assert "device cuda" in (tmp_path / "log.txt").read_text()


def test_objectives_on_cuda_match_float64_cpu():
    import gpu_check

    assert gpu_check.check_losses(torch.device("cuda"), n=64, c=256) == []
