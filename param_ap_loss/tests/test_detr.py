"""Deformable DETR with PAP (our adaptation): deformable attention, matching, PAP targets, lambda."""

import pytest
import torch
from hydra import compose, initialize_config_module

from param_ap_loss.models.build import build_detector
from param_ap_loss.models.deformable_detr import MSDeformAttn, hungarian_match


def _cfg(*overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=["experiment=deformable_detr_tiny_shapes", *overrides])


def test_deformable_attention_module_samples_the_right_pixels():
    """MSDeformAttn with identity projections, fixed offsets and attention: its output equals explicit
    bilinear sampling (pixel-centre convention, zeros outside) of each head's channels at ref + offset /
    (W_l, H_l), on non-square levels (checks the head split, the (x, y) order and the level layout handed
    to ``repro_shared.ops.msda``)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 8), (3, 5)]
    heads, dh, lq, pts = 2, 3, 4, 2
    d = heads * dh
    attn = MSDeformAttn(d, len(shapes), heads, pts).double()
    off = torch.randn(heads, len(shapes), pts, 2, generator=g, dtype=torch.float64) * 2
    logit = torch.randn(heads, len(shapes) * pts, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(d, dtype=torch.float64))
            lin.bias.zero_()
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(off.flatten())
        attn.attention_weights.weight.zero_()
        attn.attention_weights.bias.copy_(logit.flatten())
    feats = [torch.randn(h, w, d, generator=g, dtype=torch.float64) for h, w in shapes]
    inp = torch.cat([f.reshape(-1, d) for f in feats])[None]
    ref = torch.rand(1, lq, len(shapes), 2, generator=g, dtype=torch.float64)
    out = attn(torch.zeros(1, lq, d, dtype=torch.float64), ref, inp, shapes,
               torch.zeros(1, inp.shape[1], dtype=torch.bool))

    def bilinear(f, x, y):  # f (H, W, C); pixel-centre convention, zero outside
        h, w = f.shape[:2]
        px, py = x * w - 0.5, y * h - 0.5
        x0, y0 = int(torch.floor(px)), int(torch.floor(py))
        acc = torch.zeros(f.shape[2], dtype=f.dtype)
        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
            if 0 <= xi < w and 0 <= yi < h:
                acc += f[yi, xi] * (1 - abs(px - xi)) * (1 - abs(py - yi))
        return acc

    weights = logit.softmax(-1).view(heads, len(shapes), pts)
    want = torch.zeros(lq, d, dtype=torch.float64)
    for q in range(lq):
        for m in range(heads):
            for lvl, (h, w) in enumerate(shapes):
                for p in range(pts):
                    x = ref[0, q, lvl, 0] + off[m, lvl, p, 0] / w
                    y = ref[0, q, lvl, 1] + off[m, lvl, p, 1] / h
                    want[q, m * dh:(m + 1) * dh] += weights[m, lvl, p] * bilinear(feats[lvl][..., m * dh:(m + 1) * dh],
                                                                                 x, y)
    torch.testing.assert_close(out[0], want)


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


def test_hungarian_match_refuses_non_finite_inputs_by_name():
    from repro_shared.guards import NonFiniteError

    logits, boxes = torch.zeros(1, 3, 2), torch.full((1, 3, 4), 0.3)
    logits[0, 1, 0] = float("nan")
    tg = [{"labels": torch.tensor([1]), "boxes_n": torch.tensor([[0.5, 0.5, 0.2, 0.1]])}]
    with pytest.raises(NonFiniteError, match="Hungarian matcher: input 'logits' holds 1 non-finite"):
        hungarian_match(logits, boxes, tg)
    tg[0]["boxes_n"][0, 2] = float("inf")
    with pytest.raises(NonFiniteError, match="'target_boxes'"):
        hungarian_match(torch.zeros(1, 3, 2), boxes, tg)
