"""Audit of every box unpack (issue 15): xyxy / xywh / cxcywh, box coders, unit anchors, DETR coordinates,
two-stage proposals, deformable sampling with reference boxes, COCO reading and writing, HSV channels.

Every case uses non-square, non-symmetric boxes (w != h, x != y) and, where a function is covariant under
swapping the axes, checks that swapping x and y in the input swaps them in the output, so that a
coordinate-order mix-up cannot pass.
"""

import colorsys
import json

import pytest
import torch
from PIL import Image
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert, generalized_box_iou

from param_ap_loss.data.coco import CocoDetection
from param_ap_loss.data.transforms import build_transforms
from param_ap_loss.data.photometric import hsv_to_rgb, rgb_to_hsv
from param_ap_loss.engine import predict
from param_ap_loss.models.common import stds_to_weights
from param_ap_loss.models.deformable_detr import MSDeformAttn, PAPDeformableDETR
from param_ap_loss.models.backbones import build_backbone
from param_ap_loss.ops.boxes import decode_unit_anchor, giou_aligned, iou_aligned

D = torch.float64
SWAP_XY = [1, 0, 3, 2]  # (x1, y1, x2, y2) -> (y1, x1, y2, x2)


def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=D) * torch.tensor([90.0, 40.0], dtype=D)
    wh = torch.rand(n, 2, generator=g, dtype=D) * torch.tensor([60.0, 15.0], dtype=D) + 1
    return torch.cat([xy, xy + wh], 1)


def test_giou_iou_match_torchvision_and_are_axis_swap_invariant():
    a, b = _random_boxes(64, 0), _random_boxes(64, 1)
    torch.testing.assert_close(giou_aligned(a, b), generalized_box_iou(a, b).diagonal(), atol=1e-6, rtol=0)
    torch.testing.assert_close(giou_aligned(a[:, SWAP_XY], b[:, SWAP_XY]), giou_aligned(a, b))
    torch.testing.assert_close(iou_aligned(a[:, SWAP_XY], b[:, SWAP_XY]), iou_aligned(a, b))
    # hand case: a = 40 x 10 at (0, 0), b = 10 x 40 at (0, 0): inter 100, union 700, hull 40 x 40
    a1, b1 = torch.tensor([[0.0, 0.0, 40.0, 10.0]], dtype=D), torch.tensor([[0.0, 0.0, 10.0, 40.0]], dtype=D)
    assert iou_aligned(a1, b1).item() == pytest.approx(100 / 700, abs=1e-9)
    assert giou_aligned(a1, b1).item() == pytest.approx(100 / 700 - (1600 - 700) / 1600, abs=1e-9)
    # reading the boxes as (x1, x2, y1, y2) would give another value: the test can tell the orders apart
    assert giou_aligned(a1[:, [0, 2, 1, 3]], b1[:, [0, 2, 1, 3]]).item() != pytest.approx(giou_aligned(a1, b1).item())


def test_unit_anchor_decoding_hand_case_and_axes():
    deltas = torch.tensor([[0.5, -1.0, 1.0, -2.0]], dtype=D)  # dx, dy, dw, dh
    stds = (0.1, 0.3, 0.2, 0.4)  # distinct per axis
    cx, cy, w, h = 0.05, -0.3, torch.exp(torch.tensor(0.2)).item(), torch.exp(torch.tensor(-0.8)).item()
    want = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], dtype=D)
    torch.testing.assert_close(decode_unit_anchor(deltas, stds), want)
    swapped = decode_unit_anchor(deltas[:, SWAP_XY], tuple(stds[i] for i in SWAP_XY))
    torch.testing.assert_close(swapped, want[:, SWAP_XY])


def test_box_coder_weights_follow_the_coordinate_order():
    """mmdet stds (x, y, w, h) -> torchvision weights 1 / std in the same order; encode / decode round trip
    on non-square anchors, and dx scales with the anchor width, dy with its height."""
    stds = (0.1, 0.3, 0.2, 0.4)
    assert stds_to_weights(stds) == pytest.approx((10.0, 10 / 3, 5.0, 2.5))
    coder = BoxCoder(stds_to_weights(stds))
    anchors, gts = _random_boxes(32, 2), _random_boxes(32, 3)
    deltas = coder.encode_single(gts, anchors)
    torch.testing.assert_close(coder.decode_single(deltas, anchors), gts, atol=1e-6, rtol=0)
    anchor = torch.tensor([[0.0, 0.0, 40.0, 10.0]], dtype=D)  # 40 wide, 10 tall
    gt = torch.tensor([[4.0, 1.0, 44.0, 11.0]], dtype=D)  # shifted by 0.1 w and 0.1 h
    torch.testing.assert_close(coder.encode_single(gt, anchor), torch.tensor([[0.1 / 0.1, 0.1 / 0.3, 0.0, 0.0]], dtype=D))


def test_coco_reader_converts_xywh_on_a_non_square_image(tmp_path):
    Image.new("RGB", (64, 40)).save(tmp_path / "a.png")  # W 64, H 40
    ann = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 40}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [5.0, 10.0, 30.0, 8.0], "area": 240,
                            "iscrowd": 0}],
           "categories": [{"id": 3, "name": "c"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    image, target = CocoDetection(tmp_path, tmp_path / "ann.json", build_transforms("none"))[0]
    assert image.shape == (3, 40, 64)
    assert target["boxes"].tolist() == [[5.0, 10.0, 35.0, 18.0]] and target["labels"].tolist() == [0]


def test_predict_writes_coco_xywh():
    class Fixed(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 25.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1])}]

    loader = [([torch.zeros(3, 40, 64)], [{"image_id": torch.tensor(5)}])]
    (det,) = predict(Fixed(), loader, torch.device("cpu"), cat_ids=[11, 12])
    assert det["bbox"] == [10.0, 20.0, 40.0, 5.0] and det["category_id"] == 12 and det["image_id"] == 5


def _tiny_detr(**kw):
    backbone = build_backbone("tiny", 5, (2, 3, 4), 32, "p6p7_on_input", 8)
    return PAPDeformableDETR(backbone, 3, loss_type="focal_l1_giou", num_queries=4, enc_layers=1, dec_layers=1,
                             n_heads=2, n_points=1, ffn_dim=16, train_size=96, test_min_size=64, test_max_size=96, **kw)


def test_detr_targets_and_detections_on_a_non_square_image():
    """A 40 x 64 (H x W) image is resized to 60 x 96 and padded to 64 x 96 at test: a box predicted
    relative to the padded tensor must come back in original pixels."""
    model = _tiny_detr().eval()
    gt = torch.tensor([[10.0, 20.0, 50.0, 25.0]])  # xyxy, 40 x 5 px in the 64 x 40 image
    pred_n = box_convert(gt * 1.5, "xyxy", "cxcywh") / torch.tensor([96.0, 64.0, 96.0, 64.0])  # padded 64 x 96

    def heads(images):
        assert tuple(images.tensors.shape[-2:]) == (64, 96) and images.image_sizes == [(60, 96)]
        logits = torch.full((1, 4, 3), -9.0)
        logits[0, 2, 1] = 9.0
        return [(logits, pred_n.expand(1, 4, 4).clone())], None

    model._forward_heads = heads
    (det,) = model([torch.rand(3, 40, 64)])
    torch.testing.assert_close(det["boxes"][0], gt[0], atol=1e-4, rtol=0)
    assert det["labels"][0].item() == 1
    # training targets: cxcywh normalised by (W, H, W, H) of the padded batch
    model.train()
    seen = {}
    model._set_loss = lambda logits, boxes, tg, n, name: seen.update(tg=tg) or {"x": logits.sum()}
    model._forward_heads = lambda images: ([(torch.zeros(1, 4, 3), torch.rand(1, 4, 4))], None)
    model([torch.rand(3, 64, 96)], [{"boxes": gt, "labels": torch.tensor([1])}])  # train size 96: no resize, no pad
    want = torch.tensor([[30 / 96, 22.5 / 64, 40 / 96, 5 / 64]])
    torch.testing.assert_close(seen["tg"][0]["boxes_n"], want)


def test_two_stage_proposals_follow_x_then_y_on_a_non_square_level():
    model = _tiny_detr(two_stage=True, box_refine=True)
    memory = torch.zeros(1, 6 + 2, 32)  # level 0: 2 x 3 (H x W), level 1: 1 x 2
    pad = torch.zeros(1, 8, dtype=torch.bool)
    _, props = model._encoder_proposals(memory, pad, [(2, 3), (1, 2)])
    boxes = props.sigmoid()[0]
    torch.testing.assert_close(boxes[1], torch.tensor([1.5 / 3, 0.5 / 2, 0.05, 0.05]))  # row 0, column 1
    torch.testing.assert_close(boxes[3], torch.tensor([0.5 / 3, 1.5 / 2, 0.05, 0.05]))  # row 1, column 0
    torch.testing.assert_close(boxes[7], torch.tensor([0.75, 0.5, 0.1, 0.1]))  # level 1, column 1


def test_deformable_sampling_with_reference_boxes_scales_x_by_width():
    """4-d references: location = ref_xy + offset / n_points * ref_wh / 2 (x by w, y by h)."""
    attn = MSDeformAttn(4, n_levels=1, n_heads=1, n_points=1).double()
    seen = {}
    import param_ap_loss.models.deformable_detr as mod

    orig = mod.multi_scale_deformable_attn
    mod.multi_scale_deformable_attn = lambda v, shapes, starts, loc, w: seen.update(loc=loc) or orig(v, shapes, starts,
                                                                                                   loc, w)
    try:
        with torch.no_grad():
            attn.sampling_offsets.bias.copy_(torch.tensor([0.6, -0.2], dtype=D))  # (dx, dy) of the one point
        q = torch.zeros(1, 1, 4, dtype=D)
        ref = torch.tensor([[[[0.3, 0.6, 0.4, 0.1]]]], dtype=D)  # cx, cy, w, h
        attn(q, ref, torch.zeros(1, 6, 4, dtype=D), [(2, 3)], torch.zeros(1, 6, dtype=torch.bool))
    finally:
        mod.multi_scale_deformable_attn = orig
    torch.testing.assert_close(seen["loc"].reshape(2), torch.tensor([0.3 + 0.6 * 0.4 / 2, 0.6 - 0.2 * 0.1 / 2], dtype=D))


def test_hsv_channels_follow_rgb_order():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 4, 5, generator=g)
    hsv = rgb_to_hsv(img)
    for r, gg, b, h, s, v in zip(*img.reshape(3, -1), *hsv.reshape(3, -1)):
        want = colorsys.rgb_to_hsv(float(r), float(gg), float(b))
        assert (h.item() / 360, s.item(), v.item()) == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(hsv_to_rgb(hsv), img, atol=1e-5, rtol=0)
    pure = torch.eye(3)[:, :, None]  # red, green, blue pixels as three "rows"
    assert rgb_to_hsv(pure.permute(0, 1, 2))[0, :, 0].tolist() == pytest.approx([0.0, 120.0, 240.0])
