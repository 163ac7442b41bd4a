"""Backbones tap three maps at strides 8/16/32 with the documented channels; FPN gives 5 levels."""
import pytest
import torch

from bevformer_v2.models.backbone import FPN, build_backbone


@pytest.mark.parametrize("name,channels", [("tiny", [32, 64, 128]), ("resnet50", [512, 1024, 2048]),
                                           ("timm:ese_vovnet99b", [512, 768, 1024]), ("timm:dla34", [128, 256, 512]),
                                           ("timm:convnext_atto", [80, 160, 320])])
def test_backbone_taps_and_fpn(name, channels):
    bb = build_backbone(name)
    assert bb.out_channels == channels
    x = torch.randn(1, 3, 64, 128)
    feats = bb.eval()(x)
    assert [f.shape[-2:] for f in feats] == [(8, 16), (4, 8), (2, 4)]
    outs = FPN(bb.out_channels, 32).eval()(feats)
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 16), (4, 8), (2, 4), (1, 2), (1, 1)]


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError, match="known: tiny, resnet18"):
        build_backbone("internimage_b")
