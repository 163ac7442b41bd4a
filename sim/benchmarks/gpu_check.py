"""One-call device check of sim (for a session that is lent a GPU): every CUDA path against the CPU, then the
GPU benchmarks. One JSON line per check / measurement and a final summary line; exit code 1 if a check fails.
Meant to run in under two minutes on one H200.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--quick]

``--device cpu`` runs the same code on the CPU (a dry run of the script; the comparisons then prove nothing
about CUDA).

Checks (CUDA vs CPU, float32):
1. relative sin-cos embedding; 2. dense UniGrad loss value and gradient; 3. the tiny SiameseIM forward in eval mode
(prediction and target) and its parameter gradients; 4. one training step of the default ``sim-pretrain``
configuration on the device, fp32 and bf16: finite loss, every parameter and buffer on the device.
Benchmarks: the dense loss at the paper's per-GPU size (B = 128: 25,088 tokens, Dd = 768), row-wise vs the
literal M x M form (ms, peak memory); the ViT-B/16 pre-training step in bf16 (images/s, MFU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
CHECKS: list[dict] = []


def report(row: dict) -> None:
    print(json.dumps(row), flush=True)
    if "ok" in row:
        CHECKS.append(row)


def close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 1e-4) -> None:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    err = (got - want).abs().max().item()
    report({"check": name, "max_abs_err": err, "ok": bool(err <= atol + rtol * want.abs().max().item())})


def tiny_model():
    from sim.models import build_siameseim

    torch.manual_seed(0)
    return build_siameseim("tiny", img_size=32, decoder_dim=64, decoder_heads=4, projector_depth=1, predictor_depth=2,
                           num_masked=10)


def tiny_batch(dev, B=8):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(B, 3, 32, 32, generator=g), torch.randn(B, 3, 32, 32, generator=g)
    geo = torch.cat([torch.rand(B, 2, generator=g) - 0.5, torch.rand(B, 2, generator=g) + 0.5,
                     (torch.rand(B, 1, generator=g) > 0.5).float(), torch.rand(B, 1, generator=g)], 1)
    mask = torch.zeros(B, 16, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(16, generator=g)[:10]] = True
    return [t.to(dev) for t in (x1, x2, geo, mask)]


def checks(dev: torch.device) -> None:
    from repro_shared.ssl.dense_unigrad import dense_unigrad_loss
    from repro_shared.ssl.geometry import relative_sincos_embedding
    from sim.losses import siameseim_loss

    geo = tiny_batch("cpu")[2]
    close("relative_sincos", relative_sincos_embedding(geo.to(dev), 768, 14), relative_sincos_embedding(geo, 768, 14),
          atol=2e-5)
    g = torch.Generator().manual_seed(1)
    p, t = torch.randn(4, 196, 768, generator=g), torch.randn(4, 196, 768, generator=g)
    grads = []
    for d in (dev, torch.device("cpu")):
        pd = p.to(d).requires_grad_(True)
        loss = dense_unigrad_loss(pd, t.to(d))
        loss.backward()
        grads.append((loss, pd.grad))
    close("dense_unigrad_loss", grads[0][0], grads[1][0], atol=1e-6)
    close("dense_unigrad_grad", grads[0][1], grads[1][1], atol=1e-9, rtol=1e-4)
    outs = []
    for d in (dev, torch.device("cpu")):
        m = tiny_model().to(d).eval()
        out = m(*tiny_batch(d))
        siameseim_loss(out)["loss"].backward()
        outs.append((out, m.blocks[0].attn.qkv.weight.grad, m.decoder_pos_mlp.weight.grad))
    close("tiny_forward_pred", outs[0][0].pred, outs[1][0].pred, atol=1e-4)
    close("tiny_forward_target", outs[0][0].target, outs[1][0].target, atol=1e-4)
    close("tiny_grad_encoder", outs[0][1], outs[1][1], atol=1e-5, rtol=1e-3)
    close("tiny_grad_pos_mlp", outs[0][2], outs[1][2], atol=1e-5, rtol=1e-3)
    for precision in ("fp32", "bf16"):
        m = tiny_model().to(dev).train()
        opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-3)
        from repro_shared.train import autocast

        with autocast(dev, precision):
            out = m(*tiny_batch(dev), momentum=0.99)
        loss = siameseim_loss(out)["loss"]
        loss.backward()
        opt.step()
        on_dev = all(x.device.type == dev.type for x in list(m.parameters()) + list(m.buffers()))
        report({"check": f"train_step_{precision}", "loss": float(loss.detach()), "all_on_device": on_dev,
                "ok": bool(torch.isfinite(loss)) and on_dev})


def bench(dev: torch.device, quick: bool) -> None:
    from bench_sim import bench_gpu, literal_loss

    from repro_shared.ssl.dense_unigrad import dense_unigrad_loss

    B = 8 if quick or dev.type == "cpu" else 128
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(B, 196, 768, generator=g).to(dev).requires_grad_(True)
    target = torch.nn.functional.layer_norm(torch.randn(B, 196, 768, generator=g), (768,)).to(dev)
    res = {}
    for name, fn in (("rowwise", dense_unigrad_loss), ("mxm", literal_loss)):
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            pred.grad = None
            loss = fn(pred, target, 0.02)
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else None
        res[name] = (sorted(times)[2] * 1e3, peak, float(loss))
    report({"bench": "unigrad_loss_fwd_bwd_device", "device": str(dev), "batch": B, "M": B * 196,
            "rowwise_ms": round(res["rowwise"][0], 3), "mxm_ms": round(res["mxm"][0], 3),
            "rowwise_peak_mb": res["rowwise"][1] and round(res["rowwise"][1], 1),
            "mxm_peak_mb": res["mxm"][1] and round(res["mxm"][1], 1),
            "rel_value_diff": abs(res["rowwise"][2] - res["mxm"][2]) / abs(res["mxm"][2])})
    if dev.type == "cuda":
        bench_gpu(batch=32 if quick else 128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check needs CUDA (use --device cpu for a dry run of the script)")
    t0 = time.time()
    checks(dev)
    bench(dev, args.quick)
    failed = [c["check"] for c in CHECKS if not c["ok"]]
    print(json.dumps({"summary": "sim gpu_check", "device": str(dev), "checks": len(CHECKS), "failed": failed,
                      "seconds": round(time.time() - t0, 1)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
