"""Deformable DETR with PAP (our adaptation): deformable attention, matching, PAP targets, lambda."""

import pytest
import torch
from hydra import compose, initialize_config_module

from param_ap_loss.models.build import build_detector
from param_ap_loss.models.deformable_detr import hungarian_match, ms_deform_attn


def _cfg(*overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=["experiment=deformable_detr_tiny_shapes", *overrides])


def test_ms_deform_attn_equals_explicit_bilinear_sampling():
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 8), (3, 4)]
    heads, dh, b, lq, pts = 2, 3, 1, 5, 2
    value = [torch.randn(b * heads, dh, h, w, generator=g, dtype=torch.float64) for h, w in shapes]
    loc = torch.rand(b, lq, heads, len(shapes), pts, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    wts = torch.rand(b, lq, heads, len(shapes), pts, generator=g, dtype=torch.float64)
    out = ms_deform_attn(value, loc, wts)

    def bilinear(v, x, y):  # v (dh, H, W); pixel-centre convention, zero outside
        h, w = v.shape[1:]
        px, py = x * w - 0.5, y * h - 0.5
        x0, y0 = int(torch.floor(px)), int(torch.floor(py))
        acc = torch.zeros(v.shape[0], dtype=v.dtype)
        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
            if 0 <= xi < w and 0 <= yi < h:
                acc += v[:, yi, xi] * (1 - abs(px - xi)) * (1 - abs(py - yi))
        return acc

    want = torch.zeros(b, lq, heads * dh, dtype=torch.float64)
    for q in range(lq):
        for hh in range(heads):
            for lvl in range(len(shapes)):
                for p in range(pts):
                    x, y = loc[0, q, hh, lvl, p]
                    want[0, q, hh * dh:(hh + 1) * dh] += wts[0, q, hh, lvl, p] * bilinear(value[lvl][hh], x, y)
    torch.testing.assert_close(out, want)


def test_hungarian_match_recovers_perfect_predictions():
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]])
    boxes = torch.rand(1, 6, 4) * 0.5 + 0.25
    boxes[0, 4], boxes[0, 1] = gt[0], gt[1]
    logits = torch.full((1, 6, 3), -5.0)
    logits[0, 4, 2], logits[0, 1, 0] = 5.0, 5.0
    (q, g), = hungarian_match(logits, boxes, [{"labels": torch.tensor([2, 0]), "boxes_n": gt}])
    assert dict(zip(g.tolist(), q.tolist())) == {0: 4, 1: 1}


@pytest.mark.parametrize("loss", ["pap_detr", "focal_l1_giou"])
def test_detr_train_and_eval(loss):
    cfg = _cfg(f"loss={loss}")
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = model(images, targets)
    n_layers = cfg.model.detr.dec_layers
    assert len(losses) == (n_layers if loss == "pap_detr" else 3 * n_layers)  # one loss per decoder layer
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    k = min(100, cfg.model.detr.num_queries * 3)  # top-100 over (query, class) pairs
    assert dets[0]["boxes"].shape == (k, 4) and dets[0]["labels"].max() < 3


def test_detr_lambda_scales_box_gradient_only():
    cfg = _cfg()
    grads = []
    for lam in (1.0, 2.5):
        torch.manual_seed(0)
        model = build_detector(cfg.model, cfg.loss, num_classes=3)
        model.pap.set_parameters(model.pap.ctrl_points, lam)
        images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))]
        targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 70.0, 120.0, 110.0]]),
                    "labels": torch.tensor([1, 2])}]
        sum(model(images, targets).values()).backward()
        grads.append((model.bbox_embed[0][-1].weight.grad.clone(), model.class_embed[0].weight.grad.clone()))
    assert grads[0][0].abs().sum() > 0
    torch.testing.assert_close(grads[1][0], 2.5 * grads[0][0], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-9)


def test_detr_unknown_loss_error():
    cfg = _cfg("loss=focal_giou")
    with pytest.raises(ValueError, match="unknown Deformable DETR loss_type 'focal_giou'"):
        build_detector(cfg.model, cfg.loss, num_classes=3)


def test_detr_coco_config_composes():
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        cfg = compose("train", overrides=["experiment=deformable_detr_pap_coco"])
    assert cfg.model.name == "deformable_detr" and cfg.loss.type == "pap" and cfg.train.optimizer == "adamw"
    assert cfg.train.lr == 0.0002 and cfg.train.epochs == 50 and cfg.model.detr.num_queries == 300
