"""nn.Modules only: the VQ tokenizer, the MAGE token predictor, the ADDP network."""

from .addp import ADDP, ADDP_VARIANTS, build_addp
from .mage import MAGE, MAGE_VARIANTS, build_mage
from .vqgan import VQGAN, VQGAN_PRESETS, VQGANConfig, build_vqgan

__all__ = ["ADDP", "ADDP_VARIANTS", "build_addp", "MAGE", "MAGE_VARIANTS", "build_mage", "VQGAN", "VQGAN_PRESETS",
           "VQGANConfig", "build_vqgan"]
