"""DETR3D perspective head (paper Tab. 5): the projection / sampling by hand, the L1 set loss, a training step."""
import pytest
import torch

from bevformer_v2.data.dataset import BEVDataset, collate
from bevformer_v2.losses import bev_head_loss, detector_losses, normalize_bbox, total_loss
from bevformer_v2.models.detr3d import Detr3DCrossAtten

CROP = (0, 8, 128, 72)
PC = (-10.0, -10.0, -2.0, 10.0, 10.0, 2.0)


def test_cross_attention_samples_the_feature_under_the_projected_point():
    att = Detr3DCrossAtten(4, num_cams=2, num_levels=1, pc_range=PC)
    K = torch.tensor([[10.0, 0, 8, 0], [0, 10.0, 4, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2cam = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # lidar y -> camera z
    back = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0])) @ lidar2cam  # second camera looks backwards
    l2i = torch.stack([K @ lidar2cam, K @ back])[None]
    feat = torch.arange(2 * 4 * 8 * 16, dtype=torch.float32).view(1, 2, 4, 8, 16)  # (B, N, C, h, w) on a 8x16 image
    # lidar point (x, y, z) = (0.25, 5, -0.25) projects to pixel (8.5, 4.5) of camera 0: the centre of cell (4, 8)
    pt = (torch.tensor([[[0.25, 5.0, -0.25]]]) - torch.tensor(PC[:3])) / torch.tensor([20.0, 20.0, 4.0])
    sampled, visible = att.sample([feat], pt, l2i, (8, 16))
    assert visible.tolist() == [[[True, False]]]  # in front of camera 0, behind camera 1
    torch.testing.assert_close(sampled[0, :, 0, 0, 0], feat[0, 0, :, 4, 8])


def test_l1_set_loss_for_the_detr3d_head():
    gt = torch.tensor([[1.0, 2.0, -1.0, 1.8, 4.5, 1.6, 0.3, 0.5, 0.0]])
    reg = normalize_bbox(gt).repeat(1, 1, 3, 1)
    reg[0, 0, 0, 0] += 0.5  # query 0 matches with an x error of 0.5
    cls = torch.full((1, 1, 3, 10), -20.0)
    cls[0, 0, 0, 3] = 20.0
    L = bev_head_loss(cls, reg, [gt], [torch.tensor([3])], bbox_weight=0.25, beta=0.0)
    assert float(L["loss_bbox"]) == pytest.approx(0.25 * 0.5)  # L1, not smooth-L1 (which gives 0.75 * 0.125)


def test_detr3d_perspective_head_trains_with_the_bev_head(infos, make_tiny):
    torch.manual_seed(0)
    model = make_tiny(perspective_head="detr3d", detr3d=dict(num_query=20, num_layers=2, ffn_dims=64, num_heads=4))
    assert not hasattr(model, "fcos3d_bbox_head") and hasattr(model, "detr3d_head")
    batch = collate([BEVDataset(infos["train"], crop=CROP, test_height=64, train=True)[0]])
    out = model.train()(batch)
    assert out["detr3d_cls"].shape == (2, 1, 20, 10) and out["dd3d"] is None
    losses = detector_losses(out, batch, 1, True)
    assert {"pers.loss_cls", "pers.loss_bbox", "pers.d0.loss_cls"} <= set(losses)
    total_loss(losses).backward()
    assert model.detr3d_head.transformer.decoder.layers[0].attentions[1].attention_weights.weight.grad.abs().sum() > 0
    assert model.img_backbone.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="two-stage"):
        make_tiny(perspective_head="detr3d", two_stage=True)
    preds = model.eval().predict_perspective(batch)
    assert preds[0][0].shape[-1] == 9
