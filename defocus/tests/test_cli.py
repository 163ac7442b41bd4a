"""Entry points end to end: defocus-train -> defocus-eval -> defocus-diagnose on the embedded data."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "CUDA_VISIBLE_DEVICES": ""}


def cli(entry, *args, check=True):
    code = f"import sys; from defocus.cli import {entry}; sys.argv = ['x'] + sys.argv[1:]; {entry}()"
    p = subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(p.stdout[-3000:] + p.stderr[-3000:])
    return p


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("defocus.configs", version_base=None):
        return hydra_compose("train", overrides=list(overrides))


def test_train_eval_diagnose(tmp_path):
    """The console entry point in a subprocess, then resume / eval / diagnose in-process (same code paths)."""
    from defocus.cli import run_diagnose, run_evaluate, run_train

    small = ["train.batch_size=64", "data.canvas=16", "data.digit_size=16", "data.train_subset=256"]
    cli("train", *small, "train.epochs=2", f"hydra.run.dir={tmp_path}/train")
    m = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert {"top1", "top5", "val_loss", "drop_path_rate"} <= set(m)
    assert m["drop_path_rate"] == pytest.approx(0.5)  # scheduled: last epoch reaches max_rate
    assert sorted((tmp_path / "train" / "checkpoints").glob("ckpt_*.pt"))
    # resume: a longer schedule in the same folder continues after the saved epoch instead of restarting
    m3 = run_train(compose(*small, "train.epochs=3", "train.ema.enabled=true", "train.ema.decay=0.9",
                           f"+output_dir={tmp_path}/train"))
    assert m3["epoch"] == 2 and "val_ema_top1" in m3
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["epoch"] == 2
    ckpt = sorted((tmp_path / "train" / "checkpoints").glob("ckpt_*.pt"))[-1]
    e = run_evaluate(compose(*small, f"eval.checkpoint={ckpt}", f"+output_dir={tmp_path}/eval"))
    assert e["top1"] == pytest.approx(m3["top1"])
    assert e["ema_top1"] == pytest.approx(m3["val_ema_top1"])  # a run with EMA: both models are reported
    d = run_diagnose(compose(*small, f"diagnose.checkpoint={ckpt}", "diagnose.num_images=16",
                             f"+output_dir={tmp_path}/diag"))
    assert "b2_grad_entropy" in d and (tmp_path / "diag" / "overfocus.png").stat().st_size > 1000
    assert json.loads((tmp_path / "diag" / "metrics.json").read_text()) == pytest.approx(d)


def test_bad_input_messages():
    """Config errors surface as one clear sentence (composed in-process: no subprocess start-up cost)."""
    from hydra import compose, initialize_config_module

    from defocus.cli import _require_checkpoint, build_data, build_from_cfg

    with initialize_config_module("defocus.configs", version_base=None):
        with pytest.raises(ValueError, match="unknown model variant 'defocus_mamba_huge'"):
            build_from_cfg(compose("train", overrides=["model.name=defocus_mamba_huge"]))
        with pytest.raises(ValueError, match="not divisible by model.patch_size"):
            build_data(compose("train", overrides=["data.canvas=30"]))
        with pytest.raises(ValueError, match="unknown data.name"):
            build_data(compose("train", overrides=["data.name=cifar"]))
        with pytest.raises(FileNotFoundError, match="ImageNet data not found under /nonexistent"):
            build_data(compose("train", overrides=["experiment=in1k_base", "data.root=/nonexistent"]))
    with pytest.raises(ValueError, match="no checkpoint given"):
        _require_checkpoint(None)


def test_fp16_is_refused_instead_of_running_fp32():
    """The old autocast helper ignored every precision but bf16: precision=fp16 silently trained in fp32."""
    from defocus.cli import run_train

    with pytest.raises(ValueError, match="precision='fp16': use fp32 or bf16"):
        run_train(compose("precision=fp16"))
