"""What ``addp-train`` measures on the embedded digits after the chain (spec §8 "effects that should be visible").

1. loss vs a trivial baseline: on the val images, ADDP's masked-position cross-entropy against the
   teacher's soft targets, next to the cross-entropy of predicting every target with the targets'
   own marginal distribution (both over the K codes, no label smoothing, teacher without dropout), and
   next to ADDP's cross-entropy when each image x_t is replaced by another digit's (same ids and masks):
   the gap is what the decoder takes from the pixels;
2. linear probe (sklearn logistic regression on mean-pooled patch features, train -> val digits):
   the ADDP encoder vs the same encoder at random init (mean over several initialisations) vs the MAGE
   encoder on the token ids;
3. tiny-FID (Fréchet distance on a small digit classifier's penultimate features, against the val
   digits) of ADDP samples, teacher-only samples, random-token decodes (lower bound) and VQ
   reconstructions of the val images (upper bound); plus the entropy of the predicted labels;
4. sample grids (``samples.png``: ADDP; ``compare.png``: rows real / VQ recon / teacher / ADDP / random tokens).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from repro_shared.data import build_loader
from repro_shared.run import RunContext

from .diffusion import forward_process
from .engine import LoopConfig, train_loop
from .masking import mask_ratio_table
from .metrics.fid import frechet_distance
from .metrics.tiny import DigitFeatureNet, label_entropy, linear_probe_accuracy
from .models.addp import ADDP
from .models.mage import MAGE
from .models.vqgan import VQGAN
from .sampler import SampleRNG, generate_addp, generate_teacher, save_grid
from .stages import Stage, build_image_dataset, to_plain

__all__ = ["run_tiny_eval", "feature_net_stage", "val_cross_entropies"]


def feature_net_stage(cfg: DictConfig, ctx: RunContext) -> DigitFeatureNet:
    """The tiny-FID feature network: one measuring instrument for every run (its own seed, not the run's),
    trained once per (data, settings) and cached like a stage."""
    from repro_shared import checkpoint

    fc = cfg.eval.feature_net
    torch.manual_seed(int(fc.seed))
    net = DigitFeatureNet().to(ctx.device)
    stage = Stage(cfg.cache_dir, "featurenet", {"stage": "featurenet", "train": to_plain(fc), "data": to_plain(cfg.data),
                                                "arch": repr(net)})
    if not stage.done():
        stage.start()
        loader = build_loader(build_image_dataset(cfg.data, "train"), batch_size=int(fc.batch_size), seed=int(fc.seed),
                              batch_size_key="eval.feature_net.batch_size")
        opt = torch.optim.AdamW(net.parameters(), lr=float(fc.lr), weight_decay=float(fc.weight_decay))

        def step(batch):
            x, y = batch[0].to(ctx.device), batch[1].to(ctx.device)
            logits = net(x)
            return {"loss": F.cross_entropy(logits, y), "logits": logits}

        loop = LoopConfig(epochs=int(fc.epochs), lr=float(fc.lr), warmup_epochs=0.0, min_lr=0.0,
                          ckpt_every=10 ** 9, seed=int(fc.seed))
        with torch.enable_grad():
            train_loop(name="featurenet", model=net, step_fn=step, optimizer=opt, loader=loader, cfg=loop,
                       ckpt_dir=stage.ckpt_dir, device=ctx.device, predictions=("logits",))
        checkpoint.save_checkpoint(stage.final, model=net)
    else:
        checkpoint.load_checkpoint(stage.final, model=net, restore_rng=False)
    return net.eval()


@torch.no_grad()
def _batched(fn, n: int, batch: int):
    return torch.cat([fn(range(i, min(i + batch, n))) for i in range(0, n, batch)])


@torch.no_grad()
def val_cross_entropies(model: ADDP, tokenizer: VQGAN, teacher: MAGE, x: torch.Tensor, *, chunk: int,
                        seed: int) -> dict[str, float]:
    """ADDP's masked-position cross-entropy (nats) against the teacher's soft targets on images ``x`` (B, 3, H, W),
    next to two references: the targets' own marginal distribution, and ADDP given another image's pixels.

    Every ``chunk`` images get their own mask draw (spec §3.1; one draw for all of ``x`` can be the fully
    masked case, where the pixels have no path to the output). ``val_ce_addp_shuffled_images`` rolls each
    chunk's rendered images x_t by one (same token ids and masks): x_t reaches the decoder only through the
    encoder features at reliable positions (spec §2.3), so its gap to ``val_ce_addp`` is what the decoder takes
    from the pixels beyond the reliable tokens it is also given. Teacher without dropout, no label smoothing.
    """
    ratios, probs = mask_ratio_table()
    g = torch.Generator().manual_seed(seed)
    q_all, ce, ce_shuffled = [], [], []
    for i in range(0, len(x), chunk):
        fp = forward_process(tokenizer, teacher, x[i:i + chunk], ratios, probs, teacher_dropout="off", generator=g)
        m, q = fp.mask_t, fp.q[fp.mask_t]
        for images, sink in ((fp.x_t, ce), (fp.x_t.roll(1, 0), ce_shuffled)):
            logp = F.log_softmax(model(images, fp.ids, m)[..., : tokenizer.codebook_size].float()[m], -1)
            sink.append(-(q * logp).sum(-1))
        q_all.append(q)
    q_all = torch.cat(q_all)
    return {"val_ce_addp": float(torch.cat(ce).mean()),
            "val_ce_addp_shuffled_images": float(torch.cat(ce_shuffled).mean()),
            "val_ce_marginal": float(-(q_all * q_all.mean(0).clamp_min(1e-12).log()).sum(-1).mean())}


@torch.no_grad()
def run_tiny_eval(cfg: DictConfig, ctx: RunContext, tokenizer: VQGAN, teacher: MAGE, model: ADDP,
                  build: dict) -> dict[str, float]:
    """All tiny-data measurements (``build``: ADDP constructor arguments, for the random-init probe); writes ``samples.png`` and ``compare.png`` into the run folder."""
    e, dev, seed = cfg.eval, ctx.device, int(cfg.seed)
    train_set, val_set = build_image_dataset(cfg.data, "train"), build_image_dataset(cfg.data, "val")
    x_train, y_train = train_set.images.to(dev), train_set.labels
    x_val, y_val = val_set.images.to(dev), val_set.labels
    model.eval()
    teacher.eval()
    out: dict[str, float] = {}
    clock = [time.perf_counter()]

    def done(what: str) -> None:
        now = time.perf_counter()
        ctx.log.info("eval: %s (%.1f s)", what, now - clock[0])
        clock[0] = now

    # 1. loss vs marginal baseline, and what the decoder takes from the pixels
    out.update(val_cross_entropies(model, tokenizer, teacher, x_val, chunk=int(e.ce_chunk), seed=seed))
    done("val loss vs marginal baseline and vs shuffled images")

    # 2. linear probes (the random-init baseline averaged over ``eval.random_inits`` initialisations: its spread
    #    between initialisations is several points)
    def addp_feats(net, x):
        return torch.cat([net.features(x[i:i + 256]) for i in range(0, len(x), 256)])

    out["probe_top1_addp"] = linear_probe_accuracy(addp_feats(model, x_train), y_train, addp_feats(model, x_val), y_val, seed)
    random_init = []
    for j in range(int(e.random_inits)):
        torch.manual_seed(seed * 1000 + j)
        random_net = ADDP(**build).to(dev).eval()
        random_init.append(linear_probe_accuracy(addp_feats(random_net, x_train), y_train,
                                                 addp_feats(random_net, x_val), y_val, seed))
    out["probe_top1_random_init"] = float(np.mean(random_init))
    out["probe_top1_random_init_std"] = float(np.std(random_init))

    def mage_feats(x):
        return torch.cat([teacher.encoder_features(tokenizer.encode(x[i:i + 256])[0]) for i in range(0, len(x), 256)])

    out["probe_top1_mage_tokens"] = linear_probe_accuracy(mage_feats(x_train), y_train, mage_feats(x_val), y_val, seed)
    done("linear probes")

    # 3. samples and tiny-FID
    n, bs = int(e.num_samples), int(e.batch_size)
    gen = dict(steps=int(e.steps), schedule=str(e.schedule), tau0=float(e.choice_temperature),
               temperature_mode=str(e.temperature_mode), sampling=str(e.sampling), top_p=float(e.top_p))
    img = int(cfg.data.img_size)
    random_ids = torch.randint(tokenizer.codebook_size, (n, model.num_tokens), generator=torch.Generator().manual_seed(seed))
    sets = {
        "addp": _batched(lambda idx: generate_addp(model, tokenizer, SampleRNG(seed, idx, dev), image_size=img, **gen),
                         n, bs),
        "teacher": _batched(lambda idx: generate_teacher(teacher, tokenizer, SampleRNG(seed, idx, dev), **gen), n, bs),
        "random_tokens": _batched(lambda idx: tokenizer.decode_ids(random_ids[list(idx)].to(dev)), n, bs),
        "vq_recon": tokenizer.decode(tokenizer.encode(x_val)[1]),
    }
    done(f"{n} samples each from ADDP, the teacher and random tokens")
    fnet = feature_net_stage(cfg, ctx)
    done("feature network")
    real_feats = fnet.features(x_val)
    out["featurenet_val_top1"] = 100.0 * float((fnet(x_val).argmax(-1).cpu() == y_val).float().mean())
    for name, images in sets.items():
        images = images.clamp(0, 1)
        out[f"tiny_fid_{name}"] = frechet_distance(fnet.features(images), real_feats)
        out[f"label_entropy_{name}"] = label_entropy(fnet(images))
    save_grid(sets["addp"][:64], ctx.out_dir / "samples.png", nrow=8, scale=2)
    rows = [x_val[:8], sets["vq_recon"][:8], sets["teacher"][:8], sets["addp"][:8], sets["random_tokens"][:8]]
    save_grid(torch.cat(rows), ctx.out_dir / "compare.png", nrow=8, scale=2)
    return out

