"""Auto Seg-Loss (Li et al., ICLR 2021): searched metric surrogates for semantic segmentation.

Modules:
- :mod:`.metrics` -- the exact evaluator of the six metrics (mIoU, FWIoU, mAcc, gAcc, BIoU, BF1).
- :mod:`.ops.bezier` -- the piecewise quadratic Bezier curve h (reference, piece-select, lookup table).
- :mod:`.ops.morphology` -- erosion / dilation / boundary maps used by BIoU and BF1.
- :mod:`.losses` -- the surrogates and :class:`~.losses.AutoSegLoss` (1 - surrogate).
- :mod:`.search` -- truncated-normal policy and the PPO search of the curve parameters.
- :mod:`.models` -- DeepLabv3+ (ResNet-V1c, output stride 8) with an auxiliary FCN head.
"""

__version__ = "0.1.0"
