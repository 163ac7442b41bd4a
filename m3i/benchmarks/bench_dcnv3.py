"""DCNv3 core, forward and forward + backward: our PyTorch reference vs a literal re-implementation of the official
``dcnv3_core_pytorch`` (``official_dcnv3.py``), measured in the same run, interleaved, median of ``--repeats``.

Shapes: the spec's CPU set ``(N, H, W, C, G)`` = (1, 56, 56, 64, 4), (2, 28, 28, 128, 8), (1, 14, 14, 320, 20) and
the four stages of InternImage-H at 224 px (C = 320 * 2^i, G = 10 * 2^i, 32 channels per group; k = 3, pad 1).
Each line also checks that the two agree: max |difference| of the output and of the three gradients, relative to
each tensor's largest magnitude (below 1e-5).

    python benchmarks/bench_dcnv3.py [--threads 2] [--repeats 5] [--quick]

One JSON line per (shape, pass). On a CUDA machine the Triton kernel is benchmarked by ``gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_dcnv3 import official_dcnv3_core  # noqa: E402

from m3i.ops import dcnv3_reference  # noqa: E402

SPEC_SHAPES = [(1, 56, 56, 64, 4), (2, 28, 28, 128, 8), (1, 14, 14, 320, 20)]
H_STAGES = [(1, 56, 56, 320, 10), (1, 28, 28, 640, 20), (1, 14, 14, 1280, 40), (1, 7, 7, 2560, 80)]


def inputs(n, h, w, c, g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, c, generator=gen)
    off = 1.5 * torch.randn(n, h, w, g * 18, generator=gen)
    m = torch.randn(n, h, w, g, 9, generator=gen).softmax(-1).reshape(n, h, w, g * 9)
    return x, off, m


def args(c, g):
    return (3, 3, 1, 1, 1, 1, 1, 1, g, c // g, 1.0, 0)


def run(fn, tensors, a, backward):
    ts = [t.clone().requires_grad_(backward) for t in tensors]
    start = time.perf_counter()
    out = fn(*ts, *a)
    grads = torch.autograd.grad(out, ts, torch.ones_like(out)) if backward else ()
    return time.perf_counter() - start, out.detach(), grads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="the spec's small shapes only, 2 repeats")
    opt = ap.parse_args()
    torch.set_num_threads(opt.threads)
    shapes = SPEC_SHAPES if opt.quick else SPEC_SHAPES + H_STAGES
    repeats = 2 if opt.quick else opt.repeats
    for n, h, w, c, g in shapes:
        tensors, a = inputs(n, h, w, c, g), args(c, g)
        for backward in (False, True):
            times = {"ours": [], "official": []}
            run(dcnv3_reference, tensors, a, backward)  # warm-up
            run(official_dcnv3_core, tensors, a, backward)
            for _ in range(repeats):  # interleaved: a load change hits both
                t1, o1, g1 = run(dcnv3_reference, tensors, a, backward)
                t2, o2, g2 = run(official_dcnv3_core, tensors, a, backward)
                times["ours"].append(t1)
                times["official"].append(t2)
            pairs = [(o1, o2), *zip(g1, g2)]  # relative to each tensor's largest magnitude (fp32 sums in other orders)
            diff = max(float((x - y).abs().max()) / max(float(y.abs().max()), 1.0) for x, y in pairs)
            ours, official = statistics.median(times["ours"]), statistics.median(times["official"])
            print(json.dumps({"bench": "dcnv3_core", "pass": "fwd+bwd" if backward else "fwd",
                              "shape_NHWCG": [n, h, w, c, g], "threads": opt.threads, "repeats": repeats,
                              "ours_ms": round(ours * 1e3, 2), "official_ms": round(official * 1e3, 2),
                              "speedup": round(official / ours, 3), "max_rel_diff": diff,
                              "agree_1e-5": diff < 1e-5}), flush=True)


if __name__ == "__main__":
    main()
