"""``m3i-pretrain``: M3I pre-training, then frozen-feature probes of the result (embedded data)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.optim import param_groups_weight_decay
from torch.utils.data import ConcatDataset, Subset

from repro_shared import dist, run
from repro_shared.data import ImageFolder, ResumableLoader, SkipNoneCollate, build_loader, check_dataset_size
from repro_shared.train import StepCheckpointer

from ..convert import load_internimage_weights
from ..data.sources import ImageFolderSource, PretrainDataset, ShapesSource, TarShardSource, WeightedSourceSampler
from ..data.views import M3ITransform
from ..engine import pretrain_one_epoch
from ..losses import M3IObjective
from ..models.m3i import M3IModel
from ..probe import evaluate_probes
from .common import DeepSpeedCheckpointer, build_m3i, build_tokenizer_from, token_stride

__all__ = ["SOURCE_KINDS", "build_transform", "build_pretrain_loader", "build_objective", "run_pretrain"]

SOURCE_KINDS = ("shapes", "imagefolder", "tar")


def build_transform(cfg: DictConfig) -> M3ITransform:
    """:class:`M3ITransform` of ``cfg.data`` with the model's token stride."""
    d = cfg.data
    return M3ITransform(int(d.input_size), token_stride(cfg.model), float(d.mix_ratio_a), crop_min=float(d.crop_min),
                        min_mask_block=int(d.min_mask_block), blur_p=tuple(d.blur_p), solarize_p=tuple(d.solarize_p),
                        jitter_p=float(d.jitter_p), grayscale_p=float(d.grayscale_p))


def _path_key(src: DictConfig, i: int, key: str, layout: str):
    """``src[key]`` (a path or a list of shard patterns), or a ValueError naming ``data.sources[i].key`` and the
    layout when the source does not set it."""
    value = src.get(key)
    if value is None or value == "":
        raise ValueError(f"data.sources[{i}].{key} is not set for a source of kind {src.kind!r}; pass e.g. "
                         f"'+data.sources.{i}.{key}=...' (expected: {layout})")
    return value


def _source(src: DictConfig, i: int, skip: bool):
    """One source of ``data.sources`` (its first ``limit`` samples when ``limit`` is set: quick checks).

    Raises:
        ValueError: an unknown kind, or an imagefolder / tar source without its ``root`` / ``shards``.
    """
    kind = src.kind
    if kind == "shapes":
        source = ShapesSource(str(src.get("split", "train")), int(src.get("size", 32)))
    elif kind == "imagefolder":
        root = _path_key(src, i, "root", ImageFolder.LAYOUT)
        source = ImageFolderSource(root, skip_corrupt=skip, key=f"data.sources[{i}].root")
    elif kind == "tar":
        shards = _path_key(src, i, "shards", TarShardSource.LAYOUT)  # one pattern (a string) or a list of them
        shards = [shards] if isinstance(shards, str) else [str(p) for p in shards]
        source = TarShardSource(shards, index_dir=src.get("index_dir"), skip_corrupt=skip)
    else:
        raise ValueError(f"unknown data.sources[{i}].kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    limit = src.get("limit")
    return Subset(source, range(min(int(limit), len(source)))) if limit else source


def build_pretrain_loader(cfg: DictConfig, transform, tokenizer, *, batch_size: int, world_size: int = 1):
    """The resumable loader over ``cfg.data.sources`` (one source: ``repro_shared.data.build_loader``; several: a
    :class:`WeightedSourceSampler` mixture with ``weight`` per source, default proportional to size).

    Raises:
        ValueError: an unknown source kind, or fewer samples than one global batch (names the numbers and key).
        FileNotFoundError: a missing data folder / shard pattern (names the path and the expected layout).
    """
    d = cfg.data
    skip = bool(d.get("skip_corrupt", False))
    sets = [PretrainDataset(_source(s, i, skip), transform, tokenizer, targets=list(s.get("targets", [])))
            for i, s in enumerate(d.sources)]
    kwargs: dict[str, Any] = dict(num_workers=int(d.num_workers), collate_fn=SkipNoneCollate() if skip else None,
                                  pin_memory=torch.cuda.is_available())
    weights = [s.get("weight") for s in d.sources]
    if len(sets) == 1 and d.get("epoch_size") is None:
        return build_loader(sets[0], batch_size=batch_size, seed=int(cfg.seed), world_size=world_size,
                            persistent_workers=int(d.num_workers) > 0, batch_size_key="train.batch_size", **kwargs)
    sizes = [len(s) for s in sets]
    sampler = WeightedSourceSampler(sizes, None if all(w is None for w in weights) else [w or 0.0 for w in weights],
                                    batch_size=batch_size, epoch_size=d.get("epoch_size"), seed=int(cfg.seed),
                                    world_size=world_size)
    check_dataset_size(sampler.num_samples, batch_size, world_size=world_size, key="train.batch_size",
                       name="pre-training mixture")
    if int(d.num_workers) > 0:
        kwargs["persistent_workers"] = True
    return ResumableLoader(ConcatDataset(sets), sampler, **kwargs)


def build_objective(o: DictConfig) -> M3IObjective:
    """:class:`M3IObjective` of ``cfg.objective``."""
    return M3IObjective(intra=float(o.intra), inter=float(o.inter), cls=float(o.cls), txt=float(o.txt),
                        dense_loss=str(o.dense_loss), neg_weight=float(o.neg_weight),
                        label_smoothing=float(o.label_smoothing), symmetric_clip=bool(o.symmetric_clip))


def _deepspeed(cfg: DictConfig, model: M3IModel, optimizer):
    """A DeepSpeed engine per ``train.deepspeed`` (ZeRO stage, offload, precision, loss scale) or None."""
    ds = cfg.train.get("deepspeed")
    if ds is None or not ds.get("enabled", False):
        return None
    node = ds.get("config_overrides")
    overrides = dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}
    zero = overrides.setdefault("zero_optimization", {})
    zero["stage"] = int(ds.zero_stage)
    if ds.get("offload"):
        zero["offload_optimizer"] = {"device": "cpu"}
        zero["offload_param"] = {"device": "cpu"}
    return dist.deepspeed_initialize(model, optimizer, zero_stage=int(ds.zero_stage),
                                     train_micro_batch_size_per_gpu=int(cfg.train.batch_size),
                                     gradient_accumulation_steps=int(ds.get("gradient_accumulation_steps", 1)),
                                     gradient_clipping=float(ds.get("gradient_clipping", 0.0)),
                                     precision=str(ds.get("precision", "fp32")), config_overrides=overrides)


def run_pretrain(cfg: DictConfig) -> dict:
    """Build, (resume,) pre-train, checkpoint, probe, write ``metrics.json``.

    Checkpoints every ``train.checkpoint_every`` optimizer steps and at every epoch end; ``train.resume=auto``
    continues exactly from the newest valid one. With ``probe.enabled`` (embedded shapes) the probes run on the
    final weights (and on the initial ones with ``probe.at_init``, kept in the checkpoint).
    """
    init_path = run.check_required_init(cfg.get("init"))  # before building anything
    ctx = run.setup_run(cfg, name="m3i")
    log, device, t = ctx.log, ctx.device, cfg.train
    ws = ctx.dist.world_size
    transform = build_transform(cfg)
    tokenizer = build_tokenizer_from(cfg.data) if float(cfg.objective.txt) > 0 else None
    loader = build_pretrain_loader(cfg, transform, tokenizer, batch_size=int(t.batch_size), world_size=ws)
    model = build_m3i(cfg, transform.count_a, tokenizer)
    if init_path is not None:  # e.g. continue from released InternImage-H weights (m3i-convert)
        report = load_internimage_weights(model, init_path, trust=bool(cfg.trust_checkpoint), prefix="online.backbone.")
        log.info("init weights from %s: %s", init_path, report)
        model.target.load_state_dict(model.online.state_dict())
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("M3I %s-%s: %.2f M parameters (%.2f M trainable); K_A = %d of %d tokens", cfg.model.backbone,
             cfg.model.variant, n_all / 1e6, n_train / 1e6, transform.count_a, model.num_tokens)
    model = model.to(device)
    objective = build_objective(cfg.objective)
    iters = len(loader)
    lr = float(t.lr) if t.get("lr") else float(t.blr) * int(t.batch_size) * ws / 256
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, float(t.weight_decay)), lr=lr,
                                  betas=(0.9, float(t.beta2)))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    ds_engine = _deepspeed(cfg, model, optimizer)
    wrapped = model if ds_engine is not None else dist.wrap_model(model, "ddp" if ws > 1 else "none")
    results: dict = {}
    if ds_engine is None:
        ckpt = StepCheckpointer(ctx.checkpoint_dir, model=model, optimizer=optimizer, scaler=scaler, iters=iters,
                            every=int(t.checkpoint_every), keep_last=int(t.keep_last), config=cfg,
                            extra=lambda: {"results": results})
    else:
        ckpt = DeepSpeedCheckpointer(ctx, engine=ds_engine, iters=iters, every=int(t.checkpoint_every),
                                     extra=lambda: {"results": results})
    step, stats, extra = ckpt.restore(t.resume, log)
    results = extra.get("results", results)
    probe_on = bool(cfg.probe.enabled)
    if step == 0 and probe_on and bool(cfg.probe.at_init):
        init = evaluate_probes(model, device, tokenizer=tokenizer, limit=cfg.probe.get("limit"))
        results.update({f"{k}_init": v for k, v in init.items()})
        log.info("probes before training: %s", {k: round(v, 2) for k, v in results.items()})
    log.info("lr %.3g (global batch %d), %d steps per epoch, %d epochs", lr, int(t.batch_size) * ws, iters,
             int(t.epochs))
    start_epoch, start_batch = divmod(step, iters)
    for epoch in range(start_epoch, int(t.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = pretrain_one_epoch(wrapped, loader, optimizer, scaler, objective, epoch=epoch, epochs=int(t.epochs), lr=lr,
                                min_lr=float(t.min_lr), warmup_epochs=float(t.warmup_epochs),
                                base_momentum=float(t.momentum), clip_grad=t.clip_grad, device=device,
                                seed=int(cfg.seed), precision=cfg.precision, ds_engine=ds_engine, metrics=ctx.metrics,
                                log=log, log_every=int(t.log_every), stats=stats if epoch == start_epoch else None,
                                after_step=ckpt.after_step)
        results.update({f"train_{k}": v for k, v in tr.items()}, epoch=epoch)
        if tr["skipped"]:
            log.warning("epoch %d: %d unreadable images were skipped (data.skip_corrupt=true; paths in the warnings "
                        "above)", epoch, tr["skipped"])
        ctx.metrics.log({f"train_{k}": v for k, v in tr.items()} | {"epoch": epoch}, step=(epoch + 1) * iters)
        log.info("epoch %d | %s", epoch, " ".join(f"{k} {v:.4f}" for k, v in tr.items() if k.startswith("loss")))
        ckpt.save((epoch + 1) * iters, None)
    if probe_on:
        final = evaluate_probes(model, device, tokenizer=tokenizer, limit=cfg.probe.get("limit"))
        results.update(final)
        log.info("probes after training: %s", {k: round(v, 2) for k, v in final.items()})
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    log.info("metrics.json in %s", ctx.out_dir)
    return results
