"""Paper-row configs (issue 19): each composes, states the paper's values, and the rows that need initial
weights refuse to start without them (before anything is built); every entry point defaults to device auto."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import defocus

CONFIGS = Path(defocus.__file__).parent / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
DETECT = ["detect", "detect_coco_base", "detect_coco_base_36ep"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _compose(name="train", *overrides):
    with initialize_config_module("defocus.configs", version_base=None):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose("train", f"experiment={experiment}")
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.device == "auto"


@pytest.mark.parametrize("name", DETECT)
def test_every_detection_config_composes(name):
    cfg = _compose(name)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.device == "auto"


def test_train_default_device_auto():
    assert _compose("train").device == "auto"


def _dp(cfg):
    d = cfg.train.drop_path
    return (d.min_rate, d.max_rate) if d.scheduled else d.rate


def test_drop_path_official_defaults_and_paper_variants():
    """Official configs as default, the paper text's values as the *_paper_droppath variants (spec §3.4)."""
    expect = {"in1k_base": (0.1, 0.75), "in1k_small": (0.1, 0.75), "in22k_large": 0.4, "in22k_to_1k_large": (0.1, 0.7),
              "in1k_base_paper_droppath": (0.1, 0.7), "in1k_small_paper_droppath": (0.1, 0.7),
              "in22k_large_paper_droppath": (0.1, 0.5), "in22k_to_1k_large_paper_droppath": (0.1, 0.5)}
    for exp, value in expect.items():
        assert _dp(_compose("train", f"experiment={exp}")) == value, exp
    # the variants change nothing else
    for base in ("in1k_base", "in22k_large", "in22k_to_1k_large"):
        a = OmegaConf.to_container(_compose("train", f"experiment={base}"), resolve=False)
        b = OmegaConf.to_container(_compose("train", f"experiment={base}_paper_droppath"), resolve=False)
        a["train"].pop("drop_path"), b["train"].pop("drop_path")
        assert a == b, base


def test_classification_recipe_values():
    base = _compose("train", "experiment=in1k_base")
    assert (base.train.epochs, base.train.warmup_epochs, base.train.batch_size, base.train.base_lr) == (300, 20, 32, 5e-4)
    assert base.train.ema.enabled and base.data.repeated_aug and base.precision == "bf16"
    assert base.train.checkpoint_every > 0
    res = _compose("train", "experiment=in1k_base_res336")
    assert res.data.img_size == 336 and res.model.name == "defocus_mamba_base"
    assert (res.model.mixer.rope_scale_factor, res.model.mixer.delta_scale_factor) == (2.25, 1.5)
    assert res.init.required and res.eval.checkpoint is None  # = init.path, unset until the user gives it
    ft = _compose("train", "experiment=in22k_to_1k_large")
    assert ft.init.required and "--map22kto1k" in ft.init.converter and ft.data.img_size == 384
    assert not _compose("train").init.required  # the tiny default trains from random weights


def test_detection_recipe_values():
    """Official DINO recipe (spec §3.4): 12 epochs at 2 x 8 = 16 images, lr x 0.1 at epoch 11 (36 ep: 27, 33),
    multi-scale 480..800 (max 1333) + crop branch, AdamW 2e-4 / 1e-4, backbone lr x 0.1, clip 0.1."""
    c = _compose("detect_coco_base")
    assert (c.train.epochs, list(c.train.lr_drop_epochs), c.data.batch_size) == (12, [11], 2)
    assert list(c.model.min_size) == list(range(480, 801, 32)) and c.model.max_size == 1333
    assert (c.data.aug.flip_prob, c.data.aug.crop_prob) == (0.5, 0.5)
    assert (c.train.lr, c.train.weight_decay, c.train.backbone_lr_mult, c.train.clip_grad) == (2e-4, 1e-4, 0.1, 0.1)
    assert (c.model.mixer.rope_scale_factor, c.model.mixer.delta_scale_factor, c.model.pretrain_size) == (20.0, 4.57, 224)
    assert c.init.required and "defocus_mamba_base_cls.pth" in c.init.source
    c36 = _compose("detect_coco_base_36ep")
    assert (c36.train.epochs, list(c36.train.lr_drop_epochs)) == (36, [27, 33])
    assert not _compose("detect").init.required


def test_required_init_stops_before_anything_is_built(tmp_path):
    from defocus.cli import run_evaluate, run_train
    from defocus.detect import run_detect

    cases = [(run_detect, _compose("detect_coco_base", f"data.root={tmp_path}", f"+output_dir={tmp_path}/det")),
             (run_train, _compose("train", "experiment=in22k_to_1k_large", f"data.root={tmp_path}",
                                  "data.val_root=x", "data.class_map=x", f"+output_dir={tmp_path}/ft")),
             (run_evaluate, _compose("train", "experiment=in1k_base_res336", f"data.root={tmp_path}",
                                     f"+output_dir={tmp_path}/res"))]
    for fn, cfg in cases:
        with pytest.raises(FileNotFoundError, match=r"init\.path is not set\. Get it from .* Then pass init\.path="):
            fn(cfg)
    assert not any((tmp_path / d).exists() for d in ("det", "ft", "res"))  # no run folder, model or data built
    with pytest.raises(FileNotFoundError, match="is not a file"):
        run_detect(_compose("detect_coco_base", f"data.root={tmp_path}", f"init.path={tmp_path}/missing.pth"))


@pytest.mark.parametrize("cmd", [["defocus-train", "experiment=in1k_base"],
                                 ["defocus-detect", "--config-name", "detect_coco_base"]])
def test_cfg_job_prints_the_paper_config(cmd):
    p = subprocess.run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:], "--cfg", "job"], env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert ("max_rate: 0.75" if "train" in cmd[0] else "lr_drop_epochs:\n  - 11") in p.stdout
