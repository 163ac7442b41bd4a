"""Rotated BEV IoU against hand-computed areas; NMS keeps the best of overlapping boxes."""
import math

import pytest
import torch

from bevformer_v2.models.bev_nms import rotated_bev_iou, rotated_bev_nms


@pytest.mark.parametrize("b,expect", [
    ((0.0, 0.0, 1.0, 1.0, 0.0), 1.0),
    ((0.0, 0.0, 1.0, 1.0, math.pi / 2), 1.0),
    ((0.5, 0.0, 1.0, 1.0, 0.0), 1 / 3),
    ((0.0, 0.0, 1.0, 1.0, math.pi / 4), 2 * (math.sqrt(2) - 1) / (2 - 2 * (math.sqrt(2) - 1))),
    ((3.0, 0.0, 1.0, 1.0, 0.3), 0.0),
    ((0.0, 0.0, 2.0, 0.5, 0.0), 0.5 / (1 + 1 - 0.5)),
])
def test_rotated_iou_hand_values(b, expect):
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    iou = rotated_bev_iou(a, torch.tensor([b], dtype=torch.float64))
    assert float(iou) == pytest.approx(expect, abs=1e-9)


def test_rotated_iou_symmetric_random():
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(20, 2, generator=g) * 4, torch.rand(20, 2, generator=g) * 2 + 0.3,
                       torch.rand(20, 1, generator=g) * 6], -1).double()
    iou = rotated_bev_iou(boxes, boxes)
    torch.testing.assert_close(iou, iou.T)
    torch.testing.assert_close(iou.diagonal(), torch.ones(20, dtype=torch.float64))
    assert (iou >= 0).all() and (iou <= 1 + 1e-9).all()


def test_rotated_nms():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 4.0, 0.1], [0.2, 0.1, 2.0, 4.0, 0.0], [10.0, 0.0, 2.0, 4.0, 0.0]])
    keep = rotated_bev_nms(boxes, torch.tensor([0.5, 0.9, 0.3]), 0.3)
    assert keep.tolist() == [1, 2]
