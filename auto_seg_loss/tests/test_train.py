"""End-to-end on the embedded shapes data: training beats an untrained model; exact resume after SIGKILL in
the middle of an epoch (training) and of a proxy training (search); the poly lr of each step matches the
official loop; mixed precision; divergence stops with a named error; the eval entry point reproduces the
train-time metrics; bad configs fail clearly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from repro_shared.checkpoint import verify_checkpoint
from repro_shared.data import build_loader
from repro_shared.guards import NonFiniteError

from auto_seg_loss import cli, engine
from auto_seg_loss.cli import compose, run_eval, run_train

SMALL = ["data.num_train=64", "data.num_val=32", "train.batch_size=8", "eval.batch_size=32", "train.log_every=10"]
SCRIPT = Path(__file__).with_name("kill_resume_script.py")


def _train(tmp_path, name, extra):
    cfg = compose("train", SMALL + [f"output_dir={tmp_path / name}"] + extra)
    return run_train(cfg), tmp_path / name


@pytest.mark.parametrize("loss", [["loss.metric=mIoU"], ["loss.metric=BF1"]])
def test_short_training_beats_untrained(tmp_path, loss):
    untrained, _ = _train(tmp_path, "untrained", ["train.iters=0"] + loss)
    trained, out = _train(tmp_path, "trained", ["train.iters=80"] + loss)
    metric = loss[0].split("=")[1]
    assert trained[metric] > untrained[metric] + 10.0, (trained, untrained)
    assert json.loads((out / "metrics.json").read_text())[metric] == trained[metric]


def _run_script(entry: str, kill_after: int, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, str(SCRIPT), entry, str(kill_after), *overrides], capture_output=True,
                          text=True, timeout=600, env=env)


def _rows(path: Path) -> dict[int, dict]:
    """Last logged row per step, without wall-clock fields."""
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = {k: v for k, v in r.items() if k not in ("time", "s_per_it", "train_minutes")}
    return rows


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    """64 images / batch 8 = 8 iterations per epoch, checkpoints every 6: killed after iteration 15 (epoch 1,
    batch 6), resumed from iteration 12 (epoch 1, batch 4) with the same command: the final weights, every
    logged loss after the checkpoint and the final metrics equal the uninterrupted run's exactly."""
    common = SMALL + ["train.iters=20", "train.ckpt_every=6", "train.log_every=1", "loss.metric=BIoU",
                      "loss.drop_bg=true"]
    a = _run_script("train", -1, common + [f"output_dir={tmp_path / 'a'}"])
    assert a.returncode == 0, a.stderr[-3000:]
    b = _run_script("train", 15, common + [f"output_dir={tmp_path / 'b'}"])
    assert b.returncode == -9, b.stderr[-3000:]  # SIGKILL
    assert not (tmp_path / "b" / "metrics.json").exists()
    b2 = _run_script("train", -1, common + [f"output_dir={tmp_path / 'b'}"])
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resumed from iteration 12 (epoch 1, batch 4)" in (tmp_path / "b" / "log.txt").read_text()
    wa = torch.load(tmp_path / "a" / "checkpoints" / "ckpt_000000020.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "ckpt_000000020.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = _rows(tmp_path / "a" / "metrics.jsonl"), _rows(tmp_path / "b" / "metrics.jsonl")
    assert set(ra) == set(rb) and len(ra) == 20  # 20 iterations (the final row also holds the metrics)
    for step in range(13, 21):
        assert ra[step] == rb[step], step
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    ma.pop("train_minutes"), mb.pop("train_minutes")
    assert ma == mb


@pytest.mark.slow  # three search processes; the default suite keeps the training SIGKILL test
def test_search_sigkill_mid_proxy_training_then_resume_continues_the_trajectory(tmp_path):
    """2 rounds x 3 samples x 4 proxy iterations: killed after SGD step 14 (round 1, sample 0, in the middle of
    its proxy training), rerun in the same folder: same rewards, same policy after every round, same result."""
    over = ["metric=mAcc", "search.rounds=2", "search.samples_per_round=3", "search.update_steps=5",
            "proxy.iters=4", "proxy.num_train=16", "proxy.heldout_size=8", "proxy.batch_size=8"]
    a = _run_script("search", -1, over + [f"output_dir={tmp_path / 'a'}"])
    assert a.returncode == 0, a.stderr[-3000:]
    b = _run_script("search", 14, over + [f"output_dir={tmp_path / 'b'}"])
    assert b.returncode == -9, b.stderr[-3000:]
    b2 = _run_script("search", -1, over + [f"output_dir={tmp_path / 'b'}"])
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resuming search at round 1 (0 rewards of it done)" in (tmp_path / "b" / "log.txt").read_text()
    sa, sb = (torch.load(tmp_path / d / "search_state.pt", weights_only=True) for d in "ab")
    assert torch.equal(sa["mu_x"], sb["mu_x"]) and sa["history"] == sb["history"] and sb["round"] == 2
    ra, rb = _rows(tmp_path / "a" / "metrics.jsonl"), _rows(tmp_path / "b" / "metrics.jsonl")
    assert ra == rb and len(ra) == 6  # one row per reward
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.decode_head = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return {"out": self.decode_head(torch.relu(self.backbone(x)))}


def _toy_run(iters, start_iter=0, precision=None, lrs=None, nan_at=None):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 8, 8), torch.randint(0, 3, (12, 8, 8)))
    loader = build_loader(data, batch_size=4, seed=0)
    model = _Toy()
    if nan_at is not None:
        calls = [0]

        def inject(_, __, out):
            calls[0] += 1
            if calls[0] == nan_at:
                out["out"] = out["out"].clone()
                out["out"][0, 1, 2, 3] = float("nan")
            return out

        model.register_forward_hook(inject)
    opt = torch.optim.SGD(engine.param_groups(model, 0.02, 5e-4, 10.0), lr=0.02, momentum=0.9)
    if lrs is not None:
        opt.register_step_pre_hook(lambda o, *_: lrs.append([g["lr"] for g in o.param_groups]))
    losses = {"out": lambda z, y: torch.nn.functional.cross_entropy(z, y, ignore_index=255)}
    engine.train_iters(model, loader, losses, opt, iters, torch.device("cpu"), seed=0, start_iter=start_iter,
                       min_lr=1e-4, power=0.9, precision=precision, log_every=1)
    return model


def test_poly_lr_seen_by_each_step_matches_the_official_loop():
    """mmcv IterBasedRunner + PolyLrUpdaterHook(by_epoch=False): before_train_iter sets
    lr = (base - min_lr)(1 - runner.iter / max_iters)^0.9 + min_lr with runner.iter = iterations done, so the
    first step uses the base lr and step t the value at t (not t + 1); heads use base x 10, min_lr unscaled."""
    lrs = []
    _toy_run(10, lrs=lrs)
    for t, (lr_b, lr_h) in enumerate(lrs):
        assert lr_b == pytest.approx((0.02 - 1e-4) * (1 - t / 10) ** 0.9 + 1e-4, rel=1e-12)
        assert lr_h == pytest.approx((0.2 - 1e-4) * (1 - t / 10) ** 0.9 + 1e-4, rel=1e-12)
    assert lrs[0] == [0.02, 0.2] and len(lrs) == 10
    resumed = []
    _toy_run(10, start_iter=6, lrs=resumed)
    assert resumed == lrs[6:]
    # the paper recipe: 10k iterations, lr 0.02 -> at iteration 5000: 0.0101...; last step 9999: ~1.0e-4
    assert engine.poly_lr(0.02, 5000, 10000) == pytest.approx((0.02 - 1e-4) * 0.5 ** 0.9 + 1e-4)
    assert engine.poly_lr(0.02, 9999, 10000) == pytest.approx(1e-4 + (0.02 - 1e-4) * 1e-4 ** 0.9)


def test_nan_prediction_stops_with_named_error(tmp_path, monkeypatch):
    """A NaN logit in the 5th forward pass (iteration 4): NonFiniteError naming the term and the step, before
    the optimizer step; the checkpoint of iteration 4 (the last good state) stays valid, no later one exists."""
    with pytest.raises(NonFiniteError, match=r"'logits_out' = nan .*step 4 \(epoch 1\)"):
        _toy_run(8, nan_at=5)
    build = cli.build_model

    def nan_model(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = [0]

        def inject(_, __, out):
            calls[0] += 1
            if calls[0] == 5:
                out["aux"] = out["aux"] * float("inf")
            return out

        model.register_forward_hook(inject)
        return model

    monkeypatch.setattr(cli, "build_model", nan_model)
    # the official masked Bezier form maps NaN probabilities to finite values: the logits check still fires
    with pytest.raises(NonFiniteError, match=r"'logits_aux' = (nan|inf) .*step 4 \(epoch 0\).*training stopped before this step changed the weights"):
        _train(tmp_path, "nan", ["train.iters=8", "train.ckpt_every=2", "loss.bezier_impl=reference"])
    ckpts = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").glob("*.pt"))
    assert ckpts == ["ckpt_000000002.pt", "ckpt_000000004.pt"]
    verify_checkpoint(tmp_path / "nan" / "checkpoints" / "ckpt_000000004.pt")


def test_mixed_precision(tmp_path):
    """fp16 with the official static loss scale 512 (GradScaler reset to 512 after each step), bf16 autocast;
    the scaler state is checkpointed."""
    p16 = engine.Precision("fp16", "cpu", 512)
    _toy_run(3, precision=p16)
    assert p16.scaler.get_scale() == 512.0 and p16.static_scale == 512.0
    dyn = engine.Precision("fp16", "cpu", "dynamic")
    assert dyn.static_scale is None and dyn.scaler.get_scale() == 65536.0
    _toy_run(2, precision=engine.Precision("bf16", "cpu"))
    with pytest.raises(ValueError, match="train.amp"):
        engine.Precision("fp8", "cpu")
    with pytest.raises(ValueError, match="loss_scale"):
        engine.Precision("fp16", "cpu", "big")
    res, out = _train(tmp_path, "amp", ["train.iters=3", "train.amp=fp16", "train.loss_scale=512", "data.num_val=8"])
    state = torch.load(out / "checkpoints" / "ckpt_000000003.pt", weights_only=True)
    assert state["scaler"]["scale"] == 512.0 and 0 <= res["mIoU"] <= 100


def test_eval_entry_point_matches_training_metrics(tmp_path):
    res, out = _train(tmp_path, "t", ["train.iters=10"])
    ckpt = next((out / "checkpoints").glob("*.pt"))
    cfg = compose("eval", ["data.num_val=32", f"checkpoint={ckpt}", f"output_dir={tmp_path / 'e'}"])
    ev = run_eval(cfg)
    for k in ("mIoU", "FWIoU", "mAcc", "gAcc", "BIoU", "BF1"):
        assert ev[k] == pytest.approx(res[k], abs=1e-6)


def test_bad_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown metric"):
        _train(tmp_path, "x", ["train.iters=1", "loss.metric=Dice"])
    with pytest.raises(ValueError, match="choose asl or ce"):
        _train(tmp_path, "y", ["train.iters=1", "loss.name=focal"])
    cfg = compose("eval", [f"checkpoint={tmp_path / 'nope.pt'}", f"output_dir={tmp_path / 'e'}"])
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        run_eval(cfg)
    cfg = compose("train", ["data=voc_aug", "data.root=/nonexistent", f"output_dir={tmp_path / 'v'}"])
    with pytest.raises(FileNotFoundError, match="expected layout"):
        run_train(cfg)
