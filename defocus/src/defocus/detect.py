"""``defocus-detect``: train and COCO-evaluate the De-focus Mamba detector (our torchvision adaptation).

Recipe of the official DINO runs (spec §3.4): AdamW lr 2e-4, wd 1e-4, backbone lr x 0.1, grad clip 0.1,
batch 2 per GPU x 8 GPUs = 16, 12 epochs with the lr x 0.1 from epoch 11 on (36 epochs: at 27 and 33), flip +
multi-scale / crop augmentation (``data/coco.py``). Launch with ``torchrun`` for the global batch; one process
trains with the per-process batch only. Resumable mid-epoch exactly like ``defocus-train``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from repro_shared import checkpoint, dist, run, toydata

from .data.coco import CocoBoxes, DetrCropAugment, coco_bbox_eval, collate
from .data.imagenet import build_val_loader
from .data.sampler import build_train_loader
from .engine import train_detection_epoch
from .models.convert import convert_official_state_dict, read_official
from .models.defocus_mamba import VARIANTS
from .models.detection import build_detector, load_classification_weights
from .models.mixer import MixerConfig

__all__ = ["build_detection_data", "build_from_cfg", "run_detect", "detect"]


def build_detection_data(cfg: DictConfig, out_dir: Path) -> tuple[CocoBoxes, CocoBoxes]:
    """(train, val) datasets: the embedded shapes (generated under the run folder) or COCO 2017 under data.root."""
    d, aug = cfg.data, cfg.data.aug
    skip = bool(d.get("skip_corrupt", False))
    crop = DetrCropAugment(prob=aug.crop_prob) if aug.crop_prob else None
    if d.name == "shapes":
        root = Path(d.root) if d.root else out_dir / "shapes"
        tr = toydata.make_shapes_dataset(root, "train", d.num_train, d.image_size, seed=cfg.seed)
        va = toydata.make_shapes_dataset(root, "val", d.num_val, d.image_size, seed=cfg.seed)
        return (CocoBoxes(tr.image_dir, tr.ann_file, aug.flip_prob, crop, skip),
                CocoBoxes(va.image_dir, va.ann_file, skip_corrupt=skip))
    if d.name == "coco":
        root = Path(d.root or "")
        return (CocoBoxes(root / "train2017", root / "annotations" / "instances_train2017.json", aug.flip_prob, crop,
                          skip),
                CocoBoxes(root / "val2017", root / "annotations" / "instances_val2017.json", skip_corrupt=skip))
    raise ValueError(f"unknown data.name {d.name!r}; use 'shapes' or 'coco'")


def build_from_cfg(cfg: DictConfig, num_classes: int):
    """The detector of ``cfg.model`` for ``num_classes`` foreground classes."""
    m = cfg.model
    if m.name not in VARIANTS:
        raise ValueError(f"unknown model variant {m.name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    spec = VARIANTS[m.name]
    mixer = MixerConfig(**{**spec["mixer"], **OmegaConf.to_container(m.mixer, resolve=True)})
    return build_detector(mixer, spec["depth"], num_classes + 1, detector=m.detector,
                          patch_size=m.patch_size, pretrain_size=m.pretrain_size,
                          drop_path_rate=m.drop_path_rate, min_size=tuple(m.min_size), max_size=m.max_size,
                          **OmegaConf.to_container(m.get("detector_kwargs") or {}, resolve=True))


def run_detect(cfg: DictConfig) -> dict:
    """``defocus-detect``: (resume,) train for ``train.epochs``, evaluate, checkpoint, write metrics.json."""
    init_path = run.check_required_init(cfg.get("init"))  # before building anything
    ctx = run.setup_run(cfg, name="defocus")
    t, log = cfg.train, ctx.log
    train_set, val_set = build_detection_data(cfg, ctx.out_dir)
    model = build_from_cfg(cfg, len(train_set.cat_ids)).to(ctx.device)
    if init_path is not None:
        sd = convert_official_state_dict(read_official(init_path, bool(cfg.get("trust_checkpoint", False))),
                                         use_ema=bool(cfg.init.get("use_ema", False)))
        log.info("backbone init from %s: %s", init_path, load_classification_weights(model.backbone.body, sd))
    body = [p for n, p in model.named_parameters() if n.startswith("backbone.body.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.body.")]
    opt = torch.optim.AdamW([{"params": body, "lr": t.lr * t.backbone_lr_mult}, {"params": rest}],
                            lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(t.lr_drop_epochs), gamma=0.1)
    loader = build_train_loader(train_set, batch_size=cfg.data.batch_size, seed=cfg.seed,
                                num_workers=cfg.data.num_workers, skip_corrupt=bool(cfg.data.get("skip_corrupt")),
                                collate_fn=collate, batch_size_key="data.batch_size")
    val_loader = build_val_loader(val_set, 1, cfg.data.num_workers, ctx.dist.world_size, ctx.dist.rank, collate)
    wrapped = dist.wrap_model(model, strategy="ddp" if ctx.dist.world_size > 1 else "none")
    iters, step, stats, res = len(loader), 0, None, {}
    state = checkpoint.resume(ctx.checkpoint_dir, t.resume, model=model, optimizer=opt, scheduler=sched,
                              restore_rng=False)
    if state is not None:
        step, stats, res = state["step"], state["extra"].get("epoch_stats"), state["extra"].get("results", {})
        log.info("resumed from step %d (epoch %d, batch %d of %d)", step, step // iters, step % iters, iters)
    start_epoch, start_batch = divmod(step, iters)

    def save(steps_done: int, epoch: int, epoch_stats: dict | None, results: dict) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, steps_done), model=model,
                                   optimizer=opt, scheduler=sched, epoch=epoch, step=steps_done, config=cfg,
                                   extra={"epoch_stats": epoch_stats, "results": results}, keep_last=t.keep_last)

    def after_step(steps_done: int, epoch_stats: dict) -> None:
        if t.checkpoint_every and steps_done % t.checkpoint_every == 0 and steps_done % iters:
            save(steps_done, steps_done // iters, epoch_stats, res)

    for epoch in range(start_epoch, t.epochs):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = train_detection_epoch(wrapped, loader, opt, epoch=epoch, device=ctx.device, clip_grad=t.clip_grad,
                                   seed=cfg.seed, metrics=ctx.metrics, stats=stats if epoch == start_epoch else None,
                                   after_step=after_step)
        sched.step()  # MultiStepLR counts epochs (official by_epoch milestones)
        res = {f"train_{k}": v for k, v in tr.items()}
        if (epoch + 1) % t.eval_every == 0 or epoch == t.epochs - 1:
            res.update(coco_bbox_eval(model, val_loader, val_set, ctx.device))
        res["epoch"] = epoch
        ctx.metrics.log(res, step=(epoch + 1) * iters)
        log.info("epoch %d | loss %.4f%s", epoch, tr["loss"],
                 f" | bbox AP {res['bbox_AP']:.2f} AP50 {res['bbox_AP50']:.2f}" if "bbox_AP" in res else "")
        save((epoch + 1) * iters, epoch, None, res)
    if "bbox_AP" not in res:  # resumed after the last epoch without an evaluation
        res.update(coco_bbox_eval(model, val_loader, val_set, ctx.device))
    run.write_metrics(ctx.out_dir, res)
    log.info("bbox AP %.2f AP50 %.2f AP75 %.2f", res["bbox_AP"], res["bbox_AP50"], res["bbox_AP75"])
    ctx.metrics.close()
    return res


detect = hydra.main(version_base=None, config_path="configs", config_name="detect")(run.report_user_errors("defocus")(run_detect))
