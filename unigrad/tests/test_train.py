"""unigrad-train / -lineval / -knn end to end on tiny data: outputs, schedules as logged, every objective,
NaN stop, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from PIL import Image

from conftest import FAST, make_cfg
from repro_shared.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from repro_shared.data import DataError
from repro_shared.guards import NonFiniteError
from repro_shared.logging import read_jsonl
from unigrad import cli
from unigrad.models import SiameseNet


def test_default_run_writes_metrics_and_logs_the_official_schedules(tmp_path):
    res = cli.run_train(make_cfg("train", [*FAST, "eval.probe=true"], tmp_path))
    assert "starting from step 0 (to continue a killed run, start it again with hydra.run.dir=" in (tmp_path / "log.txt").read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("knn_top1", "probe_top1", "effective_rank", "embedding_std", "effective_rank_backbone", "steps"):
        assert key in saved and saved[key] == pytest.approx(res[key])
    assert saved["steps"] == 4 and 0 <= saved["knn_top1"] <= 100 and saved["effective_rank"] >= 1
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "lr" in r]
    init_lr = 0.05 * 64 / 256
    # step 0 runs at the warm-up start min_lr = 1e-3 lr with momentum base; step 2 (= warm-up end) at the peak
    assert rows[0]["step"] == 1 and rows[0]["lr"] == pytest.approx(1e-3 * init_lr) and rows[0]["mm"] == pytest.approx(0.99)
    assert rows[2]["lr"] == pytest.approx(init_lr)
    state = load_checkpoint(find_latest_checkpoint(tmp_path / "checkpoints"), restore_rng=False)
    assert state["step"] == 4 and bool(state["extra"]["loss"]["F_initialized"])
    assert state["extra"]["loss"]["F"].dtype == torch.float32 and state["extra"]["loss"]["F"].shape == (16, 16)


@pytest.mark.parametrize("loss, extra", [
    ("unigrad", ["loss.target=stopgrad"]), ("simclr_grad", []), ("moco_grad", ["loss.queue_size=256"]),
    ("byol_grad", []), ("simsiam_grad", []), ("barlow_twins_grad", []), ("vicreg_grad", []), ("infonce", []),
    ("byol", ["model.predictor_hidden_dim=32"]), ("barlow_twins", []), ("vicreg", []),
])
def test_every_objective_trains_without_nan(tmp_path, loss, extra):
    res = cli.run_train(make_cfg("train", [*FAST, f"loss={loss}", "train.epochs=1", "eval.enabled=false", *extra], tmp_path))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert res["steps"] == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)


def test_cutmix_runs_for_unigrad_and_is_refused_elsewhere(tmp_path):
    res = cli.run_train(make_cfg("train", [*FAST, "train.epochs=1", "train.cutmix_alpha=1.0", "eval.enabled=false"], tmp_path / "a"))
    assert res["steps"] == 2
    with pytest.raises(ValueError, match="UniGrad only"):
        cli.run_train(make_cfg("train", [*FAST, "loss=simclr_grad", "train.cutmix_alpha=1.0"], tmp_path / "b"))


def test_nan_in_a_prediction_stops_with_the_step_and_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    embed = SiameseNet.embed

    def poisoned(self, x):
        calls["n"] += 1
        z = embed(self, x)
        return z * float("nan") if calls["n"] == 5 else z  # step 2 (0-based), view 1

    monkeypatch.setattr(SiameseNet, "embed", poisoned)
    with pytest.raises(NonFiniteError, match=r"'loss' = nan .* at step 2 \(epoch 1\)"):
        cli.run_train(make_cfg("train", FAST, tmp_path))
    latest = find_latest_checkpoint(tmp_path / "checkpoints")
    state = load_checkpoint(latest, restore_rng=False)  # the last good checkpoint is intact
    assert state["step"] == 2 and torch.isfinite(state["extra"]["loss"]["F"]).all()


def test_bad_input_fails_early_with_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.root='/no/such/imagenet' is not a folder; expected layout: .*train/<class>"):
        cli.run_train(make_cfg("train", ["data=imagenet", "data.root=/no/such/imagenet"], tmp_path / "a"))
    with pytest.raises(MissingConfigException, match=r"(?s)Could not find 'loss/unigradd'.*unigrad"):
        make_cfg("train", ["loss=unigradd"], tmp_path / "b")
    with pytest.raises(ValueError, match="unknown encoder 'vit_b'; known: resnet50, resnet18, tiny_cnn"):
        cli.run_train(make_cfg("train", [*FAST, "model.encoder=vit_b"], tmp_path / "c"))
    with pytest.raises(ValueError, match="train.batch_size=1 per process is too small"):
        cli.run_train(make_cfg("train", [*FAST, "train.batch_size=1"], tmp_path / "d"))
    with pytest.raises(ValueError, match=r"has 128 samples, fewer than one batch of 200, .* lower train.batch_size"):
        cli.run_train(make_cfg("train", [*FAST, "train.batch_size=200"], tmp_path / "e"))
    with pytest.raises(ValueError, match=r"loss.queue_size=1000 is not a multiple of the 128 keys"):
        cli.run_train(make_cfg("train", [*FAST, "loss=moco_grad", "loss.queue_size=1000"], tmp_path / "f"))
    with pytest.raises(ValueError, match="unknown data.name 'cifar'; known: digits, imagenet"):
        cli.run_train(make_cfg("train", [*FAST, "data.name=cifar"], tmp_path / "g"))
    with pytest.raises(ValueError, match=r"loss \(unigrad.losses.UniGradLoss\): UniGradLoss takes target in .* got 'foo'"):
        cli.run_train(make_cfg("train", [*FAST, "loss.target=foo"], tmp_path / "i"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=cuda was requested but CUDA is not available; use device=cpu"):
            cli.run_train(make_cfg("train", [*FAST, "device=cuda"], tmp_path / "j"))
    with pytest.raises(ValueError, match=r"data.root is not set: pass data.root=/path/to/imagenet with the layout"):
        cli.run_train(make_cfg("train", ["data=imagenet"], tmp_path / "h"))  # root: ??? in data/imagenet.yaml


def test_console_script_prints_one_error_line_not_a_traceback(tmp_path):
    train = Path(sys.executable).parent / "unigrad-train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run([str(train), "data=imagenet", "data.root=/no/such/imagenet", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("error: data.root='/no/such/imagenet' is not a folder; expected layout:")
    assert "FileNotFoundError: data.root='/no/such/imagenet'" in (tmp_path / "log.txt").read_text()


def _image_folder(root, corrupt: bool):
    for split in ("train", "val"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (60 * c + 10 * i, 80, 120)).save(d / f"img{i}.jpg")
    bad = root / "train" / "class1" / "img3.jpg"
    if corrupt:
        bad.write_bytes(bad.read_bytes()[:100])  # truncated JPEG
    return bad


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    bad = _image_folder(tmp_path / "in", corrupt=True)
    common = [o for o in FAST if not o.startswith("data.")] + ["data=imagenet", f"data.root={tmp_path / 'in'}", "data.image_size=32", "data.num_workers=0",
              "train.batch_size=4", "train.epochs=1", "eval.enabled=false"]
    with pytest.raises(DataError, match=str(bad)):
        cli.run_train(make_cfg("train", common, tmp_path / "a"))
    # the kNN bank (train split, with the unreadable image) is read by the evaluation loaders too
    res = cli.run_train(make_cfg("train", [*common, "data.skip_corrupt=true", "eval.enabled=true"], tmp_path / "b"))
    epoch_row = [r for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "epoch_loss" in r][0]
    assert epoch_row["epoch_skipped_samples"] == 1 and 0 <= res["knn_top1"] <= 100


def test_lineval_and_knn_on_a_trained_checkpoint(tmp_path):
    cli.run_train(make_cfg("train", [*FAST, "eval.enabled=false"], tmp_path / "pre"))
    ckpt = find_latest_checkpoint(tmp_path / "pre" / "checkpoints")
    model = ["model.tiny_widths=[4,8,16]", "model.projector_hidden_dim=32", "model.projector_output_dim=16"]
    res = cli.run_lineval(make_cfg("lineval", [*model, f"init.path={ckpt}", "lineval.epochs=2", "lineval.batch_size=256",
                                               "lineval.eval_every_epochs=1"], tmp_path / "lin"))
    assert 0 < res["top1"] <= res["top5"] <= 100 and res["best_top1"] >= res["top1"]
    knn = cli.run_knn(make_cfg("knn", [*model, f"init.path={ckpt}"], tmp_path / "knn"))
    assert 0 < knn["knn_top1"] <= 100
    # weights of another architecture, or a file without an encoder: one error naming the file and the fix
    with pytest.raises(CheckpointError, match=r"does not fit model.encoder=tiny_cnn .* pass the model=\.\.\."):
        cli.run_lineval(make_cfg("lineval", [f"init.path={ckpt}"], tmp_path / "wrong"))  # default widths 32-64-128
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(CheckpointError, match=r"no_tensors.pt: no tensors found.*expected a unigrad-train checkpoint"):
        cli.run_knn(make_cfg("knn", [*model, f"init.path={tmp_path / 'no_tensors.pt'}"], tmp_path / "knn2"))
    # a run that needs weights and has none stops before building anything, saying where to get them
    with pytest.raises(FileNotFoundError, match="unigrad-convert"):
        cli.run_lineval(make_cfg("lineval", ["experiment=lineval_r50_simsiam_lars"], tmp_path / "req"))
