"""Dataset readers on fake folders in the standard layouts, pipelines, sampler, experiment configs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auto_seg_loss.cli import build_losses, compose
from auto_seg_loss.data import CityscapesDataset, VOCAugDataset
from auto_seg_loss.data.sampler import InfiniteBatchSampler
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
    with pytest.raises(FileNotFoundError, match="expected the layout"):
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


def test_infinite_sampler_resume_and_ranks():
    full = InfiniteBatchSampler(10, 3, seed=4)
    it = iter(full)
    seq = [next(it) for _ in range(7)]
    resumed = iter(InfiniteBatchSampler(10, 3, seed=4, start_iter=4))
    assert [next(resumed) for _ in range(3)] == seq[4:]
    r0 = iter(InfiniteBatchSampler(10, 2, seed=1, rank=0, world_size=2))
    r1 = iter(InfiniteBatchSampler(10, 2, seed=1, rank=1, world_size=2))
    b0, b1 = next(r0), next(r1)
    assert not set(b0) & set(b1)
    with pytest.raises(ValueError, match="global batch"):
        InfiniteBatchSampler(3, 2, world_size=2)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "src/auto_seg_loss/configs/experiment").glob("*.yaml")))
def test_experiment_configs_compose(name):
    cfg = compose("search" if name.startswith("search") else "train", [f"experiment={name}", "data.root=/data"])
    assert cfg.data.name in ("voc_aug", "cityscapes")
    if not name.startswith("search"):
        losses = build_losses(cfg.loss, cfg.data.num_classes, 255)
        assert set(losses) == {"out", "aux"}
        assert cfg.train.iters in (10000, 40000)


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
