"""De-focus Attention Networks: 1D causal vision Mamba with learnable bandpass filters."""

__version__ = "0.1.0"
