"""DeepLabv3+ structure: output shapes/strides, dilations, parameter counts, ImageNet-weight converter."""

import pytest
import torch

from auto_seg_loss.models import build_segmenter
from auto_seg_loss.models.deeplabv3plus import MMCV_RESNET_V1C_RENAMES, load_backbone_weights


def test_tiny_shapes_and_aux_only_in_training():
    m = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6))
    x = torch.rand(2, 3, 64, 64)
    out = m.train()(x)
    assert out["out"].shape == (2, 4, 16, 16) and out["aux"].shape == (2, 4, 8, 8)
    assert set(m.eval()(x)) == {"out"}
    for head in (m.decode_head, m.auxiliary_head):  # mmseg init of the classifier (default)
        assert float(head.conv_seg.weight.detach().std()) == pytest.approx(0.01, rel=0.5)
        assert float(head.conv_seg.bias.detach().abs().max()) == 0.0
    t = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6), head_init="torch")
    assert float(t.decode_head.conv_seg.weight.detach().std()) > 0.05
    with pytest.raises(ValueError, match="head_init"):
        build_segmenter(4, "tiny", head_init="xavier")


def test_resnet50_v1c_structure():
    m = build_segmenter(21, "resnet50")
    convs = dict(m.backbone.named_modules())
    # deep stem 32-32-64, output stride 8 with contracted dilations (1 then 2 in layer3, 2 then 4 in layer4)
    assert [convs[f"conv1.{i}"].out_channels for i in (0, 3, 6)] == [32, 32, 64]
    assert convs["layer3.0.conv2"].dilation == (1, 1) and convs["layer3.1.conv2"].dilation == (2, 2)
    assert convs["layer4.0.conv2"].dilation == (2, 2) and convs["layer4.1.conv2"].dilation == (4, 4)
    assert m.backbone.feature_info.reduction() == [4, 8, 8]
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert 40 < n < 47, n  # mmseg DeepLabv3+ R50-D8 ~43.7 M
    with torch.no_grad():
        out = m.eval()(torch.rand(1, 3, 64, 64))
    assert out["out"].shape == (1, 21, 16, 16)


def test_mmcv_backbone_weights_load(tmp_path):
    m = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6))
    src = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6)).backbone.state_dict()
    # write it with mmcv ResNetV1c names: stem.{0,1,3,4,6,7}, "backbone." prefix, no num_batches_tracked
    inv = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4.",
           "conv1.6.": "stem.6.", "bn1.": "stem.7."}
    mm = {}
    for k, v in src.items():
        if k.endswith("num_batches_tracked"):
            continue
        for a, b in inv.items():
            if k.startswith(a):
                k = b + k[len(a):]
        mm["backbone." + k] = v
    torch.save({"state_dict": mm}, tmp_path / "r.pth")
    load_backbone_weights(m, str(tmp_path / "r.pth"))
    for k, v in src.items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="do not fit"):
        load_backbone_weights(m, str(tmp_path / "bad.pth"))
    assert MMCV_RESNET_V1C_RENAMES


def test_unknown_backbone():
    with pytest.raises(ValueError, match="choose one of"):
        build_segmenter(4, "vit")
