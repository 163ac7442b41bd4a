"""Detectors: PAP wiring (anchors, coder, GradScale lambda reaching the heads), RoIAlign, bad config."""

import pytest
import torch
from hydra import compose, initialize_config_module
from torchvision.ops import roi_align

from param_ap_loss.cli import pap_heads
from param_ap_loss.models.build import build_detector
from param_ap_loss.models.common import MaxIoUMatcher
from param_ap_loss.models.faster_rcnn import AlignedMultiScaleRoIAlign


def _cfg(*overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=list(overrides))


def _batch(n=2, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]),
                "labels": torch.tensor([0, 2])} for _ in range(n)]
    return images, targets


def test_retinanet_pap_config_matches_paper_settings():
    cfg = _cfg("model=retinanet_r50_fpn")
    model = build_detector(cfg.model, cfg.loss, num_classes=80)
    assert model.anchor_generator.num_anchors_per_location() == [6] * 5
    assert model.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert model.head.classification_head.cls_logits.out_channels == 6 * 80
    assert model.pap.reg_weight == pytest.approx(4.1231)
    assert model.head.classification_head.cls_logits.bias[0].item() == pytest.approx(-4.59512, abs=1e-4)
    # frozen stem + stage 1, frozen BN
    assert not any(p.requires_grad for p in model.backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.body.layer2.parameters())


def test_retinanet_train_and_eval_outputs():
    cfg = _cfg()
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {"loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}


CLS_PARAM = {"bbox": "head.classification_head.cls_logits.weight", "rpn": "rpn.head.cls_logits.weight",
             "roi": "roi_heads.box_predictor.cls_score.weight"}


def _roi_only_loss(model, images, targets):
    """RoI-head loss on jittered GT proposals (random-init RPN proposals rarely reach IoU 0.5)."""
    images_t, targets_t = model.transform(images, targets)
    feats = model.backbone(images_t.tensors)
    props = [torch.cat([t["boxes"] + 2.0, t["boxes"] - 1.5, torch.tensor([[0.0, 0.0, 30.0, 30.0]])]) for t in targets_t]
    _, losses = model.roi_heads(feats, props, images_t.image_sizes, targets_t)
    return sum(losses.values())


@pytest.mark.parametrize("model_name,head,param", [("retinanet_tiny", "bbox", "head.regression_head.bbox_reg.weight"),
                                                   ("faster_rcnn_tiny", "rpn", "rpn.head.bbox_pred.weight"),
                                                   ("faster_rcnn_tiny", "roi", "roi_heads.box_predictor.bbox_pred.weight")])
def test_grad_scale_lambda_reaches_the_box_branch(model_name, head, param):
    """The search sets lambda on the heads; the box-branch gradient must scale by it (the official
    search never applied it)."""
    loss = "pap_retinanet" if model_name.startswith("retina") else "pap_faster_rcnn"
    cfg = _cfg(f"model={model_name}", f"loss={loss}")
    grads, cls_grads = [], []
    for lam in (1.0, 3.0):
        torch.manual_seed(0)
        model = build_detector(cfg.model, cfg.loss, num_classes=3)
        model.train()
        h = pap_heads(model)[head]
        h.set_parameters(h.ctrl_points, lam)
        images, targets = _batch()
        torch.manual_seed(1)  # same RPN sampling in both runs
        loss = _roi_only_loss(model, images, targets) if head == "roi" else sum(model(images, targets).values())
        loss.backward()
        params = dict(model.named_parameters())
        grads.append(params[param].grad.clone())
        cls_grads.append(params[CLS_PARAM[head]].grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], 3.0 * grads[0], rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(cls_grads[1], cls_grads[0], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("loss", ["pap_faster_rcnn", "ce_giou"])
def test_faster_rcnn_train_and_eval(loss):
    cfg = _cfg("model=faster_rcnn_tiny", f"loss={loss}")
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    images, targets = _batch()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and all(d["labels"].max() < 3 if d["labels"].numel() else True for d in dets)


def test_faster_rcnn_pap_head_shapes():
    cfg = _cfg("model=faster_rcnn_r50_fpn", "loss=pap_faster_rcnn")
    model = build_detector(cfg.model, cfg.loss, num_classes=80)
    assert model.roi_heads.box_predictor.cls_score.out_features == 80  # sigmoid, no background
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 320
    assert model.rpn.pap.reg_weight == pytest.approx(1.695) and model.roi_heads.pap.reg_weight == pytest.approx(7.1324)
    assert model.rpn.head.cls_logits.out_channels == 3


def test_aligned_roi_pool_equals_roi_align_on_its_level():
    pool = AlignedMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)
    feats = {str(i): torch.randn(1, 4, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)}
    boxes = [torch.tensor([[2.0, 3.0, 40.0, 50.0], [100.0, 100.0, 250.0, 240.0]])]
    out = pool(feats, boxes, [(256, 256)])
    # sqrt(area) 42 -> level 0 (stride 4); 145 -> level 1 (stride 8)
    want0 = roi_align(feats["0"], [boxes[0][:1]], 7, spatial_scale=1 / 4, sampling_ratio=0, aligned=True)
    want1 = roi_align(feats["1"], [boxes[0][1:]], 7, spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(out, torch.cat([want0, want1]))


def test_matcher_low_quality_threshold():
    iou = torch.tensor([[0.25, 0.1, 0.0], [0.1, 0.5, 0.35]])  # 2 GTs x 3 anchors
    m = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(iou)
    # GT0's best IoU 0.25 < 0.3: no low-quality match; GT1's best (0.5) becomes positive
    assert m.tolist() == [-1, 1, -2]


def test_bad_config_errors():
    cfg = _cfg()
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        build_detector(_cfg("model.name=yolo").model, cfg.loss, 3)
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_detector(_cfg("model.backbone.name=vgg").model, cfg.loss, 3)
    with pytest.raises(ValueError, match="unknown RetinaNet loss_type 'ce_giou'"):
        c = _cfg("loss=ce_giou")
        build_detector(c.model, c.loss, 3)
    with pytest.raises(ValueError, match="unknown PAP-loss preset 'retina'"):
        c = _cfg("loss.head.preset=retina")
        build_detector(c.model, c.loss, 3)


@pytest.mark.parametrize("name,config,lr", [("retinanet_pap_coco", "train", 0.016), ("retinanet_focal_giou_coco", "train", 0.016),
                                            ("faster_rcnn_pap_coco", "train", 0.024), ("faster_rcnn_ce_giou_coco", "train", 0.04),
                                            ("search_retinanet", "search", 0.016), ("search_faster_rcnn", "search", 0.024)])
def test_experiment_configs_compose(name, config, lr):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        cfg = compose(config, overrides=[f"experiment={name}"])
    assert cfg.train.lr == lr and cfg.data.name == "coco" and cfg.model.score_thresh == 0.05
    assert cfg.init.required and cfg.init.path.endswith("resnet50-0676ba61.pth")
    if config == "search":
        assert cfg.search.rounds == 40 and cfg.search.samples == 8 and cfg.train.epochs == 1
        assert cfg.data.val_ann.endswith("search_val2017.json")
    else:
        assert cfg.train.epochs == 100


def test_params_file_from_search_sets_the_heads(tmp_path):
    import json

    import numpy as np

    from param_ap_loss.search import SearchSpace

    space = SearchSpace(("rpn", "roi"))
    theta = np.random.default_rng(0).random(space.dim)
    params = {h: {"ctrl_points": c.tolist(), "reg_weight": lam} for h, (c, lam) in space.to_params(theta).items()}
    path = tmp_path / "searched_params.json"
    path.write_text(json.dumps(params))
    cfg = _cfg("model=faster_rcnn_tiny", "loss=pap_faster_rcnn", f"loss.rpn.params_file={path}",
               f"loss.roi.params_file={path}")
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    assert model.roi_heads.pap.reg_weight == pytest.approx(params["roi"]["reg_weight"])
    torch.testing.assert_close(model.rpn.pap.ctrl_points, torch.tensor(params["rpn"]["ctrl_points"]).float())
    with pytest.raises(ValueError, match="not for 'bbox'"):
        c = _cfg(f"loss.head.params_file={path}")
        build_detector(c.model, c.loss, 3)
    with pytest.raises(FileNotFoundError, match="searched_params.json of a pap-search run"):
        c = _cfg(f"loss.head.params_file={tmp_path}/missing.json")
        build_detector(c.model, c.loss, 3)


@pytest.mark.parametrize("model_name,loss", [("retinanet_tiny", "pap_retinanet"), ("faster_rcnn_tiny", "pap_faster_rcnn")])
def test_batch_without_objects_gives_zero_loss_with_graph(model_name, loss):
    cfg = _cfg(f"model={model_name}", f"loss={loss}")
    model = build_detector(cfg.model, cfg.loss, num_classes=3)
    images = [torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    total = sum(model(images, targets).values())
    assert total.item() == 0
    total.backward()
