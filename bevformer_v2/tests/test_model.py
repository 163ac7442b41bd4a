"""Model pieces: point sampling, SCA per-sample masks, fused TSA, Group DETR, forward paths, overfit."""
import pytest
import torch

from bevformer_v2.data.dataset import BEVDataset, collate
from bevformer_v2.losses import detector_losses, total_loss
from bevformer_v2.models.attention import SpatialCrossAttention, TemporalSelfAttention, visible_queries
from bevformer_v2.models.transformer import GroupMultiheadAttention, point_sampling
from repro_shared.ops.msda import msda_reference

CROP = (0, 8, 128, 72)


def test_point_sampling_projects_and_masks():
    K = torch.tensor([[100.0, 0, 64, 0], [0, 100.0, 32, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2cam = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # lidar y fwd -> cam z
    l2i = (K @ lidar2cam)[None, None]
    pc = (-10.0, -10.0, -2.0, 10.0, 10.0, 2.0)
    # points: straight ahead at y=5 (x=0,z=0) and behind the camera (y=-5)
    ref = torch.tensor([[[[0.5, 0.75, 0.5], [0.5, 0.25, 0.5]]]])  # (B=1, D=1, 2, 3)
    uv, mask = point_sampling(ref, pc, l2i, (64, 128))
    torch.testing.assert_close(uv[0, 0, 0, 0], torch.tensor([64 / 128, 32 / 64]))
    assert mask[0, 0, :, 0].tolist() == [True, False]


def test_sca_uses_per_sample_camera_masks():
    torch.manual_seed(0)
    sca = SpatialCrossAttention(16, num_cams=2, num_levels=1, num_points=4, num_heads=2, dropout=0.0).eval()
    HW, D, S = 12, 2, 20
    q = torch.randn(2, HW, 16)
    feats = torch.randn(2, S, 2, 16)
    ref = torch.rand(2, 2, HW, D, 2)
    mask = torch.rand(2, 2, HW, D) > 0.5
    shapes, start = ((4, 5),), (0,)
    out = sca(q, feats, visible_queries(ref, mask), shapes, start)
    for b in range(2):
        single = sca(q[b:b + 1], feats[:, :, b:b + 1], visible_queries(ref[:, b:b + 1], mask[:, b:b + 1]), shapes,
                     start)
        torch.testing.assert_close(out[b:b + 1], single, atol=1e-5, rtol=1e-5)
    # a cell seen by no camera gets output_proj(0) + q
    mask[:, 0, 3] = False
    out = sca(q, feats, visible_queries(ref, mask), shapes, start)
    torch.testing.assert_close(out[0, 3], sca.output_proj.bias + q[0, 3])


def test_tsa_fused_equals_two_slot_mean():
    torch.manual_seed(0)
    tsa = TemporalSelfAttention(16, num_heads=2, num_levels=1, num_points=3, dropout=0.0).eval()
    torch.nn.init.normal_(tsa.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(tsa.attention_weights.weight, std=0.5)
    B, H, W, C = 2, 4, 5, 16
    q, pos = torch.randn(B, H * W, C), torch.randn(B, H * W, C)
    ref = torch.rand(B, H * W, 1, 2)
    shapes, start = ((H, W),), (0,)
    out = tsa(q, pos, ref, shapes, start)
    x = torch.cat([q, q + pos], -1)
    off = tsa.sampling_offsets(x).view(B, H * W, 2, 2, 1, 3, 2)
    A = tsa.attention_weights(x).view(B, H * W, 2, 2, 3).softmax(-1)
    v = tsa.value_proj(q).view(B, H * W, 2, 8)
    slots = []
    for s in range(2):
        loc = ref[:, :, None, None, :, :] + off[:, :, :, s] / torch.tensor([W, H])
        slots.append(msda_reference(v, shapes, start, loc.view(B, H * W, 2, 1, 3, 2), A[:, :, :, s, None]))
    expect = tsa.output_proj((slots[0] + slots[1]) / 2) + q
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)


def test_group_attention_is_block_diagonal_in_training_only():
    torch.manual_seed(0)
    att = GroupMultiheadAttention(8, 2, 0.0, group=2)
    q, p = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    q2 = q.clone()
    q2[:, 3:] += 1.0  # change group 1 only
    att.train()
    torch.testing.assert_close(att(q, p)[:, :3], att(q2, p)[:, :3])
    att.eval()
    assert not torch.allclose(att(q, p)[:, :3], att(q2, p)[:, :3])


@pytest.mark.parametrize("frames,group,two_stage", [((0,), 1, False), ((-1, 0), 2, True)])
def test_forward_train_and_eval(infos, make_tiny, frames, group, two_stage):
    torch.manual_seed(0)
    ds = BEVDataset(infos["train"], frames=frames, crop=CROP, resize_heights=(64,), test_height=64, train=True,
                    flip=True, bda=True, photometric=True)
    batch = collate([ds[1], ds[2]])
    model = make_tiny(frames=frames, group_detr=group, two_stage=two_stage)
    model.train()
    out = model(batch)
    Q = (30 + (10 if two_stage else 0)) * group
    assert out["all_cls"].shape == (2, 2, Q, 10) and out["all_reg"].shape == (2, 2, Q, 10)
    losses = detector_losses(out, batch, group, True)
    assert any(k.startswith("pers.") for k in losses) and "d0.loss_cls" in losses
    total_loss(losses).backward()
    assert model.pts_bbox_head.bev_embedding.weight.grad.abs().sum() > 0
    assert model.img_backbone.stem[0].weight.grad.abs().sum() > 0
    if two_stage:
        assert model.pts_bbox_head.proposal_pos_mlp[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        res = model(batch)
    assert len(res) == 2 and res[0][0].shape[1] == 9 and len(res[0][0]) <= 300


def test_overfit_one_sample_loss_falls(infos, make_tiny):
    torch.manual_seed(0)
    ds = BEVDataset(infos["train"], crop=CROP, test_height=64)
    batch = collate([ds[0]])
    model = make_tiny(grid_mask=False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = last = None
    for step in range(20):
        losses = detector_losses(model(batch), batch, 1, True)
        loss = total_loss(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bev = float((losses["loss_cls"] + losses["loss_bbox"]).detach())
        first = bev if first is None else first
        last = bev
    assert last < 0.7 * first, (first, last)


def test_two_stage_proposals_geometry(infos, make_tiny, monkeypatch):
    """A perspective detection 10 m along each camera's optical axis becomes a proposal at
    sensor2lidar @ (0, 0, 10) (independent of lidar2img), normalised to pc_range; padding uses learned refs."""
    import bevformer_v2.models.bevformer_v2 as det
    from bevformer_v2.data.constants import CAMERAS

    def fake_inference(out, strides, inv_K):
        n = inv_K.shape[0]
        return [dict(R=torch.eye(3)[None], centre=torch.tensor([[0.0, 0.0, 10.0]]), wlh=torch.tensor([[2.0, 4.0, 1.5]]),
                     score3d=torch.tensor([0.9 - 0.01 * i]), speed=torch.tensor([0.0]), labels=torch.tensor([3]))
                for i in range(n)]

    monkeypatch.setattr(det, "dd3d_inference", fake_inference)
    info = infos["val"][0]
    batch = collate([BEVDataset([info], crop=CROP, test_height=64)[0]])
    model = make_tiny(two_stage=True).eval()
    props = model.proposals(None, batch)[0]
    r = torch.tensor(model.pts_bbox_head.pc_range)
    for n, ch in enumerate(CAMERAS):
        expect = torch.from_numpy(info["cams"][ch]["sensor2lidar"] @ [0, 0, 10.0, 1.0])[:3].float()
        torch.testing.assert_close(props[n], (expect - r[:3]) / (r[3:] - r[:3]), atol=1e-4, rtol=0)
    assert torch.isnan(props[6:]).all()
    q, pos, ref = model.pts_bbox_head._queries(1, props[None])
    assert ref.shape == (1, 40, 3) and not torch.isnan(ref).any()
    torch.testing.assert_close(ref[0, 30:36], props[:6])


def test_history_and_current_bev_share_the_bda_warp(infos, make_tiny, monkeypatch):
    ds = BEVDataset(infos["train"], frames=(-1, 0), crop=CROP, resize_heights=(64,), test_height=64, train=True,
                    bda=True)
    batch = collate([ds[2]])
    model = make_tiny(frames=(-1, 0)).train()
    seen = []
    orig = model.pts_bbox_head.encode

    def spy(feats, l2i, shape, bda=None):
        seen.append((model.training, bda))
        return orig(feats, l2i, shape, bda)

    monkeypatch.setattr(model.pts_bbox_head, "encode", spy)
    model(batch)
    assert [t for t, _ in seen] == [False, True]  # history encoded in eval mode, then the current frame
    assert all(b is not None and torch.equal(b, batch["bda"]) for _, b in seen)
    model.eval()
    seen.clear()
    model(batch)
    assert all(b is None for _, b in seen)  # no BDA at test time


def test_perspective_only_predictions(infos, make_tiny, monkeypatch):
    """Perspective-only detector: views -> lidar frame; velocity = speed along the heading; class-aware NMS."""
    import bevformer_v2.models.bevformer_v2 as det
    from bevformer_v2.data.constants import CAMERAS

    def fake_inference(out, strides, inv_K):
        n = inv_K.shape[0]
        return [dict(R=torch.eye(3)[None].repeat(2, 1, 1), centre=torch.tensor([[0.0, 0.0, 10.0], [0.05, 0.0, 10.0]]),
                     wlh=torch.tensor([[2.0, 4.0, 1.5]] * 2), score3d=torch.tensor([0.9 - 0.01 * i, 0.1]),
                     speed=torch.tensor([2.0, 2.0]), labels=torch.tensor([3, 3])) for i in range(n)]

    monkeypatch.setattr(det, "dd3d_inference", fake_inference)
    info = infos["val"][0]
    batch = collate([BEVDataset([info], crop=CROP, test_height=64)[0]])
    boxes, scores, labels = make_tiny().eval().predict_perspective(batch)[0]
    assert len(boxes) == 6 and labels.tolist() == [3] * 6  # the near-duplicate of every view is suppressed
    torch.testing.assert_close(scores, torch.tensor([0.9 - 0.01 * i for i in range(6)]))
    for n, ch in enumerate(CAMERAS):
        s2l = torch.from_numpy(info["cams"][ch]["sensor2lidar"]).float()
        torch.testing.assert_close(boxes[n, :3], s2l[:3, :3] @ torch.tensor([0.0, 0.0, 10.0]) + s2l[:3, 3],
                                   atol=1e-4, rtol=0)
        heading = s2l[:2, 0] / s2l[:2, 0].norm()  # object x axis = camera x axis
        torch.testing.assert_close(boxes[n, 7:9], 2.0 * heading, atol=1e-4, rtol=0)


def test_ego_motion_warp_by_hand():
    """Ego drives +12.8 m along x (one cell): a static feature at frame-k column 2 appears at current column 1;
    a 90 deg ego rotation maps (x, y) -> (y, -x) in the current frame."""
    import math

    from bevformer_v2.models.transformer import ego_motion_warp

    pc = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
    bev = torch.zeros(1, 1, 8, 8)
    bev[0, 0, 3, 2] = 1.0
    k2t = torch.eye(4)[None]
    k2t[0, 0, 3] = -12.8  # static points move backwards in the new ego frame
    out = ego_motion_warp(bev, torch.linalg.inv(k2t), pc)[0, 0]
    assert divmod(int(out.argmax()), 8) == (3, 1) and float(out.max()) == pytest.approx(1.0)
    rot = torch.eye(4)[None]
    c, s = math.cos(-math.pi / 2), math.sin(-math.pi / 2)  # frame-k points seen from an ego turned +90 deg
    rot[0, :2, :2] = torch.tensor([[c, -s], [s, c]])
    out = ego_motion_warp(bev, torch.linalg.inv(rot), pc)[0, 0]
    x, y = -51.2 + 2.5 * 12.8, -51.2 + 3.5 * 12.8  # peak centre in frame k
    xt, yt = y, -x
    assert divmod(int(out.argmax()), 8) == (int((yt + 51.2) // 12.8), int((xt + 51.2) // 12.8))


def test_warp_temporal_mode_trains(infos, make_tiny):
    torch.manual_seed(0)
    ds = BEVDataset(infos["train"], frames=(-1, 0), crop=CROP, resize_heights=(64,), test_height=64, train=True,
                    bda=True)
    batch = collate([ds[2]])
    assert batch["ego_k2t"].shape == (1, 2, 4, 4)
    torch.testing.assert_close(batch["ego_k2t"][0, 1], torch.eye(4))
    model = make_tiny(frames=(-1, 0), temporal_mode="warp").train()
    total_loss(detector_losses(model(batch), batch, 1, True)).backward()
    assert model.pts_bbox_head.transformer.fusion.layers[0].conv1.weight.grad.abs().sum() > 0


def test_bev_and_bev_control_head(infos, make_tiny):
    torch.manual_seed(0)
    batch = collate([BEVDataset(infos["train"], crop=CROP, test_height=64)[0]])
    model = make_tiny(perspective=False, aux_bev_head=True).train()
    losses = detector_losses(model(batch), batch, 1, False)
    assert "bev2.loss_cls" in losses and "bev2.d0.loss_bbox" in losses and not any(k.startswith("pers.") for k in losses)
    total_loss(losses).backward()
    assert model.aux_bbox_head.query_embedding.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert len(model(batch)[0][0]) > 0  # inference uses the main head only
