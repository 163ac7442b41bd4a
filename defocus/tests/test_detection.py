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


# ---------------------------------------------------------------------------------- box conventions (issue 15.1)
W_IMG, H_IMG = 48, 32  # non-square image
BOX_XYWH = [4.0, 6.0, 10.0, 20.0]  # non-square, non-symmetric box: x 4..14, y 6..26


def _coco_folder(tmp_path, missing=False):
    """One 48x32 image, black with a white 10x20 rectangle at x 4..14, y 6..26, annotated in COCO xywh."""
    import json

    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    img = np.zeros((H_IMG, W_IMG, 3), dtype="uint8")
    img[6:26, 4:14] = 255
    if not missing:
        Image.fromarray(img).save(tmp_path / "images" / "a.png")
    ann = {"images": [{"id": 7, "file_name": "a.png", "width": W_IMG, "height": H_IMG}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": BOX_XYWH, "area": 200.0, "iscrowd": 0}],
           "categories": [{"id": 3, "name": "rect"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    return tmp_path / "images", tmp_path / "ann.json"


def _white_box(img):
    """xyxy of the white pixels of a (3, H, W) image (pixel-edge coordinates)."""
    ys, xs = torch.nonzero(img.mean(0) > 0.5, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_box_conversions_are_inverse_and_ordered():
    from defocus.data.coco import coco_xywh_to_xyxy, hflip_boxes, xyxy_to_coco_xywh

    xywh = torch.tensor([BOX_XYWH, [1.0, 2.0, 3.0, 7.0]])
    xyxy = coco_xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[4.0, 6.0, 14.0, 26.0], [1.0, 2.0, 4.0, 9.0]]
    assert torch.equal(xyxy_to_coco_xywh(xyxy), xywh)
    assert hflip_boxes(xyxy, W_IMG).tolist() == [[34.0, 6.0, 44.0, 26.0], [44.0, 2.0, 47.0, 9.0]]


@pytest.mark.parametrize("flip", [False, True])
def test_coco_reader_boxes_match_pixels(tmp_path, flip):
    """The reader's xyxy box is exactly where the object's pixels are, with and without the flip."""
    from defocus.data.coco import CocoBoxes

    ds = CocoBoxes(*_coco_folder(tmp_path), flip_prob=1.0 if flip else 0.0)
    img, tgt = ds[0]
    assert img.shape == (3, H_IMG, W_IMG) and tgt["image_id"] == 7 and tgt["labels"].tolist() == [1]
    assert tgt["boxes"].tolist() == [[34.0, 6.0, 44.0, 26.0] if flip else [4.0, 6.0, 14.0, 26.0]]
    assert tgt["boxes"][0].tolist() == _white_box(img)


def test_crop_augment_moves_boxes_with_pixels(tmp_path):
    from defocus.data.coco import CocoBoxes, DetrCropAugment

    img, tgt = CocoBoxes(*_coco_folder(tmp_path))[0]
    c_img, c_boxes, c_labels = DetrCropAugment.crop(img, tgt["boxes"], tgt["labels"], top=5, left=2, height=20, width=30)
    assert c_img.shape == (3, 20, 30)
    assert c_boxes.tolist() == [[2.0, 1.0, 12.0, 20.0]] and c_boxes[0].tolist() == _white_box(c_img)  # clipped at y=20
    _, gone, gone_labels = DetrCropAugment.crop(img, tgt["boxes"], tgt["labels"], top=0, left=20, height=32, width=28)
    assert gone.shape == (0, 4) and gone_labels.numel() == 0
    torch.manual_seed(1)
    aug = DetrCropAugment(prob=1.0, short_sides=(40,), crop_range=(30, 40))
    r_img, r_boxes, _ = aug(img, tgt["boxes"], tgt["labels"])  # resize 32x48 -> 40x60, crop 30..40 per side
    assert 30 <= r_img.shape[-2] <= 40 and 30 <= r_img.shape[-1] <= 40
    assert r_boxes.shape == (1, 4)
    assert torch.allclose(r_boxes[0], torch.tensor(_white_box(r_img), dtype=torch.float32), atol=1.01)


def test_coco_eval_ground_truth_as_detections(tmp_path):
    """Ground-truth boxes returned as xyxy detections score AP 100; the same boxes with x/y swapped do not."""
    from defocus.data.coco import CocoBoxes, coco_bbox_eval, collate

    ds = CocoBoxes(*_coco_folder(tmp_path))

    class Echo(torch.nn.Module):
        def __init__(self, swap):
            super().__init__()
            self.swap = swap

        def forward(self, images):
            boxes = torch.tensor([[4.0, 6.0, 14.0, 26.0]])
            if self.swap:
                boxes = boxes[:, [1, 0, 3, 2]]
            return [{"boxes": boxes, "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}]

    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate)
    assert coco_bbox_eval(Echo(False), loader, ds, "cpu")["bbox_AP"] == pytest.approx(100.0)
    assert coco_bbox_eval(Echo(True), loader, ds, "cpu")["bbox_AP"] < 50.0


def test_coco_reader_errors_name_the_file(tmp_path):
    from repro_shared.data import DataError

    from defocus.data.coco import CocoBoxes

    with pytest.raises(FileNotFoundError, match="COCO image folder .*nope.*expected layout"):
        CocoBoxes(tmp_path / "nope", tmp_path / "ann.json")
    img_dir, ann = _coco_folder(tmp_path, missing=True)
    with pytest.raises(DataError, match=r"a\.png"):
        CocoBoxes(img_dir, ann)[0]
    assert CocoBoxes(img_dir, ann, skip_corrupt=True)[0] is None


def test_detection_dataset_smaller_than_batch_and_nan_guard(tmp_path):
    """One image at data.batch_size=4 fails before training naming the key; a NaN backbone weight stops the first
    detector step with NonFiniteError naming the loss term."""
    from repro_shared.guards import NonFiniteError

    from defocus.data.coco import CocoBoxes, collate
    from defocus.data.sampler import build_train_loader
    from defocus.engine import train_detection_epoch

    ds = CocoBoxes(*_coco_folder(tmp_path))
    with pytest.raises(ValueError, match=r"1 samples, fewer than one batch of 4.*data\.batch_size"):
        build_train_loader(ds, batch_size=4, seed=0, collate_fn=collate, batch_size_key="data.batch_size")
    loader = build_train_loader(ds, batch_size=1, seed=0, collate_fn=collate)
    loader.set_epoch(0)
    det = build_detector(MIX, depth=1, num_classes=2, patch_size=8, pretrain_size=32, min_size=32, max_size=48)
    with torch.no_grad():
        det.backbone.body.norm.weight.fill_(float("nan"))
    opt = torch.optim.AdamW(det.parameters(), lr=1e-4)
    with pytest.raises(NonFiniteError, match=r"non-finite loss term 'loss_\w+' = nan .*at step 0"):
        train_detection_epoch(det, loader, opt, epoch=0, device=torch.device("cpu"), clip_grad=0.1)
