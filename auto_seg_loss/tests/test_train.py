"""End-to-end on the embedded shapes data: training beats an untrained model; exact resume after a crash;
the eval entry point reproduces the train-time metrics; bad configs fail clearly."""

import json

import pytest
import torch

from auto_seg_loss.cli import compose, run_eval, run_train

SMALL = ["data.num_train=64", "data.num_val=32", "train.batch_size=8", "eval.batch_size=32", "train.log_every=10"]


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


def test_resume_after_crash_is_exact(tmp_path):
    common = ["train.iters=12", "train.ckpt_every=6", "loss.metric=BIoU", "loss.drop_bg=true"]
    _, full = _train(tmp_path, "full", common)
    _, crashed = _train(tmp_path, "crashed", common)
    ckpts = crashed / "checkpoints"
    for p in ckpts.glob("*12*"):  # the run "died" after iteration 6: only ckpt 6 survives
        p.unlink()
    (crashed / "metrics.json").unlink()
    _train(tmp_path, "crashed", common)  # resume=auto picks up ckpt 6
    a = torch.load(next((full / "checkpoints").glob("*12.pt")), weights_only=True)["model"]
    b = torch.load(next(ckpts.glob("*12.pt")), weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (crashed / "metrics.json").is_file()


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
    with pytest.raises(FileNotFoundError, match="expected the layout"):
        run_train(cfg)
