"""Hydra entry points: ``asl-train``, ``asl-eval``, ``asl-search`` (config -> objects -> engine)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from repro_shared import checkpoint, run
from repro_shared import dist as rdist
from repro_shared.data import ResumableLoader, SkipNoneCollate, build_loader
from torch.utils.data import default_collate

from . import engine
from .data import build_dataset, data_root
from .data.datasets import VOCAugDataset
from .data.shapes import ShapesSegDataset
from .data.transforms import ShortSideCenterCropPipeline, TrainPipeline
from .losses import NUM_CURVES, NUM_PIECES, AutoSegLoss
from .metrics import SegEvaluator
from .models import build_segmenter
from .ops.bezier import identity_theta, theta_to_control_points
from .search import PPOSearch, SearchConfig
from .weights import load_backbone_weights


def _collate_readable(batch):
    """Collate the readable samples of a batch (``None`` = unreadable file skipped); ``None`` if there are none."""
    kept = [b for b in batch if b is not None]
    return default_collate(kept) if kept else None


def _eval_loader(ds, batch_size: int, num_workers: int = 0):
    """In-order loader for evaluation (images of different sizes need batch_size 1)."""
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=_collate_readable)


def _train_loader(ds, batch_size: int, seed: int, num_workers: int = 0, skip_corrupt: bool = False,
                  key: str = "train.batch_size") -> ResumableLoader:
    """Resumable loader: order seeded by (seed, epoch), samples by (seed, epoch, index), rank's strided share.

    Raises:
        ValueError: the dataset holds fewer samples than one global batch (both numbers and ``key``).
    """
    return build_loader(ds, batch_size=batch_size, seed=seed, num_workers=num_workers, drop_last=True,
                        collate_fn=SkipNoneCollate() if skip_corrupt else None, batch_size_key=key)


def build_model(model_cfg, num_classes: int, init_path=None, trust_checkpoint: bool = False) -> torch.nn.Module:
    """Segmenter from the ``model`` config; ``init_path``: ImageNet backbone weights (mmcv or our names)."""
    m = OmegaConf.to_container(model_cfg, resolve=True)
    model = build_segmenter(num_classes, m["backbone"], m["channels"], m["c1_channels"], m["aux_channels"],
                            tuple(m["dilations"]), m["aux_head"], m["dropout"], m.get("head_init", "mmseg"))
    if init_path is not None:
        load_backbone_weights(model, init_path, trust=trust_checkpoint)
    return model


def build_losses(loss_cfg, num_classes: int, ignore_index: int = 255, control_points=None,
                 device: torch.device | str | None = None) -> dict:
    """Losses of the decode (``out``, weight 1.0) and auxiliary (``aux``, weight 0.4) heads, on ``device``."""
    weights = {"out": float(loss_cfg.decode_weight), "aux": float(loss_cfg.aux_weight)}
    if loss_cfg.name == "ce":
        def ce(w):
            return lambda z, y: w * F.cross_entropy(z, y, ignore_index=ignore_index)
        return {k: ce(w) for k, w in weights.items() if w > 0}
    if loss_cfg.name != "asl":
        raise ValueError(f"unknown loss {loss_cfg.name!r}; choose asl or ce")
    cp = control_points if control_points is not None else loss_cfg.control_points
    if not isinstance(cp, str):
        cp = list(cp)
    return {k: AutoSegLoss(num_classes, loss_cfg.metric, cp, drop_bg=loss_cfg.drop_bg, tol=loss_cfg.tol,
                           ignore_index=ignore_index, loss_weight=w, bezier_impl=loss_cfg.bezier_impl,
                           reduction=loss_cfg.get("reduction", "gather")).to(device)
            for k, w in weights.items() if w > 0}


def build_optimizer(model, o) -> torch.optim.SGD:
    return torch.optim.SGD(engine.param_groups(model, o.lr, o.weight_decay, o.head_lr_mult), lr=o.lr,
                           momentum=o.momentum)


def _evaluator(cfg_eval, data_cfg) -> SegEvaluator:
    return SegEvaluator(data_cfg.num_classes, data_cfg.ignore_index, cfg_eval.drop_bg, cfg_eval.tol, cfg_eval.radius)


def _check_entry_point(cfg: DictConfig, entry: str) -> None:
    """Refuse a config meant for the other entry point (``experiment=search_voc_*`` is for ``asl-search``,
    ``experiment=voc_*`` / ``cityscapes_*`` for ``asl-train``): their keys would otherwise be ignored silently.

    Raises:
        ValueError: naming the entry point the config belongs to.
    """
    foreign = ("search", "proxy") if entry == "asl-train" else ("loss", "optim", "train")
    if any(k in cfg for k in foreign):
        other = "asl-search" if entry == "asl-train" else "asl-train"
        kinds = "search_voc_*" if entry == "asl-train" else "voc_* / cityscapes_*"
        raise ValueError(f"this config is for {other} (it has {', '.join(k for k in foreign if k in cfg)} settings): "
                         f"run experiment={kinds} with {other}; {entry} takes the other experiments")


# Config keys that may differ between a run and its continuation by ``train.resume=auto`` (paths on another
# machine, logging, checkpoint cadence, evaluation); every other key must match.
RESUME_MAY_CHANGE = ("device", "output_dir", "train.resume", "train.num_workers", "train.log_every",
                     "train.ckpt_every", "eval.", "data.root", "data.skip_corrupt", "init.path", "init.trust_checkpoint")


def _check_resume_config(cfg: DictConfig, ckpt_dir: Path) -> None:
    """With ``train.resume=auto``, refuse a run folder whose newest checkpoint was written with another config
    (another loss, model, schedule, ...): resuming it would continue, or for a finished run just re-evaluate,
    the other run under this run's name (``repro_shared.checkpoint.check_same_run``).

    Raises:
        ValueError: listing the differing keys (``"key: <here> here, <saved> saved"``).
    """
    if str(cfg.train.get("resume")) == "auto":
        checkpoint.check_same_run(ckpt_dir, OmegaConf.to_container(cfg, resolve=True), RESUME_MAY_CHANGE)


def run_train(cfg: DictConfig) -> dict:
    """Train a segmenter with one loss and evaluate all six metrics; writes ``metrics.json``.

    Outside Hydra (tests, scripts) the output folder is ``cfg.output_dir``. Paper rows refuse to start
    (before anything is built or written) until ``init.path`` names their ImageNet weights.

    Raises:
        ValueError: a search experiment (``experiment=search_voc_*``) given to ``asl-train``; ``train.resume=auto``
            in a folder whose checkpoint was written with another config (:func:`_check_resume_config`).
    """
    _check_entry_point(cfg, "asl-train")
    init_path = run.check_required_init(cfg.get("init"))
    out = run.planned_output_dir(cfg)
    if out is not None:  # refuse another run's folder before setup_run rewrites its config.yaml
        _check_resume_config(cfg, out / "checkpoints")
    ctx = run.setup_run(cfg, name="auto_seg_loss")
    t0 = time.perf_counter()
    train_ds = build_dataset(cfg.data, cfg.data.train_split, train=True)
    loader = _train_loader(train_ds, cfg.train.batch_size, cfg.seed, cfg.train.num_workers,
                           cfg.data.get("skip_corrupt", False))
    val_ds = build_dataset(cfg.data, cfg.data.val_split, train=False)
    k = cfg.data.num_classes
    model = build_model(cfg.model, k, init_path, cfg.init.trust_checkpoint)
    if ctx.dist.world_size > 1 and ctx.device.type == "cuda" and cfg.train.get("sync_bn", True):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # official re-training: SyncBN (GPU only)
    model = model.to(ctx.device)
    losses = build_losses(cfg.loss, k, cfg.data.ignore_index, device=ctx.device)
    optimizer = build_optimizer(model, cfg.optim)
    precision = engine.Precision(cfg.train.get("amp", "none"), ctx.device, cfg.train.get("loss_scale", "dynamic"))
    state = checkpoint.resume(ctx.checkpoint_dir, cfg.train.resume, model=model, optimizer=optimizer,
                              scaler=precision.scaler, restore_rng=False)  # all randomness is re-derived per step
    net = rdist.wrap_model(model, "ddp")  # unchanged in a single process; the loss statistics stay per process
    start = int(state["step"]) if state else 0
    if state:
        ctx.log.info("resumed from iteration %d (epoch %d, batch %d)", start, *divmod(start, len(loader)))
    iters = int(cfg.train.iters)

    def save(it: int) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, it), model=model,
                                   optimizer=optimizer, scaler=precision.scaler, epoch=it // len(loader), step=it,
                                   config=cfg, keep_last=2)

    def on_iter_end(it: int) -> None:
        if (cfg.train.ckpt_every and it % cfg.train.ckpt_every == 0) or it == iters:
            save(it)

    def on_log(it: int, row: dict) -> None:
        ctx.metrics.log(row, step=it)
        ctx.log.info("iter %d/%d " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), it, iters)

    engine.train_iters(net, loader, losses, optimizer, iters, ctx.device, seed=cfg.seed, start_iter=start,
                       min_lr=cfg.optim.min_lr, power=cfg.optim.power, precision=precision,
                       log_every=cfg.train.log_every, on_log=on_log, on_iter_end=on_iter_end, log=ctx.log)
    metrics = {}
    if ctx.dist.is_main:  # evaluation on rank 0 only
        val_loader = _eval_loader(val_ds, cfg.eval.batch_size if cfg.data.name == "shapes" else 1)
        metrics = engine.evaluate(model, val_loader, _evaluator(cfg.eval, cfg.data), ctx.device, log=ctx.log)
        metrics = {k: round(100.0 * v, 3) for k, v in metrics.items()}
    rdist.barrier()
    metrics["train_minutes"] = round((time.perf_counter() - t0) / 60.0, 3)
    ctx.log.info("val: %s", metrics)
    ctx.metrics.log(metrics, step=iters)
    ctx.metrics.close()
    run.write_metrics(ctx.out_dir, metrics)
    return metrics


def run_eval(cfg: DictConfig) -> dict:
    """Evaluate a trained checkpoint on the validation split; writes ``metrics.json``.

    Raises:
        FileNotFoundError: ``checkpoint`` unset or not a file.
        repro_shared.checkpoint.CheckpointError: the file is incomplete or corrupt, or it holds another segmenter
            (then the message lists how its ``model`` / ``data.num_classes`` differ from this config).
    """
    path = None if OmegaConf.is_missing(cfg, "checkpoint") else Path(str(cfg.checkpoint))
    if path is None or not path.is_file():
        raise FileNotFoundError(f"checkpoint={path if path else '???'} is not a file; pass "
                                "checkpoint=<run dir>/checkpoints/ckpt_<iter>.pt (an asl-train checkpoint)")
    ctx = run.setup_run(cfg, name="auto_seg_loss")
    model = build_model(cfg.model, cfg.data.num_classes).to(ctx.device)
    try:
        checkpoint.load_checkpoint(path, model=model, restore_rng=False)
    except checkpoint.CheckpointError as e:
        if "does not fit the model" not in str(e):
            raise
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config") or {}
        diff = checkpoint.config_differences(
            {"model": saved.get("model"), "num_classes": (saved.get("data") or {}).get("num_classes")},
            {"model": OmegaConf.to_container(cfg.model, resolve=True), "num_classes": cfg.data.num_classes})
        raise checkpoint.CheckpointError(
            f"{path} holds another segmenter than this asl-eval builds ({'; '.join(diff[:8]) or e}): pass the "
            "training run's model= / data= choices (they are in its config.yaml)") from e
    ds = build_dataset(cfg.data, cfg.data.val_split, train=False)
    loader = _eval_loader(ds, cfg.eval.batch_size if cfg.data.name == "shapes" else 1, cfg.eval.num_workers)
    metrics = {k: round(100.0 * v, 3) for k, v in
               engine.evaluate(model, loader, _evaluator(cfg.eval, cfg.data), ctx.device, log=ctx.log).items()}
    ctx.log.info("val: %s", metrics)
    run.write_metrics(ctx.out_dir, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------- search
def _proxy_datasets(cfg):
    """(proxy train set, reward set) per spec §3.5 / §11 (reward on held-out train data by default).

    Raises:
        ValueError: ``data`` other than shapes / voc_aug, or voc_aug without the VOC proxy settings.
        FileNotFoundError: ``data.root`` unset or not a VOC folder.
    """
    d, p = cfg.data, cfg.proxy
    if d.name == "shapes":
        tr = ShapesSegDataset(d.root, d.train_split, p.num_train, d.image_size, d.seed, train=True)
        rw = ShapesSegDataset(d.root, p.reward_split, p.heldout_size, d.image_size, d.seed)
        return tr, rw
    if d.name != "voc_aug":
        raise ValueError(f"search supports data=shapes or data=voc_aug, got {d.name!r}")
    missing = [f"proxy.{k}" for k in ("img_scale", "crop_size") if k not in p]
    if missing:  # the tiny default's proxy settings are for shapes
        raise ValueError(f"data=voc_aug needs the VOC proxy settings ({', '.join(missing)}): run "
                         "experiment=search_voc_<metric> (e.g. search_voc_miou), which sets the official ones")
    train_pipe = TrainPipeline(p.img_scale, d.ratio_range, p.crop_size, d.cat_max_ratio)
    test_pipe = ShortSideCenterCropPipeline(min(p.crop_size))
    skip, root = d.skip_corrupt, data_root(d)
    if p.reward_split == "val":  # official behaviour (reward on the reporting split)
        return VOCAugDataset(root, "train_aug", train_pipe, skip), VOCAugDataset(root, "val", test_pipe, skip)
    full = VOCAugDataset(root, "train_aug", train_pipe, skip)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(p.get("split_seed", 0))).tolist()
    held, rest = perm[: p.heldout_size], perm[p.heldout_size:]
    return (torch.utils.data.Subset(full, rest),
            torch.utils.data.Subset(VOCAugDataset(root, "train_aug", test_pipe, skip), held))


def proxy_reward(cfg: DictConfig, control_points, train_ds, reward_ds, device, seeds=None, init_path=None) -> float:
    """Reward of one loss: train a fresh proxy model with the surrogate (``control_points``) for
    ``proxy.iters`` iterations per seed and return the mean target metric on ``reward_ds`` (NaN -> 0).
    Every sample uses the same seeds (common random numbers: same init and batches), so a reward is a
    fixed function of its control points (a search resumed after a kill recomputes the same value)."""
    p, metric, k = cfg.proxy, cfg.metric, cfg.data.num_classes
    evaluator = SegEvaluator(k, cfg.data.ignore_index, p.drop_bg, p.tol, p.tol)
    loss_cfg = OmegaConf.create({"name": "asl", "metric": metric, "drop_bg": metric == "BIoU", "tol": p.tol,
                                 "bezier_impl": "lut", "decode_weight": 1.0, "aux_weight": p.aux_weight})
    values = []
    for s in (seeds if seeds is not None else p.seeds):
        run.seed_everything(int(s))
        model = build_model(cfg.model, k, init_path, cfg.init.trust_checkpoint).to(device)
        opt = build_optimizer(model, p)
        data = _train_loader(train_ds, p.batch_size, int(s), skip_corrupt=cfg.data.skip_corrupt,
                             key="proxy.batch_size")
        losses = build_losses(loss_cfg, k, cfg.data.ignore_index, list(control_points), device)
        engine.train_iters(model, data, losses, opt, p.iters, device, seed=int(s), min_lr=p.min_lr,
                           log_every=10**9)
        m = engine.evaluate(model, _eval_loader(reward_ds, 16 if cfg.data.name == "shapes" else 1),
                            evaluator, device)[metric]
        values.append(0.0 if math.isnan(m) else m)
    return sum(values) / len(values)


def run_search(cfg: DictConfig) -> dict:
    """PPO search of the surrogate's curves; resumable (rerun with the same ``hydra.run.dir``).

    Raises:
        ValueError: unknown ``metric``, a training experiment (``experiment=voc_*``) given to ``asl-search``,
            or a state file in the output folder written with other search / proxy settings.
    """
    _check_entry_point(cfg, "asl-search")
    metric = cfg.metric
    if metric not in NUM_PIECES:
        raise ValueError(f"unknown metric={metric!r}; choose one of {list(NUM_PIECES)}")
    init_path = run.check_required_init(cfg.get("init"))
    scfg = SearchConfig(**OmegaConf.to_container(cfg.search, resolve=True))
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in ("root", "skip_corrupt")}
    context = {"metric": metric, "proxy": OmegaConf.to_container(cfg.proxy, resolve=True), "data": data,
               "model": OmegaConf.to_container(cfg.model, resolve=True)}  # what a reward depends on
    n_pieces = NUM_PIECES[metric]
    init_mu = identity_theta(n_pieces, NUM_CURVES[metric])
    out = run.planned_output_dir(cfg)
    if out is not None and (out / "search_state.pt").is_file():  # another search's state: refused before
        PPOSearch(init_mu, scfg, out / "search_state.pt", context=context)  # setup_run rewrites config.yaml
    ctx = run.setup_run(cfg, name="auto_seg_loss")
    train_ds, reward_ds = _proxy_datasets(cfg)

    def reward(theta: torch.Tensor, rnd: int, idx: int) -> float:
        # theta in [0,1]^D -> control points; clamp keeps every Bezier piece of positive width
        cp = theta_to_control_points(theta.double().clamp(1e-4, 1 - 1e-4), n_pieces).tolist()
        r = proxy_reward(cfg, cp, train_ds, reward_ds, ctx.device, init_path=init_path)
        ctx.log.info("round %d sample %d reward %.4f", rnd, idx, r)
        ctx.metrics.log({"reward": r, "round": rnd, "sample": idx}, step=rnd * 10_000 + idx)
        return r

    searcher = PPOSearch(init_mu, scfg, ctx.out_dir / "search_state.pt", context=context)
    if searcher.round or searcher.rewards:
        ctx.log.info("resuming search at round %d (%d rewards of it done)", searcher.round, len(searcher.rewards))

    def on_round(row: dict) -> None:
        ctx.log.info("round %d: reward(mu)=%s mean=%.4f max=%.4f", row["round"], row["reward_mu"],
                     row["reward_mean"], row["reward_max"])

    mu = searcher.run(reward, on_round)
    cp = theta_to_control_points(mu.clamp(1e-4, 1 - 1e-4), n_pieces)
    out = {f"reward_mu_round{h['round']}": h["reward_mu"] for h in searcher.history if h["reward_mu"] is not None}
    (ctx.out_dir / "searched_control_points.yaml").write_text(
        OmegaConf.to_yaml({"metric": metric, "control_points": [round(v, 6) for v in cp.tolist()],
                           "theta": [round(v, 6) for v in mu.tolist()]}))
    ctx.log.info("final control points: %s", cp.tolist())
    ctx.metrics.close()
    run.write_metrics(ctx.out_dir, out)
    return out


_one_line = run.report_user_errors("auto_seg_loss")  # bad input / divergence: one "error: ..." line, exit 1
train = hydra.main(version_base=None, config_path="configs", config_name="train")(_one_line(run_train))
evaluate = hydra.main(version_base=None, config_path="configs", config_name="eval")(_one_line(run_eval))
search = hydra.main(version_base=None, config_path="configs", config_name="search")(_one_line(run_search))


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The config an entry point would see, for use outside a Hydra app (tests, scripts)."""
    from hydra import compose as _compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="auto_seg_loss.configs", version_base=None):
        return _compose(config_name=config_name, overrides=overrides or [])
