"""Released searched PAP-loss parameters (official ``configs/paploss/*.py``; spec §3.4).

Rows are in the official code order ``H2, I2, I3, I1, H1``; each row is ``x0,y0,...,x5,y5``.
``reg_weight`` is the box-gradient multiplier lambda of the ``GradScale`` op.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ops.piecewise import validate_ctrl_points

@dataclass(frozen=True)
class PAPPreset:
    ctrl_points: tuple[tuple[float, ...], ...]  # (5, 12)
    reg_weight: float
    source: str


_RETINANET = (
    (0.0, 0.0, 0.4182, 0.0277, 0.4948, 0.2187, 0.6882, 0.2624, 0.8020, 0.6688, 1.0, 1.0),
    (0.0, 0.0, 0.1279, 0.3696, 0.3056, 0.4708, 0.5198, 0.5290, 0.6983, 0.6709, 1.0, 1.0),
    (0.0, 0.0, 0.0931, 0.0289, 0.3607, 0.5585, 0.4823, 0.7131, 0.6291, 0.8162, 1.0, 1.0),
    (0.0, 0.0, 0.4914, 0.1499, 0.5492, 0.1664, 0.6259, 0.3051, 0.7945, 0.6195, 1.0, 1.0),
    (0.0, 0.0, 0.4130, 0.0798, 0.4356, 0.3571, 0.5361, 0.7063, 0.8097, 0.9083, 1.0, 1.0),
)
_FRCNN_RPN = (
    (0.0, 0.0, 0.9058, 0.0484, 0.9068, 0.5120, 0.9232, 0.7286, 0.9766, 0.9677, 1.0, 1.0),
    (0.0, 0.0, 0.3200, 0.1084, 0.3493, 0.2482, 0.4924, 0.3869, 0.7231, 0.6510, 1.0, 1.0),
    (0.0, 0.0, 0.0935, 0.0419, 0.2177, 0.1168, 0.5857, 0.3748, 0.7962, 0.6683, 1.0, 1.0),
    (0.0, 0.0, 0.0045, 0.3599, 0.1295, 0.4603, 0.7662, 0.5140, 0.8483, 0.5259, 1.0, 1.0),
    (0.0, 0.0, 0.1764, 0.1081, 0.5245, 0.4907, 0.6956, 0.5668, 0.7642, 0.8645, 1.0, 1.0),
)
_FRCNN_ROI = (
    (0.0, 0.0, 0.3344, 0.0268, 0.5460, 0.2461, 0.8196, 0.6466, 0.9467, 0.8617, 1.0, 1.0),
    (0.0, 0.0, 0.0978, 0.2019, 0.4073, 0.3367, 0.6337, 0.4689, 0.7708, 0.6633, 1.0, 1.0),
    (0.0, 0.0, 0.2406, 0.0515, 0.3358, 0.5259, 0.6047, 0.6647, 0.8575, 0.7792, 1.0, 1.0),
    (0.0, 0.0, 0.2574, 0.2363, 0.5442, 0.5999, 0.7165, 0.6548, 0.8728, 0.8331, 1.0, 1.0),
    (0.0, 0.0, 0.1551, 0.2675, 0.4902, 0.3957, 0.7245, 0.5095, 0.8068, 0.8720, 1.0, 1.0),
)


# the search initialisation (spec §3.3; image of ``IDENTITY_THETA`` under ``theta_to_ctrl``)
IDENTITY_ROW = (0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0)


PRESETS: dict[str, PAPPreset] = {
    "retinanet": PAPPreset(_RETINANET, 4.1231, "configs/paploss/paploss_retinanet_r50_fpn.py"),
    "faster_rcnn_rpn": PAPPreset(_FRCNN_RPN, 1.6950, "configs/paploss/paploss_fasterrcnn_r50_fpn.py (rpn_head)"),
    "faster_rcnn_roi": PAPPreset(_FRCNN_ROI, 7.1324, "configs/paploss/paploss_fasterrcnn_r50_fpn.py (bbox_head)"),
    "identity": PAPPreset((IDENTITY_ROW,) * 5, 1.0, "search initialisation (= loss_form 'linear', lambda 1)"),
}


def get_preset(name: str) -> PAPPreset:
    """Look up a preset by name; unknown names raise ``ValueError`` listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown PAP-loss preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    validate_ctrl_points(preset.ctrl_points, name=f"preset {name}")
    return preset
