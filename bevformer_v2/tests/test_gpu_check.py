"""benchmarks/gpu_check.py runs end to end (``--smoke``: CPU, toy sizes, reference vs itself) and, without CUDA,
says "GPU: not run" instead of failing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args):
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    return res, [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_smoke_run_prints_every_check_and_benchmark():
    res, rows = _run("--smoke")
    assert res.returncode == 0, res.stderr[-3000:]
    paths = {r["path"] for r in rows if r.get("check") == "cuda_vs_reference"}
    assert paths == {"spatial_cross_attention", "temporal_self_attention", "decoder_cross_attention",
                     "tiny_model_loss_and_grads"}
    assert all(r["ok"] for r in rows if "ok" in r)
    assert [r["config"].split(":")[0] for r in rows if r.get("bench") == "train_step"] == [
        "tiny default (bevformer-v2-train)", "smoke"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_without_cuda_it_says_gpu_not_run():
    res, rows = _run()
    assert res.returncode == 0 and rows == [{"check": "gpu_check", "status": "GPU: not run",
                                             "reason": "no CUDA device visible"}]
