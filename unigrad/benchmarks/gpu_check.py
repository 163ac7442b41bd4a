"""Device check for a machine with a GPU, one prepared script (a few minutes on one H200):

1. every objective on CUDA (float32, and with bf16 / fp16 projector outputs as autocast produces them) against
   the same objective on the CPU in float64: gradients w.r.t. the projector outputs and the state (F, queue);
2. the default ``unigrad-train`` configuration for a few steps on CUDA: finite loss, every parameter and buffer
   of the network and of the objective on the GPU;
3. the benchmarks (``bench_losses.py``) on CUDA: losses at n = 128, C = 2048, EMA update, and the loss + F update
   as a fraction of a real ResNet-50 siamese step at batch 128.

Prints one JSON line per check and a final summary line; exits non-zero if a check fails.

    python benchmarks/gpu_check.py            # from the package folder
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def check_losses(device: torch.device, n: int = 128, c: int = 2048) -> list[str]:
    from unigrad.losses import (BarlowTwinsGradLoss, BarlowTwinsLoss, BYOLDirectPredGradLoss, BYOLLoss, InfoNCELoss,
                                MoCoGradLoss, SimCLRGradLoss, UniGradLoss, VICRegGradLoss, VICRegLoss)
    from unigrad.models.siamese import SiameseOutput

    makers = {"unigrad": lambda: UniGradLoss(c), "simclr_grad": lambda: SimCLRGradLoss(),
              "moco_grad": lambda: MoCoGradLoss(c, queue_size=32 * n), "byol_grad": lambda: BYOLDirectPredGradLoss(c),
              "barlow_twins_grad": lambda: BarlowTwinsGradLoss(), "vicreg_grad": lambda: VICRegGradLoss(),
              "infonce": lambda: InfoNCELoss(), "byol": lambda: BYOLLoss(), "barlow_twins": lambda: BarlowTwinsLoss(),
              "vicreg": lambda: VICRegLoss()}
    failed = []
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(n, c, generator=g, dtype=torch.float64) for _ in range(6)]
    for name, make in makers.items():
        for dtype, tol in ((torch.float32, 2e-4), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
            results = []
            for dev, dt in ((torch.device("cpu"), torch.float64), (device, dtype)):
                torch.manual_seed(1)
                loss = make().to(dev).to(torch.float64 if dt == torch.float64 else torch.float32)
                zz = [t.to(dev, dt) for t in z]
                a, b = zz[0].clone().requires_grad_(), zz[1].clone().requires_grad_()
                out = SiameseOutput(a, b, zz[2], zz[3], p1=zz[4] if name == "byol" else None, p2=zz[5] if name == "byol" else None)
                if name == "byol":
                    out.p1, out.p2 = out.p1.clone().requires_grad_(), out.p2.clone().requires_grad_()
                terms = loss(out)
                terms["loss"].backward()
                grads = [t.grad for t in ((out.p1, out.p2) if name == "byol" else (a, b))]
                state = [buf for buf in loss.buffers() if buf.is_floating_point()]
                results.append(([x.double().cpu() for x in grads], [x.double().cpu() for x in state],
                                float(terms["loss"].detach())))
            (g_ref, s_ref, l_ref), (g_dev, s_dev, l_dev) = results
            scale = max(float(x.abs().max()) for x in g_ref) or 1.0
            err = max(float((x - y).abs().max()) for x, y in zip(g_ref, g_dev)) / scale
            s_err = max([float((x - y).abs().max()) for x, y in zip(s_ref, s_dev)] or [0.0])
            finite = all(torch.isfinite(x).all() for x in g_dev)
            ok = finite and err < tol and s_err < tol
            emit(check="loss_cuda_vs_cpu_float64", loss=name, inputs=str(dtype).replace("torch.", ""),
                 rel_grad_err=err, state_err=s_err, loss_ref=l_ref, loss_cuda=l_dev, ok=ok)
            if not ok:
                failed.append(f"{name}/{dtype}")
    return failed


def check_training(device: torch.device) -> list[str]:
    from hydra import compose, initialize_config_module

    from unigrad import cli
    from unigrad.engine import EpochMeter, train_one_epoch
    from repro_shared.data import build_loader
    from unigrad.data import pretrain_dataset

    failed = []
    with tempfile.TemporaryDirectory() as tmp, initialize_config_module("unigrad.configs", version_base=None):
        cfg = compose("train", overrides=["device=cuda", "train.epochs=1", "data.subset=512", f"+output_dir={tmp}"])
        t = time.perf_counter()
        res = cli.run_train(cfg)
        emit(check="default_train_cuda", steps=res["steps"], knn_top1=res["knn_top1"], seconds=round(time.perf_counter() - t, 1),
             ok=res["steps"] > 0)
        # every tensor of the network and of the objective on the GPU after real steps
        model, criterion = cli.build_objects(cfg)
        model.to(device), criterion.to(device)
        loader = build_loader(pretrain_dataset(cfg.data), batch_size=128, seed=0)
        loader.set_epoch(0)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        step = train_one_epoch(model, criterion, opt, loader, epoch=0, step=0, seed=0, lr_at=lambda s: 0.01,
                               mm_at=lambda s: 0.99, device=device, precision="bf16",
                               scaler=torch.amp.GradScaler("cuda", enabled=False), meter=EpochMeter(), batch_size=128)
        off = [n for n, x in (*model.named_parameters(), *model.named_buffers(), *criterion.named_buffers())
               if x.device.type != "cuda"]
        emit(check="tensors_on_gpu", steps=step, not_on_gpu=off[:10], ok=not off)
        if res["steps"] <= 0:
            failed.append("default_train_cuda")
        if off:
            failed.append("tensors_on_gpu")
    return failed


def main() -> int:
    if not torch.cuda.is_available():
        emit(check="gpu_check", skipped="no CUDA device visible", ok=True)
        return 0
    device = torch.device("cuda")
    emit(check="setup", gpu=torch.cuda.get_device_name(device), torch=torch.__version__)
    start = time.perf_counter()
    failed = check_losses(device) + check_training(device)
    sys.path.insert(0, str(HERE))
    import bench_losses

    bench_losses.main(["--device", "cuda", "--reps", "20"])
    emit(check="summary", failed=failed, seconds=round(time.perf_counter() - start, 1), ok=not failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
