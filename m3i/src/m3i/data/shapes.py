"""Tiny captioned shapes: the embedded data of the CPU runs (spec m3i.md section 8).

Each ``S x S`` RGB image (default 32) holds one shape: 5 kinds (circle, square, triangle, cross, ring) x 2 colours
(red, blue) = 10 classes, at a random position, in one of 3 sizes, on one of 4 background textures (plain,
striped, dotted, checkered) of a random muted colour, with Gaussian pixel noise. Every attribute is known
exactly, so the data carry three kinds of signal:

- a **label** (``kind * 2 + colour``, 10 classes);
- a **caption** built from templates, e.g. "a small red ring on a striped background in the top left", which
  also names the size, the background and the position quadrant (each phrase present with probability 0.8,
  two word orders), i.e. information the label does not encode;
- **pixels**, and the exact foreground mask of the shape (the dense probe's target).

One fixed seed generates 4000 images in well under a second (numpy, vectorised over images): 2000 for
pre-training, 1000 to fit the probes, 1000 to test them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["KINDS", "COLOURS", "SIZES", "BACKGROUNDS", "QUADRANTS", "VOCAB", "SPLITS", "ShapesData", "make_shapes",
           "shapes_split"]

KINDS = ("circle", "square", "triangle", "cross", "ring")
COLOURS = ("red", "blue")
SIZES = ("small", "medium", "large")
BACKGROUNDS = ("plain", "striped", "dotted", "checkered")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
_TEMPLATE_WORDS = ("a", "on", "background", "in", "the", "there", "is", "with")
#: every word a caption can contain (the tiny text tower's vocabulary)
VOCAB = tuple(sorted(set(_TEMPLATE_WORDS + KINDS + COLOURS + SIZES + BACKGROUNDS
                         + tuple(w for q in QUADRANTS for w in q.split()))))
#: split name -> (first index, count) in the generated set
SPLITS = {"train": (0, 2000), "probe_train": (2000, 1000), "probe_test": (3000, 1000)}

_RADII = ((5.0, 6.5), (7.0, 8.5), (9.0, 10.5))  # size buckets, in pixels at S = 32 (scaled with S)


@dataclass(frozen=True)
class ShapesData:
    """Arrays of ``n`` images: ``images`` uint8 ``(n, S, S, 3)``; ``masks`` bool ``(n, S, S)`` (the shape);
    ``labels``, ``kind``, ``colour``, ``size``, ``background``, ``quadrant`` int64 ``(n,)``; ``captions``."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    kind: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    background: np.ndarray
    quadrant: np.ndarray
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, start: int, count: int) -> "ShapesData":
        sl = slice(start, start + count)
        return ShapesData(self.images[sl], self.masks[sl], self.labels[sl], self.kind[sl], self.colour[sl],
                          self.size[sl], self.background[sl], self.quadrant[sl], self.captions[sl])


def _shape_masks(kind, dx, dy, r):
    """Boolean ``(n, S, S)`` masks of each image's shape, from pixel offsets to its centre ``dx, dy``."""
    ax, ay, d2 = np.abs(dx), np.abs(dy), dx ** 2 + dy ** 2
    masks = np.stack([
        d2 <= r ** 2,                                                        # circle
        np.maximum(ax, ay) <= 0.85 * r,                                      # square
        (dy >= -r) & (dy <= 0.8 * r) & (ax <= (dy + r) / 1.8),               # triangle (apex up)
        ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r)),           # cross
        (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2),                            # ring
    ])
    return np.take_along_axis(masks, kind[None, :, None, None], axis=0)[0]


def _captions(rng, kind, colour, size, background, quadrant) -> tuple[str, ...]:
    keep = rng.random((len(kind), 3)) < 0.8           # size / background / position phrases
    order = rng.random(len(kind)) < 0.5
    out = []
    for i in range(len(kind)):
        noun = " ".join(([SIZES[size[i]]] if keep[i, 0] else []) + [COLOURS[colour[i]], KINDS[kind[i]]])
        bg = f" on a {BACKGROUNDS[background[i]]} background" if keep[i, 1] else ""
        pos = f" in the {QUADRANTS[quadrant[i]]}" if keep[i, 2] else ""
        out.append(f"there is a {noun}{pos}{bg}" if order[i] else f"a {noun}{bg}{pos}")
    return tuple(out)


@lru_cache(maxsize=4)
def make_shapes(n: int = 4000, size: int = 32, seed: int = 0, noise: float = 6.0) -> ShapesData:
    """Generate ``n`` captioned shape images of ``size x size`` pixels from ``seed`` (module docstring).

    Raises:
        ValueError: ``size < 16`` (the smallest shapes would vanish) or ``n < 1``.
    """
    if size < 16 or n < 1:
        raise ValueError(f"shapes need size >= 16 and n >= 1, got size={size}, n={n}")
    rng = np.random.default_rng(seed)
    s = float(size)
    kind, colour = rng.integers(0, 5, n), rng.integers(0, 2, n)
    size_b, background, quadrant = rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 4, n)
    lo = np.array([r[0] for r in _RADII])[size_b] * s / 32
    hi = np.array([r[1] for r in _RADII])[size_b] * s / 32
    r = lo + (hi - lo) * rng.random(n)
    # centre inside its quadrant and far enough from the border for the shape to fit
    half = s / 2
    qx, qy = quadrant % 2, quadrant // 2
    low_half = rng.uniform(r + 1, np.maximum(r + 1, half - 1))      # drawn for every image (a fixed RNG order)
    high_half = rng.uniform(np.minimum(s - r - 1, half + 1), s - r - 1)
    cx = np.where(qx == 0, low_half, high_half)
    low_half = rng.uniform(r + 1, np.maximum(r + 1, half - 1))
    high_half = rng.uniform(np.minimum(s - r - 1, half + 1), s - r - 1)
    cy = np.where(qy == 0, low_half, high_half)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx = xx[None] - cx[:, None, None].astype(np.float32)
    dy = yy[None] - cy[:, None, None].astype(np.float32)
    masks = _shape_masks(kind, dx, dy, r[:, None, None].astype(np.float32))
    # backgrounds: a muted base colour and a pattern in a shifted shade
    base = rng.uniform(60, 190, (n, 1, 1, 3)).astype(np.float32)
    shade = base + rng.choice([-45.0, 45.0], (n, 1, 1, 1)).astype(np.float32)
    period = rng.integers(4, 7, n)[:, None, None]
    vertical = rng.random(n)[:, None, None] < 0.5
    coord = np.where(vertical, xx[None], yy[None])
    pattern = np.stack([
        np.zeros((n, size, size), bool),                                          # plain
        (np.floor(coord / period) % 2) == 1,                                      # striped
        ((xx[None] % period) < 1.5) & ((yy[None] % period) < 1.5),                # dotted
        ((np.floor(xx[None] / period) + np.floor(yy[None] / period)) % 2) == 1,  # checkered
    ])
    pattern = np.take_along_axis(pattern, background[None, :, None, None], axis=0)[0]
    img = np.where(pattern[..., None], shade, base)
    fg = np.where((colour == 0)[:, None], rng.uniform([200, 0, 0], [255, 60, 60], (n, 3)),
                  rng.uniform([0, 20, 200], [60, 90, 255], (n, 3)))
    img = np.where(masks[..., None], fg[:, None, None, :].astype(np.float32), img)
    img += noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    captions = _captions(rng, kind, colour, size_b, background, quadrant)
    return ShapesData(img, masks, (kind * 2 + colour).astype(np.int64), kind, colour, size_b, background, quadrant,
                      captions)


def shapes_split(split: str, size: int = 32, seed: int = 0) -> ShapesData:
    """One split of the fixed set (:data:`SPLITS`: train 2000, probe_train 1000, probe_test 1000).

    Raises:
        ValueError: an unknown split (lists the known ones).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; known: {', '.join(SPLITS)}")
    total = max(a + b for a, b in SPLITS.values())
    return make_shapes(total, size, seed).subset(*SPLITS[split])
