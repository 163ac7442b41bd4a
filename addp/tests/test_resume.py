"""Exact resume: addp-train killed with SIGKILL in the middle of an epoch of the ADDP stage, then started again
with the same command, ends with the same weights (0.0 difference) and logs the same losses as a run that was
never killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
ARGS = ["device=cpu", "data.limit=96", "tokenizer.train.epochs=1", "tokenizer.train.batch_size=32",
        "teacher.train.epochs=1", "teacher.train.batch_size=16", "train.epochs=3", "train.batch_size=16",
        "train.ckpt_every=4", "train.log_every=1", "eval.enabled=false"]
TRAIN = str(Path(sys.executable).parent / "addp-train")


def _cmd(cache, out):
    return [TRAIN, *ARGS, f"cache_dir={cache}", f"hydra.run.dir={out}"]


def _addp_rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in rows if r.get("stage") == "addp"}  # the last record of each step wins


def _final(cache):
    (path,) = Path(cache).glob("addp-*/final.pt")
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    subprocess.run(_cmd(tmp_path / "cache_a", tmp_path / "a"), env=ENV, check=True, capture_output=True, timeout=600)
    # run B shares the finished tokenizer and teacher stages of run A, and trains its own ADDP stage
    shutil.copytree(tmp_path / "cache_a", tmp_path / "cache_b",
                    ignore=lambda d, names: [n for n in names if n.startswith("addp-")])
    proc = subprocess.Popen(_cmd(tmp_path / "cache_b", tmp_path / "b"), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    killed_after = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        metrics = tmp_path / "b" / "metrics.jsonl"
        steps = _addp_rows(tmp_path / "b").keys() if metrics.exists() else []
        if any(s >= 7 for s in steps):        # 6 steps per epoch, checkpoints at 4, 8, ...: epoch 1, batch 0 done
            os.killpg(proc.pid, signal.SIGKILL)
            killed_after = max(steps)
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_after is not None and 7 <= killed_after < 8, f"not killed mid-epoch (after step {killed_after})"
    assert not list((tmp_path / "cache_b").glob("addp-*/final.pt"))
    resumed = subprocess.run(_cmd(tmp_path / "cache_b", tmp_path / "b"), env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "addp: resumed at optimizer step 4 (epoch 0, batch 4)" in (tmp_path / "b" / "log.txt").read_text()
    a, b = _final(tmp_path / "cache_a"), _final(tmp_path / "cache_b")
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) == 0.0
    rows_a, rows_b = _addp_rows(tmp_path / "a"), _addp_rows(tmp_path / "b")
    assert sorted(rows_a) == sorted(rows_b) == list(range(1, 19))
    for step in range(5, 19):  # every step after the checkpoint the resumed run went back to
        for key in ("loss", "mask_ratio", "lr", "grad_norm"):
            assert rows_a[step][key] == rows_b[step][key], (step, key)
