"""DeepLabv3+ structure: output shapes/strides, dilations, parameter counts; the official mmcv ResNet-V1c ImageNet
weights (key layout, converter, safe loading) and the required-init check of the paper rows."""

from pathlib import Path

import pytest
import torch
from repro_shared.checkpoint import UntrustedCheckpointError

from auto_seg_loss.models import build_segmenter
from auto_seg_loss.cli import compose, run_search, run_train
from auto_seg_loss.weights import MMCV_RESNET_V1C_RENAMES, convert_mmcv_resnet_v1c, load_backbone_weights, main


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


def official_resnet_v1c_state(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic ImageNet checkpoint in the key layout of mmcv's ``ResNetV1c`` (``resnet{50,101}_v1c-*.pth``),
    written from the architecture (not from our model): deep stem ``stem.{0,3,6}`` convs 3x3 32-32-64 with BNs
    ``stem.{1,4,7}``; bottlenecks ``layer{s}.{b}.conv{1,2,3}`` (1x1, 3x3, 1x1 x4) + ``bn{1,2,3}``, first block
    ``downsample.{0,1}``; ImageNet classifier ``fc``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k):
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(name, c):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
        sd[f"{name}.running_mean"], sd[f"{name}.running_var"] = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5

    conv("stem.0", 32, 3, 3), bn("stem.1", 32), conv("stem.3", 32, 32, 3), bn("stem.4", 32)
    conv("stem.6", 64, 32, 3), bn("stem.7", 64)
    inplanes = 64
    for s, (blocks, planes) in enumerate(zip({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth], (64, 128, 256, 512)), 1):
        for b in range(blocks):
            pre = f"layer{s}.{b}"
            conv(f"{pre}.conv1", planes, inplanes, 1), bn(f"{pre}.bn1", planes)
            conv(f"{pre}.conv2", planes, planes, 3), bn(f"{pre}.bn2", planes)
            conv(f"{pre}.conv3", planes * 4, planes, 1), bn(f"{pre}.bn3", planes * 4)
            if b == 0:
                conv(f"{pre}.downsample.0", planes * 4, inplanes, 1), bn(f"{pre}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048, generator=g), torch.randn(1000, generator=g)
    return sd


@pytest.mark.parametrize("depth", [50, 101])
def test_official_mmcv_resnet_v1c_layout_loads(tmp_path, depth):
    """Every tensor of an official-layout file lands in the parameter of the same role (stem.7 -> bn1, stage
    names unchanged), the classifier is dropped, and the file is read weights-only."""
    official = official_resnet_v1c_state(depth)
    torch.save({"meta": {"mmcv_version": "1.3.0"}, "state_dict": official}, tmp_path / "r.pth")
    model = build_segmenter(21, f"resnet{depth}")
    assert load_backbone_weights(model, tmp_path / "r.pth") == len(official) - 2
    ours = model.backbone.state_dict()
    role = {"stem.0": "conv1.0", "stem.1": "conv1.1", "stem.3": "conv1.3", "stem.4": "conv1.4", "stem.6": "conv1.6",
            "stem.7": "bn1"}
    for k, v in official.items():
        if k.startswith("fc."):
            continue
        head, _, tail = k.rpartition(".")
        name = role.get(head, head) + "." + tail
        assert torch.equal(ours[name], v), k
    if depth == 101:
        return
    # the converter CLI writes our names, which load as they are
    dst = main([str(tmp_path / "r.pth"), str(tmp_path / "ours.pth"), "--backbone", f"resnet{depth}"])
    converted = torch.load(dst, weights_only=True)
    assert set(converted) == {k for k in ours if not k.endswith("num_batches_tracked")}
    assert torch.equal(converted["bn1.running_var"], official["stem.7.running_var"])
    with pytest.raises(RuntimeError, match="do not fit"):
        load_backbone_weights(build_segmenter(21, "resnet101"), tmp_path / "r.pth")  # wrong depth: refused


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_backbone_file_with_pickled_code_is_refused(tmp_path):
    state = convert_mmcv_resnet_v1c(build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6)).backbone.state_dict())
    torch.save({"state_dict": state, "evil": _Payload()}, tmp_path / "evil.pth")
    model = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6))
    with pytest.raises(UntrustedCheckpointError, match="evil.pth.*trust_checkpoint=true"):
        load_backbone_weights(model, tmp_path / "evil.pth")
    assert load_backbone_weights(model, tmp_path / "evil.pth", trust=True) == len(state)  # explicit opt-in


PAPER_ROWS = sorted(p.stem for p in (Path(__file__).parents[1] / "src/auto_seg_loss/configs/experiment").glob("*.yaml"))


@pytest.mark.parametrize("entry", ["train", "search"])
def test_paper_rows_refuse_to_start_without_their_imagenet_weights(tmp_path, entry):
    exp = "voc_miou" if entry == "train" else "search_voc_miou"
    cfg = compose(entry, [f"experiment={exp}", "data.root=/data/VOC2012", f"output_dir={tmp_path / 'o'}"])
    depth = "101" if entry == "train" else "50"
    with pytest.raises(FileNotFoundError, match=rf"init.path is not set.*resnet{depth}_v1c-.*\.pth.*"
                                                rf"asl-convert-backbone.*--backbone resnet{depth}"):
        (run_train if entry == "train" else run_search)(cfg)
    assert not (tmp_path / "o").exists()  # stopped before building or writing anything
    cfg = compose(entry, [f"experiment={exp}", f"init.path={tmp_path / 'missing.pth'}", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(FileNotFoundError, match="missing.pth.*is not a file"):
        (run_train if entry == "train" else run_search)(cfg)


def test_tiny_run_starts_from_a_required_init_file(tmp_path):
    """init.required + an official-layout file for the tiny backbone: the weights are in the model (one step at
    lr 0, so only the BN running statistics move)."""
    src = build_segmenter(4, "tiny", 32, 12, 16, (1, 2, 4, 6)).backbone.state_dict()
    mm = {k.replace("conv1.6.", "stem.6.").replace("bn1.", "stem.7.") if k.startswith(("conv1.", "bn1.")) else k: v
          for k, v in src.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": mm}, tmp_path / "tiny.pth")
    over = ["train.iters=1", "optim.lr=0", "optim.min_lr=0", "data.num_train=16", "data.num_val=8", "train.batch_size=8", "init.required=true",
            f"init.path={tmp_path / 'tiny.pth'}", f"output_dir={tmp_path / 'o'}"]
    run_train(compose("train", over))
    saved = torch.load(tmp_path / "o" / "checkpoints" / "ckpt_000000001.pt", weights_only=True)["model"]
    for k, v in src.items():
        if not k.endswith(("num_batches_tracked", "running_mean", "running_var")):
            assert torch.equal(saved[f"backbone.{k}"], v), k
