"""GPU smoke suite (issue 18): each entry point's default for a few steps on CUDA, every parameter and buffer on the
GPU, finite losses. Skipped without CUDA. The CPU tests check the script of the device check (``--smoke``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def cfg(name, overrides, out):
    with initialize_config_module("m3i.configs", version_base=None):
        return compose(name, overrides=[*overrides, f"+output_dir={out}", "device=auto"])


def assert_on_gpu(module):
    bad = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != "cuda"]
    assert not bad, f"tensors left on the CPU: {bad[:10]}"


@pytest.mark.gpu
@needs_cuda
def test_pretrain_default_steps_on_cuda(tmp_path, monkeypatch):
    from m3i.tasks import pretrain

    seen = {}
    build = pretrain.build_m3i

    def spy(*a, **k):
        seen["model"] = build(*a, **k)
        return seen["model"]

    monkeypatch.setattr(pretrain, "build_m3i", spy)
    res = pretrain.run_pretrain(cfg("pretrain", ["data.sources.0.limit=256", "train.epochs=1", "probe.limit=200"],
                                    tmp_path))
    assert_on_gpu(seen["model"])
    assert all(res[k] == res[k] for k in res if k.startswith("train_loss"))
    assert "probe_mean" in res


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("entry", ["finetune", "linprobe"])
def test_classifier_defaults_step_on_cuda(tmp_path, entry, monkeypatch):
    from m3i.tasks import classify

    seen = {}
    build = classify.build_classifier

    def spy(*a, **k):
        seen["model"] = build(*a, **k)
        return seen["model"]

    monkeypatch.setattr(classify, "build_classifier", spy)
    res = classify.run_classifier(cfg(entry, ["data.limit=256", "train.epochs=1"], tmp_path), entry)
    assert_on_gpu(seen["model"])
    assert res["train_loss"] == res["train_loss"] and 0 <= res["top1"] <= 100


@pytest.mark.gpu
@needs_cuda
def test_internimage_h_block_with_the_triton_core_on_cuda():
    from m3i.models.internimage import build_internimage

    model = build_internimage("h", num_classes=10, depths=[1, 1, 1, 1], with_cp=True).cuda()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss) and model.levels[0].blocks[0].dcn.offset.weight.grad is not None
    assert_on_gpu(model)


def test_gpu_check_without_cuda_says_not_run():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the script runs for real in make gpu-check")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["status"].startswith("GPU: not run")


@pytest.mark.slow
def test_gpu_check_script_runs_end_to_end_in_smoke_mode():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"], capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert rows[-1] == {"check": "gpu_check", "passed": True}
    assert {row.get("bench") for row in rows} >= {"dcnv3_core", "internimage_tiny_train_step", "m3i_tiny_step"}
