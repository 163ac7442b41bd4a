"""ADDP training step and generation, timed by stage; one JSON line per measurement, compared variants in one run.

    python benchmarks/bench_addp.py                          # CPU: tiny model at batch 64 (the demo's sizes)
    python benchmarks/bench_addp.py --variant base --batch 2 # CPU: ViT-B-shaped step (full VQGAN, MAGE-B)
    python benchmarks/bench_addp.py --variant base --batch 64 --device cuda --dtype bf16   # on a GPU

Rows:
- ``train_step``: one pre-training iteration split into tokenizer encode, teacher (one batched forward of the
  two MAGE calls), tokenizer decode, ADDP encoder, ADDP decoder + loss, backward + AdamW; the share of the
  step spent in the frozen parts (goal on the GPU: under 35 %), images/s;
- ``teacher_batched_vs_two_calls``: the two MAGE calls as one forward of 2B vs two forwards of B (ratio);
- ``attention_sdpa_vs_math``: the ADDP forward + backward with SDPA vs the official fp32 math attention
  (ratio; outputs equal to 1e-4 in fp32 is checked first);
- ``generation``: ``--steps`` alternating steps for the batch, split into ADDP forward and VQGAN decode; images/s.
Absolute times are only meaningful on a quiet machine; ratios survive a noisy one.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from addp.losses import addp_soft_ce
from addp.masking import mask_ratio_table, nested_masks
from addp.models import build_addp, build_mage, build_vqgan
from addp.sampler import SampleRNG, generate_addp

VARIANTS = {  # (tokenizer preset, teacher, ADDP, image size, codebook)
    "tiny": ("tiny_f4_64", "mage_cpu_tiny", "addp_vit_tiny", 32, 64),
    "base": ("maskgit_f16_1024", "mage_vit_base_patch16", "addp_vit_base_patch16", 256, 1024),
    "large": ("maskgit_f16_1024", "mage_vit_large_patch16", "addp_vit_large_patch16", 256, 1024),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int):
    """Median wall time (ms) of ``fn`` over ``repeats`` runs after one warm-up, and its last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2], out


def emit(**row) -> None:
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="tiny", choices=sorted(VARIANTS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    tok_name, teacher_name, addp_name, img, K = VARIANTS[a.variant]
    torch.manual_seed(0)
    tok = build_vqgan(tok_name).to(device).eval()
    N = (img // tok.config.downsample) ** 2
    teacher = build_mage(teacher_name, codebook_size=K, num_tokens=N).to(device)
    model = build_addp(addp_name, codebook_size=K).to(device)
    for p in list(tok.parameters()) + list(teacher.parameters()):
        p.requires_grad_(False)
    if device.type == "cuda":
        tok = tok.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ratios, probs = mask_ratio_table()
    B = a.batch
    x0 = torch.rand(B, 3, img, img, device=device)
    common = dict(variant=a.variant, device=str(device), dtype=a.dtype, batch=B,
                  gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)

    # ---- one training step, stage by stage
    parts: dict[str, float] = {}
    with torch.no_grad(), amp:
        parts["tokenizer_encode"], (ids, z0) = timed(lambda: tok.encode(x0), device, a.repeats)
        n_t, n_next = int(N * 0.75), int(N * 0.8)
        m_t, m_next = nested_masks(B, N, (n_t, n_next), device=device)
        teacher.train()
        parts["teacher"], p = timed(lambda: teacher.sample_tokens(torch.cat([ids, ids]), torch.cat([m_next, m_t])),
                                    device, a.repeats)
        s = z0.shape[-1]
        z_in = torch.where(m_t.view(B, 1, s, s), tok.embed_probs(p[:B]).to(z0.dtype), z0)
        parts["tokenizer_decode"], x_t = timed(lambda: tok.decode(z_in), device, a.repeats)
    model.train()

    def encoder():
        with amp:
            return model.forward_encoder(x_t.float())

    parts["addp_encoder_fwd"], e = timed(encoder, device, a.repeats)

    def decoder_loss():
        with amp:
            logits = model.forward_decoder(e, ids, m_t)[:, 1: 1 + N]
            return addp_soft_ce(logits, p[B:], m_t)

    parts["addp_decoder_fwd_loss"], _ = timed(lambda: decoder_loss(), device, a.repeats)

    def backward_step():
        with amp:
            loss = addp_soft_ce(model(x_t.float(), ids, m_t), p[B:], m_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    full_ms, _ = timed(backward_step, device, a.repeats)
    parts["addp_backward_optimizer"] = max(full_ms - parts["addp_encoder_fwd"] - parts["addp_decoder_fwd_loss"], 0.0)
    total = sum(parts.values())
    frozen = parts["tokenizer_encode"] + parts["teacher"] + parts["tokenizer_decode"]
    emit(bench="train_step", **common, **{f"{k}_ms": v for k, v in parts.items()}, total_ms=total,
         frozen_share=frozen / total, images_per_s=B / total * 1e3)

    # ---- the two teacher calls: one batched forward vs two
    with torch.no_grad(), amp:
        one, _ = timed(lambda: teacher.sample_tokens(torch.cat([ids, ids]), torch.cat([m_next, m_t])), device, a.repeats)
        two, _ = timed(lambda: (teacher.sample_tokens(ids, m_next), teacher.sample_tokens(ids, m_t)), device, a.repeats)
    emit(bench="teacher_batched_vs_two_calls", **common, batched_ms=one, two_calls_ms=two, speedup=two / one)

    # ---- attention: SDPA vs the official fp32 math path (same weights; equal outputs first)
    math_model = build_addp(addp_name, codebook_size=K, attn_impl="math").to(device)
    math_model.load_state_dict(model.state_dict())
    model.eval(), math_model.eval()
    with torch.no_grad():
        diff = (model(x_t.float(), ids, m_t) - math_model(x_t.float(), ids, m_t)).abs().max().item()
    if a.dtype == "fp32" and diff > 1e-4:
        raise SystemExit(f"SDPA and math attention disagree by {diff}")
    model.train(), math_model.train()

    def fwd_bwd(net):
        def run():
            with amp:
                net(x_t.float(), ids, m_t).float().logsumexp(-1).mean().backward()
        return run

    t_sdpa, _ = timed(fwd_bwd(model), device, a.repeats)
    t_math, _ = timed(fwd_bwd(math_model), device, a.repeats)
    emit(bench="attention_sdpa_vs_math", **common, sdpa_ms=t_sdpa, math_ms=t_math, speedup=t_math / t_sdpa,
         max_abs_diff=diff)

    # ---- generation: the alternating loop, ADDP forward vs VQGAN decode
    model.eval()
    clock = {"predict": 0.0, "render": 0.0}
    real_decode, real_forward = tok.decode_mixed, model.forward

    def timed_call(fn, key):
        def wrapper(*args):
            sync(device)
            t0 = time.perf_counter()
            out = fn(*args)
            sync(device)
            clock[key] += (time.perf_counter() - t0) * 1e3
            return out
        return wrapper

    tok.decode_mixed = timed_call(real_decode, "render")
    model.forward = timed_call(real_forward, "predict")
    with torch.no_grad(), amp:
        generate_addp(model, tok, SampleRNG(0, range(B), device), image_size=img, steps=2)  # warm-up
        clock.update(predict=0.0, render=0.0)
        sync(device)
        t0 = time.perf_counter()
        generate_addp(model, tok, SampleRNG(0, range(B), device), image_size=img, steps=a.steps)
        sync(device)
        total_ms = (time.perf_counter() - t0) * 1e3
    emit(bench="generation", **common, steps=a.steps, total_ms=total_ms, addp_forward_ms=clock["predict"],
         vqgan_decode_ms=clock["render"], other_ms=total_ms - clock["predict"] - clock["render"],
         images_per_s=B / total_ms * 1e3)


if __name__ == "__main__":
    main()
