"""Distributed helpers: environment parsing, 2-process DDP == 1 process, DeepSpeed ZeRO-2 on CPU."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro_shared import dist

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import dist_worker  # noqa: E402


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(HERE), **extra)
    return env


def test_single_process_needs_no_launcher(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    info = dist.init("cpu")
    assert (info.rank, info.world_size, info.backend, info.device.type) == (0, 1, None, "cpu")
    assert dist.get_world_size() == 1 and dist.is_main()
    t = torch.tensor([1.0, 3.0])
    assert torch.equal(dist.all_reduce_mean(t), t)
    with pytest.raises(ValueError, match="device must be"):
        dist.init("tpu")


def test_slurm_environment_is_translated(monkeypatch):
    # a private copy of the environment: _launcher_env exports RANK/WORLD_SIZE/MASTER_* into it
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_LOCALID="1", SLURM_JOB_NODELIST="gpu[03-04,07]")
    monkeypatch.setattr(os, "environ", env)
    assert dist._launcher_env() == (5, 8, 1)
    assert (env["MASTER_ADDR"], env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("gpu03", "5", "8", "1")
    assert dist._first_slurm_host("node7,node9") == "node7"


@pytest.mark.dist
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(tmp_path, strategy):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    r1 = subprocess.run([sys.executable, str(HERE / "dist_worker.py"), "ddp", str(one)], env=_env(),
                        capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(HERE / "dist_worker.py"), strategy, str(two)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert (a["world"], b["world"]) == (1, 2)
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k], b["state"][k], rtol=1e-5, atol=1e-6)
    start = dist_worker.make_model().state_dict()
    assert not torch.allclose(start["0.weight"], b["state"]["0.weight"])  # training did move the weights


@pytest.mark.dist
def test_deepspeed_zero2_step_on_cpu(tmp_path):
    out = tmp_path / "ds.pt"
    r = subprocess.run([sys.executable, str(HERE / "dist_worker.py"), "deepspeed", str(out)],
                       env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port()),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # the same SGD step by hand
    model = dist_worker.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = dist_worker.batch(0)
    (model(x) - y).pow(2).mean().backward()
    opt.step()
    got = torch.load(out, weights_only=True)["state"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
