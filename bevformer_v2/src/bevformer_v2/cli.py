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
from repro_shared.checkpoint import CheckpointError
from repro_shared.data import DataError, build_loader, check_dataset_size
from repro_shared.fsio import atomic_open
from repro_shared.guards import NonFiniteError

from .data.dataset import BEVDataset, collate
from .data.infos import DatasetError, build_infos, check_dataroot, load_nuscenes
from .data.synthetic import make_synthetic_nuscenes
from .engine import build_optimizer, evaluate, matched_errors, train as train_loop
from .models.backbone import check_backbone
from .models.bevformer_v2 import BEVFormerV2

# info-record cache layout: camera paths relative to the data root, so a copied or moved root reads its own
# images (format 1 stored absolute paths and silently kept reading the old location)
CACHE_FORMAT = 2


def prepare_data(dcfg: DictConfig, log=None):
    """-> (nusc, train infos, val infos). Generates the synthetic set if needed; caches info records.

    Raises:
        DatasetError: missing folder / tables, an unreadable table (named), an unknown split.
    """
    root = Path(dcfg.root).expanduser()
    if dcfg.kind == "synthetic":
        s = dcfg.synthetic
        make_synthetic_nuscenes(root, s.samples_per_scene, s.objects_per_scene, s.img_w, s.img_h, s.seed,
                                s.cover_classes, dcfg.version)
    elif dcfg.kind != "nuscenes":
        raise DatasetError(f"unknown data.kind {dcfg.kind!r}; known: synthetic, nuscenes")
    check_dataroot(root, dcfg.version)
    from nuscenes.utils.splits import create_splits_scenes

    nusc = load_nuscenes(root, dcfg.version)
    splits = create_splits_scenes()
    out = []
    for split in (dcfg.train_split, dcfg.val_split):
        if split not in splits:
            raise DatasetError(f"unknown split {split!r}; known: {sorted(splits)}")
        cache = root / f"bevformer_v2_infos_{dcfg.version}_{split}.pkl"
        stamp = (root / "synthetic_params.json").read_text() if (root / "synthetic_params.json").exists() else ""
        blob = _read_cache(cache, log)
        if blob is not None and blob.get("stamp") == stamp and blob.get("format") == CACHE_FORMAT:
            out.append(_rebase(blob["infos"], lambda p: str(root / p)))
            continue
        infos = build_infos(nusc, splits[split])
        if not infos:
            raise DatasetError(f"split {split!r} has no scenes in {root}/{dcfg.version}; check data.version")
        with atomic_open(cache, "wb") as f:
            relative = _rebase(infos, lambda p: str(Path(p).relative_to(root)))
            pickle.dump(dict(format=CACHE_FORMAT, stamp=stamp, infos=relative), f)
        out.append(infos)
    return nusc, out[0], out[1]


def _rebase(infos: list[dict], path_fn) -> list[dict]:
    """Copies of info records with every camera ``data_path`` mapped through ``path_fn`` (other fields shared)."""
    return [{**info, "cams": {ch: {**cam, "data_path": path_fn(cam["data_path"])} for ch, cam in info["cams"].items()}}
            for info in infos]


def _read_cache(path: Path, log) -> dict | None:
    """Our own info-record cache (written by this package); an unreadable one is rebuilt, with a warning."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as e:
        if log is not None:
            log.warning("info cache %s is unreadable (%s); rebuilding it", path, e)
        return None


def make_datasets(dcfg: DictConfig, train_infos, val_infos):
    common = dict(frames=tuple(dcfg.frames), crop=tuple(dcfg.crop), resize_heights=tuple(dcfg.resize_heights),
                  test_height=dcfg.test_height)
    train_ds = BEVDataset(train_infos, train=True, flip=dcfg.flip, bda=dcfg.bda, photometric=dcfg.photometric,
                          skip_corrupt=dcfg.skip_corrupt, **common)
    return train_ds, BEVDataset(val_infos, train=False, **common)


def build_model(mcfg: DictConfig, frames) -> BEVFormerV2:
    m = OmegaConf.to_container(mcfg, resolve=True)
    m["head"]["transformer"]["frames"] = tuple(frames)
    return BEVFormerV2(**m)


def load_init(model: BEVFormerV2, path: Path, log) -> None:
    """Load initial weights (our names, e.g. from ``bevformer-v2-convert``) non-strictly; every backbone weight
    must be in the file.

    Raises:
        SystemExit: the file does not hold this model's backbone (wrong file or not converted).
    """
    report = checkpoint.load_state_dict_remapped(model, checkpoint.load_weights_file(path), strict=False)
    missing = [k for k in report.missing if k.startswith("img_backbone.")]
    if missing or report.mismatched:
        raise SystemExit(f"error: init.path={path} does not fit this model's backbone: {len(missing)} backbone "
                         f"weights missing (first: {missing[:3]}), {len(report.mismatched)} shape mismatches "
                         f"(first: {report.mismatched[:3]}); convert official files with bevformer-v2-convert and "
                         "check model.backbone")
    log.info("init %s: loaded %d tensors; %d model weights keep their random init", path, len(report.loaded),
             len(report.missing))


@hydra.main(version_base=None, config_path="configs", config_name="train")
def train(cfg: DictConfig) -> None:
    ctx = run.setup_run(cfg, name="bevformer_v2")
    try:  # before building anything
        init_path = run.check_required_init(cfg.init)
        check_backbone(cfg.model.backbone)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if ctx.device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(int(cfg.cpu_threads))  # a shared CPU box thrashes with more threads
    tcfg = cfg.train
    try:
        nusc, train_infos, val_infos = prepare_data(cfg.data, ctx.log)
    except (DatasetError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    train_ds, val_ds = make_datasets(cfg.data, train_infos, val_infos)
    try:  # fewer samples than one batch: both numbers and the key to change, before anything is built
        check_dataset_size(len(train_ds), tcfg.batch_size, world_size=ctx.dist.world_size,
                           name=f"training set ({cfg.data.train_split})")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    loader = build_loader(train_ds, batch_size=tcfg.batch_size, seed=cfg.seed, num_workers=tcfg.num_workers,
                          collate_fn=collate)
    model = build_model(cfg.model, cfg.data.frames).to(ctx.device)
    ctx.log.info("model: %.2f M parameters; train %d / val %d samples, %d batches per epoch",
                 sum(p.numel() for p in model.parameters()) / 1e6, len(train_ds), len(val_ds), len(loader))
    if init_path is not None:
        try:
            load_init(model, init_path, ctx.log)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
    if tcfg.epochs:
        OmegaConf.update(cfg, "train.iters", int(tcfg.epochs * -(-len(loader) // tcfg.accum)))
    if ctx.dist.world_size > 1 and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # official SyncBN (spec §6.3)
    wrapped = dist.wrap_model(model, "ddp", find_unused_parameters=True)
    optimizer = build_optimizer(model, tcfg.lr, tcfg.weight_decay, tcfg.backbone_lr_mult)
    # no RNG blobs: all randomness is derived from (seed, epoch, index / step), see engine.py
    try:
        state = checkpoint.resume(ctx.checkpoint_dir, tcfg.resume, model=model, optimizer=optimizer,
                                  restore_rng=False)
    except CheckpointError as e:
        raise SystemExit(f"error: train.resume={tcfg.resume}: {e}") from None
    start = int(state["step"]) if state else 0
    if state:
        ctx.log.info("resumed from step %d (epoch %d, batch %d)", start, *divmod(start * tcfg.accum, len(loader)))
    elif str(tcfg.resume) == "auto":  # the default run folder is new (timestamped) on every launch
        ctx.log.info("train.resume=auto: no checkpoint in %s, starting at step 0; to continue a killed run, run "
                     "the same command with hydra.run.dir=<that run's folder>", ctx.checkpoint_dir)

    def save(step, opt):
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, step), model=model, optimizer=opt,
                                   step=step, epoch=step * tcfg.accum // len(loader), config=cfg, keep_last=2)

    try:
        last = train_loop(wrapped, loader, tcfg, ctx, cfg.model.head.group_detr, cfg.seed, start, optimizer, save)
    except (DataError, NonFiniteError) as e:
        raise SystemExit(f"error: {e}") from None
    if start < tcfg.iters:
        save(tcfg.iters, optimizer)
    metrics = {f"train_{k}": v for k, v in last.items() if k in ("loss", "loss_bev")}
    if cfg.eval_after_train and dist.is_main():
        try:
            metrics.update(evaluate(model, val_ds, nusc, cfg.data.eval_set, ctx.out_dir / "eval", ctx.device,
                                    cfg.eval_head))
            metrics.update(matched_errors(model, val_ds, ctx.device))
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        ctx.log.info("eval: %s", {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    run.write_metrics(ctx.out_dir, metrics)
    ctx.metrics.close()


@hydra.main(version_base=None, config_path="configs", config_name="eval")
def evaluate_cli(cfg: DictConfig) -> None:
    ctx = run.setup_run(cfg, name="bevformer_v2")
    if not cfg.checkpoint:
        raise SystemExit("error: pass checkpoint=<path to a bevformer-v2-train checkpoint or converted weights>")
    try:  # before the data is prepared
        check_backbone(cfg.model.backbone)
        weights = checkpoint.load_weights_file(cfg.checkpoint)
    except (ValueError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        nusc, _, val_infos = prepare_data(cfg.data, ctx.log)
    except (DatasetError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    _, val_ds = make_datasets(cfg.data, [], val_infos)
    model = build_model(cfg.model, cfg.data.frames).to(ctx.device)
    report = checkpoint.load_state_dict_remapped(model, weights, strict=False)
    if report.missing:
        raise SystemExit(f"error: checkpoint {cfg.checkpoint} lacks {len(report.missing)} weights of this model "
                         f"(first: {report.missing[:3]}); check the model config")
    try:
        metrics = evaluate(model, val_ds, nusc, cfg.data.eval_set, ctx.out_dir / "eval", ctx.device, cfg.eval_head)
    except (DataError, NonFiniteError) as e:
        raise SystemExit(f"error: {e}") from None
    ctx.log.info("eval: %s", metrics)
    run.write_metrics(ctx.out_dir, metrics)
