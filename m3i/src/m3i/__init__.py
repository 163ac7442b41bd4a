"""M3I pre-training (Su et al., CVPR 2023: one-stage multi-modal mutual-information pre-training) and the
InternImage backbone with its DCNv3 operator, as a reproducible PyTorch package (reconstruction: no M3I
code was released; see the README for what is verified and what is a documented decision)."""

__version__ = "0.1.0"
