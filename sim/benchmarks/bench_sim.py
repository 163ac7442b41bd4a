"""SiameseIM benchmarks (spec sim.md section 10): one JSON line per measurement, compared variants in one run.

1. dense UniGrad loss, forward + backward: ours (row-wise ``((P F) * P).sum``) vs the literal ``diag(P F P^T)`` of the
   official code, at B images x 196 tokens, Dd = 768 (B = 128 is the paper's per-GPU batch); each variant runs in a
   fresh subprocess so its peak memory (``ru_maxrss`` above the inputs) is its own.
2. relative sin-cos embedding: ours (one fused sin/cos over stacked arguments) vs a literal per-block form (eight
   einsum + sin/cos blocks, as the official function is structured), B in {64, 256}, G = 14, Dd = 768.
3. EMA update of the ViT-B encoder + projector: two fused ``_foreach`` ops vs a Python loop over tensors.
4. block mask generator, 1,000 masks of 14x14 / 118.
5. tiny-ViT pre-training step (C 192, depth 12, Dd 192, 224 px, B 4): timm SDPA attention vs the explicit softmax.
On CUDA (``--gpu``), a ViT-B/16 pre-training step in bf16: images/s and MFU against the H200's ~790 bf16 TFLOP/s.

Usage: python benchmarks/bench_sim.py [--quick] [--gpu]   (CPU threads: BENCH_THREADS, default 2)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

import torch

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def emit(**rec) -> None:
    print(json.dumps(rec), flush=True)


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[len(times) // 2]


# ----------------------------------------------------------------------------------------------- 1. loss
def literal_loss(pred, target, lam):
    """The official formula with the full M x M matrix."""
    p, t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    pos = ((p - t) ** 2).sum(-1).mean()
    corr = t.T @ t / t.shape[0]
    neg = torch.diagonal(p @ corr @ p.T).mean()
    return (pos + lam * neg) / p.shape[-1]


def loss_worker(variant: str, batch: int, repeats: int) -> None:
    """Subprocess body: time and peak memory of one loss variant; prints one JSON line."""
    from repro_shared.ssl.dense_unigrad import dense_unigrad_loss

    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(batch, 196, 768, generator=g).requires_grad_(True)
    target = torch.nn.functional.layer_norm(torch.randn(batch, 196, 768, generator=g), (768,))
    fn = dense_unigrad_loss if variant == "rowwise" else literal_loss
    small = pred[:1].detach().clone().requires_grad_(True)
    fn(small, target[:1], 0.02).backward()  # load the math libraries before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = None

    def step():
        nonlocal value
        pred.grad = None
        loss = fn(pred, target, 0.02)
        loss.backward()
        value = float(loss)

    ms = median_ms(step, repeats, warmup=0)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"value": value, "ms": ms, "peak_mb": peak, "grad_sum": float(pred.grad.double().abs().sum())}))


def bench_loss(batches, repeats: int) -> None:
    for b in batches:
        out = {}
        for variant in ("rowwise", "mxm"):
            reps = repeats if b < 128 else 1  # the M x M form at B = 128 takes minutes on a CPU
            r = subprocess.run([sys.executable, __file__, "--loss-worker", variant, str(b), str(reps)],
                               capture_output=True, text=True, check=True)
            out[variant] = json.loads(r.stdout.strip().splitlines()[-1])
        rw, mm = out["rowwise"], out["mxm"]
        emit(bench="unigrad_loss_fwd_bwd", batch=b, M=b * 196, Dd=768, threads=THREADS,
             rowwise_ms=round(rw["ms"], 2), mxm_ms=round(mm["ms"], 2), speedup=round(mm["ms"] / rw["ms"], 2),
             rowwise_peak_mb=round(rw["peak_mb"], 1), mxm_peak_mb=round(mm["peak_mb"], 1),
             memory_ratio=round(mm["peak_mb"] / max(rw["peak_mb"], 1e-3), 1),
             rel_value_diff=abs(rw["value"] - mm["value"]) / abs(mm["value"]),
             rel_grad_diff=abs(rw["grad_sum"] - mm["grad_sum"]) / mm["grad_sum"])


# ----------------------------------------------------------------------------------------------- 2. relpos
def literal_relpos(geo, dim, grid):
    """Eight separately computed blocks, as the official function is written (outer products, then sin/cos)."""
    di, dj, dh, dw, rflip, djf = geo.unbind(-1)
    r = torch.arange(grid, dtype=torch.float32)
    gh, gw = torch.meshgrid(r + 0.5, r + 0.5, indexing="ij")
    y = torch.einsum("b,n->bn", dh, gh.flatten()) + (di * grid)[:, None]
    x = torch.einsum("b,n->bn", dw, gw.flatten()) + (dj * grid)[:, None]
    xf = -torch.einsum("b,n->bn", dw, gw.flatten()) + (djf * grid)[:, None]
    f = rflip[:, None]
    x = f * xf + (1 - f) * x - 0.5
    y = y - 0.5
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4))
    oh, ow = torch.einsum("bn,c->bnc", y, omega), torch.einsum("bn,c->bnc", x, omega)
    sh = torch.einsum("b,c->bc", 10 * torch.log(dh), omega)[:, None].expand(-1, oh.shape[1], -1)
    sw = torch.einsum("b,c->bc", 10 * torch.log(dw), omega)[:, None].expand(-1, oh.shape[1], -1)
    return torch.cat([oh.sin(), oh.cos(), ow.sin(), ow.cos(), sh.sin(), sh.cos(), sw.sin(), sw.cos()], dim=2)


def bench_relpos(batches, repeats: int) -> None:
    from repro_shared.ssl.geometry import relative_sincos_embedding

    for b in batches:
        g = torch.Generator().manual_seed(0)
        geo = torch.cat([torch.rand(b, 2, generator=g) - 0.5, torch.rand(b, 2, generator=g) + 0.5,
                         (torch.rand(b, 1, generator=g) > 0.5).float(), torch.rand(b, 1, generator=g)], 1)
        ours = median_ms(lambda: relative_sincos_embedding(geo, 768, 14), repeats)
        lit = median_ms(lambda: literal_relpos(geo, 768, 14), repeats)
        diff = float((relative_sincos_embedding(geo, 768, 14) - literal_relpos(geo, 768, 14)).abs().max())
        emit(bench="relative_sincos", batch=b, grid=14, Dd=768, ours_ms=round(ours, 3), literal_ms=round(lit, 3),
             speedup=round(lit / ours, 2), max_abs_diff=diff)


# ----------------------------------------------------------------------------------------------- 3. EMA
def bench_ema(repeats: int) -> None:
    from sim.models import build_siameseim

    m = build_siameseim("vit_base_patch16")
    tgt, src = m.momentum_parameters()
    loop_t = [t.detach().clone() for t in tgt]

    def loop():
        for i, (t, s) in enumerate(zip(loop_t, src)):
            loop_t[i] = t * 0.996 + s.detach() * (1 - 0.996)

    ours = median_ms(lambda: m.momentum_update(0.996), repeats)
    lit = median_ms(loop, repeats)
    emit(bench="ema_update", tensors=len(tgt), params_m=round(sum(t.numel() for t in tgt) / 1e6, 2),
         foreach_ms=round(ours, 2), loop_ms=round(lit, 2), speedup=round(lit / ours, 2))


# ----------------------------------------------------------------------------------------------- 4. masks
def bench_masks() -> None:
    from repro_shared.ssl.masking import BlockMaskGenerator

    gen = BlockMaskGenerator(14, 118, min_num_patches=16)
    rng = random.Random(0)
    t = time.perf_counter()
    counts = [int(gen(rng).sum()) for _ in range(1000)]
    emit(bench="block_mask", masks=1000, grid=14, count=118, us_per_mask=round(1e6 * (time.perf_counter() - t) / 1000, 1),
         all_exact=all(c == 118 for c in counts))


# ----------------------------------------------------------------------------------------------- 5. step
def _step_fn(model, batch, opt):
    from sim.losses import siameseim_loss

    def step():
        out = model(*batch, momentum=0.996)
        loss = siameseim_loss(out)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_step(repeats: int) -> None:
    from sim.models import SiameseIM

    torch.manual_seed(0)
    kw = dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, decoder_dim=192, decoder_heads=3,
              num_masked=118)
    B = 4
    x1, x2 = torch.randn(B, 3, 224, 224), torch.randn(B, 3, 224, 224)
    geo = torch.tensor([[0.1, -0.2, 1.2, 0.9, 1.0, 0.4]]).repeat(B, 1)
    mask = torch.zeros(B, 196, dtype=torch.bool)
    mask[:, :118] = True
    res = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = SiameseIM(**kw)
        for mod in model.modules():
            if hasattr(mod, "fused_attn"):
                mod.fused_attn = fused
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        res[fused] = median_ms(_step_fn(model, (x1, x2, geo, mask), opt), repeats)
    emit(bench="tiny_vit_pretrain_step", embed_dim=192, depth=12, img=224, batch=B, sdpa_ms=round(res[True], 1),
         explicit_softmax_ms=round(res[False], 1), speedup=round(res[False] / res[True], 2))


def bench_gpu(batch: int = 128, repeats: int = 10) -> None:
    """ViT-B/16 pre-training step on CUDA in bf16 (SDPA), images/s and model FLOP utilisation."""
    from sim.models import build_siameseim

    dev = torch.device("cuda")
    model = build_siameseim("vit_base_patch16").to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    x1 = torch.randn(batch, 3, 224, 224, device=dev)
    x2 = torch.randn(batch, 3, 224, 224, device=dev)
    geo = torch.tensor([[0.1, -0.2, 1.2, 0.9, 1.0, 0.4]], device=dev).repeat(batch, 1)
    mask = torch.zeros(batch, 196, dtype=torch.bool, device=dev)
    mask[:, :118] = True
    step = _step_fn(model, (x1, x2, geo, mask), opt)

    def bf16_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            step()
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(bf16_step, repeats, warmup=3)

    def block_flops(t, d):  # forward FLOPs of one block over t tokens: linear layers 24 t d^2 + attention 4 t^2 d
        return 24 * t * d * d + 4 * t * t * d
    d = 768
    trained = 12 * block_flops(79, d) + 2 * block_flops(79, d) + 4 * block_flops(275, d)
    frozen = 12 * block_flops(197, d) + 2 * block_flops(197, d)
    flops = batch * (3 * trained + frozen)
    emit(bench="vit_b_pretrain_step_gpu", device=torch.cuda.get_device_name(), batch=batch, dtype="bf16",
         ms=round(ms, 1), images_per_s=round(batch / ms * 1e3, 1), tflops=round(flops / ms / 1e9, 1),
         mfu_vs_790=round(flops / ms / 1e9 / 790, 3), peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loss-worker":
        loss_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke test)")
    ap.add_argument("--gpu", action="store_true", help="also the CUDA ViT-B step")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    q = args.quick
    bench_loss([2] if q else [8, 32, 128], 1 if q else 3)
    bench_relpos([8] if q else [64, 256], 3 if q else 20)
    bench_ema(2 if q else 20)
    bench_masks()
    bench_step(1 if q else 5)
    if args.gpu:
        bench_gpu()


if __name__ == "__main__":
    main()
