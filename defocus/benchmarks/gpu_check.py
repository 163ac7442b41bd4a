"""Device check for a session that is lent a GPU: every CUDA path against its reference, then the benchmarks.

    python benchmarks/gpu_check.py [--quick] [--out results.jsonl]

1. Triton selective scan vs the float64 sequential reference (on CPU), forward and backward (out, last state,
   grads of u, delta, A, B, C, D, z, delta_bias), fp32 and bf16 inputs, with and without the fused epilogue.
2. De-focus Mamba mixer and the Small model, Triton vs reference scan on CUDA under bf16 autocast (outputs
   and gradients within bf16 tolerance).
3. ``pytest -m gpu`` of this package (entry points on CUDA, devices of every parameter and buffer).
4. ``bench_scan.py`` at the issue's size (b 64, E 1536, L 197, bf16, mixer call) with GB/s and the fraction of
   4.3 TB/s, and ``bench_train_step.py`` (De-focus Mamba S/B vs DeiT-S/B, bf16, batch 64, 224 px).

Prints one JSON line per check / measurement and a final summary line; exits non-zero if a check failed.
Budget: a few minutes on one H200 (most of it Triton compilation and the reference scans).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS: list[dict] = []


def emit(rec: dict, out) -> None:
    RESULTS.append(rec)
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# (b, E, L, N, group, full): the mixer call at two widths, no norm, the bare scan with L = 1, a long sequence
SCAN_CASES = [(2, 128, 197, 16, 64, True), (1, 1536, 64, 16, 64, True), (2, 96, 300, 16, 0, True),
              (3, 5, 1, 16, 0, False), (2, 64, 1025, 16, 64, True)]


def check_scan(out, cases=SCAN_CASES, device="cuda") -> bool:
    from defocus.ops import selective_scan_ref
    from defocus.ops.selective_scan_triton import selective_scan_triton

    ok = True
    for dtype, tol in ((torch.float32, 2e-3), (torch.bfloat16, 6e-2)):
        for b, E, L, N, G, full in cases:
            g = torch.Generator().manual_seed(0)
            ins = [torch.randn(b, E, L, generator=g), torch.rand(b, E, L, generator=g) * 0.5 - (1.0 if full else 0.0),
                   -torch.rand(E, N, generator=g) * 4 - 0.1, torch.randn(b, N, L, generator=g),
                   torch.randn(b, N, L, generator=g)]
            ins += [torch.randn(E, generator=g), torch.randn(b, E, L, generator=g), torch.randn(E, generator=g) * 0.1] \
                if full else [None, None, None]
            w = torch.randn(b, E, L, generator=g, dtype=torch.float64)
            results = []
            for dev, dt in (("cpu", torch.float64), (device, dtype)):
                ts = [t.to(dev, dt if i not in (2, 5, 7) or dt == torch.float64 else torch.float32).requires_grad_()
                      if t is not None else None for i, t in enumerate(ins)]
                fn = selective_scan_ref if dt == torch.float64 else selective_scan_triton
                o, last = fn(*ts, delta_softplus=full, return_last_state=True, group_size=G)
                loss = (o.double() * w.to(dev)).sum() + 0.3 * (last.double() ** 2).sum()
                results.append([o, last, *torch.autograd.grad(loss, [t for t in ts if t is not None])])
            errs = {name: rel_err(a, r) for name, a, r in zip(["out", "last", "du", "ddelta", "dA", "dB", "dC", "dD",
                                                               "dz", "dbias"], results[1], results[0])}
            passed = max(errs.values()) < tol
            ok &= passed
            emit({"check": "triton_scan_vs_float64_ref", "dtype": str(dtype), "b": b, "E": E, "L": L, "N": N,
                  "group": G, "full": full, "max_rel_err": {k: round(v, 6) for k, v in errs.items()}, "tol": tol,
                  "pass": passed}, out)
    return ok


def check_model(out) -> bool:
    from defocus.models import build_model
    from defocus.models.mixer import DefocusMambaMixer, MixerConfig

    ok = True
    torch.manual_seed(0)
    cfg = dict(hidden_size=384, intermediate_size=768, state_size=16, time_step_rank=48, group_norm_size=64,
               rope_scale_factor=20.0, delta_scale_factor=4.57)
    mixers = {impl: DefocusMambaMixer(MixerConfig(**cfg, scan_impl=impl)).cuda() for impl in ("ref", "triton")}
    mixers["triton"].load_state_dict(mixers["ref"].state_dict())
    h = torch.randn(4, 197, 384, device="cuda")
    res = {}
    for impl, m in mixers.items():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = m(h)
        y.float().square().mean().backward()
        res[impl] = [y] + [p.grad for p in m.parameters()]
    errs = [rel_err(a, b) for a, b in zip(res["triton"], res["ref"])]
    passed = max(errs) < 0.05
    ok &= passed
    emit({"check": "mixer_bf16_triton_vs_ref", "max_rel_err_out": round(errs[0], 5),
          "max_rel_err_grads": round(max(errs[1:]), 5), "tol": 0.05, "pass": passed}, out)
    models = {impl: build_model("defocus_mamba_small", mixer={"scan_impl": impl}).cuda().eval() for impl in ("ref", "triton")}
    models["triton"].load_state_dict(models["ref"].state_dict())
    x = torch.rand(8, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        lr, lt = (models[i](x).float() for i in ("ref", "triton"))
    with torch.no_grad():
        l32 = models["triton"](x).float()
        l32_ref = models["ref"](x).float()
    e_bf16, e_fp32 = rel_err(lt, lr), rel_err(l32, l32_ref)
    passed = e_bf16 < 0.05 and e_fp32 < 2e-3
    ok &= passed
    emit({"check": "small_model_logits_triton_vs_ref", "max_rel_err_bf16": round(e_bf16, 5),
          "max_rel_err_fp32": round(e_fp32, 6), "pass": passed}, out)
    return ok


def run_pytest_gpu(out) -> bool:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(HERE.parent / "tests")],
                       capture_output=True, text=True, timeout=600)
    tail = (p.stdout + p.stderr).strip().splitlines()[-1:] or [""]
    emit({"check": "pytest -m gpu", "returncode": p.returncode, "summary": tail[0], "wall_s": round(time.time() - t0, 1),
          "pass": p.returncode == 0}, out)
    return p.returncode == 0


def run_bench(script: str, args: list[str], out) -> None:
    p = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, timeout=900)
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            emit(json.loads(line), out)
    if p.returncode:
        emit({"bench": script, "error": p.stderr[-2000:]}, out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="correctness only, no benchmarks")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"check": "cuda", "pass": False, "reason": "no CUDA device: GPU: not run"}))
        sys.exit(2)
    t0 = time.time()
    emit({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}, args.out)
    oks = [check_scan(args.out), check_model(args.out), run_pytest_gpu(args.out)]
    if not args.quick:
        run_bench("bench_scan.py", ["--batch", "64", "--widths", "1536", "--lengths", "197", "1024", "--dtype",
                                    "bfloat16", "--full", "--repeats", "5"], args.out)
        run_bench("bench_train_step.py", [], args.out)
    emit({"summary": "defocus gpu_check", "pass": all(oks), "wall_s": round(time.time() - t0, 1)}, args.out)
    sys.exit(0 if all(oks) else 1)


if __name__ == "__main__":
    main()
