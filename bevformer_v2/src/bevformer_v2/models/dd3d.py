"""Perspective 3D head (DD3D, FCOS2D + FCOS3D + nuScenes attr/speed), spec §2.7.

Runs per camera image on the 5 FPN levels. ``forward`` returns per-level raw maps; box decoding
(``predictions_to_boxes3d``, allocentric -> egocentric, camera-aware depth) and the inference path used by
the two-stage hybrid queries (§2.8) live here too. Targets and losses are in ``bevformer_v2.losses``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ..data.constants import CANONICAL_WLH, CLASSES

MEAN_DEPTH = (44.921, 20.252, 11.712, 7.166, 8.548)
STD_DEPTH = (24.331, 9.833, 6.223, 4.611, 8.275)
SIZES_OF_INTEREST = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))


class Scale(nn.Module):
    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x):
        return x * self.scale


class Offset(nn.Module):
    def __init__(self, init_value: float = 0.0):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x):
        return x + self.bias


class ConvNormReLU(nn.Module):
    """3x3 conv (no bias) + one BatchNorm per FPN level (``ModuleListDial``) + ReLU."""

    def __init__(self, channels: int, num_levels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(num_levels)])
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x, level: int):
        return F.relu(self.norm[level](self.conv(x)))


class Tower(nn.Module):
    def __init__(self, channels: int, num_convs: int, num_levels: int):
        super().__init__()
        self.layers = nn.ModuleList([ConvNormReLU(channels, num_levels) for _ in range(num_convs)])

    def forward(self, x, level: int):
        for layer in self.layers:
            x = layer(x, level)
        return x


def _pred(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class FCOS2DHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, num_convs: int, strides):
        super().__init__()
        n = len(strides)
        self.cls_tower = Tower(channels, num_convs, n)
        self.box2d_tower = Tower(channels, num_convs, n)
        self.cls_logits = _pred(channels, num_classes)
        self.box2d_reg = _pred(channels, 4)
        self.centerness = _pred(channels, 1)
        self.scales_box2d_reg = nn.ModuleList([Scale(s) for s in strides])


class FCOS3DHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, num_convs: int, strides):
        super().__init__()
        n = len(strides)
        self.box3d_tower = Tower(channels, num_convs, n)
        self.box3d_quat = _pred(channels, 4 * num_classes)
        self.box3d_ctr = _pred(channels, 2 * num_classes)
        self.box3d_depth = _pred(channels, num_classes, bias=False)
        self.box3d_size = _pred(channels, 3 * num_classes)
        self.box3d_conf = _pred(channels, num_classes)
        self.scales_proj_ctr = nn.ModuleList([Scale(s) for s in strides])
        self.scales_size = nn.ModuleList([Scale(1.0) for _ in strides])
        self.scales_conf = nn.ModuleList([Scale(1.0) for _ in strides])
        self.scales_depth = nn.ModuleList([Scale(0.3 * s) for s in STD_DEPTH[:n]])
        self.offsets_depth = nn.ModuleList([Offset(m) for m in MEAN_DEPTH[:n]])


class NuscenesDD3D(nn.Module):
    """DD3D head. ``forward(feats)``: feats = 5 maps (n_img, C, h, w) -> dict of per-level lists:

    cls (n, K, h, w), box2d (n, 4, h, w) ltrb px, ctr (n, 1, h, w), quat (n, 4K), proj_ctr (n, 2K),
    depth (n, K), size (n, 3K), conf3d (n, K), attr (n, 3), speed (n, 1). Class-specific channels are
    laid out component-major (channel = comp * K + class), as in the official head.
    """

    def __init__(self, in_channels: int = 256, num_classes: int = 10, num_convs: int = 4,
                 strides=(8, 16, 32, 64, 128)):
        super().__init__()
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.fcos2d_head = FCOS2DHead(in_channels, num_classes, num_convs, strides)
        self.fcos3d_head = FCOS3DHead(in_channels, num_classes, num_convs, strides)
        self.attr_logits = _pred(in_channels, 3)
        self.speed = _pred(in_channels, 1)

    def forward(self, feats):
        h2, h3 = self.fcos2d_head, self.fcos3d_head
        out = {k: [] for k in ("cls", "box2d", "ctr", "quat", "proj_ctr", "depth", "size", "conf3d", "attr", "speed")}
        for lvl, x in enumerate(feats):
            ct = h2.cls_tower(x, lvl)
            bt = h2.box2d_tower(x, lvl)
            t3 = h3.box3d_tower(x, lvl)
            out["cls"].append(h2.cls_logits(ct))
            out["box2d"].append(F.relu(h2.scales_box2d_reg[lvl](h2.box2d_reg(bt))))
            out["ctr"].append(h2.centerness(bt))
            out["attr"].append(self.attr_logits(ct))
            out["speed"].append(F.relu(self.speed(ct)))
            out["quat"].append(h3.box3d_quat(t3))
            out["proj_ctr"].append(h3.scales_proj_ctr[lvl](h3.box3d_ctr(t3)))
            out["depth"].append(h3.offsets_depth[lvl](h3.scales_depth[lvl](h3.box3d_depth(t3))))
            out["size"].append(h3.scales_size[lvl](h3.box3d_size(t3)))
            out["conf3d"].append(h3.scales_conf[lvl](h3.box3d_conf(t3)))
        return out


def locations_of(shapes, strides, device) -> tuple:
    """Locations (sum_l h_l w_l, 2) = (j * s, i * s) per cell (no half-stride offset) and level ids."""
    locs, lv = [], []
    for lvl, ((h, w), s) in enumerate(zip(shapes, strides)):
        ys, xs = torch.meshgrid(torch.arange(h, device=device) * s, torch.arange(w, device=device) * s, indexing="ij")
        locs.append(torch.stack([xs.flatten(), ys.flatten()], -1).float())
        lv.append(torch.full((h * w,), lvl, device=device, dtype=torch.long))
    return torch.cat(locs), torch.cat(lv)


def flatten_level_maps(maps: list, comps: int = 1) -> torch.Tensor:
    """Per-level (n, comps*K, h, w) -> (n, sum hw, comps, K) (or (n, sum hw, K) when comps=1)."""
    out = torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], 1)
    return out.view(out.shape[0], out.shape[1], comps, -1) if comps > 1 else out


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(n, 4) unit quaternions (w, x, y, z) -> (n, 3, 3)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).view(-1, 3, 3)


def allocentric_to_egocentric(R_allo: torch.Tensor, proj_ctr: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """R_ego = [x_ax y_ax z_ax] R_allo with the viewing ray through the projected centre (spec §2.7)."""
    ray = torch.einsum("nij,nj->ni", inv_K, torch.cat([proj_ctr, torch.ones_like(proj_ctr[:, :1])], -1))
    z_ax = ray / ray.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    y0 = z_ax.new_tensor([0.0, 1.0, 0.0]).expand_as(z_ax)
    y_ax = y0 - (z_ax * y0).sum(-1, keepdim=True) * z_ax
    y_ax = y_ax / y_ax.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    x_ax = torch.cross(y_ax, z_ax, dim=-1)
    return torch.stack([x_ax, y_ax, z_ax], -1) @ R_allo


def predictions_to_boxes3d(quat, proj_ctr, depth, size, locations, inv_K, canon_wlh, min_depth=0.1,
                           max_depth=80.0, depth_factor=500.0) -> dict:
    """Decode (n,) predictions into boxes: R (n, 3, 3) egocentric, centre (n, 3), wlh (n, 3), proj_ctr (n, 2)."""
    quat = quat / quat.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    pixel_size = torch.stack([inv_K[:, 0, 0], inv_K[:, 1, 1]], -1).norm(dim=-1)
    depth = (depth / (pixel_size * depth_factor)).clamp(min_depth, max_depth)
    uv = proj_ctr + locations
    R = allocentric_to_egocentric(quat_to_matrix(quat), uv, inv_K)
    wlh = (size.tanh() + 1.0) * canon_wlh
    centre = torch.einsum("nij,nj->ni", inv_K, torch.cat([uv, torch.ones_like(uv[:, :1])], -1)) * depth[:, None]
    return dict(R=R, centre=centre, wlh=wlh, proj_ctr=uv, depth=depth)


_CORNER_SIGNS = torch.tensor([[1, 1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1], [-1, 1, 1], [-1, -1, 1], [-1, -1, -1],
                              [-1, 1, -1]], dtype=torch.float32)


def box3d_corners(R: torch.Tensor, centre: torch.Tensor, wlh: torch.Tensor) -> torch.Tensor:
    """(n, 8, 3) corners: object frame 0.5 (l, w, h) * signs, rotated by R, translated."""
    lwh = torch.stack([wlh[:, 1], wlh[:, 0], wlh[:, 2]], -1)
    local = 0.5 * lwh[:, None] * _CORNER_SIGNS.to(lwh)[None]
    return torch.einsum("nij,nkj->nki", R, local) + centre[:, None]


def ltrb_to_xyxy(locations: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS decoding: locations (n, 2) as (x, y) px and distances (n, 4) = (left, top, right, bottom) ->
    boxes (n, 4) = (x - l, y - t, x + r, y + b) = (x1, y1, x2, y2)."""
    x, y = locations.unbind(-1)
    l, t, r, b = ltrb.unbind(-1)
    return torch.stack([x - l, y - t, x + r, y + b], -1)


def canonical_sizes(device) -> torch.Tensor:
    return torch.tensor([CANONICAL_WLH[c] for c in CLASSES], device=device)


@torch.no_grad()
def dd3d_inference(out: dict, strides, inv_K: torch.Tensor, score_thresh: float = 0.05, pre_nms_topk: int = 1000,
                   nms_iou: float = 0.75, topk: int = 100) -> list:
    """Per-image perspective detections (spec §2.7 inference): list over images of dicts with
    ``R (k, 3, 3)``, ``centre (k, 3)``, ``wlh (k, 3)`` in the camera frame, ``score3d (k,)``, ``speed (k,)``,
    ``labels (k,)``."""
    n, K = out["cls"][0].shape[:2]
    shapes = [m.shape[-2:] for m in out["cls"]]
    locs, lvl_ids = locations_of(shapes, strides, inv_K.device)
    cls = flatten_level_maps(out["cls"]).sigmoid()
    ctr = flatten_level_maps(out["ctr"]).sigmoid()
    box2d = flatten_level_maps(out["box2d"])
    quat = flatten_level_maps(out["quat"], 4)
    pc = flatten_level_maps(out["proj_ctr"], 2)
    depth = flatten_level_maps(out["depth"])
    size = flatten_level_maps(out["size"], 3)
    conf = flatten_level_maps(out["conf3d"]).sigmoid()
    speed = flatten_level_maps(out["speed"])[..., 0]
    canon = canonical_sizes(inv_K.device)
    results = []
    for i in range(n):
        score = cls[i] * ctr[i]  # thresh_with_ctr
        cand = []
        for lvl in range(len(shapes)):
            s = torch.where(lvl_ids[:, None] == lvl, score, torch.zeros_like(score)).flatten()
            k = min(pre_nms_topk, int((s > score_thresh).sum()))
            if k:
                cand.append(s.topk(k).indices)
        if not cand:
            results.append(dict(R=inv_K.new_zeros(0, 3, 3), centre=inv_K.new_zeros(0, 3), wlh=inv_K.new_zeros(0, 3),
                                score3d=inv_K.new_zeros(0), speed=inv_K.new_zeros(0),
                                labels=torch.zeros(0, dtype=torch.long, device=inv_K.device)))
            continue
        flat = torch.cat(cand)
        loc_i, lab = flat // K, flat % K
        score2d = (cls[i][loc_i, lab] * ctr[i][loc_i, 0]).sqrt()
        b = box2d[i][loc_i]
        boxes = ltrb_to_xyxy(locs[loc_i], b)
        keep = batched_nms(boxes, score2d, lab, nms_iou)[:topk]
        loc_i, lab, score2d = loc_i[keep], lab[keep], score2d[keep]
        dec = predictions_to_boxes3d(quat[i][loc_i, :, lab], pc[i][loc_i, :, lab], depth[i][loc_i, lab],
                                     size[i][loc_i, :, lab], locs[loc_i], inv_K[i].expand(len(loc_i), 3, 3),
                                     canon[lab])
        results.append(dict(R=dec["R"], centre=dec["centre"], wlh=dec["wlh"], score3d=score2d * conf[i][loc_i, lab],
                            speed=speed[i][loc_i], labels=lab))
    return results
