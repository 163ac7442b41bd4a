"""MSDA core: grid_sample reference vs naive per-sample loop vs Triton (CUDA only), forward and fwd+bwd.

Prints one JSON line per (size, variant) with the median time and the speed-up over the reference measured
in the same run. ``python benchmarks/bench_msda.py [--device cuda] [--sizes tiny,decoder,tsa,sca]``.
"""
import argparse
import json
import statistics
import time

import torch

from bevformer_v2.ops.msda import msda_naive, msda_reference, msda_triton, triton_available

SIZES = {  # name: (B, Q, M, D, P, level shapes)
    "naive_check": (1, 16, 2, 8, 2, ((6, 10), (3, 5))),
    "tiny_sca": (6, 400, 4, 16, 8, ((12, 24), (6, 12), (3, 6), (2, 3))),
    "decoder": (1, 900, 8, 32, 4, ((50, 50),)),
    "tsa_50": (1, 2500, 8, 32, 8, ((50, 50),)),
    "sca_medium": (6, 2500, 8, 32, 8, ((40, 100), (20, 50), (10, 25), (5, 13))),
}


def make(B, Q, M, D, P, shapes, device):
    ss = torch.tensor(shapes, device=device)
    start = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    S = int((ss[:, 0] * ss[:, 1]).sum())
    v = torch.randn(B, S, M, D, device=device, requires_grad=True)
    loc = (torch.rand(B, Q, M, len(shapes), P, 2, device=device) * 1.2 - 0.1).requires_grad_()
    a = torch.rand(B, Q, M, len(shapes), P, device=device).softmax(-1).requires_grad_()
    return v, ss, start, loc, a


def timeit(fn, reps, device):
    fn()
    ts = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="naive_check,tiny_sca,decoder,tsa_50")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(2)
    variants = {"reference": msda_reference}
    if a.device == "cuda" and triton_available():
        variants["triton"] = msda_triton
    for name in a.sizes.split(","):
        args = make(*SIZES[name], a.device)
        vs = dict(variants)
        if name == "naive_check":
            vs["naive_loop"] = msda_naive
        base = {}
        for vname, fn in vs.items():
            for mode in ("fwd", "fwd_bwd"):
                if mode == "fwd":
                    def run():
                        with torch.no_grad():
                            fn(*args)
                else:
                    def run():
                        fn(*args).sum().backward()
                t = timeit(run, 1 if vname == "naive_loop" else a.reps, a.device)
                base.setdefault(mode, t)
                with torch.no_grad():
                    err = float((fn(*args) - msda_reference(*args)).abs().max())
                print(json.dumps(dict(bench="msda", size=name, variant=vname, mode=mode, device=a.device,
                                      median_s=round(t, 6), speedup_vs_reference=round(base[mode] / t, 3),
                                      max_abs_diff=err)), flush=True)


if __name__ == "__main__":
    main()
