"""Two gloo processes (torchrun) reach the same weights as one process with the same global batch: the
all-reduced target correlation F and the global decoder BatchNorm statistics make the step identical.
A negative control (slow) with per-rank BN statistics differs, so the comparison can fail."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
ENV.update(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1", CUDA_VISIBLE_DEVICES="")
COMMON = ["data.train_subset=32", "train.epochs=1", "train.warmup_epochs=0.5", "probe.enabled=false", "device=cpu",
          "train.checkpoint_every=0"]
SCRIPT = str(Path(sys.executable).with_name("sim-pretrain"))


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _run(out: Path, nproc: int, extra: list[str]) -> dict:
    cmd = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_port()}",
            SCRIPT] if nproc > 1 else [sys.executable, SCRIPT])
    p = subprocess.run(cmd + [f"hydra.run.dir={out}", *COMMON, *extra], env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return torch.load(sorted((out / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.dist
def test_two_processes_equal_one_process(tmp_path):
    one = _run(tmp_path / "one", 1, ["train.batch_size=16"])
    two = _run(tmp_path / "two", 2, ["train.batch_size=8"])
    assert one["step"] == two["step"] == 2
    assert _max_diff(one["model"], two["model"]) < 2e-5
    # logged losses are rank means: the same numbers as the single process
    la = [json.loads(x)["loss"] for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    assert la == pytest.approx(lb, rel=1e-5)


@pytest.mark.dist
@pytest.mark.slow
def test_per_rank_bn_statistics_differ(tmp_path):
    """Negative control of the test above: with per-rank BN statistics the two-process step is another step."""
    one = _run(tmp_path / "one", 1, ["train.batch_size=16"])
    local = _run(tmp_path / "local_bn", 2, ["train.batch_size=8", "model.sync_bn=false"])
    assert _max_diff(one["model"], local["model"]) > 1e-4
