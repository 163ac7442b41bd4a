"""Two CPU processes (torchrun, gloo): DDP training runs, ranks see different batches, rank 0 writes."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    exe = str(Path(sys.executable).with_name("asl-train"))
    with socket.socket() as sock:  # a free port (the machine is shared)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={port}", "--no-python", exe, "device=cpu",
           "data.num_train=32", "data.num_val=16", "train.iters=6", "train.batch_size=4", "train.log_every=3",
           f"hydra.run.dir={tmp_path}"]
    env = {"OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0/2" in proc.stderr + proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 100
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("*6.pt")), weights_only=True)
    assert ckpt["step"] == 6 and not any(k.startswith("module.") for k in ckpt["model"])
