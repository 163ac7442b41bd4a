"""ADDP: alternating denoising diffusion between pixels and VQ tokens (Tian et al., ICLR 2024)."""

__version__ = "0.1.0"
