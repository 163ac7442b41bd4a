"""Issue 17: SIGKILL in the middle of an epoch, then the same command (train.resume=auto) -> bit-identical weights
and identical logged metrics to the uninterrupted run. Covers the loader order and per-sample augmentation
(resize, flip, photometric, BDA), the history frame of a two-frame model, GridMask and dropout (both on),
gradient accumulation across micro-batches and the lr schedule position."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

BIN = os.path.dirname(sys.executable)
ITERS, EVERY, KILL_AFTER = 6, 2, 3  # 32 training samples, accum 2: all of it lies inside epoch 0


def _cmd(out, cli_overrides):
    return [f"{BIN}/bevformer-v2-train", f"hydra.run.dir={out}", f"train.iters={ITERS}", f"train.ckpt_every={EVERY}",
            "train.log_every=1", "train.accum=2", "train.resume=auto", "eval_after_train=false",
            "data.frames=[-1,0]", "data.flip=true", "data.bda=true", "data.photometric=true",
            "data.resize_heights=[56,64]", "model.head.transformer.encoder.num_layers=1", *cli_overrides]


def _logged(out) -> dict:
    """step -> the last row logged for it (a resumed run logs again the steps after its checkpoint)."""
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("time")
        rows[row["step"]] = row
    return rows


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(cli_overrides, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cmd(a, cli_overrides), check=True, env=env, cwd=tmp_path, capture_output=True, timeout=600)
    proc = subprocess.Popen(_cmd(b, cli_overrides), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (b / "metrics.jsonl").exists() and max(_logged(b), default=0) >= KILL_AFTER:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = max(_logged(b))
    assert KILL_AFTER <= killed_at < ITERS and not (b / "metrics.json").exists()
    res = subprocess.run(_cmd(b, cli_overrides), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from step {EVERY * (killed_at // EVERY)}" in (b / "log.txt").read_text()
    final = f"checkpoints/ckpt_{ITERS:09d}.pt"
    wa = torch.load(a / final, weights_only=True)["model"]
    wb = torch.load(b / final, weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].numel())
    assert diff == 0.0
    assert _logged(a) == _logged(b)  # every step's losses, lr, grad norm, also those after the kill
