"""Procedural shape scenes with exact labels, exported in COCO format and as semantic label maps.

Each image holds 1..``max_objects`` circles, squares and triangles of random colour, size
(``min_scale``..``max_scale`` of the image side), rotation and position over a noisy gradient
background. Later shapes occlude earlier ones, but a placement is rejected if it would hide more
than ``1 - min_visible`` of any earlier shape, so every painted shape stays recognisable and is
labelled by its *visible* mask. Colour carries no class information: the class is the shape.

Layout written by :func:`make_shapes_dataset`::

    root/annotations/instances_<split>.json   COCO instances (bbox xywh, RLE masks, area, iscrowd=0)
    root/<split>/images/000000.png            RGB images
    root/<split>/semseg/000000.png            uint8 label maps: 0 background, k = category id
    root/<split>/manifest.json                generation parameters; written last (completion mark)
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..fsio import atomic_write_text

SHAPE_CLASSES = ("circle", "square", "triangle")  # COCO category ids 1, 2, 3
_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class ShapesPaths:
    """Where one split of a shapes dataset lives."""

    root: Path
    split: str
    image_dir: Path
    ann_file: Path
    semseg_dir: Path
    num_images: int


def _shape_mask(kind: int, cx: float, cy: float, s: float, theta: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of one shape; ``s`` is the circumradius in pixels."""
    dx, dy = xx - cx, yy - cy
    if kind == 1:  # circle
        return dx * dx + dy * dy <= s * s
    c, si = np.cos(theta), np.sin(theta)
    if kind == 2:  # square, half side s/sqrt(2) so that s is its circumradius
        u, v = dx * c + dy * si, -dx * si + dy * c
        h = s / np.sqrt(2.0)
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    # equilateral triangle: inside iff on the same side of all three edges
    ang = theta + np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    vx, vy = cx + s * np.cos(ang), cy + s * np.sin(ang)
    inside = np.ones_like(dx, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        cross = (vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i])
        inside &= cross >= 0
    return inside


def render_scene(
    rng: np.random.Generator,
    image_size: int = 128,
    max_objects: int = 5,
    min_scale: float = 0.08,
    max_scale: float = 0.3,
    min_visible: float = 0.6,
    min_area: int = 30,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Render one scene.

    Args:
        rng: the random generator (the scene is a pure function of its state).
        image_size: side length H = W.
        max_objects: upper bound of the number of shapes (at least one is placed).
        min_scale, max_scale: circumradius range as a fraction of ``image_size``.
        min_visible: every shape keeps at least this fraction of its own area visible.
        min_area: smallest shape area in pixels.

    Returns:
        ``image`` uint8 (H, W, 3); ``instances`` int32 (H, W) with 0 = background and k = the k-th
        shape (1-based); ``categories`` list of the category id (1..3) of each shape.
    """
    h = w = image_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    base = rng.uniform(0, 90, size=3)
    grad = rng.uniform(-40, 40, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((xx * np.cos(direction) + yy * np.sin(direction)) / image_size)[..., None]
    image = base + grad * ramp
    instances = np.zeros((h, w), np.int32)
    full_area: list[int] = []
    categories: list[int] = []
    target = int(rng.integers(1, max_objects + 1))
    for _ in range(target * 20):
        if len(categories) == target:
            break
        kind = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        s = rng.uniform(min_scale, max_scale) * image_size
        cx, cy = rng.uniform(0.1, 0.9, size=2) * image_size
        mask = _shape_mask(kind, cx, cy, s, rng.uniform(0, 2 * np.pi), yy, xx)
        area = int(mask.sum())
        if area < min_area:
            continue
        ids, counts = np.unique(instances[~mask], return_counts=True)
        remaining = dict(zip(ids.tolist(), counts.tolist()))
        if any(remaining.get(k + 1, 0) < min_visible * full_area[k] for k in range(len(categories))):
            continue
        instances[mask] = len(categories) + 1
        image[mask] = rng.uniform(110, 255, size=3)
        full_area.append(area)
        categories.append(kind)
    image = image + rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), instances, categories


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_annotations(instances: np.ndarray, categories: list[int], image_id: int, first_ann_id: int) -> list[dict]:
    anns = []
    for k, cat in enumerate(categories, 1):
        mask = instances == k
        rows, cols = np.nonzero(mask)
        x0, y0 = int(cols.min()), int(rows.min())
        bw, bh = int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1
        anns.append({
            "id": first_ann_id + len(anns),
            "image_id": image_id,
            "category_id": int(cat),
            "bbox": [float(x0), float(y0), float(bw), float(bh)],
            "area": float(mask.sum()),
            "segmentation": _rle(mask),
            "iscrowd": 0,
        })
    return anns


def make_shapes_dataset(
    root: str | Path,
    split: str = "train",
    num_images: int = 64,
    image_size: int = 128,
    seed: int = 0,
    max_objects: int = 5,
) -> ShapesPaths:
    """Generate (or reuse) one split of a shapes dataset under ``root``.

    The split is a pure function of ``(seed, split, num_images, image_size, max_objects)``; if the
    folder already holds a complete split made with the same parameters it is reused as is.
    Different split names give different scenes for the same seed.
    """
    from PIL import Image

    if num_images < 1 or image_size < 16 or max_objects < 1:
        raise ValueError(
            f"need num_images >= 1, image_size >= 16, max_objects >= 1; got {num_images}, {image_size}, {max_objects}"
        )
    root = Path(root)
    split_dir = root / split
    paths = ShapesPaths(root, split, split_dir / "images", root / "annotations" / f"instances_{split}.json",
                        split_dir / "semseg", num_images)
    params = {"version": _GENERATOR_VERSION, "seed": seed, "num_images": num_images,
              "image_size": image_size, "max_objects": max_objects}
    manifest = split_dir / "manifest.json"
    if manifest.is_file() and paths.ann_file.is_file():
        if json.loads(manifest.read_text()).get("params") == params:
            return paths
    manifest.unlink(missing_ok=True)
    for d in (paths.image_dir, paths.semseg_dir, paths.ann_file.parent):
        d.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    images, annotations = [], []
    for image_id in range(num_images):
        image, instances, cats = render_scene(rng, image_size, max_objects)
        name = f"{image_id:06d}.png"
        Image.fromarray(image).save(paths.image_dir / name)
        semantic = np.zeros_like(instances, dtype=np.uint8)
        for k, cat in enumerate(cats, 1):
            semantic[instances == k] = cat
        Image.fromarray(semantic).save(paths.semseg_dir / name)
        images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
        annotations += _coco_annotations(instances, cats, image_id, len(annotations) + 1)
    coco = {
        "info": {"description": f"repro_shared procedural shapes, split {split}", "version": str(_GENERATOR_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES, 1)],
    }
    atomic_write_text(paths.ann_file, json.dumps(coco))
    atomic_write_text(manifest, json.dumps({"params": params, "paths": {k: str(v) for k, v in asdict(paths).items()}}))
    return paths
