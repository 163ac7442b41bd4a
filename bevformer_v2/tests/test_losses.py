"""Hungarian assignment, focal loss, BEV loss, FCOS targets, DD3D geometry and losses."""
import itertools
import math

import pytest
import torch

from bevformer_v2.losses import (bev_head_loss, dd3d_smooth_l1, fcos_targets, hungarian_match, normalize_bbox,
                                 sigmoid_focal_loss)
from bevformer_v2.models.dd3d import allocentric_to_egocentric, box3d_corners, predictions_to_boxes3d, quat_to_matrix


def _boxes(n, g):
    xyz = torch.rand(n, 3, generator=g) * 40 - 20
    wlh = torch.rand(n, 3, generator=g) * 3 + 0.5
    yaw = torch.rand(n, 1, generator=g) * 6 - 3
    v = torch.randn(n, 2, generator=g)
    return torch.cat([xyz, wlh, yaw, v], -1)


def test_focal_loss_hand_computed():
    x = torch.tensor([[2.0, -1.0]])
    t = torch.tensor([[1.0, 0.0]])
    p = torch.sigmoid(x)
    expect = 0.25 * (1 - p[0, 0]) ** 2 * -torch.log(p[0, 0]) + 0.75 * p[0, 1] ** 2 * -torch.log(1 - p[0, 1])
    assert sigmoid_focal_loss(x, t).sum() == pytest.approx(float(expect), rel=1e-6)


def test_hungarian_recovers_permutation():
    g = torch.Generator().manual_seed(0)
    gt = _boxes(5, g)
    labels = torch.tensor([0, 3, 3, 6, 9])
    perm = torch.tensor([7, 2, 11, 0, 5])  # query perm[j] predicts gt j
    reg = normalize_bbox(_boxes(12, g))
    cls = torch.full((12, 10), -5.0)
    reg[perm] = normalize_bbox(gt)
    cls[perm, labels] = 5.0
    qi, gi = hungarian_match(cls, reg, normalize_bbox(gt), labels)
    assert dict(zip(gi.tolist(), qi.tolist())) == dict(enumerate(perm.tolist()))


def test_hungarian_is_minimum_cost_brute_force():
    g = torch.Generator().manual_seed(1)
    cls = torch.randn(4, 10, generator=g)
    reg = normalize_bbox(_boxes(4, g))
    gt = normalize_bbox(_boxes(3, g))
    labels = torch.tensor([1, 4, 2])
    qi, gi = hungarian_match(cls, reg, gt, labels)
    p = cls.sigmoid()[:, labels]
    c_cls = 0.25 * (1 - p) ** 2 * -(p + 1e-12).log() - 0.75 * p ** 2 * -(1 - p + 1e-12).log()
    d = (reg[:, None, :8] - gt[None, :, :8]).abs()
    c_reg = torch.where(d < 1, 0.5 * d * d, d - 0.5).sum(-1)
    cost = 2.0 * c_cls + 0.75 * c_reg
    best = min(sum(cost[q, j] for j, q in enumerate(ps)) for ps in itertools.permutations(range(4), 3))
    assert float(cost[qi, gi].sum()) == pytest.approx(float(best), rel=1e-6)


def test_bev_loss_zero_box_loss_for_perfect_predictions_and_groups_average():
    g = torch.Generator().manual_seed(2)
    gt = _boxes(3, g)
    labels = torch.tensor([0, 1, 2])
    reg = normalize_bbox(_boxes(8, g))
    reg[:3] = normalize_bbox(gt)
    cls = torch.full((8, 10), -20.0)
    cls[torch.arange(3), labels] = 20.0
    all_cls, all_reg = cls[None, None], reg[None, None]
    L = bev_head_loss(all_cls, all_reg, [gt], [labels])
    assert float(L["loss_bbox"]) < 1e-9 and float(L["loss_cls"]) < 1e-6
    # two identical groups -> same loss as one group; a bad second group raises the average
    L2 = bev_head_loss(all_cls.repeat(1, 1, 2, 1), all_reg.repeat(1, 1, 2, 1), [gt], [labels], groups=2)
    assert float(L2["loss_bbox"]) == pytest.approx(float(L["loss_bbox"]), abs=1e-9)
    bad = all_reg.repeat(1, 1, 2, 1).clone()
    bad[:, :, 8:] += 1.0
    assert float(bev_head_loss(all_cls.repeat(1, 1, 2, 1), bad, [gt], [labels], groups=2)["loss_bbox"]) > 0.1


def test_fcos_targets_centre_sampling_and_smallest_area():
    locs = torch.tensor([[50.0, 50.0], [20.0, 20.0], [100.0, 100.0]])
    lvl = torch.zeros(3, dtype=torch.long)
    boxes = torch.tensor([[10.0, 10.0, 90.0, 90.0], [40.0, 40.0, 60.0, 60.0]])
    idx, ltrb = fcos_targets(locs, lvl, (8,), boxes)
    # (50,50) in both centre regions -> smaller box 1; (20,20) outside 1.5*8 centre radius of box 0 -> bg; outside
    assert idx.tolist() == [1, -1, -1]
    assert ltrb[0].tolist() == [10.0, 10.0, 10.0, 10.0]


def test_dd3d_smooth_l1_official_vs_fixed():
    x = torch.tensor([0.01, 0.2])
    torch.testing.assert_close(dd3d_smooth_l1(x), torch.tensor([0.5e-4, 0.175]))
    torch.testing.assert_close(dd3d_smooth_l1(x, fixed=True), torch.tensor([0.5 * 1e-4 / 0.05, 0.175]))


def test_allocentric_equals_egocentric_on_optical_axis_and_corners():
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    inv_K = torch.linalg.inv(K)[None]
    q = torch.tensor([[math.cos(0.3), 0.0, math.sin(0.3), 0.0]])  # rotation about camera y
    R = allocentric_to_egocentric(quat_to_matrix(q), torch.tensor([[50.0, 40.0]]), inv_K)
    torch.testing.assert_close(R, quat_to_matrix(q), atol=1e-6, rtol=0)
    c = box3d_corners(torch.eye(3)[None], torch.zeros(1, 3), torch.tensor([[2.0, 4.0, 1.0]]))
    assert c[0, 0].tolist() == [2.0, 1.0, 0.5] and c[0, 6].tolist() == [-2.0, -1.0, -0.5]
    # decoding: depth is scaled by focal length (pixel size * 500)
    dec = predictions_to_boxes3d(q, torch.zeros(1, 2), torch.tensor([10.0]), torch.zeros(1, 3),
                                 torch.tensor([[50.0, 40.0]]), inv_K, torch.tensor([[1.0, 2.0, 3.0]]))
    pixel = math.hypot(0.01, 0.01)
    assert float(dec["depth"]) == pytest.approx(10.0 / (pixel * 500), rel=1e-5)
    torch.testing.assert_close(dec["wlh"], torch.tensor([[1.0, 2.0, 3.0]]))


def test_dd3d_loss_vanishes_for_outputs_that_decode_to_the_gt():
    """Raw head outputs built by inverting the decoding (allocentric quat, focal-scaled depth, tanh size,
    projected-centre offsets) give zero disentangled 3D losses: targets and decoding share one convention."""
    from pyquaternion import Quaternion

    from bevformer_v2.data.constants import CANONICAL_WLH
    from bevformer_v2.losses import dd3d_loss

    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 32], [0, 0, 1]])
    inv_K = torch.linalg.inv(K)
    q_ego = Quaternion(axis=(0, 1, 0), angle=0.4)
    centre = torch.tensor([1.0, 0.5, 12.0])
    wlh = torch.tensor(CANONICAL_WLH["car"]) * 1.1
    R_ego = torch.tensor(q_ego.rotation_matrix, dtype=torch.float32)
    corners = box3d_corners(R_ego[None], centre[None], wlh[None])[0]
    uvw = corners @ K.T
    uv = uvw[:, :2] / uvw[:, 2:]
    box2d = torch.tensor([[uv[:, 0].min().clamp(0, 128), uv[:, 1].min().clamp(0, 64), uv[:, 0].max().clamp(0, 128),
                           uv[:, 1].max().clamp(0, 64)]])
    uv_c = (K @ centre)[:2] / centre[2]
    ray_R = allocentric_to_egocentric(torch.eye(3)[None], uv_c[None], inv_K[None])[0]  # [x y z] of the ray
    q_allo = Quaternion(matrix=(ray_R.T @ R_ego).double().numpy(), atol=1e-6).elements
    shapes = [(8, 16), (4, 8), (2, 4), (1, 2), (1, 1)]
    strides = (8, 16, 32, 64, 128)
    pixel = float(torch.stack([inv_K[0, 0], inv_K[1, 1]]).norm())
    cls_id, Kc = 3, 10
    out = {k: [] for k in ("cls", "box2d", "ctr", "quat", "proj_ctr", "depth", "size", "conf3d", "attr", "speed")}
    for (h, w), s in zip(shapes, strides):
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        quat = torch.zeros(1, 4, Kc, h, w)
        quat[0, :, cls_id] = torch.tensor(q_allo, dtype=torch.float32)[:, None, None]
        pc = torch.zeros(1, 2, Kc, h, w)
        pc[0, 0, cls_id], pc[0, 1, cls_id] = uv_c[0] - xs, uv_c[1] - ys
        depth = torch.zeros(1, Kc, h, w)
        depth[0, cls_id] = centre[2] * pixel * 500.0
        size = torch.zeros(1, 3, Kc, h, w)
        size[0, :, cls_id] = torch.atanh(wlh / torch.tensor(CANONICAL_WLH["car"]) - 1)[:, None, None]
        out["quat"].append(quat.view(1, 4 * Kc, h, w))
        out["proj_ctr"].append(pc.view(1, 2 * Kc, h, w))
        out["depth"].append(depth)
        out["size"].append(size.view(1, 3 * Kc, h, w))
        for k, c in (("cls", Kc), ("box2d", 4), ("ctr", 1), ("conf3d", Kc), ("attr", 3), ("speed", 1)):
            out[k].append(torch.zeros(1, c, h, w))
    target = dict(boxes2d=box2d, labels=torch.tensor([cls_id]), attr=torch.tensor([1]), speed=torch.tensor([0.0]),
                  box3d=torch.cat([torch.tensor(q_ego.elements, dtype=torch.float32), centre, wlh])[None], K=K)
    L = dd3d_loss(out, [target], strides)
    for k in ("loss_box3d_quat", "loss_box3d_proj_ctr", "loss_box3d_depth", "loss_box3d_size"):
        assert float(L[k]) < 1e-6, (k, float(L[k]))
    # a wrong depth shows up in the depth term only
    out["depth"] = [d * 1.2 for d in out["depth"]]
    L = dd3d_loss(out, [target], strides)
    assert float(L["loss_box3d_depth"]) > 0.1 and float(L["loss_box3d_quat"]) < 1e-6
