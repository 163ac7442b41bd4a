"""Exact resume after SIGKILL: training killed mid-epoch, and the search killed inside a round (issue 17)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from repro_shared.logging import read_jsonl

from param_ap_loss.search import SearchState

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _one_thread():
    """The killed runs are subprocesses with OMP_NUM_THREADS=1; the in-process parts must use one thread too, or a
    multi-core machine sums in another order (CI saw 4.8e-7 between the runs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _env(tmp_path):
    return dict(os.environ, OMP_NUM_THREADS="1", PAP_DATA_ROOT=str(tmp_path))


def _run(cmd, tmp_path):
    res = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _kill_when(cmd, tmp_path, ready, timeout=300):
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; return True if it was killed before finishing."""
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.wait()
    return False


def _rows(path, after=0):
    """Last logged row of every step > ``after`` (a resumed run logs the steps between checkpoint and kill twice)."""
    rows = {r["step"]: {k: v for k, v in r.items() if k != "time"} for r in read_jsonl(path)}
    return {s: r for s, r in rows.items() if s > after}


def test_training_killed_mid_epoch_resumes_bit_identically(tmp_path, monkeypatch):
    """4 epochs x 2 steps, checkpoints every 5 steps (mid-epoch 2) and at the end; the second run is a
    ``pap-train`` process killed with SIGKILL right after step 5's checkpoint, then the same command again
    (the uninterrupted and the resumed run go through the same Hydra entry point in this process)."""
    from param_ap_loss.cli import train

    monkeypatch.setenv("PAP_DATA_ROOT", str(tmp_path))
    common = ["data.num_train=16", "data.num_val=8", "train.epochs=4", "train.milestones=[3]", "train.log_every=1",
              "train.ckpt_every=4", "train.ckpt_every_steps=5", "train.keep_last=5", "train.resume=auto"]
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setattr(sys, "argv", ["pap-train", *common, f"hydra.run.dir={a}"])
    train()
    marker = b / "checkpoints" / "ckpt_000000005.pt.done"
    killed = _kill_when([str(BIN / "pap-train"), *common, f"hydra.run.dir={b}"], tmp_path, marker.is_file)
    assert killed and not (b / "metrics.json").exists()
    assert sorted(p.name for p in (b / "checkpoints").glob("*.pt")) == ["ckpt_000000005.pt"]  # step 5 = epoch 2, batch 1
    monkeypatch.setattr(sys, "argv", ["pap-train", *common, f"hydra.run.dir={b}"])
    train()
    assert "resumed from step 5 (epoch 2, batch 1)" in (b / "log.txt").read_text()
    wa = torch.load(a / "checkpoints" / "ckpt_000000008.pt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "ckpt_000000008.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    assert max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa) == 0.0
    assert _rows(b / "metrics.jsonl", after=5) == _rows(a / "metrics.jsonl", after=5)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ma.pop("train_time_s"), mb.pop("train_time_s")
    assert ma == mb and ma["iters"] == 8


@pytest.mark.slow
def test_search_killed_inside_a_round_continues_the_same_ppo_trajectory(tmp_path):
    """2 rounds x 2 proxies; the search is killed after the first proxy of round 0 and started again."""
    common = ["data.num_train=8", "data.num_val=4", "train.epochs=2", "model.score_thresh=0.0", "search.rounds=2",
              "search.samples=2", "search.update_steps=20"]
    a, b = tmp_path / "a", tmp_path / "b"
    _run([str(BIN / "pap-search"), *common, f"hydra.run.dir={a}"], tmp_path)

    def first_reward_saved():
        try:
            state = SearchState.load(b)
        except (OSError, ValueError, KeyError):
            return False
        return state is not None and np.isfinite(state.rewards[0]).sum() == 1

    assert _kill_when([str(BIN / "pap-search"), *common, f"hydra.run.dir={b}"], tmp_path, first_reward_saved)
    assert not (b / "searched_params.json").exists()
    _run([str(BIN / "pap-search"), *common, f"hydra.run.dir={b}"], tmp_path)
    assert "resuming search at round 0" in (b / "log.txt").read_text()
    sa, sb = SearchState.load(a), SearchState.load(b)
    assert np.abs(np.array(sa.mu) - np.array(sb.mu)).max() == 0.0
    assert np.array_equal(np.array(sa.rewards), np.array(sb.rewards))
    assert not np.array_equal(sa.mu[0], sa.mu[-1])  # the policy moved
    assert _rows(b / "metrics.jsonl") == _rows(a / "metrics.jsonl") and len(_rows(a / "metrics.jsonl")) == 2
    assert json.loads((a / "searched_params.json").read_text()) == json.loads((b / "searched_params.json").read_text())
