"""Entry points as a newcomer runs them (newcomer report): a moved data root, bad names, a corrupt checkpoint,
divergence and ``train.resume=auto`` in a fresh folder each end in one ``error: ...`` line (no traceback), and
the cheap checks happen before the data is prepared."""
import pickle
import shutil

import pytest
import torch
from omegaconf import OmegaConf


def _nuscenes_cfg(root):
    return OmegaConf.create(dict(kind="nuscenes", root=str(root), version="v1.0-mini", train_split="mini_train",
                                 val_split="mini_val"))


def test_a_copied_data_root_reads_its_own_images(synth_root, tmp_path):
    """The info cache stored absolute image paths: a copy of the data root (cache included) kept reading the
    images of the original folder, so e.g. a corrupted or replaced copy was never looked at."""
    from bevformer_v2.cli import prepare_data

    _, train_a, _ = prepare_data(_nuscenes_cfg(synth_root))  # writes (or reuses) the cache in synth_root
    copy = tmp_path / "copy"
    shutil.copytree(synth_root, copy)
    assert list(copy.glob("bevformer_v2_infos_*.pkl"))
    _, train_b, val_b = prepare_data(_nuscenes_cfg(copy))
    paths = [cam["data_path"] for info in train_b + val_b for cam in info["cams"].values()]
    assert paths and all(p.startswith(str(copy) + "/") for p in paths), paths[:2]
    assert [c["data_path"] for c in train_a[0]["cams"].values()][0].startswith(str(synth_root) + "/")
    raw = (copy / "bevformer_v2_infos_v1.0-mini_mini_train.pkl").read_bytes()
    assert str(synth_root).encode() not in raw and str(copy).encode() not in raw  # relative paths only
    blob = pickle.loads(raw)
    assert len(blob["infos"]) == len(train_a)
    for a, b in zip(train_a, train_b):  # everything but the root is the same record
        assert a["token"] == b["token"] and torch.equal(torch.as_tensor(a["gt_boxes"]), torch.as_tensor(b["gt_boxes"]))


@pytest.fixture
def no_data(monkeypatch):
    import bevformer_v2.cli as cli

    def must_not_run(*a, **k):
        raise AssertionError("the data was prepared before the cheap checks")

    monkeypatch.setattr(cli, "prepare_data", must_not_run)
    return cli


def test_unknown_backbone_is_one_error_before_the_data(no_data, tmp_path, run_entry):
    msg = run_entry(no_data.train, f"hydra.run.dir={tmp_path / 'a'}", "model.backbone=resnet51", "device=cpu")
    assert msg.startswith("error: unknown backbone 'resnet51'; known: tiny, resnet18") and "timm:<model>" in msg, msg
    msg = run_entry(no_data.train, f"hydra.run.dir={tmp_path / 'b'}", "model.backbone=timm:no_such_net", "device=cpu")
    assert msg.startswith("error: unknown timm model 'no_such_net'"), msg


def test_eval_of_a_corrupt_or_missing_checkpoint_is_one_error_before_the_data(no_data, tmp_path, run_entry):
    bad = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, bad)
    bad.write_bytes(bad.read_bytes()[:300])
    msg = run_entry(no_data.evaluate_cli, f"hydra.run.dir={tmp_path / 'a'}", f"checkpoint={bad}", "device=cpu")
    assert msg.startswith("error: ") and "ckpt.pt" in msg and "cannot be read" in msg, msg
    msg = run_entry(no_data.evaluate_cli, f"hydra.run.dir={tmp_path / 'b'}", f"checkpoint={tmp_path / 'no.pt'}",
                    "device=cpu")
    assert msg.startswith("error: ") and "no.pt does not exist" in msg, msg


def test_divergence_is_one_error_and_resume_auto_in_a_new_folder_says_how_to_resume(cli_overrides, tmp_path,
                                                                                     run_entry):
    from bevformer_v2.cli import train

    out = tmp_path / "r"
    msg = run_entry(train, f"hydra.run.dir={out}", "train.lr=1e10", "train.iters=6", "train.warmup_iters=0",
                    "train.ckpt_every=1", "train.resume=auto", "eval_after_train=false", *cli_overrides)
    assert msg is not None and msg.startswith("error: non-finite "), msg
    assert "at step" in msg and "checkpoints already written are untouched" in msg
    assert not (out / "metrics.json").exists()
    log = (out / "log.txt").read_text()
    assert "train.resume=auto: no checkpoint in" in log and "hydra.run.dir=<that run's folder>" in log
