"""Every experiment config (one per README table row) composes and holds the spec's hyperparameters (spec §3.7,
§4.2): the shared 100-epoch recipe, each objective's constants, the target branch of the w/ and w/o momentum-encoder
rows, and the linear-evaluation protocol."""

from pathlib import Path

import pytest

from conftest import make_cfg

EXPERIMENTS = Path(__file__).parents[1] / "src" / "unigrad" / "configs" / "experiment"
README = (Path(__file__).parents[1] / "README.md").read_text()

#: row -> (loss _target_ class, loss fields the spec fixes, target branch)
ROWS = {
    "unigrad_r50_100ep": ("UniGradLoss", {"lambd": 100.0, "rho": 0.99}, "momentum"),
    "unigrad_cutmix_r50_800ep": ("UniGradLoss", {"lambd": 100.0, "rho": 0.99}, "momentum"),
    **{f"simclr_grad_{v}_r50_100ep": ("SimCLRGradLoss", {"tau": 0.2}, t) for v, t in (("mm", "momentum"), ("nomm", "stopgrad"))},
    **{f"moco_grad_{v}_r50_100ep": ("MoCoGradLoss", {"tau": 0.2, "queue_size": 65536}, t)
       for v, t in (("mm", "momentum"), ("nomm", "stopgrad"))},
    **{f"{m}_grad_{v}_r50_100ep": ("BYOLDirectPredGradLoss", {"rho": 0.99, "eps": 0.3}, t)
       for m in ("byol", "simsiam") for v, t in (("mm", "momentum"), ("nomm", "stopgrad"))},
    **{f"barlow_twins_grad_{v}_r50_100ep": ("BarlowTwinsGradLoss", {"lambd": 50.0, "batch_size": 1024}, t)
       for v, t in (("mm", "momentum"), ("nomm", "stopgrad"))},
    **{f"vicreg_grad_{v}_r50_100ep": ("VICRegGradLoss", {"lambd": 100.0}, t) for v, t in (("mm", "momentum"), ("nomm", "stopgrad"))},
    "simclr_original_r50_100ep": ("InfoNCELoss", {"tau": 0.2}, "online"),
    "byol_original_r50_100ep": ("BYOLLoss", {}, "momentum"),
    "barlow_twins_original_r50_100ep": ("BarlowTwinsLoss", {"lambd": 0.0051}, "online"),
    "vicreg_original_r50_100ep": ("VICRegLoss", {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}, "online"),
}


def test_every_experiment_file_is_a_checked_row_named_in_the_readme():
    files = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - {"_r50_100ep_pretrain"}
    assert files == set(ROWS) | {"lineval_r50_simsiam_lars"}
    for row in files:
        stem = row.replace("_mm_", "_{nomm,mm}_").replace("_nomm_", "_{nomm,mm}_")
        assert row in README or stem in README, row


@pytest.mark.parametrize("row", sorted(ROWS))
def test_pretraining_rows_hold_the_spec_recipe(row, tmp_path):
    cfg = make_cfg("train", [f"experiment={row}", "data.root=/data/imagenet"], tmp_path)
    cls, fields, target = ROWS[row]
    t, m = cfg.train, cfg.model
    assert (m.encoder, m.projector_hidden_dim, m.projector_output_dim, m.zero_init_residual) == ("resnet50", 2048, 2048, True)
    assert (cfg.data.name, cfg.data.image_size, cfg.seed, cfg.precision) == ("imagenet", 224, 42, "fp16")
    assert t.epochs == (800 if "800ep" in row else 100) and t.warmup_epochs == 5
    assert t.batch_size * 8 == 1024 and t.base_lr * 1024 / t.lr_batch_denominator == pytest.approx(0.2)
    assert (t.min_lr_ratio, t.cosine_denominator, t.sgd_momentum, t.weight_decay, t.base_momentum) == (
        1e-3, "total", 0.9, 1e-4, 0.996)
    assert t.cutmix_alpha == (1.0 if "cutmix" in row else 0.0)
    assert cfg.loss._target_.rsplit(".", 1)[1] == cls and cfg.loss.target == target
    for key, value in fields.items():
        assert cfg.loss[key] == value, (row, key)
    if "dim" in cfg.loss:
        assert cfg.loss.dim == 2048


def test_lineval_row_holds_the_simsiam_lars_protocol(tmp_path):
    cfg = make_cfg("lineval", ["experiment=lineval_r50_simsiam_lars", "data.root=/data/imagenet"], tmp_path)
    le = cfg.lineval
    assert cfg.model.encoder == "resnet50" and cfg.init.required
    assert (le.epochs, le.batch_size * 8, le.momentum, le.weight_decay, le.lars, le.trust_coefficient) == (
        90, 4096, 0.9, 0.0, True, 0.001)
    assert le.base_lr * 4096 / le.lr_batch_denominator == pytest.approx(1.6)


def test_lambda_is_scaled_from_the_paper_value_by_embedding_size(tmp_path):
    assert make_cfg("train", [], tmp_path).loss.lambd == pytest.approx(100 * 128 / 2048)  # tiny default: 6.25
    assert make_cfg("train", ["model=resnet50"], tmp_path).loss.lambd == pytest.approx(100.0)
    assert make_cfg("train", ["loss=barlow_twins_grad", "model=resnet50"], tmp_path).loss.lambd == pytest.approx(50.0)
