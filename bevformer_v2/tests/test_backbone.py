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


def test_caffe_style_resnet_moves_the_stride_to_the_first_1x1_conv():
    caffe, torch_style = build_backbone("resnet50_caffe").eval(), build_backbone("resnet50").eval()
    assert caffe.layer1[0].conv1.stride == (1, 1) and caffe.layer1[0].conv2.stride == (1, 1)
    for name in ("layer2", "layer3", "layer4"):
        first, tv = getattr(caffe, name)[0], getattr(torch_style, name)[0]
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1), name
        assert tv.conv1.stride == (1, 1) and tv.conv2.stride == (2, 2), name
        assert first.downsample[0].stride == (2, 2)
        assert all(b.conv1.stride == b.conv2.stride == (1, 1) for b in getattr(caffe, name)[1:])
    torch_style.load_state_dict(caffe.state_dict())  # same names and shapes: official weights fit both
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = caffe(x), torch_style(x)
    assert [f.shape for f in a] == [f.shape for f in b]
    assert not torch.allclose(a[0], b[0])  # but not the same function
    with pytest.raises(ValueError, match="caffe-style ResNet exists for depth 50/101"):
        build_backbone("resnet50_caffe", pretrained=True)
