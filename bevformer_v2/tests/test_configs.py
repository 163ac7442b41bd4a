"""Every experiment config composes; the released R50 configs have the official parameter counts (spec §2.9)."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import bevformer_v2
from bevformer_v2.cli import build_model

EXPERIMENTS = sorted(p.stem for p in (Path(bevformer_v2.__file__).parent / "configs" / "experiment").glob("*.yaml"))


def _cfg(exp):
    with initialize_config_module("bevformer_v2.configs", version_base=None):
        return compose("train", overrides=[f"experiment={exp}"])


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_composes(exp):
    cfg = _cfg(exp)
    assert cfg.data.kind == "nuscenes" and cfg.train.epochs in (24, 48, 72) and cfg.train.grad_clip == 35.0


@pytest.mark.parametrize("exp,inference,training", [("r50_t1_base_24ep", 48.8, 56.2), ("r50_t1_24ep", 53.4, 60.8),
                                                    ("r50_t2_24ep", 67.7, 75.1), ("r50_t8_24ep", 84.2, 91.6)])
def test_official_parameter_counts(exp, inference, training):
    cfg = _cfg(exp)
    m = build_model(cfg.model, cfg.data.frames)
    total = sum(p.numel() for p in m.parameters()) / 1e6
    dd3d = sum(p.numel() for p in m.fcos3d_bbox_head.parameters()) / 1e6
    assert round(total - dd3d, 1) == inference and round(total, 1) == training
