"""Dataset readers on fake folders in the standard layouts, pipelines, bad data (too small, unreadable files),
experiment configs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repro_shared.data import DataError

from auto_seg_loss.cli import build_losses, compose, run_train
from auto_seg_loss.data import CityscapesDataset, VOCAugDataset
from auto_seg_loss.data.transforms import EvalPipeline, ShortSideCenterCropPipeline, TrainPipeline, rescale_size


def _img(path: Path, w, h, mode="RGB", value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    else:
        arr = np.zeros((h, w), np.uint8)
        arr[: h // 2] = value
        arr[h // 2:, : w // 3] = 255
    Image.fromarray(arr).save(path)


def _fake_voc(tmp_path):
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\n")
    (sets / "aug.txt").write_text("b\nc\n")
    (sets / "val.txt").write_text("a\n")
    for i in "abc":
        _img(root / "JPEGImages" / f"{i}.jpg", 100, 60)
    _img(root / "SegmentationClass" / "a.png", 100, 60, "L", 5)
    for i in "bc":
        _img(root / "SegmentationClassAug" / f"{i}.png", 100, 60, "L", 7)
    return root


def test_voc_aug_layout_and_pipelines(tmp_path):
    root = _fake_voc(tmp_path)
    ds = VOCAugDataset(root, "train_aug", TrainPipeline((200, 50), (0.5, 2.0), (32, 48)))
    assert len(ds) == 3 and ds.pairs[1][1].parent.name == "SegmentationClassAug"
    x, y = ds[0]
    assert x.shape == (3, 32, 48) and y.shape == (32, 48) and y.dtype == torch.long
    assert set(torch.unique(y).tolist()) <= {0, 5, 255}
    xv, yv = VOCAugDataset(root, "val", EvalPipeline((200, 50)))[0]
    assert yv.shape == (60, 100) and xv.shape[1:] == (50, 83)  # keep ratio to fit (200, 50); label untouched
    with pytest.raises(FileNotFoundError, match="expected layout"):
        VOCAugDataset(tmp_path / "missing", "val")
    with pytest.raises(ValueError, match="unknown VOC split"):
        VOCAugDataset(root, "test")


def test_train_pipeline_pads_with_ignore(tmp_path):
    img = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    lab = Image.fromarray(np.ones((20, 30), np.uint8))
    x, y = TrainPipeline((30, 20), (1.0, 1.0), (64, 64))(img, lab)
    assert x.shape == (3, 64, 64) and (y[20:] == 255).all() and (y[:20, :30] == 1).all()
    assert rescale_size(1000, 500, (2048, 512)) == (1024, 512)


def test_cityscapes_layout(tmp_path):
    for split in ("train", "val"):
        _img(tmp_path / "leftImg8bit" / split / "aachen" / "aachen_0_0_leftImg8bit.png", 64, 32)
        _img(tmp_path / "gtFine" / split / "aachen" / "aachen_0_0_gtFine_labelTrainIds.png", 64, 32, "L", 3)
    ds = CityscapesDataset(tmp_path, "val", EvalPipeline((128, 64)))
    x, y = ds[0]
    assert x.shape == (3, 64, 128) and y.shape == (32, 64)
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        CityscapesDataset(tmp_path / "nope", "train")


def _fake_cityscapes(root: Path, n: int = 1):
    for split in ("train", "val"):
        for i in range(n):
            _img(root / "leftImg8bit" / split / "aachen" / f"aachen_{i}_0_leftImg8bit.png", 64, 32)
            _img(root / "gtFine" / split / "aachen" / f"aachen_{i}_0_gtFine_labelTrainIds.png", 64, 32, "L", 3)
    return root


SMALL_VOC = ["model=tiny", "data.img_scale=[64,32]", "data.crop_size=[32,32]", "train.log_every=1", "eval.tol=1",
             "eval.radius=1", "loss.tol=1"]


@pytest.mark.parametrize("data", ["voc_aug", "cityscapes"])
def test_dataset_smaller_than_one_batch_fails_before_training(tmp_path, data):
    root = _fake_voc(tmp_path) if data == "voc_aug" else _fake_cityscapes(tmp_path / "cs")
    n = 3 if data == "voc_aug" else 1
    cfg = compose("train", [f"data={data}", f"data.root={root}", "train.batch_size=8", f"output_dir={tmp_path / 'o'}"]
                  + SMALL_VOC)
    with pytest.raises(ValueError, match=rf"has {n} samples, fewer than one batch of 8.*lower train\.batch_size"):
        run_train(cfg)
    assert not (tmp_path / "o" / "checkpoints").exists()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("which", ["image", "label"])
def test_unreadable_file_is_named_or_skipped(tmp_path, which):
    root = _fake_voc(tmp_path)
    bad = root / ("JPEGImages/b.jpg" if which == "image" else "SegmentationClassAug/b.png")
    _truncate(bad)
    ds = VOCAugDataset(root, "train_aug", TrainPipeline((64, 32), (0.5, 2.0), (32, 32)))
    with pytest.raises(DataError, match=rf"{bad}.*data\.skip_corrupt=true"):
        ds[1]
    assert ds[0] is not None and ds[2] is not None
    skip = VOCAugDataset(root, "train_aug", TrainPipeline((64, 32), (0.5, 2.0), (32, 32)), skip_corrupt=True)
    assert skip[1] is None and skip[2] is not None
    # Cityscapes reader: same behaviour
    cs = _fake_cityscapes(tmp_path / "cs")
    lab = next((cs / "gtFine" / "val").rglob("*.png"))
    _truncate(lab)
    with pytest.raises(DataError, match=str(lab)):
        CityscapesDataset(cs, "val", EvalPipeline((128, 64)))[0]
    assert CityscapesDataset(cs, "val", EvalPipeline((128, 64)), skip_corrupt=True)[0] is None


def test_training_skips_unreadable_files_and_reports_the_count(tmp_path):
    root = _fake_voc(tmp_path)
    _truncate(root / "SegmentationClassAug" / "c.png")
    over = ["data=voc_aug", f"data.root={root}", "train.batch_size=3", "train.iters=2", f"output_dir={tmp_path / 'o'}"]
    with pytest.raises(DataError, match="c.png"):
        run_train(compose("train", over + SMALL_VOC))
    res = run_train(compose("train", over + SMALL_VOC + ["data.skip_corrupt=true", f"output_dir={tmp_path / 's'}"]))
    log = (tmp_path / "s" / "log.txt").read_text()
    assert "c.png" in log and "epoch 0: skipped 1 unreadable training samples" in log
    assert "epoch 1: skipped 1 unreadable training samples" in log
    assert 0 <= res["mIoU"] <= 100


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "src/auto_seg_loss/configs/experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_compose(name, capsys, monkeypatch):
    """Every paper row composes through the console script (``--cfg job``) and through the compose API; the
    values that differ from the tiny default are the recipe's (issue 19): ImageNet ResNet-V1c init required,
    fp16 with static loss scale 512 only for the BF1 re-training."""
    from omegaconf import OmegaConf

    from auto_seg_loss import cli

    search = name.startswith("search")
    monkeypatch.setattr("sys.argv", ["asl-search" if search else "asl-train", f"experiment={name}", "--cfg", "job"])
    from hydra.core.hydra_config import HydraConfig

    try:
        (cli.search if search else cli.train)()
    finally:
        HydraConfig.instance().cfg = None  # the in-process Hydra app must not leak its run config into later tests
    printed = OmegaConf.create(capsys.readouterr().out)
    cfg = compose("search" if search else "train", [f"experiment={name}", "data.root=/data"])
    assert OmegaConf.to_container(printed.init) == OmegaConf.to_container(cfg.init)
    assert cfg.data.name in ("voc_aug", "cityscapes")
    depth = "50" if search else "101"
    assert cfg.model.backbone == f"resnet{depth}" and cfg.init.required is True and cfg.init.path is None
    assert f"resnet{depth}_v1c" in cfg.init.source and f"--backbone resnet{depth}" in cfg.init.converter
    if not search:
        losses = build_losses(cfg.loss, cfg.data.num_classes, 255)
        assert set(losses) == {"out", "aux"}
        assert cfg.train.iters in (10000, 40000)
        assert (cfg.train.amp, str(cfg.train.loss_scale)) == (("fp16", "512") if name == "voc_bf1" else ("none", "dynamic"))
        assert cfg.optim.lr == (0.02 if name.startswith("voc") else 0.01) and cfg.optim.power == 0.9
    else:
        assert (cfg.search.rounds, cfg.search.samples_per_round, cfg.proxy.iters) == (12, 32, 1000)
    tiny = compose("search" if search else "train")
    assert tiny.init.required is False and tiny.init.path is None and tiny.device == "auto"


def test_short_side_center_crop():
    lab = np.zeros((60, 100), np.uint8)
    lab[:, 50:] = 1
    x, y = ShortSideCenterCropPipeline(30)(Image.fromarray(np.zeros((60, 100, 3), np.uint8)), Image.fromarray(lab))
    assert x.shape == (3, 30, 30) and y.shape == (30, 30)
    # resized to 50x30, crop columns 10..40: the class boundary (column 25 after resize) sits at column 15
    assert (y[:, :15] == 0).all() and (y[:, 15:] == 1).all()


@pytest.mark.parametrize("reward_split,sizes", [("heldout", (2, 1)), ("val", (3, 1))])
def test_voc_search_proxy_data(tmp_path, reward_split, sizes):
    from auto_seg_loss.cli import _proxy_datasets

    root = _fake_voc(tmp_path)
    cfg = compose("search", ["experiment=search_voc_miou", f"data.root={root}", "proxy.heldout_size=1",
                             f"proxy.reward_split={reward_split}"])
    train_ds, reward_ds = _proxy_datasets(cfg)
    assert (len(train_ds), len(reward_ds)) == sizes
    x, y = train_ds[0]
    assert x.shape == (3, 128, 128) and y.shape == (128, 128)
    x, y = reward_ds[0]
    assert x.shape == (3, 128, 128) and y.shape == (128, 128)


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_keeps_image_and_label_aligned(seed, monkeypatch):
    """Axis audit (issue 15.1 kind): on a non-square image (W 100 x H 60) whose pixel values encode their label
    and their column, random crops of a non-square size (h 32 x w 48), flips and padding move image and label
    together: PIL (w, h) sizes, (h, w) crop sizes and (left, top) offsets cannot be swapped unnoticed."""
    import random

    from auto_seg_loss.data import transforms

    monkeypatch.setattr(transforms, "photometric_distortion", lambda x: x)  # keep the colours readable
    random.seed(seed)
    torch.manual_seed(seed)
    h, w = 60, 100
    lab = np.zeros((h, w), np.uint8)
    lab[:, 30:70] = 1
    lab[10:25, :] = 2  # a horizontal band: a swapped axis would move it
    img = np.stack([lab * 80, np.tile(np.arange(w, dtype=np.uint8), (h, 1)), np.zeros((h, w), np.uint8)], -1)
    pipe = TrainPipeline((w, h), (1.0, 1.0), (32, 48), cat_max_ratio=1.0, flip_prob=0.5)
    x, y = pipe(Image.fromarray(img), Image.fromarray(lab))
    assert x.shape == (3, 32, 48) and y.shape == (32, 48)
    raw = (x * transforms.STD + transforms.MEAN).round()
    assert torch.equal(raw[0], y.float() * 80)  # label <-> image, pixel by pixel
    cols = raw[1, 0]
    assert (cols.diff().abs() == 1).all() and (cols.diff() == cols.diff()[0]).all()  # one contiguous column range
    tall = TrainPipeline((w, h), (1.0, 1.0), (80, 40), cat_max_ratio=1.0, flip_prob=0.0)  # taller than the image
    x, y = tall(Image.fromarray(img), Image.fromarray(lab))
    assert x.shape == (3, 80, 40) and (y[60:] == 255).all() and (y[:60] != 255).all()
    assert torch.equal((x[0, :60] * transforms.STD[0] + transforms.MEAN[0]).round(), y[:60].float() * 80)
