"""Benchmark the hot ops of Auto Seg-Loss, all variants timed in the same run (spec §10).

Prints one JSON line per measurement:
* ``bezier``: the isolated curve h on M points, forward + backward, for reference (official evaluation
  order: every piece on every element), select (own piece only, exact) and lut (table + linear
  interpolation, 2^16 bins), with the ratio to the reference and the max |delta| of values and gradients;
* ``loss``: AutoSegLoss forward + backward per metric on (N, K, H, W): the official formulation (reference
  curve, one-hot reductions) vs select / lut curves, and lut + gather reductions (the default);
* ``dilate``: (2r+1)^2 max-pool vs the separable form (r = 5), forward + backward.

Usage: ``python benchmarks/bench_surrogate.py [--points 2000000] [--shape 2 21 128 128] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from auto_seg_loss.losses import NUM_CURVES, SEARCHED_CONTROL_POINTS, SURROGATES, AutoSegLoss
from auto_seg_loss.ops.bezier import BezierCurve
from auto_seg_loss.ops.morphology import dilate

IMPLS = ("reference", "select", "lut")


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_bezier(points: int, repeats: int) -> None:
    cp = torch.tensor(SEARCHED_CONTROL_POINTS["mIoU"][:6], dtype=torch.float64)
    x = torch.rand(points)
    g = torch.rand(points)
    out = {}
    for impl in IMPLS:
        curve = BezierCurve(cp, impl)

        def run():
            xx = x.clone().requires_grad_()
            y = curve(xx)
            y.backward(g)
            return y.detach(), xx.grad

        ms = _time(run, repeats)
        y, gx = run()
        out[impl] = (ms, y, gx)
    ref_ms, ref_y, ref_g = out["reference"]
    for impl, (ms, y, gx) in out.items():
        # exclude the near-vertical start of this curve and the bin holding the piece junction (h' jumps)
        mask = (x > 0.01) & ((x - cp[2]).abs() > 2.0 / (1 << 16))
        print(json.dumps({
            "bench": "bezier", "impl": impl, "points": points, "ms": round(ms, 3),
            "speedup_vs_reference": round(ref_ms / ms, 3),
            "max_abs_dy": float((y - ref_y).abs().max()),
            "max_rel_dgrad_off_kinks": float(((gx - ref_g).abs() / ref_g.abs().clamp_min(1e-3))[mask].max()),
        }))


def bench_loss(shape, repeats: int) -> None:
    n, k, h, w = shape
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, h, w, generator=gen)
    low = torch.randint(0, k, (n, 1, h // 16, w // 16), generator=gen).float()
    labels = torch.nn.functional.interpolate(low, size=(h, w), mode="nearest")[:, 0].long()
    labels[torch.rand(n, h, w, generator=gen) < 0.05] = 255
    variants = [("reference", "onehot"), ("select", "onehot"), ("lut", "onehot"), ("lut", "gather")]
    for metric in SURROGATES:
        res = {}
        for impl, red in variants:
            loss_fn = AutoSegLoss(k, metric, "searched", drop_bg=metric == "BIoU", bezier_impl=impl, reduction=red)

            def run():
                z = logits.clone().requires_grad_()
                loss = loss_fn(z, labels)
                loss.backward()
                return float(loss.detach()), z.grad

            ms = _time(run, repeats)
            res[f"{impl}+{red}"] = (ms,) + run()
        ref = res["reference+onehot"]
        for impl, (ms, val, grad) in res.items():
            print(json.dumps({
                "bench": "loss", "metric": metric, "impl": impl, "shape": list(shape), "ms": round(ms, 3),
                "speedup_vs_reference": round(ref[0] / ms, 3), "abs_dloss": abs(val - ref[1]),
                "max_abs_dgrad": float((grad - ref[2]).abs().max()),
                "max_abs_grad": float(ref[2].abs().max()),
            }))


def bench_dilate(shape, repeats: int, radius: int = 5) -> None:
    z = torch.rand(*shape)
    g = torch.rand(*shape)
    res = {}
    for sep in (False, True):
        def run():
            zz = z.clone().requires_grad_()
            y = dilate(zz, radius, separable=sep)
            y.backward(g)
            return y.detach(), zz.grad

        res[sep] = (_time(run, repeats),) + run()
    base = res[False]
    for sep, (ms, y, gz) in res.items():
        print(json.dumps({
            "bench": "dilate", "impl": "separable" if sep else "square", "radius": radius, "shape": list(shape),
            "ms": round(ms, 3), "speedup_vs_square": round(base[0] / ms, 3),
            "max_abs_dy": float((y - base[1]).abs().max()), "max_abs_dgrad": float((gz - base[2]).abs().max()),
        }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--shape", type=int, nargs=4, default=[2, 21, 128, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench_bezier(args.points, args.repeats)
    bench_loss(tuple(args.shape), args.repeats)
    bench_dilate(tuple(args.shape), args.repeats)


if __name__ == "__main__":
    main()
