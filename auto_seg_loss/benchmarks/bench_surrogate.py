"""Benchmark the hot ops of Auto Seg-Loss, all variants timed in the same run (spec §10).

Prints one JSON line per measurement:
* ``bezier``: the isolated curve h on M points, forward + backward, for reference (official evaluation
  order: every piece on every element), select (own piece only, exact), lut (table + linear
  interpolation, 2^16 bins, one run of bins per piece) and ``lut_uniform`` (the single uniform table used
  before issue 15.3, which interpolates across piece junctions; kept here only as the speed baseline), with
  the ratio to the reference, the max |delta| of values and gradients, and the largest slope error in
  the bins next to a junction;
* ``loss``: AutoSegLoss forward + backward per metric on (N, K, H, W): the official formulation (reference
  curve, one-hot reductions) vs select / lut curves, and lut + gather reductions (the default);
* ``dilate``: (2r+1)^2 max-pool vs the separable form (r = 5), forward + backward.

Usage: ``python benchmarks/bench_surrogate.py [--points 2000000] [--shape 2 21 128 128] [--repeats 5]
[--parts bezier loss dilate] [--device cpu|cuda]`` (on CUDA the timer synchronises the device; the GPU
check ``benchmarks/gpu_check.py`` calls these functions with the re-training shape).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from auto_seg_loss.losses import SEARCHED_CONTROL_POINTS, SURROGATES, AutoSegLoss
from auto_seg_loss.ops.bezier import BezierCurve, bezier_select
from auto_seg_loss.ops.morphology import dilate

IMPLS = ("reference", "select", "lut")


class _UniformLUT(torch.autograd.Function):
    """Baseline only: the pre-fix table (one uniform grid over [0, 1], so the bin holding a junction
    interpolates across it)."""

    @staticmethod
    def forward(ctx, x, table):
        bins = table.numel() - 1
        u = x.clamp(0.0, 1.0) * bins
        i = u.floor().clamp_(max=bins - 1).long()
        lo = table[i]
        slope = table[i + 1] - lo
        ctx.save_for_backward(slope)
        ctx.bins = bins
        return torch.addcmul(lo, slope, u - i)

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope * ctx.bins, None


def _uniform_lut_curve(cp: torch.Tensor, bins: int = 1 << 16, device: str = "cpu"):
    table = bezier_select(torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64), cp).float().to(device)
    return lambda x: _UniformLUT.apply(x, table)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int, device="cpu") -> float:
    """Best of ``repeats`` wall times in ms after one warm-up (device synchronised around each run)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_bezier(points: int, repeats: int, device: str = "cpu") -> None:
    cp = torch.tensor(SEARCHED_CONTROL_POINTS["mIoU"][6:], dtype=torch.float64)  # h_or, junction at 0.834171
    junction = float(cp[2])
    x = torch.rand(points)
    x[:2000] = junction + (torch.arange(2000) - 1000.0) * 1e-8  # inputs next to the junction (both sides)
    x, g = x.to(device), torch.rand(points, device=device)
    curves = {impl: BezierCurve(cp, impl).to(device) for impl in IMPLS}
    curves["lut_uniform"] = _uniform_lut_curve(cp, device=device)
    out = {}
    for impl, curve in curves.items():
        def run():
            xx = x.clone().requires_grad_()
            y = curve(xx)
            y.backward(g)
            return y.detach(), xx.grad

        ms = _time(run, repeats, device)
        y, gx = run()
        out[impl] = (ms, y, gx)
    ref_ms, ref_y, ref_g = out["reference"]
    near = (x - junction).abs() < 1.5e-5  # the bins next to the junction
    for impl, (ms, y, gx) in out.items():
        rel = (gx - ref_g).abs() / ref_g.abs().clamp_min(1e-3)
        print(json.dumps({
            "bench": "bezier", "device": str(device), "impl": impl, "points": points, "ms": round(ms, 3),
            "speedup_vs_reference": round(ref_ms / ms, 3),
            "speedup_vs_lut_uniform": round(out["lut_uniform"][0] / ms, 3),
            "max_abs_dy": float((y - ref_y).abs().max()),
            "max_rel_dgrad_next_to_junction": float(rel[near].max()),
            "max_rel_dgrad_elsewhere": float(rel[~near & (x > 0.01)].max()),
        }))


def bench_loss(shape, repeats: int, device: str = "cpu", metrics=None) -> None:
    n, k, h, w = shape
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, h, w, generator=gen)
    low = torch.randint(0, k, (n, 1, h // 16, w // 16), generator=gen).float()
    labels = torch.nn.functional.interpolate(low, size=(h, w), mode="nearest")[:, 0].long()
    labels[torch.rand(n, h, w, generator=gen) < 0.05] = 255
    logits, labels = logits.to(device), labels.to(device)
    variants = [("reference", "onehot"), ("select", "onehot"), ("lut", "onehot"), ("lut", "gather")]
    for metric in metrics or SURROGATES:
        res = {}
        for impl, red in variants:
            loss_fn = AutoSegLoss(k, metric, "searched", drop_bg=metric == "BIoU", bezier_impl=impl,
                                  reduction=red).to(device)

            def run():
                z = logits.clone().requires_grad_()
                loss = loss_fn(z, labels)
                loss.backward()
                return float(loss.detach()), z.grad

            ms = _time(run, repeats, device)
            res[f"{impl}+{red}"] = (ms,) + run()
        ref = res["reference+onehot"]
        for impl, (ms, val, grad) in res.items():
            print(json.dumps({
                "bench": "loss", "device": str(device), "metric": metric, "impl": impl, "shape": list(shape),
                "ms": round(ms, 3),
                "speedup_vs_reference": round(ref[0] / ms, 3), "abs_dloss": abs(val - ref[1]),
                "max_abs_dgrad": float((grad - ref[2]).abs().max()),
                "max_abs_grad": float(ref[2].abs().max()),
            }))


def bench_dilate(shape, repeats: int, radius: int = 5, device: str = "cpu") -> None:
    z = torch.rand(*shape, device=device)
    g = torch.rand(*shape, device=device)
    res = {}
    for sep in (False, True):
        def run():
            zz = z.clone().requires_grad_()
            y = dilate(zz, radius, separable=sep)
            y.backward(g)
            return y.detach(), zz.grad

        res[sep] = (_time(run, repeats, device),) + run()
    base = res[False]
    for sep, (ms, y, gz) in res.items():
        print(json.dumps({
            "bench": "dilate", "device": str(device), "impl": "separable" if sep else "square", "radius": radius, "shape": list(shape),
            "ms": round(ms, 3), "speedup_vs_square": round(base[0] / ms, 3),
            "max_abs_dy": float((y - base[1]).abs().max()), "max_abs_dgrad": float((gz - base[2]).abs().max()),
        }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--shape", type=int, nargs=4, default=[2, 21, 128, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", nargs="+", default=["bezier", "loss", "dilate"], choices=["bezier", "loss", "dilate"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "bezier" in args.parts:
        bench_bezier(args.points, args.repeats, args.device)
    if "loss" in args.parts:
        bench_loss(tuple(args.shape), args.repeats, args.device)
    if "dilate" in args.parts:
        bench_dilate(tuple(args.shape), args.repeats, device=args.device)


if __name__ == "__main__":
    main()
