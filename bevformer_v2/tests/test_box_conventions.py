"""Box unpacking audit (issue 15): every place that unpacks ltrb, xyxy, (x, y, w, l, yaw) or moves boxes between
the camera and lidar frames, tested with non-square, non-symmetric boxes and permuted / mirrored coordinates,
so that a swapped pair of coordinates cannot pass."""
import math

import numpy as np
import pytest
import torch

from bevformer_v2.losses import _giou_loss, centerness_target, fcos_targets, normalize_bbox
from bevformer_v2.models.bev_nms import bev_corners, rotated_bev_iou
from bevformer_v2.models.bevformer_v2 import nms_free_decode, views_to_lidar
from bevformer_v2.models.dd3d import box3d_corners, ltrb_to_xyxy


def _random_boxes(n, g, lo=0.0, hi=200.0):
    """(n, 4) xyxy with clearly different widths and heights, away from the image border."""
    x1 = torch.rand(n, generator=g) * hi + lo
    y1 = torch.rand(n, generator=g) * hi + lo
    w = torch.rand(n, generator=g) * 60 + 5
    h = w * (1.5 + torch.rand(n, generator=g) * 3)  # h / w in [1.5, 4.5]
    swap = torch.rand(n, generator=g) < 0.5  # half of them wide instead of tall
    w, h = torch.where(swap, h, w), torch.where(swap, w, h)
    return torch.stack([x1, y1, x1 + w, y1 + h], -1)


# ----------------------------------------------------------------------------------------- ltrb / centre-ness
def test_centerness_at_the_centre_of_a_2x8_box_is_one():
    """The exact case of issue 15: l, t, r, b = (1, 4, 1, 4) at the centre of a 2-wide, 8-tall box."""
    assert float(centerness_target(torch.tensor([[1.0, 4.0, 1.0, 4.0]]))) == pytest.approx(1.0)
    assert float(centerness_target(torch.tensor([[1.0, 1.0, 3.0, 4.0]]))) == pytest.approx(math.sqrt(1 / 3 * 1 / 4))


def test_fcos_ltrb_and_centerness_follow_the_geometry_under_mirror_flip_and_transpose():
    g = torch.Generator().manual_seed(0)
    boxes = _random_boxes(40, g)
    centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
    # the centre of every box: centre-ness 1 whatever its aspect ratio
    torch.testing.assert_close(centerness_target(torch.stack(
        [centres[:, 0] - boxes[:, 0], centres[:, 1] - boxes[:, 1], boxes[:, 2] - centres[:, 0],
         boxes[:, 3] - centres[:, 1]], -1)), torch.ones(40))
    # a location inside box 0 only (off-centre): fcos_targets' ltrb is (x - x1, y - y1, x2 - x, y2 - y)
    box = torch.tensor([[100.0, 40.0, 130.0, 160.0]])  # 30 wide, 120 tall
    loc = torch.tensor([[112.0, 90.0]])
    idx, ltrb = fcos_targets(loc, torch.tensor([1]), (8, 16), box)
    assert idx.tolist() == [0] and ltrb[0].tolist() == [12.0, 50.0, 18.0, 70.0]
    ctr = float(centerness_target(ltrb))
    assert ctr == pytest.approx(math.sqrt(12 / 18 * 50 / 70))
    W, H = 400.0, 300.0
    variants = {  # (box, location) -> the same centre-ness after each symmetry of the image
        "mirror": (torch.tensor([[W - 130.0, 40.0, W - 100.0, 160.0]]), torch.tensor([[W - 112.0, 90.0]])),
        "flip": (torch.tensor([[100.0, H - 160.0, 130.0, H - 40.0]]), torch.tensor([[112.0, H - 90.0]])),
        "transpose": (torch.tensor([[40.0, 100.0, 160.0, 130.0]]), torch.tensor([[90.0, 112.0]])),
    }
    for name, (b, p) in variants.items():
        i2, ltrb2 = fcos_targets(p, torch.tensor([1]), (8, 16), b)
        assert i2.tolist() == [0], name
        assert float(centerness_target(ltrb2)) == pytest.approx(ctr), name
    # and the mirrored ltrb is (r, t, l, b): a swap of t and r would not survive this
    assert fcos_targets(*variants["mirror"][1:], torch.tensor([1]), (8, 16), variants["mirror"][0])[1][0].tolist() \
        == [18.0, 50.0, 12.0, 70.0]


def test_dd3d_loss_centerness_target_is_one_at_the_centre_of_a_tall_box():
    """The DD3D loss itself (not only the helper) sees the right target: a BCE-with-logits centre-ness loss
    is minimal (= entropy of the target) when the logit is logit(target); at the centre of a 2x8-like box
    the target is 1, so a large positive logit gives ~0 loss."""
    from bevformer_v2.losses import dd3d_loss

    strides = (8, 16, 32, 64, 128)
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    out = {k: [torch.zeros(1, c, h, w) for h, w in shapes] for k, c in
           (("cls", 10), ("box2d", 4), ("ctr", 1), ("quat", 40), ("proj_ctr", 20), ("depth", 10), ("size", 30),
            ("conf3d", 10), ("attr", 3), ("speed", 1))}
    out["ctr"] = [torch.full((1, 1, h, w), 20.0) for h, w in shapes]
    # a 16-wide, 64-tall box centred on the level-0 location (40, 40): that location's ltrb = (8, 32, 8, 32)
    target = dict(boxes2d=torch.tensor([[32.0, 8.0, 48.0, 72.0]]), labels=torch.tensor([3]),
                  box3d=torch.tensor([[1.0, 0, 0, 0, 0, 0, 10.0, 1.0, 2.0, 1.5]]), attr=torch.tensor([1]),
                  speed=torch.tensor([0.0]), K=torch.tensor([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]))
    locs = torch.tensor([[40.0, 40.0]])
    idx, ltrb = fcos_targets(locs, torch.tensor([0]), strides, target["boxes2d"])
    assert ltrb[0].tolist() == [8.0, 32.0, 8.0, 32.0]
    L = dd3d_loss(out, [target], strides)
    # every positive location's target is <= 1; the centre one is exactly 1 (buggy unpacking gave 0.25 there)
    all_idx, all_ltrb = fcos_targets(torch.stack(torch.meshgrid(torch.arange(16) * 8.0, torch.arange(16) * 8.0,
                                                                indexing="xy"), -1).reshape(-1, 2),
                                     torch.zeros(256, dtype=torch.long), strides, target["boxes2d"])
    ctr_t = centerness_target(all_ltrb[all_idx >= 0])
    expect = torch.nn.functional.binary_cross_entropy_with_logits(torch.full_like(ctr_t, 20.0), ctr_t,
                                                                  reduction="sum") / len(ctr_t)
    assert float(L["loss_centerness"]) == pytest.approx(float(expect), rel=1e-5)
    assert float(ctr_t.max()) == pytest.approx(1.0)


def test_ltrb_decoding_inverts_fcos_encoding():
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(30, g)
    t = torch.rand(30, 2, generator=g) * 0.8 + 0.1
    locs = torch.stack([boxes[:, 0] + t[:, 0] * (boxes[:, 2] - boxes[:, 0]),
                        boxes[:, 1] + t[:, 1] * (boxes[:, 3] - boxes[:, 1])], -1)
    ltrb = torch.stack([locs[:, 0] - boxes[:, 0], locs[:, 1] - boxes[:, 1], boxes[:, 2] - locs[:, 0],
                        boxes[:, 3] - locs[:, 1]], -1)
    torch.testing.assert_close(ltrb_to_xyxy(locs, ltrb), boxes)


def _giou_xyxy(a, b):
    """DD3D's smoothed GIoU loss written on xyxy boxes (independent of the ltrb code)."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    enc = (torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])) * \
          (torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])) + 1e-7
    return 1 - ((inter + 1) / (union + 1) - (enc - union) / enc)


def test_giou_on_ltrb_equals_the_xyxy_definition_and_is_symmetric():
    g = torch.Generator().manual_seed(2)
    n = 50
    loc = torch.rand(n, 2, generator=g) * 100
    pred = torch.rand(n, 4, generator=g) * torch.tensor([10.0, 40.0, 25.0, 5.0])  # non-symmetric, non-square
    tgt = torch.rand(n, 4, generator=g) * torch.tensor([30.0, 8.0, 6.0, 50.0])
    expect = _giou_xyxy(ltrb_to_xyxy(loc, pred), ltrb_to_xyxy(loc, tgt))
    torch.testing.assert_close(_giou_loss(pred, tgt), expect, atol=1e-5, rtol=1e-5)
    mirror = [2, 1, 0, 3]  # image mirrored: (l, t, r, b) -> (r, t, l, b)
    transpose = [1, 0, 3, 2]  # image transposed: (l, t, r, b) -> (t, l, b, r)
    for perm in (mirror, transpose):
        torch.testing.assert_close(_giou_loss(pred[:, perm], tgt[:, perm]), expect, atol=1e-5, rtol=1e-5)
    # a real swap (widths read as heights) changes the loss for these non-square boxes
    assert not torch.allclose(_giou_loss(pred[:, [0, 2, 1, 3]], tgt), expect, atol=1e-3)


# ----------------------------------------------------------------------------------- BEV boxes (x, y, w, l)
def test_bev_box_encoding_round_trip_keeps_w_l_h_and_yaw():
    g = torch.Generator().manual_seed(3)
    n = 20
    boxes = torch.cat([torch.rand(n, 2, generator=g) * 80 - 40, torch.rand(n, 1, generator=g) * 4 - 3,
                       torch.tensor([[1.0, 4.5, 1.7]]).repeat(n, 1) * (0.5 + torch.rand(n, 1, generator=g)),
                       torch.rand(n, 1, generator=g) * 6 - 3, torch.randn(n, 2, generator=g)], -1)
    cls = torch.full((n, 10), -10.0)
    cls[torch.arange(n), torch.arange(n) % 10] = 10.0 - torch.arange(n) * 0.1  # distinct scores, query order
    dec, scores, labels = nms_free_decode(cls, normalize_bbox(boxes), max_num=n)
    torch.testing.assert_close(dec, boxes, atol=1e-5, rtol=1e-5)
    assert labels.tolist() == (torch.arange(n) % 10).tolist()


def test_bev_corners_put_the_length_along_the_heading():
    box = torch.tensor([[2.0, -1.0, 1.0, 4.0, 0.3]], dtype=torch.float64)  # w=1 across, l=4 along yaw=0.3
    c = bev_corners(box)[0]
    heading = torch.tensor([math.cos(0.3), math.sin(0.3)], dtype=torch.float64)
    along = (c - box[0, :2]) @ heading
    torch.testing.assert_close(along.abs(), torch.full((4,), 2.0, dtype=torch.float64))
    # (w, l, yaw) and (l, w, yaw + pi/2) are the same rectangle; (l, w, yaw) is not
    same = torch.tensor([[2.0, -1.0, 4.0, 1.0, 0.3 + math.pi / 2]], dtype=torch.float64)
    swapped = torch.tensor([[2.0, -1.0, 4.0, 1.0, 0.3]], dtype=torch.float64)
    assert float(rotated_bev_iou(box, same)) == pytest.approx(1.0)
    assert float(rotated_bev_iou(box, swapped)) == pytest.approx(1.0 / 7.0)  # cross of 1x4 and 4x1: 1 / (4 + 4 - 1)


def _upright_R_cam(theta: float) -> torch.Tensor:
    """Camera-frame rotation of an upright object whose length axis is (cos t, 0, sin t) (camera y is down)."""
    x = torch.tensor([math.cos(theta), 0.0, math.sin(theta)])
    z = torch.tensor([0.0, -1.0, 0.0])
    return torch.stack([x, torch.cross(z, x, dim=0), z], -1)


def test_camera_to_lidar_boxes_match_the_transformed_3d_corners():
    """views_to_lidar: the BEV rectangle (x, y, w, l, yaw) of a camera-frame box equals the lidar-frame xy of its
    transformed 3D corners, for non-square boxes, random headings and rotated, translated cameras."""
    g = torch.Generator().manual_seed(4)
    N = 3
    K = torch.tensor([[400.0, 0, 200], [0, 380.0, 120], [0, 0, 1]])
    lidar2img, dets = [], []
    for n in range(N):
        yaw = 1.1 * n - 0.7
        # camera axes in the lidar frame: z (optical) = (cos yaw, sin yaw, 0), x = right, y = down
        zc = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        xc = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
        cam2lidar = torch.eye(4)
        cam2lidar[:3, :3] = torch.stack([xc, torch.cross(zc, xc, dim=0), zc], -1)
        cam2lidar[:3, 3] = torch.tensor([0.5 * n, -0.3, 1.6])
        K4 = torch.eye(4)
        K4[:3, :3] = K
        lidar2img.append(K4 @ torch.linalg.inv(cam2lidar))
        thetas = torch.rand(4, generator=g) * 6.28
        wlh = torch.tensor([[0.8, 3.5, 1.6]]) * (1 + torch.rand(4, 3, generator=g))
        dets.append(dict(centre=torch.rand(4, 3, generator=g) * torch.tensor([10.0, 1.0, 20.0]) + torch.tensor(
            [-5.0, 0.0, 5.0]), R=torch.stack([_upright_R_cam(float(t)) for t in thetas]), wlh=wlh,
            score3d=torch.rand(4, generator=g), speed=torch.rand(4, generator=g), labels=torch.arange(4)))
    v = views_to_lidar(dets, K[None].expand(N, 3, 3), torch.stack(lidar2img))
    for n in range(N):
        cam2lidar = torch.linalg.inv(torch.linalg.inv(torch.block_diag(K, torch.ones(1))) @ lidar2img[n])
        c3 = box3d_corners(dets[n]["R"], dets[n]["centre"], dets[n]["wlh"])  # (4, 8, 3) camera frame
        lid = c3 @ cam2lidar[:3, :3].T + cam2lidar[:3, 3]
        bev = bev_corners(v["bev"][4 * n:4 * n + 4])  # (4, 4, 2)
        for k in range(4):
            want = sorted(map(tuple, lid[k, :, :2].round(decimals=3).tolist()))
            got = sorted(map(tuple, bev[k].round(decimals=3).tolist()))
            assert sorted(set(want)) == got, (n, k)


# -------------------------------------------------------------------------------- image boxes after crop/resize
def test_mono_boxes_follow_the_crop_and_resize_of_their_image(infos):
    """The 2D targets the dataset returns are the bounds of the projected 3D corners under the returned
    intrinsics (crop offset on y only, resize on both): x and y of the crop cannot be mixed up."""
    from bevformer_v2.data.constants import CAMERAS
    from bevformer_v2.data.dataset import BEVDataset
    from bevformer_v2.models.dd3d import quat_to_matrix

    ds = BEVDataset(infos["train"], crop=(0, 8, 128, 72), test_height=48)  # ratio 0.75, crop y offset 8
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        H, W = s["imgs"].shape[-2:]
        for n, ch in enumerate(CAMERAS):
            m = s["mono"][n]
            if m is None or len(m["labels"]) == 0:
                continue
            b3 = m["box3d"].double()
            c = box3d_corners(quat_to_matrix(b3[:, :4] / b3[:, :4].norm(dim=-1, keepdim=True)), b3[:, 4:7],
                              b3[:, 7:10])
            uvw = c @ m["K"].double().T
            uv = uvw[..., :2] / uvw[..., 2:]
            inside = (uv[..., 0].min(1)[0] > 0) & (uv[..., 1].min(1)[0] > 0) & (uv[..., 0].max(1)[0] < W) & \
                     (uv[..., 1].max(1)[0] < H)
            if not inside.any():
                continue
            want = torch.stack([uv[..., 0].min(1)[0], uv[..., 1].min(1)[0], uv[..., 0].max(1)[0],
                                uv[..., 1].max(1)[0]], -1)[inside]
            torch.testing.assert_close(m["boxes2d"].double()[inside], want, atol=1e-3, rtol=1e-4)
            checked += int(inside.sum())
        if checked >= 5:
            break
    assert checked >= 5
    assert np.isclose(float(s["intrinsics"][0, 1, 2]), (infos["train"][0]["cams"]["CAM_FRONT"]["cam_intrinsic"][1, 2]
                                                       - 8) * 0.75)
