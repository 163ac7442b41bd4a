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
