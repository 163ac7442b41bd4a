"""BEVFormer v2: BEV 3D detection with perspective supervision (CVPR 2023) in plain PyTorch."""
__version__ = "0.1.0"
