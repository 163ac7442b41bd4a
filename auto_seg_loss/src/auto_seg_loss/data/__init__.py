"""Dataset readers: the embedded shapes scenes (default), PASCAL VOC 2012 (+SBD aug), Cityscapes."""

from .datasets import CityscapesDataset, VOCAugDataset, build_dataset, data_root
from .shapes import ShapesSegDataset

__all__ = ["CityscapesDataset", "ShapesSegDataset", "VOCAugDataset", "build_dataset", "data_root"]
