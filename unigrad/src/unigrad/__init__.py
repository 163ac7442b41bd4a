"""UniGrad: the unified gradient of siamese self-supervised learning (Tao et al., CVPR 2022)."""

__version__ = "0.1.0"
