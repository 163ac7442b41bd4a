"""Entry points end to end on the small synthetic set: train (2 steps) -> metrics.json -> eval; bad input."""
import json
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_train_then_eval(cli_overrides, tmp_path, run_entry):
    out = tmp_path / "run"
    res = _run([f"{BIN}/bevformer-v2-train", f"hydra.run.dir={out}", "train.iters=2", "train.log_every=1",
                *cli_overrides], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for k in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "AP/car", "train_loss"):
        assert k in m
    from repro_shared.checkpoint import find_latest_checkpoint

    ckpt = find_latest_checkpoint(out / "checkpoints")
    assert ckpt is not None
    res = _run([f"{BIN}/bevformer-v2-eval", f"hydra.run.dir={tmp_path / 'ev'}", f"checkpoint={ckpt}",
                *cli_overrides], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    m2 = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m2["NDS"] == m["NDS"]
    from bevformer_v2.cli import evaluate_cli

    msg = run_entry(evaluate_cli, f"hydra.run.dir={tmp_path / 'ev2'}", f"checkpoint={ckpt}", "eval_head=perspective",
                    *cli_overrides)
    assert msg is None, msg
    assert "NDS" in json.loads((tmp_path / "ev2" / "metrics.json").read_text())


def test_missing_dataset_is_one_clear_error(tmp_path, run_entry):
    from bevformer_v2.cli import train

    msg = run_entry(train, f"hydra.run.dir={tmp_path / 'r'}", "data=nuscenes", f"data.root={tmp_path / 'nuscenes'}",
                    "device=cpu")
    assert msg.startswith("error: nuScenes dataroot") and "does not exist" in msg and "bevformer-v2-make-data" in msg


@pytest.mark.dist
def test_torchrun_two_processes_train(cli_overrides, tmp_path):
    """DDP (gloo) launch of the training CLI with 2 processes, temporal + Group-DETR + two-stage model."""
    out = tmp_path / "ddp"
    res = _run([f"{BIN}/torchrun", "--standalone", "--nproc_per_node=2", "--no-python", f"{BIN}/bevformer-v2-train",
                f"hydra.run.dir={out}", "train.iters=2", "train.log_every=1", "data.frames=[-1,0]",
                "model.head.group_detr=2", "model.head.two_stage=true", "model.head.num_proposals=8",
                "eval_after_train=false", *cli_overrides], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "metrics.json").exists()
