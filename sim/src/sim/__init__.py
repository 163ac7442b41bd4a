"""SiameseIM: Siamese Image Modeling for self-supervised vision representation learning (Tao et al., CVPR 2023).

Modules: :mod:`sim.models` (the SiameseIM pre-training model, downstream ViT classifiers),
:mod:`sim.losses` (the objective), :mod:`sim.data` (two-view pre-training data, classification data),
:mod:`sim.engine` (training / evaluation loops), :mod:`sim.probe` (frozen-feature probes),
:mod:`sim.convert` (official checkpoints -> ours / timm / dense layouts), :mod:`sim.cli` (entry points).
"""

__version__ = "0.1.0"
