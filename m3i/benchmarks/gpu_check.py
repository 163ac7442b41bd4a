"""Device check of m3i: one prepared script for a session that is lent a GPU (``make gpu-check``).

1. The Triton DCNv3 kernels against the PyTorch reference, forward and backward (input, offset and mask
   gradients), fp32 / fp16 / bf16, at InternImage-T stage 1 and InternImage-H stage shapes (224 px), plus
   offsets far outside the map.
2. DCNv3 core speed, Triton vs the reference (issue 11's goal: >= 10x), forward and forward + backward at the four
   InternImage-H stages (batch 8, 224 px), with the achieved memory bandwidth of the Triton forward against the
   H200's 4.3 TB/s (bytes: input, offsets, masks read once, output written once).
3. One InternImage-H training step (forward + backward, activation checkpointing, bf16 autocast, batch 2 at 224):
   seconds per step and peak memory, and the same step of the M3I pre-training model (InternImage-H backbone).

One JSON line per check / measurement; exit status 1 if a check fails. Without CUDA it prints one line saying
"GPU: not run" and exits 0. ``--smoke`` runs every section on the CPU at toy sizes (the Triton interpreter; tests
the script itself, numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes, Triton interpreter")
    opt = ap.parse_args()
    if opt.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if not opt.smoke and not torch.cuda.is_available():
        emit(check="gpu_check", status="GPU: not run (no CUDA device visible)")
        return 0
    from m3i.ops import dcnv3_reference, dcnv3_triton

    dev = torch.device("cpu" if opt.smoke else "cuda")
    ok = True

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def inputs(n, h, w, c, g, spread=2.0, seed=0):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n, h, w, c, generator=gen)
        off = spread * torch.randn(n, h, w, g * 18, generator=gen)
        m = torch.randn(n, h, w, g, 9, generator=gen).softmax(-1).reshape(n, h, w, g * 9)
        return [t.to(dev) for t in (x, off, m)]

    def geo(c, g):
        return (3, 3, 1, 1, 1, 1, 1, 1, g, c // g, 1.0, 0)

    # 1. correctness --------------------------------------------------------------------------------------
    shapes = [(1, 6, 7, 16, 2)] if opt.smoke else [(4, 56, 56, 64, 4), (2, 56, 56, 320, 10), (2, 14, 14, 1280, 40)]
    tols = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
    for shape in shapes:
        base = inputs(*shape)
        if shape == shapes[0]:
            base[1][0, : shape[1] // 2] = 3e4  # far outside (and finite in fp16): zero output and zero gradient
        for dtype, tol in tols.items():
            tri = [t.to(dtype).requires_grad_() for t in base]
            out = dcnv3_triton(*tri, *geo(shape[3], shape[4]))
            go = torch.randn_like(out)
            gt = torch.autograd.grad(out, tri, go)
            ref = [t.detach().float().requires_grad_() for t in tri]
            r = dcnv3_reference(*ref, *geo(shape[3], shape[4]), swap_pad=False)
            gr = torch.autograd.grad(r, ref, go.float())
            errs = {name: float((a.detach().float() - b.detach()).abs().max()) / max(float(b.detach().abs().max()), 1.0)
                    for name, a, b in zip(("out", "grad_input", "grad_offset", "grad_mask"), (out, *gt), (r, *gr))}
            passed = max(errs.values()) <= tol
            ok &= passed
            emit(check="dcnv3_triton_vs_reference", shape_NHWCG=list(shape), dtype=str(dtype).split(".")[-1],
                 max_rel_err={k: f"{v:.2e}" for k, v in errs.items()}, tol=tol, passed=passed)

    # 2. speed --------------------------------------------------------------------------------------------
    stages = [(1, 8, 8, 32, 2)] if opt.smoke else [(8, 56, 56, 320, 10), (8, 28, 28, 640, 20), (8, 14, 14, 1280, 40),
                                                    (8, 7, 7, 2560, 80)]
    reps = 1 if opt.smoke else 10

    def timed(fn, tensors, backward):
        ts = [t.clone().requires_grad_(backward) for t in tensors]
        sync()
        start = time.perf_counter()
        out = fn(*ts)
        if backward:
            torch.autograd.grad(out, ts, torch.ones_like(out))
        sync()
        return time.perf_counter() - start

    for shape in stages:
        tensors, g = inputs(*shape), geo(shape[3], shape[4])
        for backward in (False, True):
            t_tri, t_ref = [], []
            for _ in range(reps + 1):  # first round: compilation / warm-up, dropped
                t_tri.append(timed(lambda *t: dcnv3_triton(*t, *g), tensors, backward))
                t_ref.append(timed(lambda *t: dcnv3_reference(*t, *g, swap_pad=False), tensors, backward))
            tri, ref = statistics.median(t_tri[1:] or t_tri), statistics.median(t_ref[1:] or t_ref)
            n, h, w, c, gg = shape
            nbytes = 4 * (2 * n * h * w * c + n * h * w * gg * 27)
            emit(bench="dcnv3_core", device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke)",
                 pass_="fwd+bwd" if backward else "fwd", shape_NHWCG=list(shape), triton_ms=round(tri * 1e3, 3),
                 reference_ms=round(ref * 1e3, 3), speedup=round(ref / tri, 2), goal_speedup=10,
                 **({} if backward else {"triton_GBps": round(nbytes / tri / 1e9, 1),
                                         "fraction_of_4.3TBps": round(nbytes / tri / 4.3e12, 4)}))

    # 3. InternImage-H step, and the M3I model around it ------------------------------------------------------
    from m3i.models.internimage import InternImage, build_internimage
    from m3i.models.m3i import M3IModel
    from m3i.losses import M3IObjective

    if opt.smoke:
        net = InternImage(channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8], num_classes=10, with_cp=True,
                          use_clip_projector=True, pretrain_embed_dim=32, attnpool_num_heads=4, clip_embed_dim=16,
                          core_op="DCNv3_pytorch")  # the interpreter is too slow for a whole model
        batch, size = 2, 64
    else:
        net = build_internimage("h", num_classes=1000, with_cp=True)
        batch, size = 2, 224
    net = net.to(dev)
    opt_ = torch.optim.AdamW(net.parameters(), lr=1e-5)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(1 if opt.smoke else 4):
        sync()
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt_.zero_grad()
        loss.backward()
        opt_.step()
        sync()
        times.append(time.perf_counter() - start)
    finite = bool(torch.isfinite(loss))
    ok &= finite
    emit(bench="internimage_h_train_step" if not opt.smoke else "internimage_tiny_train_step", batch=batch, size=size,
         with_cp=True, precision="bf16" if dev.type == "cuda" else "fp32",
         s_per_step=round(statistics.median(times[1:] or times), 3),
         peak_mem_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
         params_M=round(sum(p.numel() for p in net.parameters()) / 1e6, 1), loss_finite=finite)
    del net, opt_
    backbone = (InternImage(channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8], num_classes=0,
                            use_clip_projector=True, pretrain_embed_dim=32, attnpool_num_heads=4, clip_embed_dim=16,
                            core_op="DCNv3_pytorch")
                if opt.smoke else build_internimage("h", num_classes=0, with_cp=True))
    grid = size // 16
    model = M3IModel(backbone, grid_size=grid, patch=16, count_a=grid * grid // 2,
                     decoder_dim=32 if opt.smoke else 1024,
                     decoder_heads=4 if opt.smoke else 16, projector_depth=1 if opt.smoke else 2,
                     predictor_depth=1 if opt.smoke else 4, num_classes=10).to(dev)
    mix = torch.zeros(batch, grid * grid, dtype=torch.bool, device=dev)
    mix[:, ::2] = True
    geom = torch.tensor([[0.1, 0.1, 0.9, 0.9, 0.0, 1.0]] * batch, device=dev)
    times = []
    for _ in range(1 if opt.smoke else 3):
        sync()
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = model(x, x.flip(-1), geom, mix)
        losses = M3IObjective(txt=0)(out, y, None)
        losses["loss"].backward()
        sync()
        times.append(time.perf_counter() - start)
    finite = all(bool(torch.isfinite(v)) for v in losses.values())
    on_device = all(t.device.type == dev.type for t in [*model.parameters(), *model.buffers()])
    ok &= finite and on_device
    emit(bench="m3i_internimage_h_step" if not opt.smoke else "m3i_tiny_step", batch=batch, size=size,
         s_per_step=round(statistics.median(times[1:] or times), 3),
         losses={k: round(float(v), 4) for k, v in losses.items()},
         all_tensors_on_device=on_device, loss_finite=finite)
    emit(check="gpu_check", passed=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
