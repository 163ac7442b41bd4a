"""Every experiment config composes with its entry point, holds the spec's numbers, and refuses to start without
its initial weights (one clear error naming the file to get)."""

import pytest
from omegaconf import OmegaConf

from addp.cli import run_det, run_finetune, run_linprobe, run_seg, run_train

from helpers import cfg_of

EXPERIMENTS = {
    "pretrain/addp_vit_b_1600ep": "train", "pretrain/addp_vit_l_800ep": "train", "tiny_long": "train", "tiny_60ep": "train",
    "finetune/in1k_vit_b_100ep": "finetune", "finetune/in1k_vit_l_50ep": "finetune",
    "linprobe/vit_b": "linprobe", "linprobe/vit_l": "linprobe",
    "generate/vit_b_cosine_T20": "generate", "generate/vit_l_cosine_T20": "generate",
    "generate/vit_l_linear_T256": "generate",
    "coco/maskrcnn_vitdet_b": "det", "coco/maskrcnn_vitdet_l": "det",
    "ade20k/upernet_b_160k": "seg", "ade20k/upernet_l_160k": "seg",
}


def test_every_experiment_file_is_listed():
    from importlib.resources import files

    root = files("addp.configs") / "experiment"
    found = {str(p.relative_to(root))[:-5] for p in root.rglob("*.yaml")} if hasattr(root, "rglob") else None
    if found is None:  # importlib Traversable without rglob
        from pathlib import Path

        base = Path(str(root))
        found = {str(p.relative_to(base))[:-5] for p in base.rglob("*.yaml")}
    assert found == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes(name):
    cfg = cfg_of(f"experiment={name}", name=EXPERIMENTS[name])
    for group in ("train", "generate", "model", "data"):  # everything but ${hydra:...} resolves
        if group in cfg:
            OmegaConf.to_container(cfg[group], resolve=True)
    assert cfg.device == "auto"


@pytest.mark.parametrize("entry", ["train", "generate", "fid", "convert", "finetune", "linprobe", "det", "seg"])
def test_every_entry_point_defaults_to_device_auto(entry):
    assert cfg_of(name=entry).device == "auto"


def test_paper_numbers():
    b = cfg_of("experiment=pretrain/addp_vit_b_1600ep")
    assert (b.train.epochs, b.train.warmup_epochs, b.train.blr, b.train.weight_decay, tuple(b.train.betas),
            b.train.clip_grad, b.train.label_smoothing, b.model.dropout, b.teacher.dropout) == \
        (1600, 40, 1e-4, 0.05, (0.9, 0.95), 3.0, 0.1, 0.1, 0.1)
    assert b.train.batch_size * 8 == 4096 and b.train.grad_scaler_growth_interval == 500 and b.precision == "fp16"
    assert (b.train.mask.mu, b.train.mask.std, b.train.mask.ratio_min, b.train.mask.max_offset) == (0.55, 0.25, 0.5, 5)
    lg = cfg_of("experiment=pretrain/addp_vit_l_800ep")
    assert (lg.train.epochs, lg.model.variant, lg.teacher.variant) == (800, "addp_vit_large_patch16",
                                                                       "mage_vit_large_patch16")
    fb = cfg_of("experiment=finetune/in1k_vit_b_100ep", name="finetune")
    assert (fb.train.epochs, fb.train.warmup_epochs, fb.train.blr, fb.train.layer_decay, fb.model.drop_path_rate,
            fb.aug.mixup, fb.aug.cutmix, fb.aug.re_prob, fb.train.batch_size * 8) == (100, 20, 1e-3, 0.65, 0.1, 0.8,
                                                                                      1.0, 0.25, 1024)
    fl = cfg_of("experiment=finetune/in1k_vit_l_50ep", name="finetune")
    assert (fl.train.epochs, fl.train.warmup_epochs, fl.train.blr, fl.train.layer_decay, fl.model.drop_path_rate) == \
        (50, 5, 2.5e-4, 0.8, 0.2)
    g = cfg_of("experiment=generate/vit_l_linear_T256", name="generate")
    assert (g.generate.steps, g.generate.schedule, g.generate.choice_temperature, g.generate.batch_size * 8) == \
        (256, "linear", 6.0, 512)
    s = cfg_of("experiment=ade20k/upernet_l_160k", name="seg")
    assert tuple(s.model.out_indices) == (7, 11, 15, 23) and s.data.crop_size == 512


@pytest.mark.parametrize("name,runner", [("pretrain/addp_vit_b_1600ep", run_train), ("finetune/in1k_vit_b_100ep", run_finetune),
                                         ("linprobe/vit_l", run_linprobe), ("coco/maskrcnn_vitdet_b", run_det),
                                         ("ade20k/upernet_b_160k", run_seg)])
def test_paper_rows_refuse_to_start_without_their_weights(name, runner, tmp_path):
    kind = EXPERIMENTS[name]
    over = [f"experiment={name}", "data.root=/data/imagenet", f"+output_dir={tmp_path}", "cache_dir=" + str(tmp_path)]
    if kind != "train":
        over.remove("cache_dir=" + str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"(tokenizer\.)?init\.path is not set\. Get it from .*(MAGE|huggingface)"):
        runner(cfg_of(*over, name=kind))


def test_size_overrides_reach_the_built_models():
    """``model.overrides`` / ``teacher.overrides`` replace the variant's sizes (and so change the stage's cache key)."""
    from addp.stages import addp_build_args, mage_build_args

    cfg = cfg_of("+model.overrides.decoder_depth=1", "+teacher.overrides.depth=6")
    assert addp_build_args(cfg.model, 64)["decoder_depth"] == 1
    assert mage_build_args(cfg.teacher, 64, 64)["depth"] == 6
    default = cfg_of()
    assert addp_build_args(default.model, 64)["decoder_depth"] == 2
    assert mage_build_args(default.teacher, 64, 64)["depth"] == 2
