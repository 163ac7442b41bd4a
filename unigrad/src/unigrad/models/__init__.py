"""Networks: encoders (torchvision ResNets in the official Sequential layout, a tiny CNN), the siamese network
with its projector and momentum copies, and the converter for official checkpoints."""

from .encoders import ENCODERS, TinyCNN, build_encoder
from .siamese import SiameseNet, SiameseOutput, prediction_mlp, projection_mlp

__all__ = ["ENCODERS", "TinyCNN", "build_encoder", "SiameseNet", "SiameseOutput", "prediction_mlp", "projection_mlp"]
