"""Two-view samples, masks, datasets, and the loss on model outputs against the literal official formula."""

import random

import numpy as np
import pytest
import torch

from repro_shared.data import SeededDataset
from sim.data import LabelledDigits, SiameseIMTransform, build_classification_data
from sim.losses import effective_rank, siameseim_loss
from sim.models import SiameseIMOutput


def test_transform_sample_and_rng_order():
    ds = LabelledDigits("train", 32, SiameseIMTransform(32, 8, 10, crop_min=0.2, min_mask_block=4))
    x1, x2, geo, mask = ds[0][0]
    assert x1.shape == x2.shape == (3, 32, 32) and geo.shape == (6,) and mask.shape == (4, 4)
    assert mask.dtype == torch.bool and int(mask.sum()) == 10
    # same seeds -> same sample; the mask comes from Python's RNG after the views (official order)
    torch.manual_seed(3)
    random.seed(3)
    a = ds[0][0]
    torch.manual_seed(3)
    random.seed(3)
    b = ds[0][0]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    seeded = SeededDataset(ds, seed=0)
    assert all(torch.equal(u, v) for u, v in zip(seeded[(0, 5)][0], seeded[(0, 5)][0]))
    assert not torch.equal(seeded[(0, 5)][0][0], seeded[(1, 5)][0][0])  # another epoch, other views
    with pytest.raises(ValueError, match="not divisible"):
        SiameseIMTransform(30, 8, 10)


def test_vit_b_masks_have_118_patches():
    tf = SiameseIMTransform(224, 16, 118)
    counts = {int(tf.masks(random.Random(s)).sum()) for s in range(50)}
    assert counts == {118}


def test_digits_fewshot_split_and_unknown_dataset():
    few = LabelledDigits("train", 16, None, fraction=0.1)
    counts = np.bincount(few.labels.numpy())
    assert len(few) == 142 and counts.min() >= 13 and counts.max() <= 15
    again = LabelledDigits("train", 16, None, fraction=0.1)
    assert torch.equal(few.labels, again.labels)
    with pytest.raises(ValueError, match="known: digits, imagenet, folder"):
        build_classification_data(type("C", (), {"name": "mnist", "get": lambda *a: None})(), "train", None)



def test_imagenet_without_data_root_names_the_key_and_layout():
    from omegaconf import OmegaConf

    from sim.data.sources import build_pretrain_dataset

    cfg = OmegaConf.create({"name": "imagenet", "root": None, "skip_corrupt": False})
    with pytest.raises(FileNotFoundError, match=r"^data.root is not set; pass data.root=/path/to/data with train/<wnid>"):
        build_classification_data(cfg, "val", None)
    with pytest.raises(FileNotFoundError, match=r"^data.root is not set; pass data.root=/path/to/data with train/<wnid>"):
        build_pretrain_dataset(cfg, None)

def literal(pred, target, lam):
    p, t = pred.reshape(-1, pred.shape[-1]).double(), target.reshape(-1, target.shape[-1]).double()
    corr = t.T @ t / len(t)
    return ((((p - t) ** 2).sum(-1).mean() + lam * torch.diagonal(p @ corr @ p.T).mean()) / p.shape[-1])


def test_loss_terms_match_the_official_formula():
    torch.manual_seed(0)
    out = SiameseIMOutput(torch.randn(3, 16, 32), torch.nn.functional.layer_norm(torch.randn(3, 16, 32), (32,)))
    terms = siameseim_loss(out, 0.02)
    torch.testing.assert_close(terms["loss"].double(), literal(out.pred, out.target, 0.02), rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["loss"], terms["loss_pos"] + terms["loss_neg"])
    assert terms["correlation"].shape == (32, 32)


def test_effective_rank_by_hand():
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)
    v = torch.randn(8, 1)
    assert effective_rank(v @ v.T) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))) == pytest.approx(2.0)
