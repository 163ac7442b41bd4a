"""Hydra entry points: ``bevformer-v2-train`` and ``bevformer-v2-eval``.

Default: generate (or reuse) the synthetic nuScenes set, train a tiny model on CPU for about a minute,
evaluate with the devkit on ``mini_val`` and write ``metrics.json``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from repro_shared import checkpoint, dist, run

from .data.dataset import BEVDataset
from .data.infos import DatasetError, build_infos, check_dataroot
from .data.synthetic import make_synthetic_nuscenes
from .engine import build_optimizer, evaluate, matched_errors, train as train_loop
from .models.bevformer_v2 import BEVFormerV2


def prepare_data(dcfg: DictConfig, log=None):
    """-> (nusc, train infos, val infos). Generates the synthetic set if needed; caches info records."""
    root = Path(dcfg.root).expanduser()
    if dcfg.kind == "synthetic":
        s = dcfg.synthetic
        make_synthetic_nuscenes(root, s.samples_per_scene, s.objects_per_scene, s.img_w, s.img_h, s.seed,
                                s.cover_classes, dcfg.version)
    elif dcfg.kind != "nuscenes":
        raise ValueError(f"unknown data.kind {dcfg.kind!r}; use 'synthetic' or 'nuscenes'")
    check_dataroot(root, dcfg.version)
    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    nusc = NuScenes(dcfg.version, str(root), verbose=False)
    splits = create_splits_scenes()
    out = []
    for split in (dcfg.train_split, dcfg.val_split):
        if split not in splits:
            raise DatasetError(f"unknown split {split!r}; known: {sorted(splits)}")
        cache = root / f"bevformer_v2_infos_{dcfg.version}_{split}.pkl"
        stamp = (root / "synthetic_params.json").read_text() if (root / "synthetic_params.json").exists() else ""
        if cache.exists():
            with open(cache, "rb") as f:
                blob = pickle.load(f)
            if blob.get("stamp") == stamp:
                out.append(blob["infos"])
                continue
        infos = build_infos(nusc, splits[split])
        if not infos:
            raise DatasetError(f"split {split!r} has no scenes in {root}/{dcfg.version}; check data.version")
        with open(cache, "wb") as f:
            pickle.dump(dict(stamp=stamp, infos=infos), f)
        out.append(infos)
    return nusc, out[0], out[1]


def make_datasets(dcfg: DictConfig, train_infos, val_infos):
    common = dict(frames=tuple(dcfg.frames), crop=tuple(dcfg.crop), resize_heights=tuple(dcfg.resize_heights),
                  test_height=dcfg.test_height)
    train_ds = BEVDataset(train_infos, train=True, flip=dcfg.flip, bda=dcfg.bda, photometric=dcfg.photometric,
                          seed=dcfg.aug_seed, **common)
    return train_ds, BEVDataset(val_infos, train=False, **common)


def build_model(mcfg: DictConfig, frames) -> BEVFormerV2:
    m = OmegaConf.to_container(mcfg, resolve=True)
    m["head"]["transformer"]["frames"] = tuple(frames)
    return BEVFormerV2(**m)


@hydra.main(version_base=None, config_path="configs", config_name="train")
def train(cfg: DictConfig) -> None:
    ctx = run.setup_run(cfg, name="bevformer_v2")
    if ctx.device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(int(cfg.cpu_threads))  # a shared CPU box thrashes with more threads
    try:
        nusc, train_infos, val_infos = prepare_data(cfg.data, ctx.log)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    train_ds, val_ds = make_datasets(cfg.data, train_infos, val_infos)
    model = build_model(cfg.model, cfg.data.frames).to(ctx.device)
    ctx.log.info("model: %.2f M parameters; train %d / val %d samples", sum(p.numel() for p in model.parameters())
                 / 1e6, len(train_ds), len(val_ds))
    if cfg.train.load_from:
        report = checkpoint.load_state_dict_remapped(model, checkpoint.load_weights_file(cfg.train.load_from),
                                                     strict=False)
        ctx.log.info("load_from %s: %s", cfg.train.load_from, report)
    tcfg = cfg.train
    if tcfg.epochs:
        per_epoch = -(-len(train_ds) // (tcfg.batch_size * tcfg.accum * ctx.dist.world_size))
        OmegaConf.update(cfg, "train.iters", int(tcfg.epochs * per_epoch))
    if ctx.dist.world_size > 1 and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # official SyncBN (spec §6.3)
    wrapped = dist.wrap_model(model, "ddp", find_unused_parameters=True)
    optimizer = build_optimizer(model, tcfg.lr, tcfg.weight_decay, tcfg.backbone_lr_mult)
    state = checkpoint.resume(ctx.checkpoint_dir, tcfg.resume, model=model, optimizer=optimizer)
    start = int(state["step"]) if state else 0

    def save(step, opt):
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, step), model=model, optimizer=opt,
                                   step=step, config=cfg, keep_last=2)

    last = train_loop(wrapped, train_ds, tcfg, ctx, cfg.model.head.group_detr, cfg.seed, start, optimizer, save)
    save(tcfg.iters, optimizer)
    metrics = {f"train_{k}": v for k, v in last.items() if k in ("loss", "loss_bev")}
    if cfg.eval_after_train and dist.is_main():
        metrics.update(evaluate(model, val_ds, nusc, cfg.data.eval_set, ctx.out_dir / "eval", ctx.device,
                                cfg.eval_head))
        metrics.update(matched_errors(model, val_ds, ctx.device))
        ctx.log.info("eval: %s", {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    run.write_metrics(ctx.out_dir, metrics)
    ctx.metrics.close()


@hydra.main(version_base=None, config_path="configs", config_name="eval")
def evaluate_cli(cfg: DictConfig) -> None:
    ctx = run.setup_run(cfg, name="bevformer_v2")
    if not cfg.checkpoint:
        raise SystemExit("error: pass checkpoint=<path to a bevformer-v2-train checkpoint or converted weights>")
    try:
        nusc, _, val_infos = prepare_data(cfg.data, ctx.log)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    _, val_ds = make_datasets(cfg.data, [], val_infos)
    model = build_model(cfg.model, cfg.data.frames).to(ctx.device)
    report = checkpoint.load_state_dict_remapped(model, checkpoint.load_weights_file(cfg.checkpoint), strict=False)
    if report.missing:
        raise SystemExit(f"error: checkpoint {cfg.checkpoint} lacks {len(report.missing)} weights of this model "
                         f"(first: {report.missing[:3]}); check the model config")
    metrics = evaluate(model, val_ds, nusc, cfg.data.eval_set, ctx.out_dir / "eval", ctx.device, cfg.eval_head)
    ctx.log.info("eval: %s", metrics)
    run.write_metrics(ctx.out_dir, metrics)
