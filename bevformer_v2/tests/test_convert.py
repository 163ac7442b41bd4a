"""Official-name state dict -> ours: loads with no missing/unexpected keys (R50 model tree of the spec)."""
import torch

from bevformer_v2.convert import convert_state_dict, to_official_names
from bevformer_v2.models.bevformer_v2 import BEVFormerV2
from repro_shared.checkpoint import load_state_dict_remapped


def _official_r50_t2_small():
    head = dict(bev_h=8, bev_w=8, num_query=20, group_detr=2,
                transformer=dict(frames=(-1, 0), encoder=dict(num_layers=6), decoder=dict(num_layers=6)))
    return BEVFormerV2("resnet50", embed_dims=256, head=head, dd3d_convs=4)


def test_official_names_load_without_missing_keys():
    model = _official_r50_t2_small()
    official = to_official_names({k: v.clone() for k, v in model.state_dict().items()})
    # the official tree's names (spot checks from the spec's module list, §5)
    for key in ("img_backbone.layer1.0.conv1.weight", "img_neck.fpn_convs.4.conv.weight",
                "pts_bbox_head.transformer.encoder.layers.5.attentions.1.deformable_attention.sampling_offsets.weight",
                "pts_bbox_head.transformer.encoder.layers.0.attentions.0.value_proj.weight",
                "pts_bbox_head.transformer.decoder.layers.0.attentions.0.attn.in_proj_weight",
                "pts_bbox_head.transformer.fusion.layers.2.bn2.running_var",
                "pts_bbox_head.transformer.fusion.layer_norm.1.weight", "pts_bbox_head.cls_branches.5.6.bias",
                "pts_bbox_head.reg_branches.5.4.weight", "pts_bbox_head.positional_encoding.row_embed.weight",
                "fcos3d_bbox_head.fcos2d_head.cls_tower.3.weight", "fcos3d_bbox_head.fcos2d_head.cls_tower.3.norm.4.weight",
                "fcos3d_bbox_head.fcos3d_head.box3d_quat.0.weight", "fcos3d_bbox_head.fcos3d_head.offsets_depth.4.bias",
                "pts_bbox_head.code_weights"):
        assert key in official, key
    official = {"module." + k: v for k, v in official.items()}
    fresh = _official_r50_t2_small()
    report = load_state_dict_remapped(fresh, convert_state_dict(official), strict=False)
    assert not report.missing and not report.unexpected and not report.mismatched, report
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
