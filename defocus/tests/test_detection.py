"""Dense transfer: window reordering, backbone output map, SimpleFPN, torchvision detector step."""

import pytest
import torch

from defocus.models import build_model
from defocus.models.detection import (
    BackboneWithSimpleFPN,
    DefocusMambaBackbone,
    build_detector,
    load_classification_weights,
    window_order,
)
from defocus.models.mixer import MixerConfig

MIX = MixerConfig(hidden_size=32, intermediate_size=64, state_size=16, time_step_rank=8, group_norm_size=16,
                  rope_scale_factor=20.0, delta_scale_factor=4.57)


def test_window_order_is_window_major():
    perm = window_order(4, 6, 2)
    grid = torch.arange(24).view(4, 6)
    assert perm[:4].tolist() == grid[:2, :2].flatten().tolist()  # first window, row-major inside
    assert perm[4:8].tolist() == grid[:2, 2:4].flatten().tolist()  # next window to the right
    assert torch.equal(torch.arange(24)[perm][torch.argsort(perm)], torch.arange(24))


def test_backbone_shapes_padding_and_window_causality():
    torch.manual_seed(0)
    bb = DefocusMambaBackbone(MIX, depth=2, patch_size=8, pretrain_size=32, drop_path_rate=0.5).eval()
    x = torch.rand(2, 3, 40, 56)  # not a multiple of 32: padded to 64 x 64, cropped back to 5 x 7
    out = bb(x)
    assert out.shape == (2, 32, 5, 7)
    # the first 32x32 window comes first in the sequence: changing the second window row leaves it unchanged
    x2 = x.clone()
    x2[:, :, 32:] = torch.rand_like(x2[:, :, 32:])
    out2 = bb(x2)
    torch.testing.assert_close(out[:, :, :4, :4], out2[:, :, :4, :4])
    assert (out[:, :, 4:] - out2[:, :, 4:]).abs().max() > 1e-4
    feats = BackboneWithSimpleFPN(bb)(x)
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(20, 28), (10, 14), (5, 7), (2, 3), (1, 2)]
    assert all(f.shape[1] == 256 for f in feats.values())


def test_classification_weights_load_into_backbone():
    cls = build_model("defocus_tiny_test", mixer={"rope_scale_factor": 20.0, "delta_scale_factor": 4.57})
    bb = DefocusMambaBackbone(MIX, depth=3, patch_size=8, pretrain_size=32)
    rep = load_classification_weights(bb, cls.state_dict())
    assert not rep.missing and not rep.mismatched
    torch.testing.assert_close(bb.blocks[2].mixer.freq, cls.blocks[2].mixer.freq)


@pytest.mark.parametrize("kind", ["fasterrcnn", "retinanet"])
def test_detector_train_step(kind):
    torch.manual_seed(0)
    ncls = 4 if kind == "fasterrcnn" else 3
    det = build_detector(MIX, depth=2, num_classes=ncls, detector=kind, patch_size=8, pretrain_size=32,
                         min_size=64, max_size=96).train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 70, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 50.0, 30.0], [0.0, 0.0, 20.0, 20.0]]),
                "labels": torch.tensor([2, 3 if kind == "fasterrcnn" else 1])}]
    losses = det(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert det.backbone.body.blocks[0].mixer.freq.grad is not None
    det.eval()
    with torch.no_grad():
        out = det(images)
    assert len(out) == 2 and out[0]["boxes"].shape[-1] == 4


def test_detect_cli_on_shapes(tmp_path):
    """defocus-detect end to end (in-process): shapes in COCO format -> train steps -> pycocotools AP."""
    import json

    from hydra import compose, initialize_config_module

    from defocus.detect import run_detect

    with initialize_config_module("defocus.configs", version_base=None):
        cfg = compose("detect", overrides=["train.epochs=1", "data.num_train=8", "data.num_val=4",
                                           "data.image_size=64", "model.min_size=[64]", "model.max_size=64",
                                           "device=cpu", f"+output_dir={tmp_path}"])
    res = run_detect(cfg)
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "train_loss", "train_loss_classifier"} <= set(res)
    assert 0.0 <= res["bbox_AP"] <= 100.0 and res["train_loss"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["bbox_AP50"] == pytest.approx(res["bbox_AP50"])
