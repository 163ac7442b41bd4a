"""End to end on shapes: a short PAP training beats a random-init detector; CLI errors; search CLI.

Train -> kill -> resume -> eval through the CLI is in ``test_resume.py``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from param_ap_loss.cli import eval_loader, train_and_evaluate
from param_ap_loss.data.build import build_dataset
from param_ap_loss.engine import evaluate
from param_ap_loss.models.build import build_detector

BIN = Path(sys.executable).parent


def _cfg(tmp_path, *overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=[f"data.root={tmp_path}/shapes", *overrides])


def test_short_pap_training_beats_random_init(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=9", "train.milestones=[8]", "data.num_train=80", "data.num_val=32")
    torch.manual_seed(0)
    trained = train_and_evaluate(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    val = build_dataset(cfg.data, "val", train=False)
    random_init = build_detector(cfg.model, cfg.loss, num_classes=len(val.cat_ids))
    base = evaluate(random_init, eval_loader(val, 8), torch.device("cpu"), val)
    # measured: trained AP 13.4 / AP50 30.2 after 90 iterations, random init 0.0 / 0.0
    assert trained["AP"] > base["AP"] + 4.0, (trained, base)
    assert trained["AP50"] > base["AP50"] + 10.0


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PAP_DATA_ROOT=str(tmp_path))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_eval_without_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from param_ap_loss.cli import evaluate as pap_eval

    monkeypatch.setattr(sys, "argv", ["pap-eval", f"hydra.run.dir={tmp_path / 'ev'}"])
    with pytest.raises(SystemExit):  # Hydra reports the error and exits 1
        pap_eval()
    assert "pap-eval needs eval.checkpoint" in capsys.readouterr().err


def test_missing_coco_files_error(tmp_path):
    cfg = _cfg(tmp_path, "data=coco", f"data.root={tmp_path}/nowhere")
    with pytest.raises(FileNotFoundError, match=r"instances_train2017.json not found.*set data\.root=<your COCO "
                                                r"folder> \(now '.*nowhere'\)"):
        build_dataset(cfg.data, "train", train=True)


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_eval_equals_single_process(tmp_path):
    """torchrun (gloo, 2 ranks) evaluation gathers and de-duplicates padded images: same COCO metrics."""
    common = ["data.num_train=8", "data.num_val=9", "device=cpu", "model.score_thresh=0.001"]
    res = _run([str(BIN / "pap-train"), *common, "train.epochs=1", "train.ckpt_every=1",
                f"hydra.run.dir={tmp_path / 'tr'}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = sorted((tmp_path / "tr" / "checkpoints").glob("ckpt_*.pt"))[-1]
    res = _run([str(BIN / "pap-eval"), *common, f"eval.checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'one'}"],
               tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    res = _run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29581", str(BIN / "pap-eval"), *common,
                f"eval.checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'two'}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["AP50"] > 0  # there are detections to gather
    for k in ("AP", "AP50", "AP75"):
        assert two[k] == pytest.approx(one[k], abs=1e-6)


def test_cli_search_runs_and_resumes(tmp_path, monkeypatch):
    """``pap-search`` through its Hydra entry point (in this process): 1 round, then the same folder
    with 2 rounds continues at round 1 and writes searched_params.json."""
    from param_ap_loss.cli import search

    monkeypatch.setenv("PAP_DATA_ROOT", str(tmp_path))
    out = tmp_path / "search"
    common = ["data.num_train=8", "data.num_val=4", "train.epochs=1", "search.samples=2", f"hydra.run.dir={out}"]
    monkeypatch.setattr(sys, "argv", ["pap-search", "search.rounds=1", *common])
    search()
    assert json.loads((out / "metrics.json").read_text())["rounds"] == 1
    monkeypatch.setattr(sys, "argv", ["pap-search", "search.rounds=2", *common])  # continues at round 1
    search()
    assert "resuming search at round 1" in (out / "log.txt").read_text()
    assert json.loads((out / "metrics.json").read_text())["rounds"] == 2
    params = json.loads((out / "searched_params.json").read_text())
    assert set(params) == {"bbox"} and len(params["bbox"]["ctrl_points"]) == 5
