"""``sim-pretrain``: SiameseIM pre-training, then frozen-feature probes of the result (embedded data)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from timm.optim import param_groups_weight_decay

from repro_shared import checkpoint, dist, run
from repro_shared.data import SeededDataset, SkipNoneCollate, build_loader
from repro_shared.train import StepCheckpointer

from ..convert import misfit_message, read_weights
from ..data import LabelledDigits, SiameseIMTransform, build_pretrain_dataset
from ..engine import pretrain_one_epoch
from ..losses import effective_rank
from ..models import SiameseIM
from ..probe import extract_features, geometry_gap, logistic_probe
from .common import build_pretrain_model

__all__ = ["run_pretrain", "evaluate_pretrained"]


def _transform(cfg: DictConfig, model: SiameseIM) -> SiameseIMTransform:
    d = cfg.data
    return SiameseIMTransform(int(d.input_size), model.patch_embed.patch_size[0], int(d.num_masked),
                              crop_min=float(d.crop_min), min_mask_block=int(d.min_mask_block))


@torch.no_grad()
def evaluate_pretrained(model: SiameseIM, cfg: DictConfig, device: torch.device) -> dict[str, float]:
    """Probes of the online encoder on the embedded digits (``probe`` config): linear probe on mean-pooled
    patch tokens (all training labels), few-shot probe on CLS tokens (``probe.fewshot_fraction`` of the
    labels), and the geometry gap / target effective rank / prediction spread on held-out validation pairs."""
    from repro_shared.finetune import build_eval_transform

    p, d = cfg.probe, cfg.data
    was = model.training
    model.eval()
    tf = build_eval_transform(int(d.input_size), crop_pct=1.0)
    train, val = LabelledDigits("train", int(d.input_size), tf), LabelledDigits("val", int(d.input_size), tf)
    few = LabelledDigits("train", int(d.input_size), tf, fraction=float(p.fewshot_fraction))
    enc = model.forward_encoder
    res = {"probe_top1": logistic_probe(extract_features(enc, train, device), extract_features(enc, val, device)),
           "fewshot_top1": logistic_probe(extract_features(enc, few, device, pool="cls"),
                                          extract_features(enc, val, device, pool="cls"),
                                          protocol="fewshot", lambd=float(p.fewshot_lambda))}
    # held-out pairs: validation digits, each pair seeded by (pair_seed, index), the same in every run
    pairs = SeededDataset(LabelledDigits("val", int(d.base_size), _transform(cfg, model)), seed=int(p.pair_seed))
    batches = []
    for k in range(0, len(pairs), int(p.pair_batch)):
        items = [pairs[(0, i)][0] for i in range(k, min(k + int(p.pair_batch), len(pairs)))]
        batches.append([torch.stack(t) for t in zip(*items)])
    res.update(geometry_gap(model, batches, device, float(cfg.train.neg_weight)))
    corr, preds = 0.0, []
    for x1, x2, g, m in batches:
        out = model(x1.to(device), x2.to(device), g.to(device), m.to(device))
        t = out.target.reshape(-1, out.target.shape[-1])
        corr = corr + t.T @ t / t.shape[0] / len(batches)
        preds.append(out.pred.reshape(-1, out.pred.shape[-1]).float())
    res["effective_rank_F"] = effective_rank(corr)
    res["pred_channel_std"] = float(torch.cat(preds).std(0).mean())
    model.train(was)
    return res


def run_pretrain(cfg: DictConfig) -> dict:
    """Build, (resume,) pre-train, checkpoint, evaluate, write ``metrics.json``.

    Checkpoints every ``train.checkpoint_every`` optimizer steps and at every epoch end; ``train.resume=auto``
    continues exactly from the newest valid one. With ``probe.enabled`` (embedded data) the probes run on the
    initial weights (before step 0, kept in the checkpoint) and on the final ones.
    """
    init_path = run.check_required_init(cfg.get("init"))  # before building anything
    ctx = run.setup_run(cfg, name="sim")
    log, device, t = ctx.log, ctx.device, cfg.train
    model = build_pretrain_model(cfg)
    if init_path is not None:  # e.g. continue from released weights (sim-convert convert.to=ours)
        report = checkpoint.load_state_dict_remapped(model, read_weights(init_path, trust=bool(cfg.trust_checkpoint)))
        if not report.ok:  # the run stops here, so a partial load does not matter; one line
            raise checkpoint.CheckpointError(
                misfit_message(init_path, report, report.missing + [k for k, *_ in report.mismatched])
                + " (sim-pretrain's init.path takes a full SiameseIM file: ckpt_*.pt or sim-convert convert.to=ours)")
        log.info("init weights from %s: %s", init_path, report)
    log.info("SiameseIM %s: %.2f M parameters (%.2f M trainable)", cfg.model.variant,
             sum(p.numel() for p in model.parameters()) / 1e6,
             sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    dataset = build_pretrain_dataset(cfg.data, _transform(cfg, model))
    skip = bool(cfg.data.get("skip_corrupt", False))
    loader = build_loader(dataset, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(cfg.data.num_workers),
                          collate_fn=SkipNoneCollate() if skip else None, pin_memory=device.type == "cuda",
                          persistent_workers=int(cfg.data.num_workers) > 0, batch_size_key="train.batch_size")
    iters = len(loader)
    ws = ctx.dist.world_size
    model = model.to(device)  # decoder BN statistics are global over the ranks (models.PermuteBN)
    lr = float(t.lr) if t.get("lr") else float(t.blr) * int(t.batch_size) * ws / 256
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, float(t.weight_decay)), lr=lr,
                                  betas=(0.9, float(t.beta2)))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16",
                                  growth_interval=int(t.amp_growth_interval))
    wrapped = dist.wrap_model(model, "ddp" if ws > 1 else "none")
    results: dict = {}
    ckpt = StepCheckpointer(ctx.checkpoint_dir, model=model, optimizer=optimizer, scaler=scaler, iters=iters,
                        every=int(t.checkpoint_every), keep_last=int(t.keep_last), config=cfg,
                        extra=lambda: {"results": results})
    step, stats, extra = ckpt.restore(t.resume, log)
    results = extra.get("results", results)
    if step == 0 and cfg.probe.enabled:
        results.update({f"{k}_init": v for k, v in evaluate_pretrained(model, cfg, device).items()})
        log.info("before training: %s", {k: round(v, 4) for k, v in results.items()})
    log.info("lr %.3g (global batch %d), %d steps per epoch, %d epochs", lr, int(t.batch_size) * ws, iters, int(t.epochs))
    start_epoch, start_batch = divmod(step, iters)
    for epoch in range(start_epoch, int(t.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = pretrain_one_epoch(wrapped, loader, optimizer, scaler, epoch=epoch, epochs=int(t.epochs), lr=lr,
                                warmup_epochs=float(t.warmup_epochs), base_momentum=float(t.momentum),
                                neg_weight=float(t.neg_weight), clip_grad=t.clip_grad, device=device, seed=int(cfg.seed),
                                precision=cfg.precision, metrics=ctx.metrics, log=log, log_every=int(t.log_every),
                                stats=stats if epoch == start_epoch else None, after_step=ckpt.after_step)
        results.update({f"train_{k}": v for k, v in tr.items()}, epoch=epoch)
        if tr["skipped"]:
            log.warning("epoch %d: %d unreadable images were skipped (data.skip_corrupt=true; paths in the warnings above)",
                        epoch, tr["skipped"])
        ctx.metrics.log({f"train_{k}": v for k, v in tr.items()} | {"epoch": epoch}, step=(epoch + 1) * iters)
        log.info("epoch %d | loss %.4f (pos %.4f, neg %.4f)", epoch, tr["loss"], tr["loss_pos"], tr["loss_neg"])
        ckpt.save((epoch + 1) * iters, None)
    if cfg.probe.enabled:
        final = evaluate_pretrained(model, cfg, device)
        results.update(final)
        log.info("after training: %s", {k: round(v, 4) for k, v in final.items()})
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    log.info("metrics.json in %s", ctx.out_dir)
    return results
