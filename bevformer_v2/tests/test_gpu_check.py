"""benchmarks/gpu_check.py runs end to end (``--smoke``: CPU, toy sizes, reference vs itself) and, without CUDA,
says "GPU: not run" instead of failing. Run in this process (the script's ``main``)."""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = mod.main(list(args))
    return rc, [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


def test_smoke_run_prints_every_check_and_benchmark():
    rc, rows = _run("--smoke")
    assert rc == 0, rows
    paths = {r["path"] for r in rows if r.get("check") == "cuda_vs_reference"}
    assert paths == {"spatial_cross_attention", "temporal_self_attention", "decoder_cross_attention",
                     "tiny_model_loss_and_grads"}
    assert all(r["ok"] for r in rows if "ok" in r)
    assert [r["config"].split(":")[0] for r in rows if r.get("bench") == "train_step"] == [
        "tiny default (bevformer-v2-train)", "smoke"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_without_cuda_it_says_gpu_not_run():
    rc, rows = _run()
    assert rc == 0 and rows == [{"check": "gpu_check", "status": "GPU: not run", "reason": "no CUDA device visible"}]
