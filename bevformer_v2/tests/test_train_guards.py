"""Issue 15: divergence stops with one named error (no nan_to_num), data faults name the file / the numbers."""
import logging
import shutil
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from bevformer_v2.data.dataset import BEVDataset, collate
from bevformer_v2.engine import train
from bevformer_v2.losses import bev_head_loss, normalize_bbox
from repro_shared.checkpoint import checkpoint_path, save_checkpoint, verify_checkpoint
from repro_shared.data import DataError, build_loader
from repro_shared.guards import NonFiniteError
from repro_shared.logging import MetricsWriter

CROP = (0, 8, 128, 72)


def _cfg(**kw):
    base = dict(iters=5, accum=1, lr=4e-4, weight_decay=0.01, backbone_lr_mult=0.5, warmup_iters=2,
                warmup_ratio=1 / 3, lr_step_frac=[0.8], grad_clip=35.0, lambda_bev=1.0, lambda_pers=1.0, log_every=1,
                ckpt_every=1)
    return OmegaConf.create(dict(base, **kw))


def _ctx(tmp_path):
    return SimpleNamespace(device=torch.device("cpu"), log=logging.getLogger("test"), metrics=MetricsWriter(tmp_path))


def _run_with_nan(tmp_path, make_tiny, infos, inject):
    torch.manual_seed(0)
    model = make_tiny()
    loader = build_loader(BEVDataset(infos["train"][:8], crop=CROP, test_height=64, train=True), batch_size=1,
                          seed=0, collate_fn=collate)
    inject(model)

    def save(step, opt):
        save_checkpoint(checkpoint_path(tmp_path / "ckpt", step), model=model, optimizer=opt, step=step)

    with pytest.raises(NonFiniteError) as err:
        train(model, loader, _cfg(), _ctx(tmp_path), groups=1, save_fn=save)
    return str(err.value)


def test_a_nan_class_logit_stops_training_at_that_step_and_keeps_the_last_checkpoint(tmp_path, make_tiny, infos):
    calls = {"n": 0}

    def inject(model):
        def hook(module, inputs, out):
            calls["n"] += 1
            if calls["n"] == 3:  # the last decoder layer's class branch, third training step
                out = out.clone()
                out[0, 0, 0] = float("nan")
            return out
        model.pts_bbox_head.cls_branches[-1].register_forward_hook(hook)

    msg = _run_with_nan(tmp_path, make_tiny, infos, inject)
    assert "step 3" in msg and "'all_cls'" in msg and "prediction" in msg, msg
    for step in (1, 2):
        verify_checkpoint(checkpoint_path(tmp_path / "ckpt", step))  # intact
    assert not checkpoint_path(tmp_path / "ckpt", 3).exists()


def test_a_nan_loss_term_is_named(tmp_path, make_tiny, infos, monkeypatch):
    import bevformer_v2.engine as engine

    real = engine.detector_losses
    calls = {"n": 0}

    def poisoned(*a, **k):
        losses = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["pers.loss_box3d_depth"] = losses["pers.loss_box3d_depth"] * float("nan")
        return losses

    monkeypatch.setattr(engine, "detector_losses", poisoned)
    msg = _run_with_nan(tmp_path, make_tiny, infos, lambda m: None)
    assert "step 2" in msg and "'pers.loss_box3d_depth'" in msg, msg


def test_bev_loss_does_not_hide_a_nan_logit():
    """The official code's nan_to_num made loss_cls exactly 0.0 here; now the matcher stops with the named error."""
    gt = torch.tensor([[1.0, 2.0, -1.0, 1.8, 4.5, 1.6, 0.3, 0.5, 0.0]])
    cls = torch.zeros(2, 1, 5, 10)
    reg = normalize_bbox(gt).repeat(2, 1, 5, 1)
    cls[-1, 0, 2, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="cls_logits"):
        bev_head_loss(cls, reg, [gt], [torch.tensor([3])])


def test_unreadable_image_is_named_or_skipped_with_a_warning(tmp_path, infos, caplog):
    info = dict(infos["train"][0])
    good = info["cams"]["CAM_BACK"]["data_path"]
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(open(good, "rb").read()[:200])
    info["cams"] = {k: dict(v) for k, v in info["cams"].items()}
    info["cams"]["CAM_BACK"]["data_path"] = str(bad)
    records = [info] + infos["train"][1:4]
    with pytest.raises(DataError, match="truncated.jpg"):
        BEVDataset(records, crop=CROP, test_height=64, train=True)[0]
    with pytest.raises(DataError, match="truncated.jpg"):  # evaluation never replaces a sample
        BEVDataset(records, crop=CROP, test_height=64, train=False, skip_corrupt=True)[0]
    ds = BEVDataset(records, crop=CROP, test_height=64, train=True, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="bevformer_v2.data"):
        sample = ds[0]
    assert sample["index"] != 0 and len(sample["skipped"]) == 1 and "truncated.jpg" in sample["skipped"][0]
    assert "truncated.jpg" in caplog.text
    assert collate([sample])["skipped"] == sample["skipped"]


def test_unreadable_table_is_named(tmp_path, synth_root):
    from bevformer_v2.data.infos import DatasetError, load_nuscenes

    root = tmp_path / "nusc"
    shutil.copytree(synth_root / "v1.0-mini", root / "v1.0-mini")
    (root / "maps").symlink_to(synth_root / "maps")
    (root / "samples").symlink_to(synth_root / "samples")
    table = root / "v1.0-mini" / "sample_annotation.json"
    table.write_text(table.read_text()[: len(table.read_text()) // 2])
    with pytest.raises(DatasetError, match="sample_annotation.json"):
        load_nuscenes(root, "v1.0-mini")


def test_dataset_smaller_than_one_batch_is_one_clear_error(cli_overrides, tmp_path, run_entry):
    from bevformer_v2.cli import train as train_cli

    msg = run_entry(train_cli, f"hydra.run.dir={tmp_path / 'r'}", "train.batch_size=64", *cli_overrides)
    assert msg.startswith("error: the training set (mini_train) has 32 samples, fewer than one batch of 64"), msg
    assert "train.batch_size" in msg
