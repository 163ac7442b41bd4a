"""Per-decoder-layer class / box branches and the box parametrisation they predict (spec §2.6), shared by the
BEV head, the 'BEV & BEV' control head and the DETR3D perspective head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .transformer import inverse_sigmoid


def build_branches(n_layers: int, embed_dims: int, num_classes: int, code_size: int = 10, num_reg_fcs: int = 2):
    """Per-layer (unshared) cls branches [Linear-LN-ReLU]x2 + Linear (bias -log 99) and reg [Linear-ReLU]x2 + Linear."""
    cls_branches, reg_branches = nn.ModuleList(), nn.ModuleList()
    for _ in range(n_layers):
        cls = []
        for _ in range(num_reg_fcs):
            cls += [nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True)]
        cls.append(nn.Linear(embed_dims, num_classes))
        nn.init.constant_(cls[-1].bias, -math.log((1 - 0.01) / 0.01))  # bias_init_with_prob(0.01)
        reg = []
        for _ in range(num_reg_fcs):
            reg += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
        reg.append(nn.Linear(embed_dims, code_size))
        cls_branches.append(nn.Sequential(*cls))
        reg_branches.append(nn.Sequential(*reg))
    return cls_branches, reg_branches


def predict_layers(states, refs, cls_branches, reg_branches, pc_range):
    """Per decoder layer: class logits and boxes; the centre uses the layer's input reference (spec §2.6)."""
    all_cls, all_reg = [], []
    r = pc_range
    for lid in range(states.shape[0]):
        cls = cls_branches[lid](states[lid])
        t = reg_branches[lid](states[lid])
        ref_l = refs[lid]
        cx = (t[..., 0] + inverse_sigmoid(ref_l[..., 0])).sigmoid() * (r[3] - r[0]) + r[0]
        cy = (t[..., 1] + inverse_sigmoid(ref_l[..., 1])).sigmoid() * (r[4] - r[1]) + r[1]
        cz = (t[..., 4] + inverse_sigmoid(ref_l[..., 2])).sigmoid() * (r[5] - r[2]) + r[2]
        all_cls.append(cls)
        all_reg.append(torch.cat([cx[..., None], cy[..., None], t[..., 2:4], cz[..., None], t[..., 5:]], -1))
    return torch.stack(all_cls), torch.stack(all_reg)
