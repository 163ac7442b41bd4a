"""Dense transfer: ViT trunk, feature pyramids, Mask R-CNN and UperNet on the procedural shapes, COCO AP, mIoU."""

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader

from repro_shared.dense import (CocoInstanceDataset, SegmentationFolder, SegTrainTransform, SimpleFeaturePyramid,
                                TimmViTTrunk, UperNetSegmentor, build_vitdet_maskrcnn, coco_evaluate, confusion_matrix,
                                detection_collate, evaluate_segmentation, miou, segmentation_loss)
from repro_shared.toydata import make_shapes_dataset


# CPU-sized heads and proposal counts (ViTDet's 256-channel heads dominate the cost on a CPU)
TINY_HEADS = dict(out_channels=32, head_channels=32, fc_dim=128, rpn_pre_nms_top_n_train=200,
                  rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                  rpn_batch_size_per_image=64, box_batch_size_per_image=64, box_detections_per_img=20)


def tiny_vit(depth=2):
    torch.manual_seed(0)
    return timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2,
                                         num_classes=0, global_pool="avg", fc_norm=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), "train", num_images=8, image_size=64, seed=0)


def test_trunk_matches_timm_at_native_size_and_resizes():
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    trunk = TimmViTTrunk(vit, out_indices=(0, -1), final_norm=True)
    first, last = trunk(x)
    ref = vit.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(last, ref, atol=1e-5, rtol=1e-5)
    assert first.shape == (2, 32, 4, 4)
    assert TimmViTTrunk(vit)(torch.randn(1, 3, 48, 64))[0].shape == (1, 32, 6, 8)
    with pytest.raises(ValueError, match="not divisible"):
        trunk(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="out of range"):
        TimmViTTrunk(vit, out_indices=(5,))


def test_simple_feature_pyramid_strides():
    sfp = SimpleFeaturePyramid(TimmViTTrunk(tiny_vit()))
    out = sfp(torch.randn(2, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"] and sfp.strides == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(v.shape[:2] == (2, 256) for v in out.values())


def test_coco_dataset_targets_and_flip(shapes):
    ds = CocoInstanceDataset(shapes.image_dir, shapes.ann_file)
    image, t = ds[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    ann = [a for a in ds.coco.imgToAnns[t["image_id"]]]
    x, y, w, h = ann[0]["bbox"]
    torch.testing.assert_close(t["boxes"][0], torch.tensor([x, y, x + w, y + h]))
    # each box is the tight box of its mask
    for box, m in zip(t["boxes"], t["masks"]):
        rows, cols = torch.nonzero(m, as_tuple=True)
        torch.testing.assert_close(box, torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float())
    flipped = CocoInstanceDataset(shapes.image_dir, shapes.ann_file, train=True, hflip_p=1.0)
    fi, ft = flipped[0]
    torch.testing.assert_close(fi, image.flip(-1))
    for box, m in zip(ft["boxes"], ft["masks"]):  # still tight after the flip
        rows, cols = torch.nonzero(m, as_tuple=True)
        torch.testing.assert_close(box, torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float())
    with pytest.raises(FileNotFoundError, match="expected layout"):
        CocoInstanceDataset(shapes.root / "nope", shapes.ann_file)


def test_maskrcnn_trains_and_predicts(shapes):
    ds = CocoInstanceDataset(shapes.image_dir, shapes.ann_file, train=True)
    model = build_vitdet_maskrcnn(TimmViTTrunk(tiny_vit()), num_classes=4, min_size=64, max_size=64,
                                  **TINY_HEADS)
    images, targets = detection_collate([ds[0], ds[1]])
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.trunk.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    out = model(images)
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"} and out[0]["masks"].shape[1:] == (1, 64, 64)
    with pytest.raises(ValueError, match="background"):
        build_vitdet_maskrcnn(TimmViTTrunk(tiny_vit()), num_classes=1)


class _GroundTruthDetector(torch.nn.Module):
    """Returns the ground truth of each image as its detections (score 1); images come in loader order."""

    def __init__(self, dataset):
        super().__init__()
        self.targets = [dataset[i][1] for i in range(len(dataset))]
        self.k = 0

    def forward(self, images):
        outs = []
        for _ in images:
            t = self.targets[self.k]
            self.k += 1
            outs.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                         "masks": t["masks"][:, None].float()})
        return outs


def test_coco_evaluate_ground_truth_is_perfect(shapes):
    ds = CocoInstanceDataset(shapes.image_dir, shapes.ann_file)
    loader = DataLoader(ds, batch_size=3, collate_fn=detection_collate)
    res = coco_evaluate(_GroundTruthDetector(ds), loader, ds.coco, ds.cat_ids, torch.device("cpu"))
    assert res["bbox_AP"] == pytest.approx(100.0) and res["segm_AP"] == pytest.approx(100.0)
    # wrong class ids give AP 0: the label -> category mapping matters
    det = _GroundTruthDetector(ds)
    for t in det.targets:
        t["labels"] = t["labels"] % 3 + 1
    res = coco_evaluate(det, loader, ds.coco, ds.cat_ids, torch.device("cpu"), iou_types=("bbox",))
    assert res["bbox_AP"] < 1.0


def test_confusion_and_miou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    m, iou = miou(conf)
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: 3/(3+1) = 3/4; class 2: 1/(1+1) = 1/2
    np.testing.assert_allclose(iou.numpy(), [1 / 3, 3 / 4, 1 / 2])
    assert m == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    m, iou = miou(confusion_matrix(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 3))
    assert m == 1.0 and torch.isnan(iou[1:]).all()
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(pred, torch.full_like(target, 7), 3)


def test_upernet_forward_loss_and_eval(shapes):
    ds = SegmentationFolder(shapes.image_dir, shapes.semseg_dir)
    image, label = ds[0]
    assert label.dtype == torch.int64 and set(label.unique().tolist()) <= {0, 1, 2, 3}
    model = UperNetSegmentor(TimmViTTrunk(tiny_vit(depth=4), out_indices=(0, 1, 2, 3)), num_classes=4,
                             channels=32, aux_channels=16)
    images, labels = torch.stack([ds[0][0], ds[1][0]]), torch.stack([ds[0][1], ds[1][1]])
    out = model(images)
    assert out["out"].shape == (2, 4, 64, 64) and out["aux"].shape == (2, 4, 64, 64)
    losses = segmentation_loss(out, labels)
    torch.testing.assert_close(losses["loss"], losses["loss_seg"] + losses["loss_aux"])
    losses["loss"].backward()
    res = evaluate_segmentation(model, DataLoader(ds, batch_size=4), 4, torch.device("cpu"))
    assert 0.0 <= res["mIoU"] <= 100.0 and 0.0 <= res["aAcc"] <= 100.0
    reduced = SegmentationFolder(shapes.image_dir, shapes.semseg_dir, reduce_zero_label=True)[0][1]
    assert torch.equal(reduced, torch.where(label == 0, 255, label - 1))


@pytest.mark.slow
def test_maskrcnn_learns_the_shapes(tmp_path):
    """A tiny ViT Mask R-CNN trained for a few hundred steps beats its untrained self on COCO AP50."""
    train = make_shapes_dataset(tmp_path, "train", num_images=64, image_size=64, seed=0, max_objects=3)
    val = make_shapes_dataset(tmp_path, "val", num_images=16, image_size=64, seed=0, max_objects=3)
    ds = CocoInstanceDataset(train.image_dir, train.ann_file, train=True)
    vds = CocoInstanceDataset(val.image_dir, val.ann_file)
    torch.manual_seed(0)
    model = build_vitdet_maskrcnn(TimmViTTrunk(tiny_vit(depth=4)), num_classes=4, min_size=64, max_size=64,
                                  anchor_sizes=(8, 16, 32, 64, 128), **TINY_HEADS)
    vloader = DataLoader(vds, batch_size=8, collate_fn=detection_collate)
    before = coco_evaluate(model, vloader, vds.coco, vds.cat_ids, torch.device("cpu"), iou_types=("bbox",))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    loader = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=detection_collate,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(25):
        for images, targets in loader:
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = coco_evaluate(model, vloader, vds.coco, vds.cat_ids, torch.device("cpu"))
    assert after["bbox_AP50"] > before["bbox_AP50"] + 10.0, (before, after)


def test_segmentation_transform_keeps_image_and_label_aligned():
    torch.manual_seed(0)
    label = torch.ones(40, 60, dtype=torch.long)
    label[:, 30:] = 2
    image = torch.where(label == 1, 0.1, 0.9).float().expand(3, -1, -1).clone()
    tf = SegTrainTransform(scale=(60, 40), ratio_range=(0.5, 2.0), crop=48)
    for _ in range(8):
        img, lab = tf(image, label)
        assert img.shape == (3, 48, 48) and lab.shape == (48, 48) and lab.dtype == torch.long
        raw = img[0] * 0.229 + 0.485
        inside = lab != 255
        agree = ((raw < 0.5) == (lab == 1))[inside].float().mean()
        assert agree > 0.95
        assert set(lab.unique().tolist()) <= {1, 2, 255}

def test_segmentation_resize_follows_mmseg_keep_ratio():
    """Resize(img_scale=(2048, 512), ratio 1): a 100 x 300 image -> long side <= 2048, short side <= 512, so the
    short side decides: 512 x 1536 (then a crop larger than both sides pads the label with 255)."""
    from repro_shared.dense import SegTrainTransform

    tf = SegTrainTransform(scale=(2048, 512), ratio_range=(1.0, 1.0), crop=1600, normalize=False)
    img, lab = tf(torch.rand(3, 100, 300), torch.zeros(100, 300, dtype=torch.long))
    assert img.shape == (3, 1600, 1600)
    assert int((lab != 255).sum()) == 512 * 1536
