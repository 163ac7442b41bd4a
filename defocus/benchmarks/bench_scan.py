"""Selective-scan benchmark: sequential reference vs chunked PyTorch vs fused C++ (CPU) / Triton (CUDA).

Prints one JSON line per (E, L, pass, impl) with the median time and the speed-up over the sequential
reference measured in the same run. On CPU the times are process CPU time (``time.process_time``): on a
shared machine wall time counts the time other processes hold the cores, which inflates long runs (the
reference) more than short ones; with one thread CPU time is the kernel's own time. Triton is timed only on CUDA (the CPU interpreter is a correctness tool,
not a fast path); the C++ kernel only on CPU (compiled before timing). On CUDA every line also gives the
achieved bandwidth of the forward, counted as the minimum bytes a fused forward must move (read u, delta, z,
B, C, A, D, delta_bias once, write out once) divided by the time, and its fraction of ``--peak-gbs`` (the
H200's 4.3 TB/s by default).

    OMP_NUM_THREADS=1 python benchmarks/bench_scan.py                       # CPU: E 192/768/1536, L 197/1024
    python benchmarks/bench_scan.py --batch 64 --widths 1536 --lengths 197 --dtype bfloat16 --full   # GPU goal
"""

import argparse
import json
import statistics
import time

import torch

from defocus.ops import selective_scan_chunked, selective_scan_ref


def make_inputs(b, E, L, N, device, dtype, grad, full):
    g = torch.Generator().manual_seed(0)
    ts = {
        "u": torch.randn(b, E, L, generator=g),
        "delta": torch.rand(b, E, L, generator=g) * (1.0 if full else 0.1) - (2.0 if full else 0.0),
        "A": -torch.arange(1, N + 1.0).expand(E, N).contiguous(),
        "B": torch.randn(b, N, L, generator=g),
        "C": torch.randn(b, N, L, generator=g),
    }
    if full:  # the De-focus mixer call: D skip, gate, delta bias + softplus, head-wise RMS norm
        ts.update(D=torch.ones(E), z=torch.randn(b, E, L, generator=g), delta_bias=torch.randn(E, generator=g) * 0.1)
    out = {}
    for k, t in ts.items():
        t = t.to(device=device, dtype=torch.float32 if k in ("A", "D", "delta_bias") else dtype)
        out[k] = t.requires_grad_(grad)
    return out


def forward_bytes(ins: dict, out_elems: int, out_itemsize: int) -> int:
    """Minimum HBM traffic of a fused forward: every input read once, the output written once."""
    return sum(t.numel() * t.element_size() for t in ins.values()) + out_elems * out_itemsize


def timeit(fn, repeats, warmup, sync, clock=time.perf_counter):
    """Median over ``repeats`` calls of ``fn`` after ``warmup`` calls, measured with ``clock``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", type=int, nargs="+", default=[192, 768, 1536], help="channels E")
    p.add_argument("--lengths", type=int, nargs="+", default=[197, 1024])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--full", action="store_true", help="D, z, delta bias + softplus and group_size 64 (mixer call)")
    p.add_argument("--impls", nargs="+", default=None, help="subset of ref chunked cpu triton")
    p.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak-gbs", type=float, default=4300.0, help="device bandwidth for the fraction (H200: 4.3 TB/s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    impls = {"ref": selective_scan_ref, "chunked": selective_scan_chunked}
    if device.type == "cuda":
        from defocus.ops.selective_scan_triton import selective_scan_triton

        impls["triton"] = selective_scan_triton
    else:
        from defocus.ops.selective_scan_cpu import cpu_kernel_available, selective_scan_cpu

        if cpu_kernel_available():
            impls["cpu"] = selective_scan_cpu
    if args.impls:
        impls = {k: v for k, v in impls.items() if k in args.impls or k == "ref"}
    kw = dict(delta_softplus=True, group_size=64) if args.full else {}
    for E in args.widths:
        for L in args.lengths:
            for mode in args.passes:
                grad = mode != "fwd"
                ins = make_inputs(args.batch, E, L, args.state, device, dtype, grad, args.full)

                def step(f):
                    if grad:
                        f(**ins, **kw).float().sum().backward()
                    else:
                        with torch.no_grad():
                            f(**ins, **kw)

                base = None
                for name, f in impls.items():
                    t = timeit(lambda: step(f), args.repeats, args.warmup, sync, clock)
                    base = t if name == "ref" else base
                    rec = {"bench": "selective_scan", "impl": name, "pass": mode, "E": E, "L": L, "b": args.batch,
                           "N": args.state, "dtype": args.dtype, "full": args.full, "device": str(device),
                           "threads": torch.get_num_threads(), "clock": clock.__name__, "median_s": round(t, 6),
                           "speedup_vs_ref": round(base / t, 2)}
                    if device.type == "cuda":
                        rec["gpu"] = torch.cuda.get_device_name(device)
                        if mode == "fwd":
                            gbs = forward_bytes(ins, args.batch * E * L, dtype.itemsize) / t / 1e9
                            rec.update(achieved_GBps=round(gbs, 1), fraction_of_peak=round(gbs / args.peak_gbs, 4))
                    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
