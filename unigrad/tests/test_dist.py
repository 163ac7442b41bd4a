"""Two gloo processes: F is all-reduced (and the candidate sets all-gathered) so that each rank's gradients
equal the single-process gradients of the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.dist
def test_two_ranks_reproduce_the_whole_batch_gradients_and_state(tmp_path):
    out = tmp_path / "diffs.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={_free_port()}", str(HERE / "_dist_worker.py"), str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2
    expected = {f"{n}/step{s}" for n in ("unigrad", "byol_grad", "simclr_grad", "moco_grad", "barlow_twins_grad",
                                         "vicreg_grad") for s in (0, 1)}
    expected |= {"unigrad/F", "byol_grad/F", "moco_grad/queue", "infonce", "barlow_twins", "vicreg"}
    assert expected <= set(res["diffs"])
    bad = {k: v for k, v in res["diffs"].items() if v > 1e-12}
    assert not bad, bad


@pytest.mark.dist
@pytest.mark.slow
def test_unigrad_train_runs_under_torchrun_with_two_gloo_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={_free_port()}", str(Path(sys.executable).parent / "unigrad-train"),
                        "data.subset=128", "train.batch_size=32", "train.epochs=1", "model.tiny_widths=[4,8,16]",
                        "model.projector_hidden_dim=32", "model.projector_output_dim=16", "eval.probe=false",
                        "device=cpu", f"hydra.run.dir={tmp_path}"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "metrics.json").read_text())
    assert res["steps"] == 2  # 128 samples / (2 ranks x 32) per epoch
    assert "rank 0/2" in (tmp_path / "log.txt").read_text()
