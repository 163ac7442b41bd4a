"""Official-name state dict -> ours: loads with no missing/unexpected keys (R50 model tree of the spec)."""
import pytest
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


def test_official_fcos_coco_init_file_converts_and_loads_into_the_caffe_r50(tmp_path):
    """A state dict in the layout of the official initialisation ``fcos_r50_coco_2mmdet.pth`` (an mmdet FCOS
    detector: ``backbone.`` caffe ResNet-50, ``neck.`` FPN, ``bbox_head.`` FCOS head, under ``state_dict`` next
    to ``meta``) converts with the CLI and fills every backbone and neck weight of the R50 model."""
    import logging

    from bevformer_v2.cli import load_init
    from bevformer_v2.convert import main
    from bevformer_v2.models.backbone import FPN, build_backbone

    g = torch.Generator().manual_seed(0)
    backbone, neck = build_backbone("resnet50_caffe"), FPN([512, 1024, 2048], 256, 5)
    official = {}
    for prefix, module in (("backbone.", backbone), ("neck.", neck)):
        for k, v in module.state_dict().items():
            official[prefix + k] = torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
    official["bbox_head.cls_convs.0.conv.weight"] = torch.randn(256, 256, 3, 3)
    official["bbox_head.conv_cls.weight"] = torch.randn(80, 256, 3, 3)
    official["bbox_head.scales.0.scale"] = torch.tensor(1.0)
    src, dst = tmp_path / "fcos_r50_coco_2mmdet.pth", tmp_path / "fcos_r50_coco.pt"
    torch.save({"meta": {"mmdet_version": "2.14.0", "CLASSES": ("person", "bicycle")}, "state_dict": official}, src)
    main([str(src), str(dst)])
    model = BEVFormerV2("resnet50_caffe", embed_dims=256, dd3d_convs=1,
                        head=dict(bev_h=8, bev_w=8, num_query=20,
                                  transformer=dict(encoder=dict(num_layers=1), decoder=dict(num_layers=1))))
    load_init(model, dst, logging.getLogger("test"))
    sd = model.state_dict()
    for k, v in official.items():
        if k.startswith("bbox_head."):
            continue
        ours = ("img_backbone." + k[len("backbone."):]) if k.startswith("backbone.") else "img_neck." + k[len("neck."):]
        assert torch.equal(sd[ours], v), k
    assert model.img_backbone.style == "caffe"
    with pytest.raises(SystemExit, match="backbone weights missing"):  # a file without the backbone is refused
        torch.save({k: v for k, v in torch.load(dst).items() if not k.startswith("img_backbone.layer4")}, dst)
        load_init(model, dst, logging.getLogger("test"))
