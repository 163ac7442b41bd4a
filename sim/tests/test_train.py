"""Entry points end to end on tiny settings: metrics, NaN stop, exact resume after SIGKILL, bad input errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repro_shared.guards import NonFiniteError
from sim import tasks

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "CUDA_VISIBLE_DEVICES": ""}
SMALL = ["data.train_subset=128", "train.batch_size=32", "train.epochs=2", "train.warmup_epochs=1",
         "probe.enabled=false", "device=cpu"]


def test_pretrain_default_pipeline_writes_probes(tmp_path, compose_config):
    cfg = compose_config("pretrain", ["data.train_subset=128", "train.batch_size=32", "train.epochs=2",
                                      "train.warmup_epochs=1", "device=cpu"], tmp_path)
    res = tasks.run_pretrain(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for k in ("probe_top1", "probe_top1_init", "fewshot_top1", "geometry_gap", "effective_rank_F", "train_loss"):
        assert k in saved and np.isfinite(saved[k]), k
    assert 10.0 < saved["probe_top1"] <= 100.0 and saved["loss_true"] < saved["loss_true_init"]
    assert res["epoch"] == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "lr" in r]
    assert steps[0]["step"] == 0 and steps[0]["lr"] == 0.0  # warmup from 0 at step 0 (the official offset)
    assert steps[0]["momentum"] == pytest.approx(0.99)     # EMA momentum starts at its base (cosine to 1)
    # step 4 (epoch 1, batch 0) of 8: lr = peak (warmup 1 epoch), momentum 1 - 0.01 (1 + cos(pi/2)) / 2
    s4 = next(r for r in steps if r["step"] == 4)
    assert s4["lr"] == pytest.approx(4e-3 * 32 / 256) and s4["momentum"] == pytest.approx(0.995)
    ckpts = sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))
    assert ckpts and ckpts[-1].name == "ckpt_000000008.pt"


def test_nan_prediction_stops_with_a_named_error(tmp_path, compose_config, monkeypatch):
    """A NaN in the prediction at step 5 stops the run with an error naming the step and the loss term; the
    checkpoint of step 4 (epoch end) stays the newest valid one."""
    import sim.engine as engine
    from repro_shared.checkpoint import find_latest_checkpoint, load_checkpoint

    real, calls = engine.siameseim_loss, {"n": 0}

    def poisoned(out, neg_weight):
        calls["n"] += 1
        if calls["n"] == 6:
            out = out._replace(pred=out.pred.clone().index_fill_(1, torch.tensor([3]), float("nan")))
        return real(out, neg_weight)

    monkeypatch.setattr(engine, "siameseim_loss", poisoned)
    cfg = compose_config("pretrain", SMALL + ["train.checkpoint_every=0"], tmp_path)
    with pytest.raises(NonFiniteError, match=r"'loss' = nan .*step 5 \(epoch 1\)"):
        tasks.run_pretrain(cfg)
    latest = find_latest_checkpoint(tmp_path / "checkpoints")
    assert latest.name == "ckpt_000000004.pt" and load_checkpoint(latest, restore_rng=False)["step"] == 4
    assert not (tmp_path / "metrics.json").exists()


def _run(entry, out, kill_after, overrides):
    return subprocess.run([sys.executable, "-m", "repro_shared.testing", str(kill_after), f"sim.cli:{entry}",
                           f"hydra.run.dir={out}", *overrides],
                          env=ENV, capture_output=True, text=True, timeout=900)


def _records(out: Path) -> dict:
    recs: dict = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("time")
        key = (r["step"], "train_loss" in r or "val_top1" in r)
        assert recs.setdefault(key, r) == r, f"record {key} differs between the killed and the resumed process"
    return recs


def check_exact_resume(tmp_path, entry, overrides, kill_after, iters):
    a, b = tmp_path / "uninterrupted", tmp_path / "killed"
    pa = _run(entry, a, 0, overrides)
    assert pa.returncode == 0, pa.stderr[-3000:]
    pb = _run(entry, b, kill_after, overrides)
    assert pb.returncode == -signal.SIGKILL, pb.stderr[-3000:]
    steps = sorted(int(p.name[5:14]) for p in (b / "checkpoints").glob("ckpt_*.pt.done"))
    assert steps[-1] < kill_after and steps[-1] % iters, "the newest checkpoint must lie inside an epoch"
    pb = _run(entry, b, 0, overrides)
    assert pb.returncode == 0, pb.stderr[-3000:]
    assert f"resumed from step {steps[-1]}" in (b / "log.txt").read_text()
    sa = torch.load(sorted((a / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=True)
    sb = torch.load(sorted((b / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=True)
    assert sa["step"] == sb["step"]
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), f"{k} differs after the resume"
    assert _records(a) == _records(b)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    return steps[-1]


class _Crash(RuntimeError):
    pass


def test_pretrain_resume_after_a_crash_is_exact(tmp_path, compose_config):
    """In-process version of the SIGKILL test below (no interpreter start-ups): a run that dies after optimizer
    step 7 (epoch 1 of 4-step epochs) and is started again with the same config resumes from the step-6
    checkpoint and ends bit-identical to the uninterrupted run, with the same logged records."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    over = SMALL + ["train.epochs=3", "train.checkpoint_every=3"]
    tasks.run_pretrain(compose_config("pretrain", over, tmp_path / "uninterrupted"))
    count = {"n": 0}

    def crash(optimizer, args, kwargs):
        count["n"] += 1
        if count["n"] == 7:
            raise _Crash("simulated crash after step 7")

    handle = register_optimizer_step_post_hook(crash)
    try:
        with pytest.raises(_Crash):
            tasks.run_pretrain(compose_config("pretrain", over, tmp_path / "killed"))
    finally:
        handle.remove()
    tasks.run_pretrain(compose_config("pretrain", over, tmp_path / "killed"))
    a, b = tmp_path / "uninterrupted", tmp_path / "killed"
    assert "resumed from step 6 (epoch 1, batch 2 of 4)" in (b / "log.txt").read_text()
    sa = torch.load(a / "checkpoints/ckpt_000000012.pt", weights_only=True)["model"]
    sb = torch.load(b / "checkpoints/ckpt_000000012.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert _records(a) == _records(b)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())


@pytest.mark.slow
def test_pretrain_resume_after_sigkill_is_exact(tmp_path):
    """3 epochs of 4 steps, a checkpoint every 3 steps; killed after step 7, resumed from step 6 (epoch 1, batch 2):
    final weights (online, target, BN statistics) and every logged record are identical."""
    over = SMALL + ["train.epochs=3", "train.checkpoint_every=3"]
    assert check_exact_resume(tmp_path, "pretrain", over, kill_after=7, iters=4) == 6


@pytest.mark.slow
def test_finetune_resume_after_sigkill_is_exact(tmp_path):
    """Fine-tuning with Mixup/CutMix, RandAugment, random erasing and drop path: killed after step 4 (before the
    epoch-end checkpoint), resumed from step 3 (epoch 1, batch 1)."""
    over = ["data.train_subset=64", "train.batch_size=32", "train.epochs=3", "train.checkpoint_every=3", "device=cpu",
            "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.re_prob=0.25", "aug.mixup=0.8", "aug.cutmix=1.0"]
    assert check_exact_resume(tmp_path, "finetune", over, kill_after=4, iters=2) == 3


def test_downstream_entry_points(tmp_path, compose_config):
    """finetune -> eval of its checkpoint, linprobe, fewshot and convert, from a tiny pre-training checkpoint."""
    pre = tmp_path / "pre"
    tasks.run_pretrain(compose_config("pretrain", SMALL, pre))
    ck = str(sorted((pre / "checkpoints").glob("ckpt_*.pt"))[-1])
    ft = tmp_path / "ft"
    res = tasks.run_classifier(compose_config("finetune", ["data.train_subset=64", "train.batch_size=32",
                                                           "train.epochs=1", f"init.path={ck}", "device=cpu"], ft),
                               mode="finetune")
    assert 0 <= res["top1"] <= 100 and "max_top1" in res
    ev = tasks.run_eval(compose_config("eval", [f"eval.checkpoint={sorted((ft / 'checkpoints').glob('ckpt_*.pt'))[-1]}",
                                                "device=cpu"], tmp_path / "ev"))
    assert ev["top1"] == pytest.approx(res["top1"]) and ev["num_samples"] == 360
    lp = tasks.run_classifier(compose_config("linprobe", ["train.epochs=1", "data.train_subset=64", f"init.path={ck}", "device=cpu"],
                                             tmp_path / "lp"), mode="linprobe")
    assert 0 <= lp["top1"] <= 100
    fs = tasks.run_fewshot(compose_config("fewshot", [f"init.path={ck}", "device=cpu"], tmp_path / "fs"))
    assert fs["num_train"] == 142 and 10 < fs["top1"] <= 100
    with pytest.raises(Exception, match="holds no classifier head"):
        tasks.run_eval(compose_config("eval", [f"eval.checkpoint={ck}", "device=cpu"], tmp_path / "ev2"))


def test_dense_entry_points_run(tmp_path, compose_config):
    det = tasks.run_detection(compose_config("det", ["train.epochs=1", "data.num_train=16", "data.num_val=8",
                                                     "device=cpu"], tmp_path / "det"))
    assert {"bbox_AP", "segm_AP", "train_loss"} <= set(det) and np.isfinite(det["train_loss"])
    seg = tasks.run_segmentation(compose_config("seg", ["train.epochs=1", "data.num_train=16", "data.num_val=4",
                                                        "device=cpu"], tmp_path / "seg"))
    assert 0 <= seg["mIoU"] <= 100 and np.isfinite(seg["train_loss"])


def _imagenet(root: Path, n_per_class=3, corrupt=False):
    rs = np.random.default_rng(0)
    for c in ("n01440764", "n01443537"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rs.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "train" / c / f"{c}_{i}.JPEG")
    if corrupt:
        (root / "train" / "n01440764" / "n01440764_bad.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_bad_inputs_give_one_clear_error(tmp_path, compose_config):
    with pytest.raises(FileNotFoundError, match=r"data.root=.*nowhere.*expected layout"):
        tasks.run_pretrain(compose_config("pretrain", ["data.name=imagenet", f"data.root={tmp_path}/nowhere"],
                                          tmp_path / "a"))
    with pytest.raises(ValueError, match="not divisible by the patch size 8; choose data.input_size as a multiple of 8 "):
        tasks.run_pretrain(compose_config("pretrain", ["data.input_size=30"], tmp_path / "b"))
    with pytest.raises(ValueError, match="unknown SiameseIM variant 'vit_tiny'; known: tiny, vit_base_patch16"):
        tasks.run_pretrain(compose_config("pretrain", ["model.variant=vit_tiny"], tmp_path / "c"))
    with pytest.raises(ValueError, match=r"has 128 samples, fewer than one batch of 256.*train.batch_size"):
        tasks.run_pretrain(compose_config("pretrain", ["data.train_subset=128", "train.batch_size=256"], tmp_path / "d"))
    with pytest.raises(ValueError, match="unknown data.name 'cifar'; known: digits, shapes, imagenet"):
        tasks.run_pretrain(compose_config("pretrain", ["data.name=cifar"], tmp_path / "e"))
    with pytest.raises(FileNotFoundError, match="this experiment starts from pretrained weights"):
        tasks.run_classifier(compose_config("finetune", ["init.required=true"], tmp_path / "f"), mode="finetune")


def test_unreadable_image_is_named_or_skipped(tmp_path, compose_config):
    from repro_shared.data import DataError

    root = _imagenet(tmp_path / "imnet", n_per_class=4, corrupt=True)
    over = ["data.name=imagenet", f"data.root={root}", "train.batch_size=3", "train.epochs=1", "probe.enabled=false",
            "device=cpu"]
    with pytest.raises(DataError, match="n01440764_bad.JPEG"):
        tasks.run_pretrain(compose_config("pretrain", over, tmp_path / "a"))
    res = tasks.run_pretrain(compose_config("pretrain", over + ["data.skip_corrupt=true"], tmp_path / "b"))
    assert res["train_skipped"] == 1


def test_eval_row_takes_eval_checkpoint(tmp_path, compose_config):
    """A paper eval row runs with eval.checkpoint= (no init.path needed); a missing eval.checkpoint is named."""
    from sim.models import build_classifier

    torch.manual_seed(0)
    torch.save({"model": build_classifier("tiny", 10, img_size=32).state_dict()}, tmp_path / "ft.pth")
    row = ["experiment=eval/in1k_vit_b", "model.variant=tiny", "data.name=digits", "data.input_size=32",
           "data.crop_pct=null", "data.num_workers=0", "eval.benchmark=digits", "device=cpu"]
    res = tasks.run_eval(compose_config("eval", row + [f"eval.checkpoint={tmp_path / 'ft.pth'}"], tmp_path / "ev"))
    assert res["num_samples"] == 360
    with pytest.raises(FileNotFoundError, match="eval.checkpoint='.*nope.pth' is not a file"):
        tasks.run_eval(compose_config("eval", row + [f"eval.checkpoint={tmp_path / 'nope.pth'}"], tmp_path / "ev2"))
    with pytest.raises(FileNotFoundError, match="init.path"):  # neither given: the row's required init is named
        tasks.run_eval(compose_config("eval", row, tmp_path / "ev3"))


def test_paper_rows_without_data_root_name_the_key(tmp_path, compose_config):
    """Detection / segmentation / robustness rows with data.root unset say so (was: "data.root='None/train2017'")."""
    with pytest.raises(FileNotFoundError, match=r"data.root is not set; pass data.root=.* train2017/"):
        tasks.run_detection(compose_config("det", ["experiment=det/coco_maskrcnn_vitdet_b_100ep", "init.required=false",
                                                   "device=cpu"], tmp_path / "det"))
    with pytest.raises(FileNotFoundError, match=r"data.root is not set; pass data.root=.*images/\{training"):
        tasks.run_segmentation(compose_config("seg", ["experiment=seg/ade20k_upernet_vit_b_160k", "init.required=false",
                                                      "device=cpu"], tmp_path / "seg"))


def test_fewshot_row_without_subset_file_says_where_to_get_it(tmp_path):
    """fewshot.subset_file unset (the 1 % rows leave it to the command line): the error names the key and the source."""
    from repro_shared.data import ImageFolder
    from sim.data import read_subset_file

    for c in ("n01", "n02"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / c / f"{c}_1.JPEG")
    with pytest.raises(FileNotFoundError, match=r"fewshot.subset_file=/path/to/1percent.txt"):
        read_subset_file(ImageFolder(tmp_path, None), None)


def test_pretrain_init_from_a_foreign_file_is_one_line(tmp_path, compose_config):
    torch.save({"model": {"foo": torch.zeros(3)}}, tmp_path / "foreign.pt")
    with pytest.raises(Exception, match=r"foreign.pt does not fit the model: 0 tensors loaded") as e:
        tasks.run_pretrain(compose_config("pretrain", SMALL + [f"init.path={tmp_path / 'foreign.pt'}"], tmp_path / "a"))
    assert "\n" not in str(e.value) and "sim-convert convert.to=ours" in str(e.value)
