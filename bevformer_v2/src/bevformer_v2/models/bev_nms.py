"""Rotated BEV IoU and NMS (two-stage proposals, spec §2.8): exact convex-polygon clipping, vectorised over pairs."""

from __future__ import annotations

import torch


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(n, 5) = (x, y, w, l, yaw) -> (n, 4, 2) counter-clockwise corners (length along the heading)."""
    x, y, w, l, yaw = boxes.unbind(-1)
    c, s = yaw.cos(), yaw.sin()
    dx = torch.stack([l, -l, -l, l], -1) / 2
    dy = torch.stack([w, w, -w, -w], -1) / 2
    # counter-clockwise order: (+l,+w) -> (-l,+w) -> (-l,-w) -> (+l,-w)
    return torch.stack([x[:, None] + c[:, None] * dx - s[:, None] * dy,
                        y[:, None] + s[:, None] * dx + c[:, None] * dy], -1)


def _cross(o, a, b):
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def convex_intersection_area(P: torch.Tensor, Q: torch.Tensor, max_vertices: int = 8) -> torch.Tensor:
    """Area of P ∩ Q for m pairs of convex CCW quadrilaterals (m, 4, 2) (Sutherland-Hodgman, 4 clip edges)."""
    m = P.shape[0]
    V = max_vertices
    poly = torch.cat([P, P.new_zeros(m, V - 4, 2)], 1)
    count = torch.full((m,), 4, dtype=torch.long, device=P.device)
    idx = torch.arange(V, device=P.device)
    for e in range(4):
        a, b = Q[:, e][:, None], Q[:, (e + 1) % 4][:, None]
        valid = idx[None] < count[:, None]
        nxt_i = (idx[None] + 1) % count.clamp(min=1)[:, None]
        cur, nxt = poly, torch.gather(poly, 1, nxt_i[..., None].expand(-1, -1, 2))
        dc, dn = _cross(a, b, cur), _cross(a, b, nxt)
        in_c, in_n = dc >= 0, dn >= 0
        t = (dc / (dc - dn).where((dc - dn).abs() > 1e-12, torch.ones_like(dc)))[..., None]
        inter = cur + t * (nxt - cur)
        out = torch.stack([cur, inter], 2).flatten(1, 2)  # (m, 2V, 2): vertex i, then crossing i -> i+1
        keep = torch.stack([in_c, in_c != in_n], 2).flatten(1) & valid.repeat_interleave(2, 1)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :V]
        poly = torch.gather(out, 1, order[..., None].expand(-1, -1, 2))
        count = keep.sum(1).clamp(max=V)
    valid = idx[None] < count[:, None]
    nxt = torch.gather(poly, 1, ((idx[None] + 1) % count.clamp(min=1)[:, None])[..., None].expand(-1, -1, 2))
    area = (poly[..., 0] * nxt[..., 1] - nxt[..., 0] * poly[..., 1]) * valid
    return (0.5 * area.sum(1)).clamp(min=0) * (count >= 3)


def rotated_bev_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (n, k) of BEV boxes a (n, 5) and b (k, 5) = (x, y, w, l, yaw)."""
    n, k = a.shape[0], b.shape[0]
    ca, cb = bev_corners(a), bev_corners(b)
    # only pairs whose circumscribed circles meet can overlap: clip those (exact, and sparse in practice)
    ra, rb = 0.5 * a[:, 2].hypot(a[:, 3]), 0.5 * b[:, 2].hypot(b[:, 3])
    near = torch.cdist(a[:, :2], b[:, :2]) < ra[:, None] + rb[None]
    ii, jj = near.nonzero(as_tuple=True)
    inter = a.new_zeros(n, k)
    inter[ii, jj] = convex_intersection_area(ca[ii], cb[jj])
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-9)


def rotated_bev_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy class-agnostic NMS on rotated BEV boxes (n, 5); returns kept indices by descending score."""
    order = scores.argsort(descending=True)
    iou = rotated_bev_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]
