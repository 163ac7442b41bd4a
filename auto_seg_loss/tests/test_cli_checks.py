"""Newcomer checks of the entry points: a config of the other entry point, unset ``data.root``, label maps that
are not class indices, a search folder of another search, ``asl-eval`` without a checkpoint, an unknown metric,
and the one-line ``error: ...`` of every user error."""

import logging
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from repro_shared import run
from repro_shared.data import DataError

from auto_seg_loss import cli
from auto_seg_loss.cli import compose, run_eval, run_search, run_train
from auto_seg_loss.data import VOCAugDataset
from auto_seg_loss.data.datasets import check_label_file
from auto_seg_loss.data.transforms import EvalPipeline
from auto_seg_loss.ops.bezier import identity_theta
from auto_seg_loss.search import PPOSearch, SearchConfig


# --------------------------------------------------------------------------------------- entry points
def test_search_experiment_given_to_asl_train_names_asl_search(tmp_path):
    cfg = compose("train", ["experiment=search_voc_miou", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match=r"this config is for asl-search .*search, proxy.*experiment=search_voc_\*"):
        run_train(cfg)
    assert not (tmp_path / "o").exists()  # refused before anything is written (also before the init check)


def test_train_experiment_given_to_asl_search_names_asl_train(tmp_path):
    cfg = compose("search", ["experiment=voc_miou", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match=r"this config is for asl-train .*loss, optim, train.*voc_\* / cityscapes_\*"):
        run_search(cfg)
    assert not (tmp_path / "o").exists()


def test_unknown_metric_in_search_lists_the_metrics(tmp_path):
    cfg = compose("search", ["metric=Dice", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match=r"unknown metric='Dice'; choose one of \['mIoU', .*'BF1'\]"):
        run_search(cfg)
    assert not (tmp_path / "o").exists()


def test_search_on_voc_without_the_voc_proxy_settings_names_the_experiment(tmp_path):
    cfg = compose("search", ["data=voc_aug", "data.root=/data", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match=r"data=voc_aug needs the VOC proxy settings \(proxy\.img_scale, "
                                         r"proxy\.crop_size\): run experiment=search_voc_<metric>"):
        run_search(cfg)


def test_eval_without_checkpoint_fails_before_the_run_folder(tmp_path):
    out = tmp_path / "e"
    with pytest.raises(FileNotFoundError, match=r"checkpoint=\?\?\? is not a file; pass checkpoint=<run dir>"):
        run_eval(compose("eval", [f"output_dir={out}"]))  # checkpoint: ??? (unset)
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*nope\.pt is not a file"):
        run_eval(compose("eval", [f"checkpoint={tmp_path / 'nope.pt'}", f"output_dir={out}"]))
    assert not out.exists()


@pytest.mark.parametrize("entry,data", [("train", "voc_aug"), ("train", "cityscapes"), ("search", "voc_aug")])
def test_unset_data_root_names_the_key_and_the_layout(tmp_path, entry, data):
    over = [f"data={data}"] if entry == "train" else ["experiment=search_voc_miou", "model=tiny"]
    cfg = compose(entry, over + ["init=none", f"output_dir={tmp_path / 'o'}"])
    layout = "JPEGImages" if data == "voc_aug" else "leftImg8bit"
    with pytest.raises(FileNotFoundError, match=rf"data\.root=unset \(\?\?\?\) is not a folder; expected layout:(.|\n)*{layout}"):
        (run_train if entry == "train" else run_search)(cfg)


def test_user_error_is_one_line_through_the_console_entry_point(tmp_path, monkeypatch, capsys):
    """The Hydra apps end a user error with ``error: <message>`` on stderr and exit status 1 (no Hydra
    traceback); the message is also in the run's log.txt; ``HYDRA_FULL_ERROR=1`` keeps the traceback."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["asl-train", "data=voc_aug", f"data.root={tmp_path / 'nowhere'}",
                                      f"hydra.run.dir={out}"])
    with pytest.raises(SystemExit) as info:
        cli.train()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: data.root='{tmp_path / 'nowhere'}' is not a folder; expected layout:")
    assert "Traceback" not in err and "Error executing job" not in err
    assert "FileNotFoundError: data.root=" in (out / "log.txt").read_text()
    for h in list(logging.getLogger("auto_seg_loss").handlers):  # this process's later runs log elsewhere
        if isinstance(h, logging.FileHandler) and str(out) in h.baseFilename:
            logging.getLogger("auto_seg_loss").removeHandler(h)
            h.close()
    monkeypatch.setattr(sys, "argv", ["asl-search", "metric=Dice", f"hydra.run.dir={tmp_path / 's'}"])
    with pytest.raises(SystemExit) as info:
        cli.search()
    assert info.value.code == 1 and capsys.readouterr().err.startswith("error: unknown metric='Dice'")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="unknown metric"):
        run.report_user_errors("auto_seg_loss")(run_search)(compose("search", ["metric=Dice"]))


# --------------------------------------------------------------------------------------- label maps
def _label(mode, values):
    arr = np.array(values, np.uint8).reshape(2, 2)
    if mode == "RGB":
        return Image.fromarray(np.stack([arr] * 3, -1))
    if mode == "P":  # a palette label map as VOC ships them (index = class, the palette only colours it)
        img = Image.new("P", (2, 2))
        img.putpalette(list(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist()))
        img.putdata(arr.ravel().tolist())
        return img
    return Image.fromarray(arr, mode)


def test_check_label_file():
    check_label_file(_label("L", [0, 20, 255, 3]), "ok.png", 21)  # 255 = ignore is accepted
    check_label_file(_label("P", [0, 1, 2, 3]), "ok.png", 4)
    with pytest.raises(DataError, match=r"label map rgb\.png has image mode 'RGB', not one channel.*colour"):
        check_label_file(_label("RGB", [0, 1, 2, 3]), "rgb.png", 21)
    with pytest.raises(DataError, match=r"label map big\.png holds values \[21, 128\] outside 0\.\.20 that are not the "
                                        r"ignore label 255.*data\.num_classes.*skip_corrupt"):
        check_label_file(_label("L", [0, 21, 128, 255]), "big.png", 21)
    with pytest.raises(DataError, match=r"values \[4\] outside 0\.\.3"):
        check_label_file(_label("L", [0, 4, 4, 3]), "x.png", 4)


def _voc_with_labels(tmp_path, labels: dict):
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in labels))
    for i, lab in labels.items():
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        (root / "SegmentationClass").mkdir(exist_ok=True)
        lab.save(root / "SegmentationClass" / f"{i}.png")
    return root


def test_reader_refuses_or_skips_label_maps_that_are_not_class_indices(tmp_path, caplog):
    root = _voc_with_labels(tmp_path, {"good": _label("P", [0, 5, 255, 20]), "rgb": _label("RGB", [0, 5, 5, 0]),
                                       "big": _label("L", [0, 5, 40, 0])})
    ds = VOCAugDataset(root, "val", EvalPipeline((4, 4)))
    _, y = ds[0]
    assert set(y.unique().tolist()) == {0, 5, 20, 255}
    with pytest.raises(DataError, match=r"rgb\.png has image mode 'RGB'"):
        ds[1]
    with pytest.raises(DataError, match=r"big\.png holds values \[40\]"):
        ds[2]
    skip = VOCAugDataset(root, "val", EvalPipeline((4, 4)), skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="auto_seg_loss.data"):
        assert skip[1] is None and skip[2] is None and skip[0] is not None
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "rgb.png" in warned and "big.png" in warned


# --------------------------------------------------------------------------------------- search state
def test_search_state_of_another_context_is_refused(tmp_path):
    """A state file written for another target metric / proxy training is refused (its rewards are of another
    function); the same context continues."""
    path = tmp_path / "search_state.pt"
    cfg = SearchConfig(rounds=2, samples_per_round=2, update_steps=1, mu_lr=0.1)
    ctx = {"metric": "BF1", "proxy": {"iters": 30}}
    s = PPOSearch(identity_theta(2), cfg, path, context=ctx)
    s.run(lambda th, r, i: float(th.sum()))
    assert PPOSearch(identity_theta(2), cfg, path, context=dict(ctx)).round == 2  # same settings: resumes
    with pytest.raises(ValueError, match=r"was written for \{'metric': 'BF1', 'proxy': \{'iters': 30\}\}, not "
                                         r"\{'metric': 'BF1', 'proxy': \{'iters': 60\}\}.*fresh output folder"):
        PPOSearch(identity_theta(2), cfg, path, context={"metric": "BF1", "proxy": {"iters": 60}})
    assert torch.load(path, weights_only=False)["context"] == ctx


def test_search_entry_point_refuses_a_folder_of_another_search(tmp_path):
    over = ["metric=mAcc", "search.rounds=1", "search.samples_per_round=2", "search.update_steps=1",
            "proxy.iters=1", "proxy.num_train=8", "proxy.heldout_size=4", "proxy.batch_size=8",
            f"output_dir={tmp_path}"]
    run_search(compose("search", over))
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"search state .* was written for .*'iters': 1.*not .*'iters': 2"):
        run_search(compose("search", over + ["proxy.iters=2"]))
    assert (tmp_path / "config.yaml").read_text() == config  # refused before the folder was touched
    run_search(compose("search", over + ["data.skip_corrupt=true"]))  # not part of what a reward depends on


# --------------------------------------------------------------------------------------- asl-convert-backbone
def test_convert_backbone_bad_file_is_one_line(tmp_path, capsys):
    from auto_seg_loss.weights import main

    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    for src, message in [("missing.pth", r"missing\.pth does not exist"),
                         ("junk.pth", r"junk\.pth cannot be read"),
                         ("other.pth", r"other\.pth do not fit.*ResNet-V1c of the same depth")]:
        with pytest.raises(SystemExit) as info:
            main([str(tmp_path / src), str(tmp_path / "out.pth"), "--backbone", "resnet50"])
        err = capsys.readouterr().err
        assert info.value.code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert re.search(message, err), err
    assert not (tmp_path / "out.pth").exists()


def test_init_file_of_another_network_is_one_line_error(tmp_path, monkeypatch, capsys):
    """``asl-train init.path=<a file that does not fit>``: the key mismatch is a user error (one line), not a
    traceback."""
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["asl-train", "init.required=true", f"init.path={tmp_path / 'other.pth'}",
                                      "train.iters=1", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as info:
        cli.train()
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.startswith(f"error: backbone weights {tmp_path / 'other.pth'} do not fit")


# --------------------------------------------------------------------------------------- train.resume=auto
def test_resume_auto_refuses_a_folder_of_another_run(tmp_path):
    """``asl-train`` (resume=auto by default) in the folder of a finished run with another loss would skip
    training and write the other run's metrics under this run's name: refused, naming the differing keys."""
    common = ["data.num_train=16", "data.num_val=8", "train.batch_size=8", "train.iters=2", "model=tiny",
              f"output_dir={tmp_path}"]
    run_train(compose("train", common))
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"another configuration \(loss\.metric: 'BF1' here, 'mIoU' saved\).*"
                                         r"hydra\.run\.dir.*train\.resume=none"):
        run_train(compose("train", common + ["loss.metric=BF1"]))
    assert (tmp_path / "config.yaml").read_text() == config  # refused before the folder was touched
    # settings that may change: logging, workers, evaluation, data paths; train.resume=none starts over
    again = run_train(compose("train", common + ["train.log_every=1", "eval.batch_size=4", "data.skip_corrupt=true"]))
    assert 0 <= again["mIoU"] <= 100
    run_train(compose("train", common + ["loss.metric=BF1", "train.resume=none"]))


def test_unknown_dataset_name_lists_the_known_ones(tmp_path):
    cfg = compose("train", ["data.name=ade20k", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match=r"unknown dataset 'ade20k'; choose shapes, voc_aug or cityscapes"):
        run_train(cfg)  # was a ConfigAttributeError on data.img_scale (shapes has no VOC pipeline keys)


def test_eval_of_another_models_checkpoint_names_the_differing_settings(tmp_path):
    from repro_shared.checkpoint import CheckpointError

    common = ["data.num_train=16", "data.num_val=8", "train.batch_size=8", "train.iters=1", "model.channels=16"]
    run_train(compose("train", common + [f"output_dir={tmp_path / 't'}"]))
    ckpt = tmp_path / "t" / "checkpoints" / "ckpt_000000001.pt"
    with pytest.raises(CheckpointError, match=r"holds another segmenter than this asl-eval builds \(model\.channels: "
                                              r"32 here, 16 saved\): pass the training run's model="):
        run_eval(compose("eval", ["data.num_val=8", f"checkpoint={ckpt}", f"output_dir={tmp_path / 'e'}"]))
    ev = run_eval(compose("eval", ["data.num_val=8", "model.channels=16", f"checkpoint={ckpt}",
                                   f"output_dir={tmp_path / 'e2'}"]))
    assert 0 <= ev["mIoU"] <= 100
