"""DDP (gloo, 2 processes) reaches the same weights as one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_dist_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.dist
def test_ddp_two_ranks_equal_single_process(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dist_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.main(tmp_path / "single.pt")  # single process, in this interpreter
    with socket.socket() as sock:  # a free port: other test suites may run torchrun on this machine too
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                    str(WORKER), str(tmp_path / "ddp.pt")], check=True, env=ENV, timeout=300)
    single, ddp = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "ddp.pt")
    torch.manual_seed(0)
    from defocus.models import build_model

    init = build_model("defocus_tiny_test").state_dict()
    assert any((single[k] - init[k]).abs().max() > 1e-3 for k in single)  # training moved the weights
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5)
