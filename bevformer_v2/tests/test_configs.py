"""Every experiment (paper-row) config composes, also through the entry point's ``--cfg job``, names its initial
weights and is refused without them before anything is built; the released R50 configs have the official
parameter counts (spec §2.9); the Tab. 5 / Tab. 6 rows build the models they describe."""
import contextlib
import io
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

import bevformer_v2
from bevformer_v2.cli import build_model

EXPERIMENTS = sorted(p.stem for p in (Path(bevformer_v2.__file__).parent / "configs" / "experiment").glob("*.yaml"))


def _cfg(exp, name="train", overrides=()):
    with initialize_config_module("bevformer_v2.configs", version_base=None):
        return compose(name, overrides=[f"experiment={exp}", *overrides])


def test_every_table_row_has_a_config():
    for row in ("tab5_r50_detr3d_deformable_detr", "tab5_r50_detr3d_group_detr", "tab6_r50_temporal_pers",
                "tab6_r50_temporal_ida", "tab6_r50_temporal_long", "tab6_r50_temporal_bidir",
                "tab6_r50_temporal_bidir_no_persp"):
        assert row in EXPERIMENTS


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_composes_and_requires_its_initial_weights(exp):
    cfg = _cfg(exp)
    assert cfg.data.kind == "nuscenes" and cfg.train.epochs in (24, 48, 72) and cfg.train.grad_clip == 35.0
    assert cfg.init.required is True and cfg.init.path and cfg.init.source and cfg.init.converter
    if cfg.model.backbone.startswith("resnet"):
        assert cfg.model.backbone.endswith("_caffe")  # official caffe style, so the COCO FCOS weights fit
    assert _cfg(exp, "eval").model.backbone == cfg.model.backbone  # bevformer-v2-eval takes the same rows


def test_every_experiment_prints_with_cfg_job():
    """``bevformer-v2-train experiment=<row> --cfg job`` for every row, in one process (Hydra's own CLI path)."""
    from bevformer_v2.cli import train

    argv = sys.argv
    try:
        for exp in EXPERIMENTS:
            sys.argv = ["bevformer-v2-train", "--cfg", "job", f"experiment={exp}"]
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                train()
            job = yaml.safe_load(buf.getvalue())
            assert job["init"]["required"] is True and job["data"]["kind"] == "nuscenes", exp
    finally:
        sys.argv = argv


def test_missing_initial_weights_stop_the_run_before_anything_is_built(tmp_path, run_entry, monkeypatch):
    import bevformer_v2.cli as cli

    def must_not_run(*a, **k):
        raise AssertionError("data or model were built before the init check")

    monkeypatch.setattr(cli, "prepare_data", must_not_run)
    monkeypatch.setattr(cli, "build_model", must_not_run)
    msg = run_entry(cli.train, "experiment=r50_t1_base_24ep", f"hydra.run.dir={tmp_path / 'r'}", "device=cpu")
    assert msg.startswith("error: ") and "init.path='ckpts/fcos_r50_coco.pt' is not a file" in msg, msg
    assert "fcos_r50_coco_2mmdet.pth" in msg and "bevformer-v2-convert" in msg


@pytest.mark.parametrize("exp,inference,training", [("r50_t1_base_24ep", 48.8, 56.2), ("r50_t1_24ep", 53.4, 60.8),
                                                    ("r50_t2_24ep", 67.7, 75.1), ("r50_t8_24ep", 84.2, 91.6)])
def test_official_parameter_counts(exp, inference, training):
    cfg = _cfg(exp)
    m = build_model(cfg.model, cfg.data.frames)
    total = sum(p.numel() for p in m.parameters()) / 1e6
    dd3d = sum(p.numel() for p in m.fcos3d_bbox_head.parameters()) / 1e6
    assert round(total - dd3d, 1) == inference and round(total, 1) == training


SMALL = ["model.head.bev_h=8", "model.head.bev_w=8", "model.head.num_query=20", "model.detr3d.num_query=20"]


def test_table_5_and_6_rows_build_what_they_describe():
    m = build_model(*(lambda c: (c.model, c.data.frames))(_cfg("tab5_r50_detr3d_group_detr", overrides=SMALL)))
    assert hasattr(m, "detr3d_head") and not hasattr(m, "fcos3d_bbox_head")
    assert m.pts_bbox_head.group_detr == 11 and len(m.detr3d_head.transformer.decoder.layers) == 6
    c = _cfg("tab6_r50_temporal_bidir", overrides=SMALL)
    m = build_model(c.model, c.data.frames)
    assert m.frames == (-4, 0, 4) and m.cur == 1 and m.temporal_mode == "warp" and c.data.flip and not c.data.bda
    c = _cfg("tab6_r50_temporal_bidir_no_persp", overrides=SMALL)
    assert not c.model.perspective and c.train.lambda_pers == 0.0
