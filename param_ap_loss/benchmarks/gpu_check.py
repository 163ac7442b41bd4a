"""One-call device check of param_ap_loss (for a session that is lent a GPU): every CUDA path against its
reference, forward and backward, then the benchmarks. Prints one JSON line per check / measurement and a
final summary line; exit code 1 if a check fails. Runs in about two minutes on one H200.

    python benchmarks/gpu_check.py [--quick] [--device cuda]

``--device cpu`` runs the same code on the CPU (a dry run of the script itself; the comparisons are then
CPU against CPU and prove nothing about CUDA).

Checks (CUDA vs CPU float64 reference unless noted):
1. PAP loss, fast path (sort + prefix sums) in float64 and float32, values and gradients;
2. AP-Loss and aLRP Loss (error-driven updates), values and updates;
3. deformable attention module (``repro_shared.ops.msda`` Triton kernels on CUDA, float32) vs the
   ``grid_sample`` reference in float64, output and gradients of input, query and reference points;
4. one training step of each tiny detector row on CUDA: finite losses, every parameter / buffer on CUDA,
   and (RetinaNet, Deformable DETR: no random sampling) the CUDA loss equal to the CPU loss.
Benchmarks: PAP loss forward + backward, official pairwise formula vs fast path, at the spec's sizes
(ms, speed-up, peak memory); training steps per second of the tiny default ``pap-train`` configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

CHECKS: list[dict] = []
DEV = torch.device("cuda")


def _sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def _device_name() -> str:
    return torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu (dry run)"


def report(row: dict) -> None:
    print(json.dumps(row), flush=True)
    if "ok" in row:
        CHECKS.append(row)


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0, **extra) -> None:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    report({"check": name, "max_abs_err": err, "ref_scale": scale, "ok": bool(err <= atol + rtol * scale), **extra})


def check_pap_loss() -> None:
    from param_ap_loss.losses import pap_loss_fast, pap_loss_reference
    from param_ap_loss.presets import get_preset

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2500, 80, generator=g, dtype=torch.float64) * 2 - 3
    t = (torch.rand(2500, 80, generator=g) < 0.002).double()
    q = torch.rand(2500, 80, generator=g, dtype=torch.float64) * 0.7 + 0.3
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, dtype=torch.float64)
    zr, qr = z.clone().requires_grad_(), q.clone().requires_grad_()
    want = pap_loss_reference(zr, qr * t, t, ctrl)
    gz, gq = torch.autograd.grad(want, (zr, qr))
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        zc = z.to(DEV, dtype, copy=True).requires_grad_()
        qc = q.to(DEV, dtype, copy=True).requires_grad_()
        got = pap_loss_fast(zc, qc * t.to(DEV, dtype), t.to(DEV, dtype), ctrl.to(DEV, dtype))
        hz, hq = torch.autograd.grad(got, (zc, qc))
        name = str(dtype).split(".")[-1]
        _close(f"pap_loss_fast_cuda_{name}_value", got, want, tol, 1e-6)
        _close(f"pap_loss_fast_cuda_{name}_grad_logits", hz, gz, tol, 1e-5)
        _close(f"pap_loss_fast_cuda_{name}_grad_quality", hq, gq, tol, 1e-5)


def check_ranking_losses() -> None:
    from param_ap_loss.ranking_losses import alrp_loss, ap_loss

    g = torch.Generator().manual_seed(1)
    z = torch.randn(3000, 20, generator=g, dtype=torch.float64) * 2 - 2
    t = (torch.rand(3000, 20, generator=g) < 0.003).long()
    t[:50] = -1
    e = torch.rand(int((t == 1).sum()), generator=g, dtype=torch.float64)
    for name, fn in (("ap_loss", lambda zz, tt, ee: ap_loss(zz, tt)),
                     ("alrp_cls", lambda zz, tt, ee: alrp_loss(zz, tt, ee)[0]),
                     ("alrp_loc", lambda zz, tt, ee: alrp_loss(zz, tt, ee)[1])):
        zr, er = z.clone().requires_grad_(), e.clone().requires_grad_()
        want = fn(zr, t, er)
        want.backward()
        zc, ec = z.to(DEV, copy=True).requires_grad_(), e.to(DEV, copy=True).requires_grad_()
        got = fn(zc, t.to(DEV), ec)
        got.backward()
        _close(f"{name}_cuda_value", got, want, 1e-10)
        if name == "alrp_loc":  # L_loc's gradient flows to the localisation errors only
            _close(f"{name}_cuda_grad_loc_errors", ec.grad, er.grad, 1e-10)
        else:
            _close(f"{name}_cuda_update_logits", zc.grad, zr.grad, 1e-10)


def check_deformable_attention() -> None:
    from param_ap_loss.models.deformable_detr import MSDeformAttn

    g = torch.Generator().manual_seed(2)
    shapes = [(64, 64), (32, 32), (16, 16), (8, 8)]
    d, lq, b = 256, 300, 2
    s = sum(h * w for h, w in shapes)
    torch.manual_seed(0)
    attn = MSDeformAttn(d, len(shapes), 8, 4).double()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.02)
        attn.attention_weights.weight.normal_(0, 0.02)
    inputs = [torch.randn(b, lq, d, generator=g, dtype=torch.float64), torch.rand(b, lq, 4, 2, generator=g, dtype=torch.float64),
              torch.randn(b, s, d, generator=g, dtype=torch.float64)]
    pad = torch.zeros(b, s, dtype=torch.bool)
    ref = [x.clone().requires_grad_() for x in inputs]
    want = attn(ref[0], ref[1], ref[2], shapes, pad)
    gout = torch.randn(want.shape, generator=g, dtype=torch.float64)
    want_grads = torch.autograd.grad(want, ref, gout)
    cuda = MSDeformAttn(d, len(shapes), 8, 4).to(DEV)
    cuda.load_state_dict({k: v.float() for k, v in attn.state_dict().items()})
    xs = [x.to(DEV, torch.float32, copy=True).requires_grad_() for x in inputs]
    got = cuda(xs[0], xs[1], xs[2], shapes, pad.to(DEV))
    got_grads = torch.autograd.grad(got, xs, gout.float().to(DEV))
    _close("msdeformattn_cuda_fp32_output", got, want, 1e-4, 1e-4)
    for name, a, w in zip(("query", "reference_points", "input"), got_grads, want_grads):
        _close(f"msdeformattn_cuda_fp32_grad_{name}", a, w, 1e-4, 1e-3)


def _detector_step(model_name: str, loss: str, device: str, data_root: str):
    from hydra import compose, initialize_config_module

    from param_ap_loss.data.build import build_dataset
    from param_ap_loss.data.coco import collate
    from param_ap_loss.models.build import build_detector

    with initialize_config_module("param_ap_loss.configs", version_base=None):
        cfg = compose("train", overrides=[f"model={model_name}", f"loss={loss}", f"data.root={data_root}",
                                          "data.num_train=8"])
    ds = build_dataset(cfg.data, "train", train=False)
    images, targets = collate([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(ds.cat_ids)).to(device).train()
    torch.manual_seed(1)
    losses = model([im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
    sum(losses.values()).backward()
    return model, {k: float(v) for k, v in losses.items()}


def check_detectors(data_root: str) -> None:
    rows = [("retinanet_tiny", "pap_retinanet", True), ("retinanet_tiny", "alrp", True),
            ("retinanet_tiny", "focal_giou", True), ("faster_rcnn_tiny", "pap_faster_rcnn", False),
            ("faster_rcnn_tiny", "alrp", False), ("deformable_detr_tiny", "pap_detr", True)]
    for model_name, loss, comparable in rows:
        model, got = _detector_step(model_name, loss, DEV, data_root)
        placed = all(t.device.type == DEV.type for t in [*model.parameters(), *model.buffers()])
        finite = all(torch.isfinite(torch.tensor(v)) for v in got.values())
        row = {"check": f"train_step_{DEV.type}_{model_name}_{loss}", "losses": got, "all_on_device": placed, "finite": finite}
        ok = placed and finite
        if comparable and DEV.type == "cuda":
            _, want = _detector_step(model_name, loss, "cpu", data_root)
            err = max(abs(got[k] - want[k]) for k in want)
            row["max_abs_loss_diff_vs_cpu"] = err
            ok = ok and err < 1e-3 * max(1.0, max(abs(v) for v in want.values()))
        report({**row, "ok": ok})


def _time(fn, repeats: int) -> float:
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_pap_loss(sizes: list[tuple[int, int]], repeats: int) -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from bench_loss import make_inputs

    from param_ap_loss.losses import pap_loss_fast, pap_loss_reference
    from param_ap_loss.presets import get_preset

    ctrl = torch.tensor(get_preset("retinanet").ctrl_points, device=DEV)
    for n, p in sizes:
        logits, q, t = (x.to(DEV) for x in make_inputs(n, p, torch.float32))
        row = {"bench": "pap_loss_fwd_bwd", "device": _device_name(), "dtype": "float32", "ranked": n, "positives": p}
        for name, fn in (("reference", pap_loss_reference), ("fast", pap_loss_fast)):
            def step():
                z = logits.clone().requires_grad_()
                fn(z, q * t, t, ctrl).backward()

            if DEV.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            row[f"{name}_ms"] = round(1e3 * _time(step, repeats), 3)
            if DEV.type == "cuda":
                row[f"{name}_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        row["speedup"] = round(row["reference_ms"] / row["fast_ms"], 1)
        report(row)


def bench_training_steps(data_root: str, steps: int) -> None:
    """Optimizer steps per second of the tiny default configuration (batch 8, 128 px) on CUDA."""
    from hydra import compose, initialize_config_module

    from repro_shared.data import SkipNoneCollate, build_loader

    from param_ap_loss.data.build import build_dataset
    from param_ap_loss.data.coco import collate
    from param_ap_loss.engine import train_one_epoch
    from param_ap_loss.models.build import build_detector
    from param_ap_loss.optim import build_optimizer, build_scheduler

    for model_name, loss in (("retinanet_tiny", "pap_retinanet"), ("deformable_detr_tiny", "pap_detr")):
        with initialize_config_module("param_ap_loss.configs", version_base=None):
            cfg = compose("train", overrides=[f"model={model_name}", f"loss={loss}", f"data.root={data_root}"])
        ds = build_dataset(cfg.data, "train", train=True, train_size=int(cfg.model.train_size))
        model = build_detector(cfg.model, cfg.loss, num_classes=len(ds.cat_ids)).to(DEV)
        loader = build_loader(ds, batch_size=8, seed=0, collate_fn=SkipNoneCollate(collate))
        opt = build_optimizer(model, cfg.train)
        sched = build_scheduler(opt, cfg.train, len(loader))
        loader.set_epoch(0)
        train_one_epoch(model, loader, opt, sched, DEV, epoch=0, step=0, max_iters=2)  # warm-up
        _sync()
        t0, done = time.perf_counter(), 0
        epoch = 1
        while done < steps:
            loader.set_epoch(epoch)
            done = train_one_epoch(model, loader, opt, sched, DEV, epoch=epoch, step=done, max_iters=steps)
            epoch += 1
        _sync()
        report({"bench": "train_steps_per_s", "device": _device_name(), "model": model_name, "loss": loss,
                "batch": 8, "image": 128, "steps_per_s": round(done / (time.perf_counter() - t0), 2)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller benchmark sizes")
    ap.add_argument("--data-root", default="/tmp/param_ap_loss_gpu_check/shapes")
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of this script)")
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"check": "cuda_available", "ok": False, "note": "no CUDA device: GPU: not run"}))
        sys.exit(1)
    t0 = time.time()
    for fn in (check_pap_loss, check_ranking_losses, check_deformable_attention):
        fn()
    check_detectors(args.data_root)
    sizes = [(10_000, 128), (100_000, 1024)] if not args.quick else [(10_000, 128)]
    bench_pap_loss(sizes, repeats=5)
    bench_training_steps(args.data_root, steps=20 if args.quick else 60)
    failed = [c["check"] for c in CHECKS if not c["ok"]]
    print(json.dumps({"package": "param_ap_loss", "gpu_check": "FAIL" if failed else "OK", "device": _device_name(),
                      "checks": len(CHECKS), "failed": failed, "wall_s": round(time.time() - t0, 1)}), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
