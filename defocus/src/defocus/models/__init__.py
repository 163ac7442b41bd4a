"""Models: De-focus Mamba blocks, classifier variants, official-checkpoint converter."""

from .defocus_mamba import VARIANTS, DefocusMamba, build_model
from .mixer import DefocusMambaBlock, DefocusMambaMixer, MixerConfig

__all__ = ["VARIANTS", "DefocusMamba", "build_model", "DefocusMambaBlock", "DefocusMambaMixer", "MixerConfig"]
