"""GPU check of auto_seg_loss for a session that is lent a CUDA device (about 2-4 minutes on one H200).

1. the ``gpu``-marked tests (``pytest tests -m gpu``): default entry points for a few steps on CUDA, every
   parameter/buffer on the GPU, CUDA curves and losses equal to the CPU ones, fp16 steps;
2. the surrogate benchmarks of ``bench_surrogate.py`` on CUDA at the re-training shape per GPU
   (8, 21, 512, 512): reference vs select vs lut curves on 2^24 points, the six losses (official form vs
   lut + gather), dilation; the LUT's traffic as a fraction of the H200's 4.3 TB/s;
3. one DeepLabv3+ R101-D8 training step (batch 8, 512x512, SGD) per loss (CE, ASL-mIoU default, ASL-mIoU in
   the official form, ASL-BF1) in fp32 and fp16: images/s and peak memory, so the loss's share of a step
   is visible.

Prints one JSON line per measurement and a final ``{"summary": ...}`` line.
Usage: ``python benchmarks/gpu_check.py [--quick] [--skip-tests] [--device cuda]`` (``--quick``: small shapes;
``--quick --skip-tests --device cpu`` is a CPU dry run of the script itself).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_surrogate  # noqa: E402  (sibling script)

from auto_seg_loss import engine  # noqa: E402
from auto_seg_loss.losses import AutoSegLoss  # noqa: E402
from auto_seg_loss.models import build_segmenter  # noqa: E402

H200_BYTES_PER_S = 4.3e12


def run_gpu_tests() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", str(HERE.parent / "tests"), "-m", "gpu", "-q", "-rs"],
                          capture_output=True, text=True, timeout=900)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    row = {"bench": "gpu_tests", "returncode": proc.returncode, "result": tail,
           "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
    return row


def lut_traffic(points: int, repeats: int, device: str = "cuda") -> None:
    """Forward + backward of the default LUT curve; a lower bound of its DRAM traffic (x, y, saved slope, grad
    in, grad out: 5 x 4 bytes per element) over the time, against the H200's 4.3 TB/s."""
    from auto_seg_loss.losses import SEARCHED_CONTROL_POINTS
    from auto_seg_loss.ops.bezier import BezierCurve

    curve = BezierCurve(SEARCHED_CONTROL_POINTS["mIoU"][6:], "lut").to(device)
    x, g = torch.rand(points, device=device), torch.rand(points, device=device)

    def run():
        xx = x.clone().requires_grad_()
        curve(xx).backward(g)

    ms = bench_surrogate._time(run, repeats, device)
    gbs = 5 * 4 * points / (ms / 1e3)
    print(json.dumps({"bench": "lut_traffic", "points": points, "ms": round(ms, 3),
                      "min_bytes_GBps": round(gbs / 1e9, 1), "fraction_of_h200_4.3TBps": round(gbs / H200_BYTES_PER_S, 3)}),
          flush=True)


def train_step(batch: int, size: int, iters: int, device: str = "cuda") -> None:
    dev = torch.device(device)
    model = build_segmenter(21, "resnet101").to(dev)
    opt = torch.optim.SGD(engine.param_groups(model, 0.02, 5e-4), lr=0.02, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 21, (batch, size, size), device=dev)
    y[:, : size // 16] = 255
    ce = {k: (lambda w: lambda z, t: w * torch.nn.functional.cross_entropy(z, t, ignore_index=255))(w)
          for k, w in (("out", 1.0), ("aux", 0.4))}
    variants = {
        "ce": ce,
        "asl_miou_lut_gather": {k: AutoSegLoss(21, "mIoU", loss_weight=w).to(dev) for k, w in (("out", 1.0), ("aux", 0.4))},
        "asl_miou_official_form": {k: AutoSegLoss(21, "mIoU", loss_weight=w, bezier_impl="reference",
                                                  reduction="onehot").to(dev) for k, w in (("out", 1.0), ("aux", 0.4))},
        "asl_bf1_lut": {k: AutoSegLoss(21, "BF1", loss_weight=w).to(dev) for k, w in (("out", 1.0), ("aux", 0.4))},
    }
    for amp in ("none", "fp16"):
        for name, losses in variants.items():
            precision = engine.Precision(amp, dev, 512 if amp == "fp16" else "dynamic")

            def step():
                with precision.autocast():
                    out = model(x)
                loss, _ = engine.compute_losses(out, y, losses)
                opt.zero_grad(set_to_none=True)
                precision.step(loss, opt)

            cuda = dev.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step()
            bench_surrogate._sync(dev)
            t0 = time.perf_counter()
            for _ in range(iters):
                step()
            bench_surrogate._sync(dev)
            s = (time.perf_counter() - t0) / iters
            print(json.dumps({"bench": "train_step_r101", "loss": name, "amp": amp, "batch": batch, "size": size,
                              "ms_per_step": round(s * 1e3, 2), "images_per_s": round(batch / s, 1),
                              "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}),
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (dry run)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"summary": "auto_seg_loss gpu_check", "status": "skipped: CUDA not available"}))
        return
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu (dry run)"
    print(json.dumps({"bench": "device", "name": name, "torch": torch.__version__}), flush=True)
    tests = {"result": "not run"} if args.skip_tests else run_gpu_tests()
    shape = (1, 21, 64, 64) if args.quick else (8, 21, 512, 512)
    points = 1 << (16 if args.quick else 24)
    bench_surrogate.bench_bezier(points, 5, dev)
    lut_traffic(points, 10, dev)
    bench_surrogate.bench_loss(shape, 5, dev)
    bench_surrogate.bench_dilate(shape, 5, device=dev)
    train_step(2 if args.quick else 8, 64 if args.quick else 512, 2 if args.quick else 10, dev)
    print(json.dumps({"summary": "auto_seg_loss gpu_check", "gpu_tests": tests.get("result"),
                      "gpu_tests_ok": tests.get("returncode", 0) == 0, "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
