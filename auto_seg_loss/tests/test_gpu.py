"""Devices: the loss's tables follow the module and the input (CPU checks with the "meta" device), and a GPU smoke
suite (marked ``gpu``, skipped without CUDA): the default entry points for a few steps on CUDA, every parameter
and buffer of the model and the losses on the GPU, CUDA curves and losses equal to the CPU ones, fp16 on CUDA.
Run on a GPU machine with ``pytest tests -m gpu`` (or ``python benchmarks/gpu_check.py``)."""

import math

import pytest
import torch

from auto_seg_loss import engine
from auto_seg_loss.cli import build_losses, build_model, build_optimizer, compose, run_search, run_train
from auto_seg_loss.losses import NUM_CURVES, SEARCHED_CONTROL_POINTS, SURROGATES, AutoSegLoss
from auto_seg_loss.ops.bezier import BezierCurve

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TINY = ["data.num_train=32", "data.num_val=16", "train.batch_size=8", "eval.batch_size=16", "train.log_every=1"]


@pytest.mark.parametrize("metric", list(SURROGATES))
def test_loss_buffers_move_with_the_module_and_the_run_device(metric):
    """Every table of every curve is a buffer: ``.to(device)`` and ``build_losses(device=...)`` move them all."""
    loss = AutoSegLoss(21, metric).to("meta")
    assert {b.device.type for b in loss.buffers()} == {"meta"} and len(list(loss.buffers())) > 0
    cfg = compose("train", [f"loss.metric={metric}"])
    for fn in build_losses(cfg.loss, 4, 255, device="meta").values():
        assert {b.device.type for b in fn.buffers()} == {"meta"}


def test_entry_points_default_to_device_auto():
    for name in ("train", "eval", "search"):
        assert compose(name, ["checkpoint=x"] if name == "eval" else []).device == "auto"


def _devices(*modules) -> set[str]:
    return {t.device.type for m in modules for t in list(m.parameters()) + list(m.buffers())}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("metric", ["mIoU", "BF1"])
def test_default_train_entry_point_on_cuda(tmp_path, metric):
    res = run_train(compose("train", TINY + ["train.iters=5", f"loss.metric={metric}", f"output_dir={tmp_path}"]))
    assert all(math.isfinite(res[k]) for k in ("mIoU", "BF1"))
    rows = [r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert len(rows) == 5 and "cuda" in (tmp_path / "log.txt").read_text()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_train_steps_on_cuda_keep_everything_on_the_gpu(amp):
    """Forward + backward + optimizer step on CUDA with the default (LUT, gather) loss: finite, and every
    parameter and buffer of the model and of the losses lives on the GPU."""
    cfg = compose("train", TINY)
    dev = torch.device("cuda")
    model = build_model(cfg.model, 4).to(dev)
    losses = build_losses(cfg.loss, 4, 255, device=dev)
    opt = build_optimizer(model, cfg.optim)
    precision = engine.Precision(amp, dev, 512 if amp == "fp16" else "dynamic")
    x, y = torch.randn(8, 3, 64, 64, device=dev), torch.randint(0, 4, (8, 64, 64), device=dev)
    for _ in range(3):
        with precision.autocast():
            out = model(x)
        loss, parts = engine.compute_losses(out, y, losses)
        engine.check_step_finite(out, loss, parts, 0, 0)
        opt.zero_grad()
        precision.step(loss, opt)
    assert torch.isfinite(loss)
    assert _devices(model, *losses.values()) == {"cuda"}
    assert all(p.grad is None or p.grad.device.type == "cuda" for p in model.parameters())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", BezierCurve.IMPLS)
def test_cuda_curves_equal_cpu(impl):
    x = torch.rand(100000, dtype=torch.float64)
    for metric, cp in SEARCHED_CONTROL_POINTS.items():
        per = len(cp) // NUM_CURVES[metric]
        for k in range(NUM_CURVES[metric]):
            curve = BezierCurve(cp[k * per:(k + 1) * per], impl)
            xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
            yc, yg = curve(xc), curve.cuda()(xg)
            yc.sum().backward()
            yg.sum().backward()
            assert torch.allclose(yc, yg.cpu(), atol=1e-12) and torch.allclose(xc.grad, xg.grad.cpu(), rtol=1e-9)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("metric", list(SURROGATES))
def test_cuda_losses_equal_cpu(metric):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 40, 40, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 40, 40), generator=g)
    labels[:, :3] = 255
    loss = AutoSegLoss(5, metric, drop_bg=metric == "BIoU", tol=2)
    zc, zg = logits.clone().requires_grad_(), logits.cuda().requires_grad_()
    lc, lg = loss(zc, labels), loss.cuda()(zg, labels.cuda())
    lc.backward()
    lg.backward()
    assert torch.allclose(lc, lg.cpu(), atol=1e-10) and torch.allclose(zc.grad, zg.grad.cpu(), atol=1e-10)


@pytest.mark.gpu
@needs_cuda
def test_search_entry_point_on_cuda(tmp_path):
    over = ["metric=mAcc", "search.rounds=1", "search.samples_per_round=2", "search.update_steps=2", "proxy.iters=3",
            "proxy.num_train=16", "proxy.heldout_size=8", "proxy.batch_size=8", f"output_dir={tmp_path}"]
    out = run_search(compose("search", over))
    assert set(out) == {"reward_mu_round0"} and math.isfinite(out["reward_mu_round0"])
