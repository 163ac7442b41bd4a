"""Selective-scan benchmark: sequential reference vs chunked PyTorch vs fused C++ (CPU) / Triton (CUDA).

Prints one JSON line per (L, pass, impl) with the median time and the speed-up over the sequential
reference measured in the same run. Triton is timed only on CUDA (the CPU interpreter is a
correctness tool, not a fast path); the C++ kernel only on CPU (compiled before timing).

    OMP_NUM_THREADS=2 python benchmarks/bench_scan.py            # L = 197, 1024, 4096
    python benchmarks/bench_scan.py --lengths 1024 --repeats 3
"""

import argparse
import json
import statistics
import time

import torch

from defocus.ops.selective_scan import selective_scan_chunked, selective_scan_ref


def inputs(b, E, L, N, device, grad):
    g = torch.Generator().manual_seed(0)
    ts = [
        torch.randn(b, E, L, generator=g),
        torch.rand(b, E, L, generator=g) * 0.1,
        -torch.exp(torch.log(torch.arange(1, N + 1.0))).expand(E, N).contiguous(),
        torch.randn(b, N, L, generator=g),
        torch.randn(b, N, L, generator=g),
    ]
    return [t.to(device).requires_grad_(grad) for t in ts]


def timeit(fn, repeats, warmup, sync):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[197, 1024, 4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=192)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    impls = {"ref": selective_scan_ref, "chunked": selective_scan_chunked}
    if device.type == "cuda":
        from defocus.ops.selective_scan_triton import selective_scan_triton

        impls["triton"] = selective_scan_triton
    else:
        from defocus.ops.selective_scan_cpu import cpu_kernel_available, selective_scan_cpu

        if cpu_kernel_available():
            impls["cpu"] = selective_scan_cpu
    for L in args.lengths:
        for mode in ("fwd", "fwd+bwd"):
            grad = mode != "fwd"
            ins = inputs(args.batch, args.channels, L, args.state, device, grad)

            def step(f):
                if grad:
                    f(*ins).sum().backward()
                else:
                    with torch.no_grad():
                        f(*ins)

            base = None
            for name, f in impls.items():
                t = timeit(lambda: step(f), args.repeats, args.warmup, sync)
                base = t if name == "ref" else base
                print(json.dumps({
                    "bench": "selective_scan", "impl": name, "pass": mode, "L": L, "b": args.batch,
                    "E": args.channels, "N": args.state, "device": str(device),
                    "threads": torch.get_num_threads(), "median_s": round(t, 5),
                    "speedup_vs_ref": round(base / t, 2),
                }), flush=True)


if __name__ == "__main__":
    main()
