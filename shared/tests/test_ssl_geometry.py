"""Two-view geometry: the six numbers, the mapping of view-2 patches into view 1, the sin-cos tables."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from repro_shared.ssl.augment import byol_color_transform
from repro_shared.ssl.geometry import (PairedViewCrop, absolute_sincos_embedding, relative_geometry,
                                       relative_sincos_embedding, view2_centres_in_view1)


def test_absolute_table_by_hand():
    """D = 8, G = 2: w = (1, 0.01); row before column; CLS row zero."""
    t = absolute_sincos_embedding(8, 2)
    assert t.shape == (5, 8) and t.dtype == torch.float32
    assert torch.equal(t[0], torch.zeros(8))
    w = np.array([1.0, 0.01])
    for r in range(2):
        for c in range(2):
            expect = np.concatenate([np.sin(r * w), np.cos(r * w), np.sin(c * w), np.cos(c * w)])
            np.testing.assert_allclose(t[1 + 2 * r + c].numpy(), expect, atol=1e-7)
    # row (r=1, c=0) differs from (r=0, c=1): the row block comes first
    assert t[3, 0] == pytest.approx(math.sin(1.0)) and t[2, 0] == 0.0
    assert absolute_sincos_embedding(8, 2, cls_token=False).shape == (4, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        absolute_sincos_embedding(6, 2)


def test_relative_geometry_numbers():
    g = relative_geometry((10, 20, 100, 50), (30, 5, 50, 100), True, False, width=300)
    np.testing.assert_allclose(g.numpy(), [0.2, -0.3, 0.5, 2.0, 1.0, (300 - 20 - 5) / 50], rtol=1e-6)
    assert relative_geometry((0, 0, 1, 1), (0, 0, 1, 1), True, True, 1)[4] == 0.0
    with pytest.raises(ValueError, match="positive"):
        relative_geometry((0, 0, 0, 1), (0, 0, 1, 1), False, False, 1)


def test_identity_views_give_absolute_table():
    D, G = 64, 7
    same = torch.stack([relative_geometry((5, 9, 40, 60), (5, 9, 40, 60), f, f, 200) for f in (False, True)])
    e = relative_sincos_embedding(same, D, G)
    assert e.shape == (2, G * G, 2 * D) and e.dtype == torch.float32
    table = absolute_sincos_embedding(D, G)[1:]
    for b in range(2):
        torch.testing.assert_close(e[b, :, :D], table, atol=2e-6, rtol=0)
        s = e[b, :, D:].reshape(G * G, 4, D // 4)
        assert torch.equal(s[:, 0], torch.zeros_like(s[:, 0])) and torch.equal(s[:, 1], torch.ones_like(s[:, 1]))


def test_mirrored_box_with_one_flip_reverses_columns():
    D, G, W = 32, 4, 120
    i1, j1, h1, w1 = 10, 17, 48, 40
    geo = relative_geometry((i1, j1, h1, w1), (i1, W - j1 - w1, h1, w1), False, True, W)[None]
    e = relative_sincos_embedding(geo, D, G)[0, :, :D].reshape(G, G, D)
    table = absolute_sincos_embedding(D, G)[1:].reshape(G, G, D)
    torch.testing.assert_close(e, table.flip(1), atol=2e-6, rtol=0)


def test_shift_and_scale_move_the_grid():
    G = 4
    # view 2 = view 1 moved right by one patch width (w1/G) and down by two patch heights
    geo = relative_geometry((0, 0, 40, 80), (20, 20, 40, 80), False, False, 200)[None]
    y, x = view2_centres_in_view1(geo, G)
    r, c = torch.arange(G).repeat_interleave(G).float(), torch.arange(G).repeat(G).float()
    torch.testing.assert_close(y[0], r + 2) and torch.testing.assert_close(x[0], c + 1)
    # view 2 twice as tall, same top: centres at 2r + 1/2 in view-1 rows
    geo = relative_geometry((0, 0, 40, 80), (0, 0, 80, 80), False, False, 200)[None]
    y, x = view2_centres_in_view1(geo, G)
    torch.testing.assert_close(y[0], 2 * r + 0.5)
    torch.testing.assert_close(x[0], c)
    e = relative_sincos_embedding(geo, 16, G)[0]
    torch.testing.assert_close(e[0, 16:20], torch.sin(10 * math.log(2.0) * 10000.0 ** (-torch.arange(4) / 4.0)))


def _original_pixel(i, j, h, w, flip, W, rr, cc, G):
    """Original-image (row, col) of grid point (rr, cc) (grid units) of a crop box in a possibly flipped frame."""
    row = i + (rr + 0.5) * h / G
    col = j + (cc + 0.5) * w / G
    return row, (W - col if flip else col)


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_to_original_pixels(seed):
    """A view-2 patch centre and its mapped view-1 position land on the same original pixel (any flips)."""
    rs = np.random.default_rng(seed)
    H, W, G = 300, 451, 7
    for _ in range(20):
        boxes = []
        for _ in range(2):
            h, w = rs.integers(20, H), rs.integers(20, W)
            boxes.append((rs.integers(0, H - h + 1), rs.integers(0, W - w + 1), h, w))
        f1, f2 = bool(rs.integers(2)), bool(rs.integers(2))
        geo = relative_geometry(boxes[0], boxes[1], f1, f2, W)[None].double()
        y, x = view2_centres_in_view1(geo, G)
        r, c = np.arange(G).repeat(G), np.tile(np.arange(G), G)
        want = _original_pixel(*boxes[1], f2, W, r, c, G)
        got = _original_pixel(*boxes[0], f1, W, y[0].numpy(), x[0].numpy(), G)
        np.testing.assert_allclose(got[0], want[0], atol=1e-3)
        np.testing.assert_allclose(got[1], want[1], atol=1e-3)


def test_paired_crops_show_the_mapped_content():
    """On an image whose colour encodes its original coordinates, view 2's patch centres and the mapped view-1
    positions show the same colour (flips and crops of the real PIL pipeline)."""
    H, W, S, G = 180, 270, 64, 8
    yy, xx = np.mgrid[0:H, 0:W]
    img = Image.fromarray(np.stack([xx * 255 / (W - 1), yy * 255 / (H - 1), np.zeros_like(xx)], -1).astype(np.uint8))
    crop = PairedViewCrop(S, scale=(0.3, 1.0))
    torch.manual_seed(0)
    checked = 0
    for _ in range(30):
        v1, v2, geo = crop(img)
        a1, a2 = np.asarray(v1, np.float64), np.asarray(v2, np.float64)
        y, x = view2_centres_in_view1(geo[None], G)
        p = S / G
        for k in range(G * G):
            r, c = divmod(k, G)
            py, px = (float(y[0, k]) + 0.5) * p - 0.5, (float(x[0, k]) + 0.5) * p - 0.5  # pixel coordinates in v1
            if 2 <= py <= S - 3 and 2 <= px <= S - 3:
                want = a2[int(round((r + 0.5) * p - 0.5)), int(round((c + 0.5) * p - 0.5)), :2]
                got = a1[int(round(py)), int(round(px)), :2]
                assert np.abs(got - want).max() <= 8, (geo, k, got, want)
                checked += 1
    assert checked > 200


def test_paired_crop_rng_order_and_determinism():
    img = Image.new("RGB", (97, 61), (10, 20, 30))
    crop = PairedViewCrop(32)
    torch.manual_seed(5)
    a = crop(img)[2]
    torch.manual_seed(5)
    flips = [bool(torch.rand(1) < 0.5), bool(torch.rand(1) < 0.5)]  # the first two draws are the flips
    torch.manual_seed(5)
    b = crop(img)[2]
    assert torch.equal(a, b) and a[4].item() == float(flips[0] != flips[1])


def test_embedding_follows_device_and_meta():
    geo = torch.tensor([[0.1, -0.2, 1.5, 0.7, 1.0, 0.4]])
    out = relative_sincos_embedding(geo.to("meta"), 32, 4)
    assert out.device.type == "meta" and out.shape == (1, 16, 64)
    assert relative_sincos_embedding(geo.double(), 32, 4).dtype == torch.float32


def test_byol_color_transform_seeded():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    import random
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        random.seed(1)
        outs.append(np.asarray(byol_color_transform(1.0, 0.2)(img)))
    assert np.array_equal(*outs) and not np.array_equal(outs[0], np.asarray(img))
    assert len(byol_color_transform(0.1, 0.0).transforms) == 3
