"""PAP loss: official-style pairwise reference vs sort + prefix-sum fast path (forward + backward).

Prints one JSON line per measurement. Each (size, variant) timing runs in a fresh subprocess; its peak RSS is the
high-water mark (reset via /proc/self/clear_refs after building the inputs) minus the RSS at that point; the
ratios compare variants measured in the same run. Values/gradients of the fast path are compared in
float64 against a chunked float64 evaluation of the reference formula (the full float64 matrix at
100k x 1024 would need ~16 GB).

    python benchmarks/bench_loss.py [--threads 1] [--sizes 10000x128 100000x1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch

C = 80


def make_inputs(n: int, p: int, dtype: torch.dtype, seed: int = 0):
    """|V| = n valid entries (n / 80 anchors x 80 classes), p random positive entries with quality in [0.3, 1].

    Returns logits (M, 80), per-entry quality (M, 80) and targets (M, 80); the loss gets ``ious = q * t``.
    """
    g = torch.Generator().manual_seed(seed)
    m = n // C
    logits = torch.randn(m, C, generator=g, dtype=dtype) * 2 - 3
    t = torch.zeros(m * C, dtype=dtype)
    t[torch.randperm(m * C, generator=g)[:p]] = 1
    q = torch.rand(m, C, generator=g, dtype=dtype) * 0.7 + 0.3
    return logits, q, t.view(m, C)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> float:
    """Reset the peak-RSS counter (Linux clear_refs 5) and return the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:  # not Linux / not permitted: fall back to the process high-water mark
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_variant(variant: str, n: int, p: int, repeats: int, threads: int, out: mp.Queue) -> None:
    try:
        out.put(_measure(variant, n, p, repeats, threads))
    except BaseException as e:  # report instead of leaving the parent waiting
        out.put({"error": repr(e)})
        raise


def _measure(variant: str, n: int, p: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    from param_ap_loss.losses import pap_loss_fast, pap_loss_reference
    from param_ap_loss.presets import get_preset

    fn = pap_loss_fast if variant == "fast" else pap_loss_reference
    logits, q, t = make_inputs(n, p, torch.float32)
    ctrl = torch.tensor(get_preset("retinanet").ctrl_points)
    base = _reset_peak()
    times = []
    for _ in range(repeats):
        z, qq = logits.clone().requires_grad_(), q.clone().requires_grad_()
        t0 = time.perf_counter()
        loss = fn(z, qq * t, t, ctrl)
        loss.backward()
        times.append(time.perf_counter() - t0)
    return {"time_s": statistics.median(times), "peak_rss_mb": _status_mb("VmHWM") - base, "loss": loss.item()}


def run_variant(variant: str, n: int, p: int, repeats: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_time_variant, args=(variant, n, p, repeats, threads, q))
    proc.start()
    res = q.get()
    proc.join()
    if "error" in res:
        raise RuntimeError(f"{variant} at {n}x{p} failed: {res['error']}")
    return res


def check_float64(n: int, p: int, chunk: int = 64) -> dict:
    """max |d loss| and max |d grad| of the fast path vs the reference formula, both in float64."""
    from param_ap_loss.losses import _pairwise_terms, pap_loss_fast, select_entries
    from param_ap_loss.ops.piecewise import validate_ctrl_points
    from param_ap_loss.presets import get_preset

    logits, q, t = make_inputs(n, p, torch.float64)
    ctrl = validate_ctrl_points(get_preset("retinanet").ctrl_points)
    z, qq = logits.clone().requires_grad_(), q.clone().requires_grad_()
    fast = pap_loss_fast(z, qq * t, t, ctrl)
    gz_fast, gq_fast = torch.autograd.grad(fast, (z, qq))
    z2, q2 = logits.clone().requires_grad_(), q.clone().requires_grad_()
    total = 0.0
    gz, gq = torch.zeros_like(logits), torch.zeros_like(q)
    n_pos = int((t == 1).sum())
    for start in range(0, n_pos, chunk):  # the loss is a sum over positives: accumulate chunk by chunk
        zs, us, s, ups = select_entries(z2, q2 * t, t, 1e5)
        part = _pairwise_terms(zs, us, s[start:start + chunk], ups[start:start + chunk], ctrl, "searched").sum()
        part = part / (n_pos + 1e-8)
        a, b = torch.autograd.grad(part, (z2, q2))
        gz += a
        gq += b
        total += part.item()
    return {"max_abs_dloss": abs(fast.item() - total), "max_abs_dgrad_logits": (gz - gz_fast).abs().max().item(),
            "max_abs_dgrad_quality": (gq - gq_fast).abs().max().item()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["10000x128", "100000x1024"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for size in args.sizes:
        n, p = map(int, size.split("x"))
        ref = run_variant("reference", n, p, args.repeats, args.threads)
        fast = run_variant("fast", n, p, args.repeats, args.threads)
        row = {"bench": "pap_loss_fwd_bwd", "dtype": "float32", "ranked": n, "positives": p, "threads": args.threads,
               "device": "cpu", "reference_s": round(ref["time_s"], 4), "fast_s": round(fast["time_s"], 4),
               "speedup": round(ref["time_s"] / fast["time_s"], 1),
               "reference_peak_mb": round(ref["peak_rss_mb"], 1), "fast_peak_mb": round(fast["peak_rss_mb"], 1),
               "memory_ratio": round(fast["peak_rss_mb"] / max(ref["peak_rss_mb"], 1e-9), 4),
               "abs_dloss_fp32": abs(ref["loss"] - fast["loss"])}
        row.update(check_float64(n, p))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
