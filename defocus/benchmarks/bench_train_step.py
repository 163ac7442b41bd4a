"""Training-step benchmark: De-focus Mamba vs timm DeiT of the same size, measured in one run.

One step = forward (with the aux head, as in training) + loss + backward + AdamW step, on random images and
labels. Prints one JSON line per model: images/s (median over ``--repeats`` steps after ``--warmup``), the ratio
to the DeiT of the same size in the same run, and the peak memory of the step on CUDA.

    python benchmarks/bench_train_step.py                                   # CUDA: S/B at 224, batch 64, bf16
    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --device cpu    # tiny CPU size (64 px, batch 8)

On CPU the step time is process CPU time (``time.process_time``; on a shared machine wall time also counts
other processes), the sizes are tiny, and the peak memory is not measured (null). De-focus variants on CPU are
run with the sequential reference scan, the fused C++ scan, and the C++ scan with the RoPE glue compiled
(``torch.compile``) to measure that option.
"""

import argparse
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from defocus.losses import defocus_loss
from defocus.models import build_model

PAIRS = {"small": ("defocus_mamba_small", "deit_small_patch16_224"),
         "base": ("defocus_mamba_base", "deit_base_patch16_224")}


def make_step(model, defocus: bool, images, labels, precision, device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if defocus:
                logits, aux = model(images, drop_path_rate=0.1, return_aux=True)
                loss = defocus_loss(logits.float(), aux.float(), labels)["loss"]
            else:
                loss = F.cross_entropy(model(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(step, repeats, warmup, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = clock()
        step()
        sync()
        times.append(clock() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(times), peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", nargs="+", default=["small", "base"], choices=list(PAIRS))
    p.add_argument("--batch", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    p.add_argument("--img", type=int, default=None, help="default 224 on CUDA, 64 on CPU")
    p.add_argument("--precision", default=None, choices=["bf16", "fp32"], help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch, img = args.batch or (64 if cuda else 8), args.img or (224 if cuda else 64)
    precision = args.precision or ("bf16" if cuda else "fp32")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, img, img, generator=g).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=g).to(device)
    for size in args.sizes:
        ours, deit = PAIRS[size]
        variants = [(deit, False, {})]
        if cuda:
            variants.append((ours, True, {"scan_impl": "triton"}))
        else:
            from defocus.ops.selective_scan_cpu import cpu_kernel_available

            variants.append((ours, True, {"scan_impl": "ref"}))
            if cpu_kernel_available():
                variants += [(ours, True, {"scan_impl": "cpu"}), (ours, True, {"scan_impl": "cpu", "compile_glue": True})]
        base = None
        for name, is_ours, mixer in variants:
            torch.manual_seed(0)
            model = (build_model(name, mixer=mixer) if is_ours else timm.create_model(name, img_size=img)).to(device)
            model.train()
            t, peak = measure(make_step(model, is_ours, images, labels, precision, device), args.repeats, args.warmup,
                              device)
            ips = batch / t
            base = ips if not is_ours else base
            print(json.dumps({
                "bench": "train_step", "model": name, "mixer": mixer, "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if cuda else None, "batch": batch, "img": img,
                "precision": precision, "threads": torch.get_num_threads(),
                "clock": "perf_counter" if cuda else "process_time", "median_step_s": round(t, 5),
                "images_per_s": round(ips, 1), "ratio_vs_deit": round(ips / base, 3),
                "peak_mem_MiB": round(peak, 1) if peak is not None else None}), flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
