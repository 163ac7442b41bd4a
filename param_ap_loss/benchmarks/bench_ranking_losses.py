"""AP-Loss / aLRP Loss: the official per-positive loop vs this package's sort + prefix sums (forward + update).

The "loop" variant is the official computation written here (one Python iteration per positive, vectorised
over the negatives that can still rank above it, as in the aLRP code base); ``ranking_losses`` is ours.
Both run in the same process; one JSON line per (loss, size) with the median time of ``--repeats`` runs,
the speed-up and the largest difference of loss and logit update between them (float64).

    python benchmarks/bench_ranking_losses.py [--threads 1] [--sizes 20000x64 200000x512 1000000x1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from param_ap_loss.ranking_losses import alrp_loss, ap_loss


def loop_reference(logits: torch.Tensor, targets: torch.Tensor, e: torch.Tensor | None, delta: float = 1.0):
    """Per-positive loop (official structure): returns (classification loss, logit update (M,))."""
    pos, neg = targets == 1, targets == 0
    s = logits[pos]
    thr = s.min() - delta
    rel = neg & (logits >= thr)
    n = logits[rel]
    p = s.numel()
    g_pos, g_neg = torch.zeros_like(s), torch.zeros_like(n)
    prec, best = torch.zeros_like(s), 0.0
    for i in torch.argsort(s).tolist():
        fg = ((s - s[i]) / (2 * delta) + 0.5).clamp(0, 1)
        fg[i] = 0
        bg = ((n - s[i]) / (2 * delta) + 0.5).clamp(0, 1)
        rank_pos, n_fp = 1 + fg.sum(), bg.sum()
        rank = rank_pos + n_fp
        cur = (rank_pos / rank).item()
        if e is None:  # interpolated AP-Loss
            if best <= cur:
                best = cur
                g_neg += bg / rank
            else:
                g_neg += bg / rank * (1 - best) / (1 - cur)
            g_pos[i], prec[i] = -(1 - best), best
        else:  # aLRP
            prec[i] = cur
            if n_fp > 1e-5:
                g_pos[i] = -((fg * e).sum() + n_fp) / rank
                g_neg += bg * (-g_pos[i] / n_fp)
    grad = torch.zeros_like(logits)
    grad[pos], grad[rel] = g_pos / p, g_neg / p
    return 1 - prec.mean(), grad


def make_inputs(n: int, p: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g, dtype=torch.float64) * 2 - 3
    t = torch.zeros(n, dtype=torch.long)
    t[torch.randperm(n, generator=g)[:p]] = 1
    logits[t == 1] += 2  # positives score higher on average
    return logits, t, torch.rand(p, generator=g, dtype=torch.float64)


def _median_time(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["20000x64", "200000x512", "1000000x1024"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        n, p = map(int, size.split("x"))
        logits, t, e = make_inputs(n, p)
        for name in ("ap_loss", "alrp"):
            err = e if name == "alrp" else None

            def ours():
                z = logits.clone().requires_grad_()
                loss = alrp_loss(z, t, err)[0] if err is not None else ap_loss(z, t)
                loss.backward()
                return loss.detach(), z.grad

            t_loop, (l_loop, g_loop) = _median_time(lambda: loop_reference(logits, t, err), args.repeats)
            t_ours, (l_ours, g_ours) = _median_time(ours, args.repeats)
            print(json.dumps({"bench": f"{name}_fwd_update", "device": "cpu", "threads": args.threads, "entries": n,
                              "positives": p, "loop_s": round(t_loop, 4), "ours_s": round(t_ours, 4),
                              "speedup": round(t_loop / t_ours, 2), "abs_dloss": abs(l_loop.item() - l_ours.item()),
                              "max_abs_dupdate": (g_loop - g_ours).abs().max().item()}), flush=True)


if __name__ == "__main__":
    main()
