"""Embedded default datasets: real small data shipped with a dependency, or generated with exact labels.

- :mod:`.digits`: sklearn's 8x8 handwritten digits (1,797 images, 10 classes) as an image
  classification set at any resolution, with a fixed stratified train/val split.
- :mod:`.shapes`: procedurally generated scenes of circles, squares and triangles with exact
  instance masks, exported in COCO format (boxes + RLE masks) and as semantic label maps.
"""

from .digits import DIGITS_NUM_CLASSES, DigitsDataset, load_digits
from .shapes import SHAPE_CLASSES, ShapesPaths, make_shapes_dataset, render_scene

__all__ = [
    "DIGITS_NUM_CLASSES",
    "DigitsDataset",
    "load_digits",
    "SHAPE_CLASSES",
    "ShapesPaths",
    "make_shapes_dataset",
    "render_scene",
]
