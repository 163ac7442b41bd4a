"""Augmentations, the seeded two-view loader and CutMix."""

import random

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from repro_shared.data import build_loader
from unigrad.data import cutmix_views, eval_datasets, pretrain_dataset
from unigrad.data.transforms import PILGaussianBlur, imagenet_eval, mocov2_view

DIGITS = OmegaConf.create({"name": "digits", "image_size": 16, "num_workers": 0, "skip_corrupt": False, "subset": 64})


def test_two_views_differ_and_are_a_function_of_seed_epoch_and_index():
    ds = pretrain_dataset(DIGITS)
    assert len(ds) == 64
    loader = build_loader(ds, batch_size=16, seed=3)
    loader.set_epoch(2)
    (v1, v2), _ = next(iter(loader))
    assert v1.shape == (16, 3, 16, 16) and not torch.equal(v1, v2)
    again = build_loader(pretrain_dataset(DIGITS), batch_size=16, seed=3)
    again.set_epoch(2)
    (w1, w2), _ = next(iter(again))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    again.set_epoch(3)
    (x1, _), _ = next(iter(again))
    assert not torch.equal(v1, x1)
    bank, queries = eval_datasets(DIGITS)
    assert (len(bank), len(queries)) == (1437, 360) and torch.equal(bank[0][0], bank[0][0])  # deterministic


def test_mocov2_view_on_a_pil_image_and_the_pil_blur():
    img = Image.new("RGB", (300, 260), (200, 30, 90))
    torch.manual_seed(0)
    random.seed(0)
    x = mocov2_view(224)(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert imagenet_eval(224)(img).shape == (3, 224, 224)
    noise = Image.frombytes("L", (32, 32), bytes(range(256)) * 4).convert("RGB")
    blurred = []
    for seed in (5, 5, 6):  # the radius comes from python's random, which the loader seeds per sample
        random.seed(seed)
        blurred.append(PILGaussianBlur((0.1, 2.0))(noise).tobytes())
    assert blurred[0] == blurred[1] != blurred[2] and blurred[0] != noise.tobytes()


def test_cutmix_pastes_one_box_from_the_permuted_images_into_both_views():
    torch.manual_seed(0)
    x1, x2 = torch.randn(6, 3, 20, 20), torch.randn(6, 3, 20, 20)
    m1, m2, perm, lam = cutmix_views(x1, x2, alpha=1.0)
    changed = (m1 != x1).any(1)  # (n, H, W) pixels taken from another image
    box = changed.any(0)
    frac_pasted = float(box.float().mean())
    assert lam == pytest.approx(1.0 - frac_pasted, abs=1e-6) or frac_pasted == 0
    i = int((perm != torch.arange(6)).nonzero()[0])
    assert torch.equal(m1[i][:, box], x1[perm[i]][:, box]) and torch.equal(m2[i][:, box], x2[perm[i]][:, box])
    assert torch.equal(m1[i][:, ~box], x1[i][:, ~box])
