"""A run killed with SIGKILL in the middle of an epoch and started again with the same command ends with the
same weights, F, optimizer state and logged metrics as the run that was never killed (0.0 difference)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg
from repro_shared.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from repro_shared.logging import read_jsonl
from unigrad import cli

TRAIN = str(Path(sys.executable).parent / "unigrad-train")
# 256 digits / 32 = 8 steps per epoch, 3 epochs; checkpoints every 3 steps (mid-epoch) and at epoch ends
ARGS = ["data.subset=256", "train.batch_size=32", "train.epochs=3", "model.tiny_widths=[4,8,16]",
        "model.projector_hidden_dim=32", "model.projector_output_dim=16", "train.save_every_steps=3",
        "train.log_every_steps=1", "eval.probe=false", "device=cpu"]
ITERS = 8


@pytest.fixture(autouse=True)
def _one_thread():
    """The killed run is a subprocess with OMP_NUM_THREADS=1; the in-process runs must use one thread too, or a
    multi-core machine sums in another order and the runs differ in the last bits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _run_killed(out: Path, kill_after_step: int) -> int:
    """``unigrad-train`` in a subprocess, sent SIGKILL once it has logged ``kill_after_step``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([TRAIN, *ARGS, f"hydra.run.dir={out}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and any(r.get("step", 0) >= kill_after_step for r in read_jsonl(log) if "lr" in r):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return proc.wait(timeout=60)


def _rows(path: Path) -> dict:
    """Last logged row per (step, kind), without wall-clock time."""
    rows = {}
    for r in read_jsonl(path):
        r = {k: v for k, v in r.items() if k != "time"}
        rows[(r["step"], "epoch" if "epoch_loss" in r else "step")] = r
    return rows


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli.run_train(make_cfg("train", ARGS, a))  # uninterrupted (in this process: the same code and thread count)
    assert _run_killed(b, kill_after_step=13) == -signal.SIGKILL  # epoch 1 covers steps 8..16
    cli.run_train(make_cfg("train", ARGS, b))  # the same command again: train.resume=auto
    m = re.search(r"resumed from step (\d+) \(epoch (\d+)\)", (b / "log.txt").read_text())
    assert m, "the second run did not resume"
    step = int(m.group(1))
    assert step % ITERS != 0 and step >= 12, f"resumed at step {step}: not in the middle of an epoch"
    sa = load_checkpoint(find_latest_checkpoint(a / "checkpoints"), restore_rng=False)
    sb = load_checkpoint(find_latest_checkpoint(b / "checkpoints"), restore_rng=False)
    assert sa["step"] == sb["step"] == 3 * ITERS
    for key in sa["model"]:
        diff = (sa["model"][key].double() - sb["model"][key].double()).abs().max().item() if sa["model"][key].numel() else 0.0
        assert diff == 0.0, f"{key} differs by {diff}"
    assert torch.equal(sa["extra"]["loss"]["F"], sb["extra"]["loss"]["F"])
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    ra, rb = _rows(a / "metrics.jsonl"), _rows(b / "metrics.jsonl")
    after = {k: v for k, v in ra.items() if k[0] > step}
    assert after and all(rb[k] == v for k, v in after.items())  # every step and epoch row after the kill
    final_a, final_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert final_a.pop("train_time_s") > 0 and final_b.pop("train_time_s") > 0  # wall clock: the only difference
    assert final_a == final_b


def test_resume_into_the_folder_of_another_configuration_is_one_clear_error(tmp_path):
    cli.run_train(make_cfg("train", [*FAST, "train.epochs=1", "eval.enabled=false"], tmp_path))
    for other in (["loss=simclr_grad"], ["model.projector_output_dim=8"]):
        with pytest.raises(CheckpointError, match=r"cannot resume from .* another configuration .* new folder"):
            cli.run_train(make_cfg("train", [*FAST, "train.epochs=2", "eval.enabled=false", *other], tmp_path))
