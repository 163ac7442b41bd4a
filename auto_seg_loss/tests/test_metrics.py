"""The exact evaluator against an independent numpy/scipy implementation and hand-computed cases."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from auto_seg_loss.metrics import SegEvaluator, evaluate_maps
from auto_seg_loss.ops.morphology import binary_boundary, dilate, erode3x3


def _np_boundary(m):
    # 1-pixels with an 8-neighbour 0 inside the image (border replicated as 1 => not a boundary)
    er = ndimage.grey_erosion(m, size=(3, 3), mode="constant", cval=1)
    return (m == 1) & (er == 0)


def _np_metrics(preds, gts, k, drop_bg, tol, radius, ignore=255):
    cm = np.zeros((k, k)); cmb = np.zeros((k, k))
    n_fg = np.zeros(k); n_gt = np.zeros(k); m_fg = np.zeros(k); m_gt = np.zeros(k)
    fp = np.ones((2 * tol + 1,) * 2, bool); rp = np.ones((2 * radius + 1,) * 2, bool)
    for p, g in zip(preds, gts):
        valid = g != ignore
        for i in range(k):
            for j in range(k):
                cm[i, j] += np.sum(valid & (g == i) & (p == j))
        edges_g = [_np_boundary((g == c).astype(np.uint8)) for c in range(k)]
        tri = np.zeros_like(valid)
        for c in range(1 if drop_bg else 0, k):
            tri |= ndimage.binary_dilation(edges_g[c], structure=rp)
        for i in range(k):
            for j in range(k):
                cmb[i, j] += np.sum(valid & tri & (g == i) & (p == j))
        for c in range(k):
            ep = _np_boundary((p == c).astype(np.uint8)); eg = edges_g[c]
            n_fg[c] += ep.sum(); n_gt[c] += eg.sum()
            m_fg[c] += (ep & ndimage.binary_dilation(eg, structure=fp)).sum()
            m_gt[c] += (ndimage.binary_dilation(ep, structure=fp) & eg).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
        biou = np.diag(cmb) / (cmb.sum(0) + cmb.sum(1) - np.diag(cmb))
        acc = np.diag(cm) / cm.sum(1)
        pr = m_fg / (n_fg + 1e-8); rc = m_gt / n_gt
        f1 = 2 * pr * rc / (pr + rc + 1e-8)
    freq = cm.sum(1) / cm.sum()
    return {"mIoU": np.nanmean(iou), "FWIoU": np.nansum(freq * iou), "mAcc": np.nanmean(acc),
            "gAcc": np.trace(cm) / cm.sum(), "BIoU": np.nanmean(biou), "BF1": np.nanmean(f1[1:] if drop_bg else f1)}


def _blobs(n, k, h, w, seed, ignore_frac=0.05):
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, k, (n, 1, h // 4, w // 4), generator=g).float()
    lab = torch.nn.functional.interpolate(low, size=(h, w), mode="nearest")[:, 0].long()
    ign = torch.rand(n, h, w, generator=g) < ignore_frac
    return lab.masked_fill(ign, 255)


@pytest.mark.parametrize("drop_bg", [False, True])
@pytest.mark.parametrize("tol", [0, 2])
def test_evaluator_matches_numpy_reference(drop_bg, tol):
    k = 4
    gt = _blobs(3, k, 24, 28, seed=1)
    pred = _blobs(3, k, 24, 28, seed=2, ignore_frac=0.0)
    ours = evaluate_maps(pred, gt, k, drop_bg=drop_bg, tol=tol, radius=tol + 1)
    ref = _np_metrics(pred.numpy(), gt.numpy(), k, drop_bg, tol, tol + 1)
    for name, v in ref.items():
        assert ours[name] == pytest.approx(float(v), abs=1e-9), name


def test_accumulation_is_dataset_level():
    k = 3
    gt = _blobs(4, k, 16, 16, seed=3)
    pred = _blobs(4, k, 16, 16, seed=4, ignore_frac=0.0)
    ev = SegEvaluator(k, tol=1, radius=1)
    for i in range(4):
        ev.add_batch(pred[i : i + 1], gt[i : i + 1])
    whole = evaluate_maps(pred, gt, k, tol=1, radius=1)
    per_image_mean = np.mean([evaluate_maps(pred[i:i+1], gt[i:i+1], k, tol=1, radius=1)["mIoU"] for i in range(4)])
    assert ev.compute() == pytest.approx(whole)
    assert abs(whole["mIoU"] - per_image_mean) > 1e-4  # the two conventions really differ here


def test_hand_computed_case():
    # 1 image 4x4, K=2: GT left half class 1, prediction 3 columns class 1
    gt = torch.zeros(1, 4, 4, dtype=torch.long); gt[:, :, :2] = 1
    pred = torch.zeros(1, 4, 4, dtype=torch.long); pred[:, :, :3] = 1
    m = evaluate_maps(pred, gt, 2, tol=0, radius=0)
    # confusion: gt0 -> pred0 4, pred1 4 ; gt1 -> pred1 8
    assert m["mIoU"] == pytest.approx((4 / 8 + 8 / 12) / 2)
    assert m["gAcc"] == pytest.approx(12 / 16)
    assert m["mAcc"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["FWIoU"] == pytest.approx(0.5 * 0.5 + 0.5 * 8 / 12)
    # boundaries: GT class1 edge = column 1, class0 edge = column 2; pred class1 edge = column 2, class0 col 3
    # tol 0: no matches -> BF1 0 for both classes
    assert m["BF1"] == pytest.approx(0.0)
    m1 = evaluate_maps(pred, gt, 2, tol=1, radius=0)
    assert m1["BF1"] == pytest.approx(1.0, abs=1e-6)


def test_ignore_pixels_excluded_from_confusion():
    gt = torch.tensor([[[0, 1], [255, 255]]])
    pred = torch.tensor([[[0, 1], [1, 0]]])
    m = evaluate_maps(pred, gt, 2, tol=0, radius=0)
    assert m["gAcc"] == 1.0 and m["mIoU"] == 1.0


def test_bad_inputs_raise_clear_errors():
    gt = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="shape"):
        evaluate_maps(torch.zeros(1, 4, 5, dtype=torch.long), gt, 2)
    bad = gt.clone(); bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"outside 0\.\.1.*ignore label 255"):
        evaluate_maps(torch.zeros_like(gt), bad, 2)
    with pytest.raises(ValueError, match="predictions"):
        evaluate_maps(torch.full_like(gt, 255), gt, 2)
    with pytest.raises(ValueError, match="integer"):
        evaluate_maps(torch.zeros_like(gt), gt.float(), 2)


def test_separable_morphology_equals_square_pools():
    z = torch.rand(2, 3, 17, 19, dtype=torch.float64)
    assert torch.equal(erode3x3(z, True), erode3x3(z, False))
    for r in (1, 3, 5):
        assert torch.equal(dilate(z, r, True), dilate(z, r, False))
    m = (torch.rand(2, 3, 17, 19) > 0.5).float()
    avg = torch.nn.functional.avg_pool2d(m, 3, 1, 1, count_include_pad=False)
    assert torch.equal(binary_boundary(m), m * (m != avg).float())


def test_morphology_gradients_equal_without_ties():
    z1 = torch.rand(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_()
    g = torch.rand(1, 2, 12, 12, dtype=torch.float64)
    (dilate(z1, 2, True) * g).sum().backward(); (dilate(z2, 2, False) * g).sum().backward()
    assert torch.allclose(z1.grad, z2.grad)
    z1.grad = None; z2.grad = None
    (erode3x3(z1, True) * g[..., :, :]).sum().backward(); (erode3x3(z2, False) * g).sum().backward()
    assert torch.allclose(z1.grad, z2.grad)
