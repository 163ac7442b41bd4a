"""Newcomer checks of the entry points: one-line user errors, ``train.resume=auto`` refusing a folder of another
run, the config diff, ``pap-eval`` given a run folder (its own output folder, errors naming the differing
settings), the final checkpoint of every training."""

import json
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from repro_shared import checkpoint
from repro_shared.checkpoint import CheckpointError

from param_ap_loss import cli
from param_ap_loss.cli import _resume, find_eval_checkpoint, load_for_eval
from param_ap_loss.config_diff import RESUME_MAY_CHANGE
from repro_shared.checkpoint import config_differences
from repro_shared.checkpoint import flatten_config as flatten
from param_ap_loss.models.build import build_detector, build_pap
from param_ap_loss.search import SearchState, check_search_folder


def _cfg(*overrides, config="train", hydra=False):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose(config, overrides=list(overrides), return_hydra_config=hydra)


# ------------------------------------------------------------------------------------------- config diff
def test_flatten_and_config_differences():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert flatten(3) == {"": 3}
    saved = {"train": {"lr": 0.01, "resume": "auto", "num_workers": 0}, "eval": {"batch_size": 8}, "seed": 0}
    here = {"train": {"lr": 0.02, "resume": None, "num_workers": 4}, "eval": {"batch_size": 2}, "seed": 0, "new": 1}
    # ignore entries: an exact key ("train.resume", "train.num_workers") or a prefix ending in "." ("eval.")
    assert config_differences(saved, here, ("train.resume", "train.num_workers", "eval.")) == [
        "new: 1 here, None saved", "train.lr: 0.02 here, 0.01 saved"]
    assert len(config_differences(saved, here)) == 5
    assert config_differences(saved, saved) == []
    # an entry without a dot skips that key and its sub-keys, not a longer key that merely shares the prefix
    assert config_differences({"data": {"root": "a", "root_x": 1}}, {"data": {"root": "b", "root_x": 2}},
                              ("data.root",)) == ["data.root_x: 2 here, 1 saved"]


# ------------------------------------------------------------------------------------------- user errors
# (the decorator itself is tested in shared/tests/test_run_logging.py)
def test_entry_point_user_error_is_one_line_and_in_log(tmp_path, monkeypatch, capsys):
    """Through the real Hydra app: exit status 1, ``error: ...`` on stderr without Hydra's traceback, and the
    error also in the run's log.txt."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = tmp_path / "ev"
    monkeypatch.setattr(sys, "argv", ["pap-eval", f"eval.checkpoint={tmp_path / 'nope.pt'}", f"hydra.run.dir={out}"])
    with pytest.raises(SystemExit) as info:
        cli.evaluate()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: eval.checkpoint='{tmp_path / 'nope.pt'}' does not exist")
    assert "Traceback" not in err and "Error executing job" not in err
    assert "FileNotFoundError: eval.checkpoint=" in (out / "log.txt").read_text()


# ------------------------------------------------------------------------------------------- resume=auto
def _toy_state(cfg, ckpt_dir, step=3):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, step), model=model, optimizer=opt, step=step,
                               config=cfg)
    return model, opt


def test_resume_auto_refuses_a_checkpoint_of_another_config(tmp_path):
    saved = _cfg("train.resume=auto")
    ckpt_dir = tmp_path / "checkpoints"
    _toy_state(saved, ckpt_dir)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = _cfg("train.resume=auto", "train.lr=0.02", "loss=focal_giou")
    with pytest.raises(ValueError, match=r"another configuration \(.*loss\.type: 'focal_giou' here, 'pap' saved"
                                         r".*train\.lr: 0\.02 here, 0\.01 saved.*hydra\.run\.dir"):
        _resume(other, ckpt_dir, model, opt, None)
    # keys of RESUME_MAY_CHANGE may differ (another machine's paths, workers, logging, checkpoint cadence, eval)
    same = _cfg("train.resume=auto", "device=cpu", "train.num_workers=2", "train.log_every=1", "train.ckpt_every=3",
                "train.keep_last=4", "eval.batch_size=1", "data.root=/elsewhere", "data.skip_corrupt=true")
    assert _resume(same, ckpt_dir, model, opt, None) == 3
    # an explicit path starts from that checkpoint on purpose, whatever its config
    assert _resume(_cfg(f"train.resume={checkpoint.checkpoint_path(ckpt_dir, 3)}", "train.lr=0.5"), ckpt_dir, model,
                   opt, None) == 3
    assert _resume(_cfg("train.resume=auto"), tmp_path / "empty", model, opt, None) == 0
    assert _resume(_cfg(), ckpt_dir, model, opt, None) == 0  # resume: null


def test_resume_auto_names_the_settings_before_loading_another_detector(tmp_path):
    """A checkpoint of another detector: the error lists the differing config keys (not the state-dict keys the
    load would have complained about)."""
    saved = _cfg("train.resume=auto", "model.fpn_channels=32")
    ckpt_dir = tmp_path / "checkpoints"
    _toy_state(saved, ckpt_dir)
    here = _cfg("train.resume=auto")
    model = build_detector(here.model, here.loss, num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"model\.fpn_channels: 64 here, 32 saved"):
        _resume(here, ckpt_dir, model, opt, None)


def test_resume_may_change_names_real_config_keys():
    """RESUME_MAY_CHANGE names real keys (a renamed key would silently make every resume refuse or accept)."""
    keys = set(flatten(OmegaConf.to_container(_cfg("data=coco", "init=imagenet_r50"), resolve=False)))
    for k in RESUME_MAY_CHANGE:
        assert any(x == k or x.startswith(k) for x in keys), k


# ------------------------------------------------------------------------------------------- pap-eval
def test_find_eval_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = _cfg()
    _toy_state(cfg, run / "checkpoints", step=4)
    _toy_state(cfg, run / "checkpoints", step=8)
    newest = run / "checkpoints" / "ckpt_000000008.pt"
    assert find_eval_checkpoint(run) == newest  # a run folder
    assert find_eval_checkpoint(run / "checkpoints") == newest  # its checkpoints folder
    assert find_eval_checkpoint(run / "checkpoints" / "ckpt_000000004.pt") == run / "checkpoints" / "ckpt_000000004.pt"
    (run / "checkpoints" / "ckpt_000000008.pt.done").unlink()  # an incomplete newest checkpoint is skipped
    assert find_eval_checkpoint(run) == run / "checkpoints" / "ckpt_000000004.pt"
    with pytest.raises(FileNotFoundError, match=r"eval.checkpoint='.*nope.pt' does not exist; pass a pap-train run"):
        find_eval_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no valid ckpt_\*\.pt in .*empty.*checkpoints/ckpt_<step>\.pt"):
        find_eval_checkpoint(tmp_path / "empty")


def test_load_for_eval_names_the_differing_model_and_loss_keys(tmp_path):
    trained = _cfg("model.fpn_channels=32", "loss=focal_giou")
    model = build_detector(trained.model, trained.loss, num_classes=3)
    path = checkpoint.save_checkpoint(checkpoint.checkpoint_path(tmp_path, 1), model=model, step=1, config=trained)
    here = _cfg("data.root=/elsewhere")  # a data path may differ
    other = build_detector(here.model, here.loss, num_classes=3)
    with pytest.raises(CheckpointError, match=r"holds another detector.*model\.fpn_channels: 64 here, 32 saved"
                                              r".*loss\.type: 'pap' here, 'focal_giou' saved.*experiment="):
        load_for_eval(other, path, here)
    fits = build_detector(trained.model, trained.loss, num_classes=3)
    load_for_eval(fits, path, trained)
    assert all(torch.equal(a, b) for a, b in zip(fits.state_dict().values(), model.state_dict().values()))
    path.write_bytes(path.read_bytes()[:100])  # a corrupt file keeps its own error
    with pytest.raises(CheckpointError, match="truncated"):
        load_for_eval(fits, path, trained)


def test_eval_config_has_its_own_output_folder_also_for_paper_rows():
    """Paper rows train into a fixed folder (``outputs/<experiment>``, for resume); ``pap-eval`` with the same
    ``experiment=`` writes to ``outputs/eval/...``, never into the training run."""
    for row in ("retinanet_pap_coco", "faster_rcnn_pap_coco", "deformable_detr_pap_coco"):
        assert _cfg(f"experiment={row}", hydra=True).hydra.run.dir == f"outputs/{row}"
        assert _cfg(f"experiment={row}", config="eval", hydra=True).hydra.run.dir.startswith("outputs/eval/")
    assert _cfg(config="eval", hydra=True).hydra.run.dir.startswith("outputs/eval/")


def test_train_saves_the_final_checkpoint_and_eval_of_the_run_folder_writes_its_own_folder(tmp_path, monkeypatch,
                                                                                           capsys):
    """``pap-train`` without any checkpoint setting still leaves the trained detector; ``pap-eval
    eval.checkpoint=<run folder>`` (default output folder) evaluates it into ``outputs/eval/...`` with the same
    metrics, leaving the training folder as it was."""
    monkeypatch.setenv("PAP_DATA_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    common = ["data.num_train=8", "data.num_val=4", "device=cpu", "model.score_thresh=0.0"]
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["pap-train", *common, "train.epochs=2", "train.milestones=[1]",
                                      f"hydra.run.dir={run}"])
    cli.train()
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["ckpt_000000002.pt"]  # 2 epochs x 1 step
    def files():  # log.txt aside: in one process the logger keeps appending to the first run's file too
        return {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "log.txt"}

    before = files()
    monkeypatch.setattr(sys, "argv", ["pap-eval", *common, f"eval.checkpoint={run}"])
    cli.evaluate()
    (ev,) = (tmp_path / "outputs" / "eval").glob("*/*")
    assert f"evaluating {run / 'checkpoints' / 'ckpt_000000002.pt'}" in (ev / "log.txt").read_text()
    got, ref = json.loads((ev / "metrics.json").read_text()), json.loads((run / "metrics.json").read_text())
    for k in ("AP", "AP50", "AP75"):
        assert got[k] == pytest.approx(ref[k], abs=1e-9)
    assert OmegaConf.load(ev / "config.yaml").eval.checkpoint == str(run)
    assert files() == before
    capsys.readouterr()


# ------------------------------------------------------------------------------------------- pap-search folder
def test_search_folder_of_another_search_is_refused(tmp_path):
    """Paper searches run in a fixed folder (``outputs/search_retinanet``) and continue its state: a state written
    with other proxy settings is refused (its rewards would mix with this search's); more rounds, other devices or
    paths are allowed; search.resume=false starts over."""
    started = OmegaConf.to_container(_cfg(config="search"), resolve=True)
    check_search_folder(tmp_path, started)  # nothing there yet: records the config
    SearchState(mu=[np.full(3, 0.5)], sigma=[np.full(3, 0.2)]).save(tmp_path)
    same = OmegaConf.to_container(_cfg("search.rounds=5", "search.devices=[cpu]", "data.root=/x", config="search"),
                                  resolve=True)
    check_search_folder(tmp_path, same)
    other = OmegaConf.to_container(_cfg("train.epochs=1", "search.samples=4", config="search"), resolve=True)
    with pytest.raises(ValueError, match=r"holds the state of a search with another configuration \(search\.samples: 4 "
                                         r"here, 2 saved; train\.epochs: 1 here, 3 saved\).*search\.resume=false"):
        check_search_folder(tmp_path, other)
    check_search_folder(tmp_path, other, resume=False)  # starting over records the new config
    check_search_folder(tmp_path, other)


def test_entry_points_refuse_another_runs_folder_before_touching_it(tmp_path, monkeypatch, capsys):
    """``pap-train`` / ``pap-search`` in the folder of a run with other settings stop before ``setup_run``
    rewrites that run's ``config.yaml``."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("PAP_DATA_ROOT", str(tmp_path))
    run = tmp_path / "run"
    _toy_state(_cfg("train.resume=auto"), run / "checkpoints")
    (run / "config.yaml").write_text("the other run's config\n")
    monkeypatch.setattr(sys, "argv", ["pap-train", "train.resume=auto", "train.lr=0.5", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit):
        cli.train()
    assert "train.lr: 0.5 here, 0.01 saved" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == "the other run's config\n"

    search = tmp_path / "search"
    check_search_folder(search, OmegaConf.to_container(_cfg(config="search"), resolve=True))
    SearchState(mu=[np.full(3, 0.5)], sigma=[np.full(3, 0.2)]).save(search)
    (search / "config.yaml").write_text("the other search's config\n")
    monkeypatch.setattr(sys, "argv", ["pap-search", "search.samples=4", f"hydra.run.dir={search}"])
    with pytest.raises(SystemExit):
        cli.search()
    assert "search.samples: 4 here, 2 saved" in capsys.readouterr().err
    assert (search / "config.yaml").read_text() == "the other search's config\n"


def test_malformed_params_file_is_a_clear_error(tmp_path):
    """``loss.head.params_file=`` a file that is not pap-search's searched_params.json: a ValueError naming the
    file (was a TypeError / KeyError / bare JSONDecodeError)."""
    cases = {"trunc.json": ('{"bbox": {"ctrl', r"trunc\.json is not valid JSON"),
                "int.json": ('{"bbox": 3}', r"int\.json: head 'bbox' needs 'ctrl_points' and 'reg_weight'"),
                "keys.json": ('{"bbox": {"ctrl_points": []}}', r"keys\.json: head 'bbox' needs"),
                "list.json": ("[1, 2]", r"list\.json has parameters for heads none, not for 'bbox'"),
                "rpn.json": ('{"rpn": {}}', r"rpn\.json has parameters for heads \['rpn'\], not for 'bbox'")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            build_pap(OmegaConf.create({"params_file": str(tmp_path / name)}), "bbox")
