"""Multi-scale deformable attention: grid_sample reference vs Triton, forward and forward + backward.

Sizes (BEVFormer v2 R50 at 640x1600 input, 8 heads x 32 channels):
  sca      spatial cross-attention, 6 cameras x 2,500 queries, 4 levels 80x200 .. 10x25, 8 points
  tsa      temporal self-attention on the 200x200 BEV, 40,000 queries, 1 level, 2 slots x 4 points fused = 8
  decoder  decoder cross-attention, 900 queries on the 200x200 BEV, 4 points

One JSON line per (size, variant, mode): median seconds, speed-up over the reference measured in the same
run, max |difference| to the reference, and achieved GB/s. The byte count is the algorithm's traffic, the
same for every variant: per sample 4 gathered corner rows of D values, its 2 coordinates and its weight,
plus the output; the backward adds grad_out, the four corner rows again (the gradient recomputes them),
the read-modify-write of grad_value at the 4 corners, grad_loc / grad_attn and the zeroing of grad_value.

On CPU only the reference runs (and ``mmcv_formulation``, our restatement of the computation order of
mmcv's ``multi_scale_deformable_attn_pytorch``, to show that the shared reference kept its speed); the
Triton line then says "GPU: not run". ``python benchmarks/bench_msda.py [--sizes sca,tsa,decoder]
[--reps 5] [--dtype float32]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from repro_shared.ops.msda import msda_reference, msda_triton, triton_available

LEVELS_640x1600 = ((80, 200), (40, 100), (20, 50), (10, 25))
SIZES = {  # name: (B, Q, M, D, P, level shapes)
    "sca": (6, 2500, 8, 32, 8, LEVELS_640x1600),
    "tsa": (1, 40000, 8, 32, 8, ((200, 200),)),
    "decoder": (1, 900, 8, 32, 4, ((200, 200),)),
}


def mmcv_formulation(value, spatial_shapes, level_start_index, loc, attn):
    """The computation order of mmcv's pure-PyTorch MSDA (split, per-level grid_sample, stack, weight, sum)."""
    B, _, M, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * loc - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(B * M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    w = attn.transpose(1, 2).reshape(B * M, 1, Q, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * w).sum(-1).view(B, M * D, Q)
    return out.transpose(1, 2).contiguous()


def make(B, Q, M, D, P, shapes, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long)
    starts = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    S = int((ss[:, 0] * ss[:, 1]).sum())
    v = torch.randn(B, S, M, D, generator=g)
    loc = torch.rand(B, Q, M, len(shapes), P, 2, generator=g) * 1.2 - 0.1
    a = torch.rand(B, Q, M, len(shapes), P, generator=g).softmax(-1)
    floats = [t.to(device=device, dtype=dtype).requires_grad_() for t in (v, loc, a)]
    return floats[0], ss.to(device), starts.to(device), floats[1], floats[2]


def traffic_bytes(B, Q, M, D, P, shapes, esize: int, mode: str) -> int:
    L = len(shapes)
    samples = B * Q * M * L * P
    S = sum(h * w for h, w in shapes)
    fwd = samples * (4 * D * esize + 3 * esize) + B * Q * M * D * esize
    if mode == "fwd":
        return fwd
    bwd = B * Q * M * D * esize + samples * (4 * D * esize + 3 * esize) + samples * 4 * D * 4 * 2 \
        + samples * 3 * 4 + B * S * M * D * 4
    return fwd + bwd


def interleaved_medians(fns: dict, reps: int, device: str) -> dict:
    """Median seconds of each callable; every round runs all of them once, in rotating order, so that a
    change of machine load (a shared CPU) hits every variant alike."""
    for fn in fns.values():
        fn()  # warm-up (and Triton compilation)
    names, times = list(fns), {k: [] for k in fns}
    for r in range(reps):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fns[k]()
            if device == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="sca,tsa,decoder")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10 on CUDA, 5 on CPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    reps = a.reps or (10 if a.device == "cuda" else 5)
    variants = {"reference": msda_reference}
    if a.device == "cuda" and triton_available():
        variants["triton"] = msda_triton
    elif dtype == torch.float32:
        variants["mmcv_formulation"] = mmcv_formulation
    dev_name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    for name in a.sizes.split(","):
        dims = SIZES[name]
        args = make(*dims, a.device, dtype)
        with torch.no_grad():
            ref_out = msda_reference(*args).float()
        for mode in ("fwd", "fwd_bwd"):
            def runner(fn, mode=mode):
                if mode == "fwd":
                    def run():
                        with torch.no_grad():
                            fn(*args)
                else:
                    def run():
                        torch.autograd.grad(fn(*args).float().sum(), [args[0], args[3], args[4]])
                return run

            med = interleaved_medians({k: runner(fn) for k, fn in variants.items()}, reps, a.device)
            for vname, fn in variants.items():
                with torch.no_grad():
                    err = float((fn(*args).float() - ref_out).abs().max())
                t = med[vname]
                gbps = traffic_bytes(*dims, args[0].element_size(), mode) / t / 1e9
                print(json.dumps(dict(bench="msda", size=name, variant=vname, mode=mode, device=dev_name,
                                      dtype=a.dtype, median_s=round(t, 6),
                                      speedup_vs_reference=round(med["reference"] / t, 3), max_abs_diff=err,
                                      achieved_GBps=round(gbps, 2))), flush=True)
        if "triton" not in variants:
            print(json.dumps(dict(bench="msda", size=name, variant="triton", device=dev_name,
                                  status="GPU: not run")), flush=True)


if __name__ == "__main__":
    main()
