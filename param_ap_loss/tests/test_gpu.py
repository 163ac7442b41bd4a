"""Device placement (issue 18): CPU checks that every tensor of every model is a parameter or buffer (so it
follows ``.to(device)``), and ``gpu`` smoke tests of the default entry points on CUDA (skipped without it).

GPU: not run in this repository's CI (no CUDA); ``benchmarks/gpu_check.py`` is the one-call device check.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from repro_shared.data import SkipNoneCollate, build_loader

from param_ap_loss.data.build import build_dataset
from param_ap_loss.data.coco import collate
from param_ap_loss.engine import train_one_epoch
from param_ap_loss.models.build import build_detector
from param_ap_loss.optim import build_optimizer, build_scheduler

BIN = Path(sys.executable).parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
ROWS = [("retinanet_tiny", "pap_retinanet"), ("retinanet_tiny", "alrp"), ("retinanet_tiny", "ap_loss"),
        ("faster_rcnn_tiny", "pap_faster_rcnn"), ("faster_rcnn_tiny", "alrp"), ("faster_rcnn_tiny", "ce_giou"),
        ("deformable_detr_tiny", "pap_detr")]


def _cfg(tmp_path, *overrides):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose("train", overrides=[f"data.root={tmp_path}/shapes", *overrides])


@pytest.mark.parametrize("model_name,loss", ROWS)
def test_every_tensor_of_a_model_moves_with_it(tmp_path, model_name, loss):
    """After ``.to("meta")`` every parameter and buffer is on meta and no module keeps a plain tensor
    attribute (it would stay on the CPU while the inputs are on the GPU)."""
    extra = ["model.detr.box_refine=true", "model.detr.two_stage=true"] if model_name.startswith("deformable") else []
    cfg = _cfg(tmp_path, f"model={model_name}", f"loss={loss}", *extra)
    model = build_detector(cfg.model, cfg.loss, num_classes=3).to("meta")
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    stray = [f"{name}.{k}" for name, m in model.named_modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    assert not stray, stray


def test_entry_point_configs_default_to_device_auto():
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        assert compose("train").device == "auto" and compose("search").device == "auto"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model_name,loss", ROWS)
def test_few_training_steps_on_cuda(tmp_path, model_name, loss):
    cfg = _cfg(tmp_path, f"model={model_name}", f"loss={loss}", "data.num_train=16")
    dev = torch.device("cuda")
    ds = build_dataset(cfg.data, "train", train=True, train_size=int(cfg.model.train_size))
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(ds.cat_ids)).to(dev)
    loader = build_loader(ds, batch_size=4, seed=0, collate_fn=SkipNoneCollate(collate))
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train, len(loader))
    losses = []
    model.register_forward_hook(lambda m, i, out: losses.append({k: v.detach() for k, v in out.items()})
                                if m.training else None)
    loader.set_epoch(0)
    step = train_one_epoch(model, loader, opt, sched, dev, epoch=0, step=0)
    assert step == 4 and len(losses) == 4
    assert all(torch.isfinite(v).all() and v.device.type == "cuda" for row in losses for v in row.values())
    assert all(t.device.type == "cuda" for t in [*model.parameters(), *model.buffers()])
    assert all(s["exp_avg" if "exp_avg" in s else "momentum_buffer"].device.type == "cuda"
               for s in opt.state.values() if s)


@pytest.mark.gpu
@needs_cuda
def test_fast_loss_on_cuda_equals_cpu_reference():
    from param_ap_loss.losses import pap_loss_fast, pap_loss_reference
    from param_ap_loss.presets import get_preset

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 80, generator=g, dtype=torch.float64)
    t = (torch.rand(2000, 80, generator=g) < 0.002).double()
    q = torch.rand(2000, 80, generator=g, dtype=torch.float64)
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, dtype=torch.float64)
    zc = z.cuda().requires_grad_()
    got = pap_loss_fast(zc, (q * t).cuda(), t.cuda(), ctrl.cuda())
    got.backward()
    zr = z.clone().requires_grad_()
    want = pap_loss_reference(zr, q * t, t, ctrl)
    want.backward()
    assert got.item() == pytest.approx(want.item(), abs=1e-10)
    torch.testing.assert_close(zc.grad.cpu(), zr.grad, atol=1e-10, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_default_entry_point_runs_on_cuda(tmp_path):
    """``pap-train`` as installed, ``device`` left at its default (auto): a few steps and an evaluation on CUDA."""
    out = tmp_path / "run"
    env = dict(os.environ, PAP_DATA_ROOT=str(tmp_path))
    res = subprocess.run([str(BIN / "pap-train"), "train.max_iters=4", "data.num_val=8", f"hydra.run.dir={out}"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| device cuda" in (out / "log.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iters"] == 4 and all(torch.isfinite(torch.tensor(metrics[k])) for k in ("AP", "AP50"))
