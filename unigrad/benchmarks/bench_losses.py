"""Every gradient-form objective at the paper's per-GPU batch (n = 128) and 2048-d embeddings: ours (forward +
backward of the surrogate, F / queue update included; and the gradient alone) against a literal, one-anchor-
at-a-time evaluation of the spec's formula (``unigrad.losses.reference``; for UniGrad the sum over the targets
of the last ``--history`` + 1 steps with their EMA weights, which F replaces), in the same run; the EMA update
(official per-tensor loop vs our two ``_foreach`` ops) on ResNet-50 + projector; and the UniGrad loss + F
update as a fraction of a ResNet-50 training step (4 forwards + 2 backwards + SGD).

Prints one JSON line per measurement. On CPU the ResNet-50 step is measured at a small batch and scaled
linearly to 128 (flagged ``"extrapolated": true``); on a GPU it is measured at 128.

    python benchmarks/bench_losses.py --queue 4096          # CPU, ~6 minutes on the shared 2-core machine (README)
    python benchmarks/bench_losses.py --device cuda --reps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from repro_shared.ssl.momentum import ema_update_
from unigrad.losses import (BarlowTwinsGradLoss, BYOLDirectPredGradLoss, MoCoGradLoss, SimCLRGradLoss, UniGradLoss,
                            VICRegGradLoss)
from unigrad.losses import reference as ref
from unigrad.models import SiameseNet
from unigrad.models.siamese import SiameseOutput


def timed(fn, reps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def bench_losses(n: int, c: int, queue: int, history: int, reps: int, device: torch.device) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    z1, z2, t1, t2 = (torch.randn(n, c, generator=g).to(device) for _ in range(4))
    u1, u2, v1, v2 = (F.normalize(x, dim=1) for x in (z1, z2, t1, t2))
    # UniGrad's literal formula sums over every past target: `history` earlier steps, then this one
    past = [F.normalize(torch.randn(2 * n, c, generator=g), dim=1).to(device) for _ in range(history)]
    hist = past + [torch.cat([v1, v2])]
    makers = {
        "unigrad": (lambda: UniGradLoss(c, lambd=100.0, rho=0.99),
                    lambda L: (ref.unigrad(u1, v2, hist, 100.0, 0.99), ref.unigrad(u2, v1, hist, 100.0, 0.99))),
        "simclr_grad": (lambda: SimCLRGradLoss(0.2),
                        lambda L: (ref.simclr(u1, v2, torch.cat([v1, v2]), 0.2), ref.simclr(u2, v1, torch.cat([v1, v2]), 0.2))),
        "moco_grad": (lambda: MoCoGradLoss(c, queue_size=queue, tau=0.2),
                      lambda L: (ref.moco(u1, v2, L.queue, 0.2), ref.moco(u2, v1, L.queue, 0.2))),
        "byol_grad": (lambda: BYOLDirectPredGradLoss(c, rho=0.99, eps=0.3),
                      lambda L: (ref.byol_directpred(u1, v2, L.F, 0.3), ref.byol_directpred(u2, v1, L.F, 0.3))),
        "barlow_twins_grad": (lambda: BarlowTwinsGradLoss(50.0),
                              lambda L: (ref.barlow_twins(v2, u1, v2, 50.0, n), ref.barlow_twins(v1, u2, v1, 50.0, n))),
        "vicreg_grad": (lambda: VICRegGradLoss(100.0),
                        lambda L: (ref.vicreg(u1, v2, v1, 100.0), ref.vicreg(u2, v1, v2, 100.0))),
    }
    fwd_bwd = {}
    for name, (make, literal) in makers.items():
        loss = make().to(device)
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        out = SiameseOutput(a, b, t1, t2)
        ms_fb = timed(lambda: loss(out)["loss"].backward(), reps, 2, device)
        ms_g = timed(lambda: loss.gradients(u1, u2, v1, v2), reps, 2, device)
        fresh = make().to(device)
        if name == "unigrad":
            for h in past:  # the F the literal sum over the same history corresponds to
                fresh.update_correlation(h[:n], h[n:])
        state = fresh.queue.clone() if name == "moco_grad" else None
        ours = fresh.gradients(u1, u2, v1, v2)  # the state the literal formula sees: F = F_b of this batch
        if state is not None:
            fresh.queue.copy_(state)
        lit = literal(fresh)
        diff = max(float((ours[i] - lit[i]).abs().max()) for i in range(2))
        ms_lit = timed(lambda: literal(fresh), max(1, reps // 4), 1, device)
        fwd_bwd[name] = ms_fb
        extra = {"history_steps": history + 1} if name == "unigrad" else ({"queue": queue} if name == "moco_grad" else {})
        emit(bench="loss", loss=name, n=n, C=c, **extra, device=str(device), dtype="float32", ours_fwd_bwd_ms=round(ms_fb, 3),
             ours_gradient_ms=round(ms_g, 3), literal_gradient_ms=round(ms_lit, 3),
             speedup_vs_literal=round(ms_lit / ms_g, 2), max_abs_grad_diff=diff)
    return fwd_bwd


def bench_ema(reps: int, device: torch.device) -> None:
    net = SiameseNet("resnet50", 2048, 2048).to(device)
    target, online = net.online_parameters_pairs()

    @torch.no_grad()
    def official_loop():
        for p_k, p_q in zip(target, online):
            p_k.data = p_k.data * 0.996 + p_q.data * (1.0 - 0.996)

    ms_loop = timed(official_loop, reps, 2, device)
    ms_foreach = timed(lambda: ema_update_(target, online, 0.996), reps, 2, device)
    emit(bench="ema", model="resnet50+projector", tensors=len(target), device=str(device),
         official_loop_ms=round(ms_loop, 3), foreach_ms=round(ms_foreach, 3), speedup=round(ms_loop / ms_foreach, 2))


def bench_fraction(loss_ms: float, batch: int, image: int, reps: int, device: torch.device, precision: str) -> None:
    torch.manual_seed(0)
    net = SiameseNet("resnet50", 2048, 2048).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.2, momentum=0.9, weight_decay=1e-4)
    x1, x2 = (torch.randn(batch, 3, image, image, device=device) for _ in range(2))
    loss = UniGradLoss(2048).to(device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(x1, x2, mm=0.996)
        terms = loss(out)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    ms = timed(step, reps, 1, device)
    per_128 = ms * 128 / batch
    emit(bench="fraction", what="unigrad loss + F update (fwd+bwd) / ResNet-50 siamese training step",
         device=str(device), precision=precision, r50_batch=batch, image=image, r50_step_ms=round(ms, 1),
         r50_step_ms_at_128=round(per_128, 1), extrapolated=batch != 128, loss_ms_at_128=round(loss_ms, 3),
         fraction_pct=round(100 * loss_ms / per_128, 3))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=128, help="per-GPU batch of the paper")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--queue", type=int, default=65536,
                   help="MoCo queue; the literal reference copies it per anchor (use 4096 on a CPU)")
    p.add_argument("--history", type=int, default=15,
                   help="past steps in UniGrad's literal sum (its cost grows with it; ours does not)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--r50-batch", type=int, default=None, help="default: 128 on CUDA, 2 on CPU (then scaled to 128)")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--precision", default=None, help="ResNet-50 step autocast: fp32 | fp16 | bf16 (default bf16 on CUDA)")
    p.add_argument("--skip-r50", action="store_true")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    emit(bench="setup", device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
         threads=torch.get_num_threads(), torch=torch.__version__)
    fwd_bwd = bench_losses(args.n, args.dim, args.queue, args.history, args.reps, device)
    if not args.skip_r50:
        bench_ema(args.reps, device)
        batch = args.r50_batch or (128 if device.type == "cuda" else 2)
        precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
        bench_fraction(fwd_bwd["unigrad"], batch, args.image, max(2, args.reps // 2), device, precision)


if __name__ == "__main__":
    main()
