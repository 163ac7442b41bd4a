"""Data: digits-on-canvas default, ImageNet layouts (ImageFolder and official list files), class maps."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from defocus.data.digits import DigitsCanvas
from defocus.data.imagenet import build_imagenet_dataset, build_mixup, load_class_map
from defocus.engine import evaluate

IMNET = dict(root=None, img_size=32, interpolation="bicubic", color_jitter=0.4,
             auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, remode="pixel", recount=1, mixup=0.8, cutmix=1.0,
             mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch", label_smoothing=0.1, val_root=None)


def test_digits_canvas_places_the_digit_and_val_is_fixed():
    ds = DigitsCanvas("val", canvas=24, digit_size=16, noise=0.0)
    img, label = ds[3]
    assert img.shape == (3, 24, 24) and 0 <= label < 10
    r, c = ds.fixed_pos[3].tolist()
    torch.testing.assert_close(img[:, r:r + 16, c:c + 16], ds.images[3])
    assert img.sum() == pytest.approx(ds.images[3].sum().item(), rel=1e-5)  # nothing outside the digit
    assert torch.equal(DigitsCanvas("val", 24, 16, 0.1)[5][0], DigitsCanvas("val", 24, 16, 0.1)[5][0])
    with pytest.raises(ValueError, match="must not exceed canvas"):
        DigitsCanvas("val", canvas=8, digit_size=16)


def _write_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((np.random.rand(40, 48, 3) * 255).astype("uint8")).save(folder / f"im{i}.png")


def test_imagenet_layouts_and_mixup(tmp_path):
    for cls in ("n01", "n02"):
        _write_images(tmp_path / "folder" / "train" / cls, 2)
    cfg = OmegaConf.create({**IMNET, "root": str(tmp_path / "folder")})
    ds = build_imagenet_dataset("train", cfg)
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and y == 1
    (tmp_path / "lists" / "meta").mkdir(parents=True)
    _write_images(tmp_path / "lists" / "val" / "a", 2)
    (tmp_path / "lists" / "meta" / "val.txt").write_text("a/im0.png 7\na/im1.png 3\n")
    ds = build_imagenet_dataset("val", OmegaConf.create({**IMNET, "root": str(tmp_path / "lists")}))
    assert len(ds) == 2 and ds[0][1] == 7 and ds[0][0].shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="ImageNet data not found"):
        build_imagenet_dataset("val", cfg)
    mix = build_mixup(cfg, num_classes=10)
    xb, yb = mix(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert yb.shape == (4, 10) and torch.allclose(yb.sum(-1), torch.ones(4))


def test_class_map_selects_logit_columns(tmp_path):
    (tmp_path / "map.txt").write_text("5\n2\n")
    idx = load_class_map(tmp_path / "map.txt")
    assert idx.tolist() == [5, 2]
    logits = torch.zeros(2, 8)
    logits[0, 5], logits[1, 2] = 9.0, 9.0  # sample 0 -> mapped class 0, sample 1 -> mapped class 1

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[: len(x)]

    loader = [(torch.zeros(2, 1), torch.tensor([0, 1]))]
    assert evaluate(Fixed(), loader, torch.device("cpu"), idx)["top1"] == 100.0
    assert evaluate(Fixed(), loader, torch.device("cpu"))["top1"] == 0.0
    with pytest.raises(FileNotFoundError, match="class map"):
        load_class_map(tmp_path / "missing.txt")


def _imagefolder(root, n_train, n_val=2, ext="png"):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            d = root / split / ("n01" if i % 2 else "n02")
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(d / f"im{i}.{ext}")
    return root


def test_imagefolder_smaller_than_one_batch_fails_before_training(tmp_path):
    """Issue 15.5a: 9 training images at the default batch 64 -> one error naming both numbers and the key,
    raised before the first step (no checkpoint, no metrics written)."""
    from hydra import compose, initialize_config_module

    from defocus.cli import run_train

    root = _imagefolder(tmp_path / "imnet", 9)
    with initialize_config_module("defocus.configs", version_base=None):
        cfg = compose("train", overrides=["data=imagenet", f"data.root={root}", "data.img_size=32", "data.num_workers=0",
                                          "device=cpu", f"+output_dir={tmp_path}/run"])
    with pytest.raises(ValueError, match=r"9 samples, fewer than one batch of 64.*lower train\.batch_size"):
        run_train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == ""


def test_truncated_jpeg_is_named_or_skipped_and_counted(tmp_path, caplog):
    """Issue 15.5b: a truncated JPEG -> DataError naming the file; data.skip_corrupt=true -> a warning naming it,
    the sample dropped from its batch, and the epoch reports the count."""
    from repro_shared.data import DataError

    from defocus.data.sampler import build_train_loader
    from defocus.engine import train_one_epoch
    from defocus.models import build_model

    root = _imagefolder(tmp_path / "imnet", 10, ext="jpg")
    bad = root / "train" / "n02" / "im4.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    cfg = OmegaConf.create({**IMNET, "root": str(root), "auto_augment": None, "reprob": 0.0})
    ds = build_imagenet_dataset("train", cfg)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("im4.jpg")][0]
    with pytest.raises(DataError, match=r"im4\.jpg.*data\.skip_corrupt=true"):
        ds[idx]
    ds = build_imagenet_dataset("train", OmegaConf.create({**cfg, "skip_corrupt": True}))
    loader = build_train_loader(ds, batch_size=5, seed=0, skip_corrupt=True)
    loader.set_epoch(0)
    torch.manual_seed(0)
    m = build_model("defocus_tiny_test")
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    with caplog.at_level("WARNING"):
        out = train_one_epoch(m, loader, opt, None, epoch=0, device=torch.device("cpu"), drop_path_rate=0.0,
                              aux_weight=0.5, clip_grad=10.0)
    assert out["skipped"] == 1 and any("im4.jpg" in r.getMessage() for r in caplog.records)


def test_repeat_aug_sampler_resumable_and_official_counts():
    """DeiT/official RASampler semantics: 3 adjacent copies of each sample go to different ranks, each rank keeps
    floor(N // 256 * 256 / world) samples; copies are distinct keys (own augmentation seed); mid-epoch resume."""
    from defocus.data.sampler import RepeatAugBatchSampler

    n, w, b = 600, 2, 8
    ranks = [RepeatAugBatchSampler(n, b, seed=3, rank=r, world_size=w) for r in range(w)]
    for s in ranks:
        s.set_epoch(1)
    keys = [[k for batch in s for _, k in batch] for s in ranks]
    assert all(len(k) == 600 // 256 * 256 // w for k in keys)  # 256 per rank
    assert len(set(keys[0]) | set(keys[1])) == len(keys[0]) + len(keys[1])  # no key twice
    assert keys[0][0] % n == keys[1][0] % n and keys[0][0] != keys[1][0]  # copies of one sample on both ranks
    assert keys[0][1] % n == keys[0][0] % n  # the third copy wraps back to rank 0
    full = list(ranks[0])
    ranks[0].set_epoch(1, start_batch=5)
    assert list(ranks[0]) == full[5:]
    ranks[0].set_epoch(2)
    assert [k for _, k in next(iter(ranks[0]))] != [k for _, k in full[0]]  # new order each epoch
    with pytest.raises(ValueError, match="fewer than one batch of 200.*data.repeated_aug=false"):
        RepeatAugBatchSampler(300, 200, rank=0, world_size=2)
