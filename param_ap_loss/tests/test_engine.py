"""Engine: lr schedule offsets vs the official loops, lr groups, clipping, NaN stops, data errors."""

import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from repro_shared import checkpoint
from repro_shared.data import DataError, SkipNoneCollate, build_loader
from repro_shared.guards import NonFiniteError

from param_ap_loss.cli import train_and_evaluate
from param_ap_loss.data.build import build_dataset
from param_ap_loss.data.coco import collate
from param_ap_loss.engine import train_one_epoch
from param_ap_loss.models.build import build_detector
from param_ap_loss.optim import build_optimizer, build_param_groups, build_scheduler


def _cfg(tmp_path, *overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=[f"data.root={tmp_path}/shapes", *overrides])


class _Points(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.full((1,), float(i)), {"y": torch.tensor(float(i))}


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images, targets):
        return {"loss": sum(((self.w * x).sum() - t["y"]) ** 2 for x, t in zip(images, targets))}


def _lrs_seen(train_cfg, epochs, iters_per_epoch_batch=2):
    model = _Linear()
    loader = build_loader(_Points(), batch_size=iters_per_epoch_batch, seed=0, collate_fn=collate)
    opt = build_optimizer(model, train_cfg)
    sched = build_scheduler(opt, train_cfg, len(loader))
    seen = []
    opt.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
    step = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        step = train_one_epoch(model, loader, opt, sched, torch.device("cpu"), epoch=epoch, step=step)
    return seen


def test_lr_of_each_optimizer_step_matches_the_official_loop():
    """mmcv sets the lr of iteration i (0-based) before it runs: warm-up lr(i) = lr (r + (1 - r) i / W) for
    i < W, then lr; x0.1 from the first iteration of each decay epoch. 5 iterations per epoch here."""
    tc = OmegaConf.create({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "warmup_iters": 3,
                           "warmup_ratio": 0.001, "milestones": [2]})
    seen = _lrs_seen(tc, epochs=3)
    assert len(seen) == 15
    assert seen[0] == pytest.approx(0.1 * 0.001)  # the very first step runs at the warm-up start lr
    assert seen[1] == pytest.approx(0.1 * (0.001 + 0.999 / 3))
    assert seen[2] == pytest.approx(0.1 * (0.001 + 0.999 * 2 / 3))
    assert seen[3] == pytest.approx(0.1) and seen[9] == pytest.approx(0.1)  # peak at step W = 3
    assert seen[10] == pytest.approx(0.01) and seen[14] == pytest.approx(0.01)  # epoch 2 = first decayed epoch


def test_detr_step_lr_has_no_warmup_and_drops_at_the_epoch():
    """Deformable DETR: StepLR stepped after each epoch -> epochs 0..e-1 at lr, epoch e (lr_drop) at 0.1 lr."""
    tc = OmegaConf.create({"optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-4, "warmup_iters": 0,
                           "warmup_ratio": 0.001, "milestones": [1]})
    seen = _lrs_seen(tc, epochs=2)
    assert seen[:5] == pytest.approx([2e-4] * 5) and seen[5:] == pytest.approx([2e-5] * 5)


def test_detr_param_groups_follow_the_official_names(tmp_path):
    cfg = _cfg(tmp_path, "experiment=deformable_detr_pap_coco", "model=deformable_detr_tiny")
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    groups = {g["name"]: g for g in build_param_groups(model, 2e-4, cfg.train.param_groups)}
    assert groups["default"]["lr"] == 2e-4 and groups["backbone.body"]["lr"] == pytest.approx(2e-5)
    assert groups["reference_points+sampling_offsets"]["lr"] == pytest.approx(2e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("backbone.body" in names[id(p)] for p in groups["backbone.body"]["params"])
    lin = {names[id(p)] for p in groups["reference_points+sampling_offsets"]["params"]}
    assert "reference_points.weight" in lin and any("cross.sampling_offsets" in n for n in lin)
    assert any(n.startswith("backbone.fpn") for n in (names[id(p)] for p in groups["default"]["params"]))
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups.values()) == n_all  # every parameter in exactly one group
    assert cfg.train.clip_max_norm == 0.1


def test_gradient_clipping_bounds_the_update():
    model = _Linear()
    loader = build_loader(_Points(), batch_size=10, seed=0, collate_fn=collate)
    tc = OmegaConf.create({"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "warmup_iters": 0,
                           "warmup_ratio": 1.0, "milestones": []})
    opt = build_optimizer(model, tc)
    loader.set_epoch(0)
    model.w.data.fill_(3.0)  # large gradient
    train_one_epoch(model, loader, opt, build_scheduler(opt, tc, 1), torch.device("cpu"), epoch=0, step=0,
                    clip_max_norm=0.1)
    assert model.w.item() == pytest.approx(2.9)  # the step moved by lr * max_norm exactly


def _inject_nan(model, name):
    """Forward hook that turns the output of module ``name`` into NaN in the third model call (step 2)."""
    calls = {"n": 0}
    model.register_forward_pre_hook(lambda *_: calls.update(n=calls["n"] + 1))

    def hook(module, inputs, out):
        if calls["n"] != 3:
            return out
        first = out[0] if isinstance(out, tuple) else out
        first = first.clone()
        first.view(-1)[0] = float("nan")
        return (first, *out[1:]) if isinstance(out, tuple) else first

    dict(model.named_modules())[name].register_forward_hook(hook)


@pytest.mark.parametrize("model_name,loss,module,term", [
    ("retinanet_tiny", "pap_retinanet", "head.classification_head", "cls_logits"),
    ("faster_rcnn_tiny", "pap_faster_rcnn", "roi_heads.box_predictor", "class_logits"),
    ("deformable_detr_tiny", "pap_detr", "class_embed.0", "logits"),
])
def test_nan_prediction_stops_training_and_keeps_last_checkpoint(tmp_path, model_name, loss, module, term):
    cfg = _cfg(tmp_path, f"model={model_name}", f"loss={loss}", "data.num_train=8")
    ds = build_dataset(cfg.data, "train", train=True, train_size=128)
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    _inject_nan(model, module)
    loader = build_loader(ds, batch_size=2, seed=0, collate_fn=SkipNoneCollate(collate))
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train, len(loader))
    ckpts = tmp_path / "ckpt"

    def save(step, epoch):
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpts, step), model=model, optimizer=opt, step=step)

    loader.set_epoch(0)
    with pytest.raises(NonFiniteError, match=rf"step 2 \(epoch 0\).*'{term}'"):
        train_one_epoch(model, loader, opt, sched, torch.device("cpu"), epoch=0, step=0, on_step=save)
    assert sorted(p.name for p in ckpts.glob("ckpt_*.pt")) == ["ckpt_000000001.pt", "ckpt_000000002.pt"]
    state = checkpoint.load_checkpoint(checkpoint.find_latest_checkpoint(ckpts))
    for k, v in model.named_parameters():  # no optimizer step was taken: last checkpoint = current weights
        assert torch.equal(state["model"][k], v), k


def test_nan_loss_term_names_the_term(tmp_path):
    class NanLoss(_Linear):
        def forward(self, images, targets):
            return {"loss_box": self.w.sum() * float("nan"), "loss_cls": self.w.sum()}

    model = NanLoss()
    loader = build_loader(_Points(), batch_size=5, seed=0, collate_fn=collate)
    tc = OmegaConf.create({"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "warmup_iters": 0,
                           "warmup_ratio": 1.0, "milestones": []})
    opt = build_optimizer(model, tc)
    loader.set_epoch(0)
    with pytest.raises(NonFiniteError, match=r"'loss_box' = nan .*step 0 \(epoch 0\)"):
        train_one_epoch(model, loader, opt, build_scheduler(opt, tc, 2), torch.device("cpu"), epoch=0, step=0)
    assert model.w.item() == 1.0


def test_dataset_smaller_than_one_batch_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "data.num_train=5", "train.batch_size=8")
    with pytest.raises(ValueError, match=r"5 samples, fewer than one batch of 8.*train\.batch_size"):
        train_and_evaluate(cfg, torch.device("cpu"))


def _truncate_one_image(ds):
    path = ds.image_dir / ds.coco.loadImgs(ds.ids[1])[0]["file_name"]
    path.write_bytes(path.read_bytes()[:60])
    return path


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path, caplog):
    cfg = _cfg(tmp_path, "data.num_train=8")
    ds = build_dataset(cfg.data, "train", train=True)
    bad = _truncate_one_image(ds)
    with pytest.raises(DataError, match=bad.name):
        ds[1]
    skip = build_dataset(OmegaConf.merge(cfg.data, {"skip_corrupt": True}), "train", train=True)
    with caplog.at_level(logging.WARNING):
        assert skip[1] is None
    assert bad.name in caplog.text and "set data.skip_corrupt=true" not in caplog.text  # it is already set
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    loader = build_loader(skip, batch_size=4, seed=0, collate_fn=SkipNoneCollate(collate))
    opt = build_optimizer(model, cfg.train)
    loader.set_epoch(0)
    log = logging.getLogger("param_ap_loss.test")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        step = train_one_epoch(model, loader, opt, build_scheduler(opt, cfg.train, 2), torch.device("cpu"), epoch=0,
                               step=0, log=log)
    assert step == 2 and "epoch 0: 1 unreadable training images were skipped" in caplog.text


def test_corrupt_or_foreign_annotation_file_is_named(tmp_path):
    """A truncated instances JSON used to surface as a bare ``JSONDecodeError`` without the file name."""
    cfg = _cfg(tmp_path, "data.num_train=8")
    build_dataset(cfg.data, "train", train=True)  # generates the shapes files
    ann = Path(cfg.data.root) / "annotations" / "instances_train.json"
    ann.write_text(ann.read_text()[:300])
    with pytest.raises(DataError, match=rf"{ann}.*not valid JSON.*download or regenerate"):
        build_dataset(cfg.data, "train", train=True)
    ann.write_text('{"images": []}')
    with pytest.raises(DataError, match=rf"{ann} is not a COCO instances file: it has no 'annotations', 'categories'"):
        build_dataset(cfg.data, "train", train=True)


def test_unknown_optimizer_lists_the_known_ones():
    tc = OmegaConf.create({"optimizer": "lamb", "lr": 0.1, "weight_decay": 0.0})
    with pytest.raises(ValueError, match="unknown train.optimizer 'lamb'; known: sgd, adamw"):
        build_optimizer(_Linear(), tc)
