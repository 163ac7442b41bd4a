"""Embedded datasets: digits split, shapes scenes in COCO format."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from repro_shared import toydata


def test_digits_split_sizes_stratification_and_determinism():
    xt, yt = toydata.load_digits("train", image_size=16, channels=3)
    xv, yv = toydata.load_digits("val", image_size=16, channels=1)
    assert xt.shape == (1437, 3, 16, 16) and xv.shape == (360, 1, 16, 16)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert 0.0 <= float(xt.min()) and float(xt.max()) <= 1.0
    assert torch.equal(xt[:, 0], xt[:, 2])  # grey repeated
    counts_t, counts_v = torch.bincount(yt, minlength=10), torch.bincount(yv, minlength=10)
    assert counts_t.sum() + counts_v.sum() == 1797
    assert (counts_v >= 35).all() and (counts_v <= 37).all()  # stratified 20 %
    x2, y2 = toydata.load_digits("train", image_size=16)
    assert torch.equal(x2, xt) and torch.equal(y2, yt)
    # native resolution is the sklearn data itself
    x8, _ = toydata.load_digits("val", image_size=8, channels=1)
    from sklearn.datasets import load_digits

    originals = torch.from_numpy(load_digits().images.astype(np.float32) / 16)
    assert all(any(torch.equal(img[0], o) for o in originals[:]) for img in x8[:3])
    ds = toydata.DigitsDataset("val", image_size=12, transform=lambda t: t * 2)
    img, label = ds[0]
    assert img.shape == (3, 12, 12) and isinstance(label, int) and len(ds) == 360
    with pytest.raises(ValueError, match="split"):
        toydata.load_digits("test")


def test_render_scene_is_exact():
    rng = np.random.default_rng(3)
    image, instances, cats = toydata.render_scene(rng, image_size=64, max_objects=6)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert len(cats) >= 1 and set(cats) <= {1, 2, 3}
    assert set(np.unique(instances)) == set(range(len(cats) + 1)) - ({0} if (instances > 0).all() else set())


def _coco_eval(gt, dets, iou_type):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_shapes_coco_loads_and_ground_truth_scores_ap_1(tmp_path):
    from pycocotools.coco import COCO

    paths = toydata.make_shapes_dataset(tmp_path, "val", num_images=12, image_size=96, seed=1)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(paths.ann_file))
    assert len(gt.getImgIds()) == 12 and [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(toydata.SHAPE_CLASSES)
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) >= 12
    for key, iou_type in (("bbox", "bbox"), ("segmentation", "segm")):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], key: a[key], "score": 1.0} for a in anns]
        stats = _coco_eval(gt, dets, iou_type)
        assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    # a wrong class on every detection gives AP 0: the evaluation is not vacuous
    wrong = [{"image_id": a["image_id"], "category_id": a["category_id"] % 3 + 1, "bbox": a["bbox"], "score": 1.0} for a in anns]
    assert _coco_eval(gt, wrong, "bbox")[0] == pytest.approx(0.0)
    # semantic maps agree with the instance masks
    for img in gt.loadImgs(gt.getImgIds()[:4]):
        sem = np.array(Image.open(paths.semseg_dir / img["file_name"]))
        for a in gt.loadAnns(gt.getAnnIds(imgIds=img["id"])):
            m = gt.annToMask(a).astype(bool)
            assert (sem[m] == a["category_id"]).all()
            x, y, w, h = a["bbox"]
            rows, cols = np.nonzero(m)
            assert (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) == (x, y, w, h)


def test_shapes_determinism_splits_and_reuse(tmp_path):
    a = toydata.make_shapes_dataset(tmp_path / "a", "train", num_images=4, image_size=64, seed=5)
    b = toydata.make_shapes_dataset(tmp_path / "b", "train", num_images=4, image_size=64, seed=5)
    c = toydata.make_shapes_dataset(tmp_path / "a", "val", num_images=4, image_size=64, seed=5)
    ja, jb = json.loads(a.ann_file.read_text()), json.loads(b.ann_file.read_text())
    assert ja["annotations"] == jb["annotations"]
    assert (a.image_dir / "000000.png").read_bytes() == (b.image_dir / "000000.png").read_bytes()
    assert json.loads(c.ann_file.read_text())["annotations"] != ja["annotations"]
    mtime = a.ann_file.stat().st_mtime_ns
    toydata.make_shapes_dataset(tmp_path / "a", "train", num_images=4, image_size=64, seed=5)
    assert a.ann_file.stat().st_mtime_ns == mtime  # reused, not regenerated
    toydata.make_shapes_dataset(tmp_path / "a", "train", num_images=5, image_size=64, seed=5)
    assert len(json.loads(a.ann_file.read_text())["images"]) == 5  # other parameters: regenerated
    with pytest.raises(ValueError, match="num_images"):
        toydata.make_shapes_dataset(tmp_path, "x", num_images=0)
