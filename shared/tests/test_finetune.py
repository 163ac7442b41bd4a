"""Fine-tuning / linear-probe pieces: layer-decay groups, lr schedule, LARS vs MAE's formula, transforms,
Mixup, the BN head, top-1 evaluation."""

import math

import pytest
import timm
import torch
from PIL import Image
from torch import nn

from repro_shared.finetune import (BNLinearHead, RandomResizedCropNoLoop, build_eval_transform, build_lars,
                                   build_linprobe_transform, build_mixup, build_train_transform,
                                   evaluate_classifier, freeze_except, half_cosine_lr,
                                   param_groups_layer_decay, set_lr, vit_layer_id)


def vit(depth=2):
    torch.manual_seed(0)
    m = timm.models.VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=depth, num_heads=2,
                                      num_classes=5, global_pool="avg", fc_norm=True)
    m.pos_embed.requires_grad_(False)  # fixed sin-cos, as the MAE / SiameseIM classifier
    return m


def test_layer_ids_and_scales_by_hand():
    """depth 2, decay 0.5: stem 0.5^3, block0 0.5^2, block1 0.5, head / fc_norm 1."""
    assert [vit_layer_id(n, 3) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight",
                                         "blocks.1.mlp.fc1.bias", "fc_norm.weight", "head.weight")] == [0, 0, 0, 1, 2, 3, 3]
    assert vit_layer_id("encoder.blocks.1.attn.qkv.weight", 3, prefix="encoder.") == 2
    m = vit()
    groups = param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.5)
    by_name = {}
    for g in groups:
        for p in g["params"]:
            name = next(n for n, q in m.named_parameters() if q is p)
            by_name[name] = (g["lr_scale"], g["weight_decay"])
    assert by_name["cls_token"] == (0.125, 0.0)                 # no decay on cls_token (MAE's list)
    assert by_name["patch_embed.proj.weight"] == (0.125, 0.05)
    assert by_name["patch_embed.proj.bias"] == (0.125, 0.0)
    assert by_name["blocks.0.attn.qkv.weight"] == (0.25, 0.05)
    assert by_name["blocks.1.attn.qkv.weight"] == (0.5, 0.05)
    assert by_name["blocks.1.norm1.weight"] == (0.5, 0.0)
    assert by_name["fc_norm.weight"] == (1.0, 0.0) and by_name["head.weight"] == (1.0, 0.05)
    assert "pos_embed" not in by_name  # frozen
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in m.parameters())
    # same groups as timm's helper on a timm ViT
    from timm.optim import param_groups_layer_decay as timm_groups
    tg = timm_groups(m, 0.05, layer_decay=0.5, no_weight_decay_list=("cls_token", "pos_embed", "dist_token"))
    as_sets = lambda gs: sorted((g["lr_scale"], g["weight_decay"], sorted(id(p) for p in g["params"])) for g in gs)
    assert as_sets(groups) == as_sets(tg)
    # a ViT wrapped under a prefix gets the same scales
    wrapper = nn.Module()
    wrapper.encoder = m
    wg = param_groups_layer_decay(wrapper, weight_decay=0.05, layer_decay=0.5, prefix="encoder.")
    assert as_sets(wg) == as_sets(groups)


def test_lr_multiplier_keyword():
    m = vit()
    groups = param_groups_layer_decay(m, layer_decay=1.0, lr_mult={"qkv": 0.1})
    g = next(g for g in groups if any(p is m.blocks[0].attn.qkv.weight for p in g["params"]))
    assert g["lr_scale"] == pytest.approx(0.1)


def test_half_cosine_schedule_and_set_lr():
    # warmup from 0 at the official offset: step k uses k / iters
    assert half_cosine_lr(0.0, 1e-3, 10, 2) == 0.0
    assert half_cosine_lr(0.5, 1e-3, 10, 2) == pytest.approx(2.5e-4)
    assert half_cosine_lr(2.0, 1e-3, 10, 2) == pytest.approx(1e-3)
    assert half_cosine_lr(6.0, 1e-3, 10, 2, min_lr=1e-6) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert half_cosine_lr(10.0, 1e-3, 10, 2, min_lr=1e-6) == pytest.approx(1e-6)
    opt = torch.optim.AdamW(param_groups_layer_decay(vit(), layer_decay=0.5))
    set_lr(opt, 0.8)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.1, 0.2, 0.4, 0.8]


def mae_lars_reference(params, grads, bufs, lr, wd, momentum=0.9, tc=0.001):
    """MAE util/lars.py step, written out from its definition."""
    for i, (p, dp) in enumerate(zip(params, grads)):
        if p.ndim > 1:
            dp = dp + wd * p
            pn, un = p.norm(), dp.norm()
            q = torch.where(pn > 0, torch.where(un > 0, tc * pn / un, torch.ones_like(pn)), torch.ones_like(pn))
            dp = dp * q
        bufs[i] = bufs[i] * momentum + dp
        params[i] = p - lr * bufs[i]


def test_lars_equals_mae_formula():
    torch.manual_seed(0)
    head = nn.Linear(6, 3)
    opt = build_lars(head, lr=0.5)
    ref = [p.detach().clone() for p in head.parameters()]
    bufs = [torch.zeros_like(p) for p in ref]
    for step in range(3):
        x = torch.randn(8, 6)
        loss = head(x).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        grads = [p.grad.clone() for p in head.parameters()]
        mae_lars_reference(ref, grads, bufs, 0.5, 0.0)
        opt.step()
        for p, r in zip(head.parameters(), ref):
            torch.testing.assert_close(p.detach(), r, atol=1e-6, rtol=1e-5)
    # the trust ratio matters: plain SGD would move the weight matrix far more
    assert opt.param_groups[0]["always_adapt"] and not opt.param_groups[1]["always_adapt"]


def test_transforms_and_mixup():
    img = Image.new("RGB", (40, 30), (120, 10, 200))
    torch.manual_seed(0)
    assert build_train_transform(32)(img).shape == (3, 32, 32)
    assert build_eval_transform(32)(img).shape == (3, 32, 32)
    assert build_linprobe_transform(32)(img).shape == (3, 32, 32)
    # the no-loop crop clips the box to the image instead of retrying
    torch.manual_seed(0)
    for _ in range(50):
        i, j, h, w = RandomResizedCropNoLoop.get_params(img, (0.9, 1.0), (0.2, 5.0))
        assert 0 <= i and i + h <= 30 and 0 <= j and j + w <= 40
    mix = build_mixup(5)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    xm, ym = mix(x, y)
    assert ym.shape == (4, 5) and torch.allclose(ym.sum(1), torch.ones(4))
    assert ym.min() >= 0.1 / 5 - 1e-6  # label smoothing 0.1 spreads mass to every class
    assert build_mixup(5, mixup=0, cutmix=0) is None


def test_randaugment_posterize_at_full_magnitude_gives_black_instead_of_a_pillow_error():
    from timm.data.auto_augment import rand_augment_transform

    img = Image.new("RGB", (16, 16), (120, 10, 200))
    build_train_transform(16)  # installs the Pillow >= 12 compatible posterize
    posterize = rand_augment_transform("rand-n1-m10-inc1", {})  # magnitude 10: keep 0 bits
    posterize.ops = [op for op in posterize.ops if op.name == "PosterizeIncreasing"]
    posterize.ops[0].prob = 1.0
    out = posterize(img)
    assert out.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_bn_head_and_freeze():
    head = BNLinearHead(16, 5)
    assert not head[0].affine and head[0].eps == 1e-6 and torch.equal(head[1].bias, torch.zeros(5))
    assert 0.005 < float(head[1].weight.detach().std()) < 0.015
    m = vit()
    m.head = BNLinearHead(16, 5)
    kept = freeze_except(m, ["head."])
    assert kept == ["head.1.weight", "head.1.bias"]
    with pytest.raises(ValueError, match="no parameter"):
        freeze_except(m, ["nope."])


def test_evaluate_classifier_by_hand():
    class Fixed(nn.Module):
        def forward(self, x):
            return x  # the "images" are the logits

    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])
    labels = torch.tensor([0, 2, 0])
    res = evaluate_classifier(Fixed(), [(logits, labels)], torch.device("cpu"))
    assert res["top1"] == pytest.approx(100 / 3) and res["top5"] == pytest.approx(200 / 3)
    want = float(nn.functional.cross_entropy(logits, labels))
    assert res["loss"] == pytest.approx(want, rel=1e-6) and res["num_samples"] == 3
    sub = evaluate_classifier(Fixed(), [(logits, torch.tensor([0, 1, 1]))], torch.device("cpu"), class_subset=[0, 2])
    assert sub["top1"] == pytest.approx(100.0)  # among classes {0, 2}: argmax 0, 2, 2 -> indices 0, 1, 1
    bad = torch.tensor([[math.nan, 0.0]])
    with pytest.raises(FloatingPointError, match="non-finite"):
        evaluate_classifier(Fixed(), [(bad, torch.tensor([0]))], torch.device("cpu"))
