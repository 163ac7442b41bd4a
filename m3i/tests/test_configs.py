"""Paper-row configs: every experiment composes with its entry point, carries the recipe values of the spec /
official YAMLs, and the rows that need weights refuse to start without them."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from repro_shared.run import check_required_init

EXP = Path(__file__).resolve().parents[1] / "src" / "m3i" / "configs" / "experiment"
ENTRY = {"pretrain": "pretrain", "tiny": "pretrain", "finetune": "finetune", "linprobe": "linprobe"}
ROWS = sorted(f"{p.parent.name}/{p.stem}" for p in EXP.glob("*/*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    with initialize_config_module("m3i.configs", version_base=None):  # once per module: compose is then cheap
        yield


def row(name, extra=()):
    return compose(ENTRY[name.split("/")[0]], overrides=[f"experiment={name}", *extra])


@pytest.mark.parametrize("name", ROWS)
def test_every_row_composes_and_resolves(name):
    cfg = row(name)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # every interpolation resolves
    assert cfg.device == "auto"
    # real-data rows have no default data path: pre-training sources are mandatory (???), classification rows
    # leave data.root unset (the reader then names the key and the expected layout)
    if name.startswith("pretrain"):
        for src in cfg.data.sources:
            assert OmegaConf.is_missing(src, "root" if src.kind == "imagefolder" else "shards")
    elif not name.startswith("tiny"):
        assert cfg.data.name == "imagefolder" and cfg.data.root is None


@pytest.mark.parametrize("name", [r for r in ROWS if not r.startswith("tiny")])
def test_paper_rows_do_not_inherit_the_tiny_backbone_overrides(name):
    """The default configs shrink the tiny ViT with ``model.overrides`` (D 64, 4 heads); a row's ``overrides: {}``
    would merge with (keep) them, so paper rows set it to null and build the published widths."""
    assert not row(name).model.get("overrides")


def test_vit_b_row_builds_the_published_vit_b():
    import torch

    from m3i.tasks.common import build_backbone

    c = row("pretrain/vit_b_in1k_m3i")
    with torch.device("meta"):
        bb = build_backbone(c.model, int(c.data.input_size))
    assert (bb.embed_dim, len(bb.blocks), bb.blocks[0].attn.num_heads) == (768, 12, 12)


def test_internimage_h_640_row_has_the_official_recipe():
    c = row("finetune/internimage_h_22kto1k_640")
    assert (c.model.variant, c.model.drop_path_rate, c.model.with_cp, c.data.input_size) == ("h", 0.2, True, 640)
    t, a = c.train, c.aug
    assert (t.recipe, t.epochs, t.warmup_epochs, t.blr, t.weight_decay, t.layer_decay, t.dcn_lr_mul, t.clip_grad,
            t.ema) == ("internimage", 20, 2, 2e-5, 0.05, 0.9, 0.1, 5.0, 0.9999)
    assert (a.smoothing, a.mixup, a.cutmix, a.re_prob, a.color_jitter) == (0.3, 0.0, 0.0, 0.0, 0.4)
    assert c.precision == "fp32" and c.expected.top1 == 89.6 and c.init.required
    assert row("finetune/internimage_h_22kto1k_384").data.input_size == 384
    j = row("finetune/internimage_h_jointto1k_224").train
    assert (j.epochs, j.warmup_epochs, j.blr, j.weight_decay, j.layer_decay, j.ema) == (30, 0, 3e-5, 1e-8, 0.8, 0.9998)


def test_m3i_h_pretraining_row_uses_the_three_corpora_zero1_and_the_h_head():
    c = row("pretrain/internimage_h_joint427m_m3i")
    assert c.train.epochs == 30 and c.data.input_size == 224 and c.model.global_dim == 768
    assert [s.kind for s in c.data.sources] == ["tar"] * 3 and all(s.targets == ["text"] for s in c.data.sources)
    assert c.train.deepspeed.enabled and c.train.deepspeed.zero_stage == 1
    z3 = row("pretrain/internimage_h_joint427m_m3i", ["deepspeed=zero3_offload"]).train.deepspeed
    assert z3.zero_stage == 3 and z3.offload


def test_vit_rows_follow_siameseim_and_mae():
    p = row("pretrain/vit_b_in1k_m3i")
    assert (p.train.epochs, p.train.warmup_epochs, p.train.blr, p.train.momentum, p.data.crop_min,
            p.data.min_mask_block, p.model.decoder_dim) == (1600, 40, 6.25e-5, 0.995, 0.08, 16, 768)
    f = row("finetune/vit_b_in1k").train
    assert (f.epochs, f.blr, f.layer_decay, f.warmup_epochs) == (100, 5e-4, 0.65, 5)
    assert row("finetune/vit_l_in1k").train.layer_decay == 0.75
    assert row("pretrain/ablation_intra_only").objective.second_image is False
    assert row("tiny/sup").objective.intra == 0 and row("tiny/m3i").objective.txt == 1


@pytest.mark.parametrize("name", [r for r in ROWS if r.startswith(("finetune", "linprobe"))])
def test_rows_that_start_from_weights_refuse_to_start_without_them(name):
    cfg = row(name)
    assert cfg.init.required
    with pytest.raises(FileNotFoundError, match="init.path is not set"):
        check_required_init(cfg.init)
