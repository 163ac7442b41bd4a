"""Hydra entry points: ``pap-train``, ``pap-eval``, ``pap-search``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from repro_shared import checkpoint, dist, run
from repro_shared.data import SkipNoneCollate, build_loader, check_dataset_size

from .config_diff import RESUME_MAY_CHANGE
from .data.build import build_dataset
from .data.coco import collate
from .engine import evaluate as coco_eval_loop
from .engine import train_one_epoch
from .models.build import build_detector
from .optim import build_optimizer, build_scheduler


def eval_loader(ds, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Sequential loader over ``ds`` (split over ranks under torchrun); unreadable images skipped if the
    dataset was built with ``skip_corrupt``."""
    check_dataset_size(len(ds), 1, drop_last=False, key="data", name="validation set")
    sampler = DistributedSampler(ds, shuffle=False) if dist.get_world_size() > 1 else None
    return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
                      collate_fn=SkipNoneCollate(collate), drop_last=False)


def check_resume_config(cfg: DictConfig, ckpt_dir) -> Path | None:
    """With ``train.resume=auto``: the newest valid checkpoint in ``ckpt_dir`` (None if there is none), after
    checking that it was written with this configuration up to :data:`RESUME_MAY_CHANGE`
    (``repro_shared.checkpoint.check_same_run``; the configs are compared before anything is loaded: a
    checkpoint of another detector would otherwise fail with a list of state-dict keys).

    Raises:
        ValueError: the checkpoint belongs to a run with another configuration; lists the differing keys.
    """
    if ckpt_dir is None or str(cfg.train.get("resume")) != "auto":
        return None
    return checkpoint.check_same_run(ckpt_dir, OmegaConf.to_container(cfg, resolve=True), RESUME_MAY_CHANGE)


def _resume(cfg: DictConfig, ckpt_dir, model, optimizer, sched) -> int:
    """Optimizer steps already done: 0, or the step of the checkpoint ``train.resume`` names.

    Raises:
        ValueError: ``train.resume=auto`` found a checkpoint of a run with another configuration
            (:func:`check_resume_config`).
    """
    spec = cfg.train.get("resume")
    if ckpt_dir is None or not spec:
        return 0
    if str(spec) == "auto":
        spec = check_resume_config(cfg, ckpt_dir)
        if spec is None:
            return 0
    state = checkpoint.resume(ckpt_dir, spec, model=dist.unwrap_model(model), optimizer=optimizer,
                              scheduler=sched, restore_rng=False)
    return int(state["step"])


def pap_heads(model) -> dict[str, Any]:
    """The PAPLoss modules of a detector by head name (``bbox`` | ``rpn``, ``roi``)."""
    m = dist.unwrap_model(model)
    heads = {}
    if getattr(m, "pap", None) is not None:
        heads["bbox"] = m.pap
    if getattr(getattr(m, "rpn", None), "pap", None) is not None:
        heads["rpn"] = m.rpn.pap
    if getattr(getattr(m, "roi_heads", None), "pap", None) is not None:
        heads["roi"] = m.roi_heads.pap
    return heads


def train_and_evaluate(cfg: DictConfig, device: torch.device, log=None, metrics=None, ckpt_dir=None,
                       pap_override: dict[str, tuple[torch.Tensor, float]] | None = None,
                       fail_patience: int | None = None) -> dict[str, float]:
    """Build data + detector, train ``cfg.train`` and return the COCO metrics on the val split.

    Initial weights required by the config (``init.required``) are checked before anything is built.
    Training is exactly resumable: the loader and every step's randomness are derived from
    ``(cfg.seed, epoch, batch / step)``; checkpoints (``train.ckpt_every`` epochs and/or
    ``train.ckpt_every_steps`` optimizer steps, also mid-epoch, and always the final step) hold model,
    optimizer, scheduler and the step, and ``train.resume=auto`` continues from the newest valid one
    bit-identically (refused when that checkpoint's config differs, see :data:`RESUME_MAY_CHANGE`).
    ``pap_override`` maps a head name to (control points (5, 12), lambda) set on that head's PAPLoss
    before training (how the search trains each sampled loss).
    """
    t0 = time.time()
    init_path = run.check_required_init(cfg.get("init"))
    train_ds = build_dataset(cfg.data, "train", train=True, train_size=int(cfg.model.train_size or 0))
    val_ds = build_dataset(cfg.data, "val", train=False)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(train_ds.cat_ids), init_path=init_path,
                           log=log).to(device)
    heads = pap_heads(model)
    for name, (ctrl, lam) in (pap_override or {}).items():
        if name not in heads:
            raise ValueError(f"cannot set PAP parameters of head {name!r}; this detector has {sorted(heads)}")
        heads[name].set_parameters(ctrl, lam)
    tc = cfg.train
    seed = int(cfg.seed)
    loader = build_loader(train_ds, batch_size=int(tc.batch_size), seed=seed, num_workers=int(tc.num_workers),
                          collate_fn=SkipNoneCollate(collate), drop_last=True)
    optimizer = build_optimizer(model, tc)
    sched = build_scheduler(optimizer, tc, len(loader))
    model = dist.wrap_model(model, "ddp")
    step = _resume(cfg, ckpt_dir, model, optimizer, sched)
    if step and log is not None:
        log.info("resumed from step %d (epoch %d, batch %d)", step, *divmod(step, len(loader)))
    start_epoch, start_batch = divmod(step, len(loader))
    saved = {"step": step}

    def save(at_step: int, epoch: int) -> None:
        if ckpt_dir is None or saved["step"] == at_step:
            return
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, at_step), model=dist.unwrap_model(model),
                                   optimizer=optimizer, scheduler=sched, epoch=epoch, step=at_step, config=cfg,
                                   keep_last=int(tc.get("keep_last", 2)))
        saved["step"] = at_step

    every = int(tc.get("ckpt_every_steps", 0))
    on_step = (lambda s, e: save(s, e) if s % every == 0 else None) if every > 0 else None
    max_iters = tc.get("max_iters")
    fail_count = [0]
    for epoch in range(start_epoch, int(tc.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        step = train_one_epoch(model, loader, optimizer, sched, device, epoch=epoch, step=step, seed=seed,
                               clip_max_norm=float(tc.get("clip_max_norm", 0.0)), log=log, metrics=metrics,
                               log_every=int(tc.log_every), max_iters=max_iters, fail_patience=fail_patience,
                               fail_count=fail_count, on_step=on_step)
        if int(tc.get("ckpt_every", 0)) and (epoch + 1) % int(tc.ckpt_every) == 0:
            save(step, epoch + 1)
        if max_iters is not None and step >= max_iters:
            break
    save(step, step // len(loader))  # the trained detector, for pap-eval (no-op if just saved)
    result = coco_eval_loop(dist.unwrap_model(model), eval_loader(val_ds, int(cfg.eval.batch_size),
                                                                  int(tc.num_workers)), device, val_ds)
    result.update(train_time_s=time.time() - t0, iters=step)
    return result


@hydra.main(version_base=None, config_path="configs", config_name="train")
@run.report_user_errors("param_ap_loss")  # bad input / divergence: one "error: ..." line, exit 1
def train(cfg: DictConfig) -> None:
    """Train a detector on ``cfg.data`` and write the val COCO metrics to ``metrics.json``."""
    out = run.hydra_output_dir()
    if out is not None:  # refuse another run's folder before setup_run rewrites its config.yaml
        check_resume_config(cfg, out / "checkpoints")
    ctx = run.setup_run(cfg, name="param_ap_loss")
    result = train_and_evaluate(cfg, ctx.device, ctx.log, ctx.metrics, ckpt_dir=ctx.checkpoint_dir)
    ctx.log.info("val: " + " ".join(f"{k} {v:.2f}" for k, v in result.items()))
    ctx.metrics.close()
    run.write_metrics(ctx.out_dir, result)


def find_eval_checkpoint(path: str | Path) -> Path:
    """``eval.checkpoint`` as a file: a ``ckpt_*.pt`` as given, or the newest valid checkpoint of a run
    folder (``<run>/checkpoints``) or of a checkpoints folder.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without a valid checkpoint.
    """
    p = Path(str(path)).expanduser()
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        found = checkpoint.find_latest_checkpoint(folder)
        if found is None:
            raise FileNotFoundError(f"eval.checkpoint={str(path)!r}: no valid ckpt_*.pt in {folder} (pap-train writes "
                                    "<run folder>/checkpoints/ckpt_<step>.pt at the end of training)")
        return found
    if not p.exists():
        raise FileNotFoundError(f"eval.checkpoint={str(path)!r} does not exist; pass a pap-train run folder or "
                                "one of its checkpoints/ckpt_<step>.pt")
    return p


def load_for_eval(model, path: Path, cfg: DictConfig) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` (built from ``cfg``).

    Raises:
        repro_shared.checkpoint.CheckpointError: the file is incomplete or corrupt, or it holds another detector;
            then the message lists how the checkpoint's ``model`` / ``loss`` / ``data`` config differs from ``cfg``.
    """
    try:
        checkpoint.load_checkpoint(path, model=model, restore_rng=False)
    except checkpoint.CheckpointError as e:
        if "does not fit the model" not in str(e):
            raise
        saved = torch.load(path, map_location="cpu", weights_only=True).get("config") or {}
        here = OmegaConf.to_container(cfg, resolve=True)
        keys = ("model", "loss", "data")  # data: the number of classes comes from the dataset
        diff = checkpoint.config_differences({k: saved.get(k) for k in keys}, {k: here[k] for k in keys},
                                  tuple(k for k in RESUME_MAY_CHANGE if k.startswith("data.")))
        diff.sort(key=lambda d: keys.index(d.split(".", 1)[0]))  # the detector first, then its loss, then data
        raise checkpoint.CheckpointError(
            f"{path} holds another detector than this pap-eval builds ({'; '.join(diff[:8]) or 'same model/loss/data config'}"
            f"{'; ...' if len(diff) > 8 else ''}): pass the training run's overrides (e.g. model=... loss=... or "
            "experiment=...; they are in its config.yaml)") from e


@hydra.main(version_base=None, config_path="configs", config_name="eval")
@run.report_user_errors("param_ap_loss")  # bad input / divergence: one "error: ..." line, exit 1
def evaluate(cfg: DictConfig) -> None:
    """Evaluate a checkpoint (``eval.checkpoint=`` a ``ckpt_*.pt`` or a pap-train run folder) on the val split;
    writes ``metrics.json`` to its own output folder (``outputs/eval/...``)."""
    ctx = run.setup_run(cfg, name="param_ap_loss")
    if not cfg.eval.get("checkpoint"):
        raise ValueError("pap-eval needs eval.checkpoint=<a pap-train run folder or its checkpoints/ckpt_<step>.pt>")
    path = find_eval_checkpoint(cfg.eval.checkpoint)
    val_ds = build_dataset(cfg.data, "val", train=False)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(val_ds.cat_ids)).to(ctx.device)
    load_for_eval(model, path, cfg)
    ctx.log.info("evaluating %s", path)
    result = coco_eval_loop(model, eval_loader(val_ds, int(cfg.eval.batch_size)), ctx.device, val_ds)
    ctx.log.info("val: " + " ".join(f"{k} {v:.2f}" for k, v in result.items()))
    run.write_metrics(ctx.out_dir, result)


@hydra.main(version_base=None, config_path="configs", config_name="search")
@run.report_user_errors("param_ap_loss")  # bad input / divergence: one "error: ..." line, exit 1
def search(cfg: DictConfig) -> None:
    """PAP-loss parameter search (spec §3.6); state saved each round, resumable; writes ``metrics.json``."""
    from .search import check_search_folder, run_search_from_config

    out = cfg.search.get("out_dir") or run.hydra_output_dir()
    if out is not None:  # refuse another search's folder before setup_run rewrites its config.yaml
        check_search_folder(Path(out), OmegaConf.to_container(cfg, resolve=True), bool(cfg.search.resume), record=False)
    ctx = run.setup_run(cfg, name="param_ap_loss")
    result = run_search_from_config(cfg, ctx)
    run.write_metrics(ctx.out_dir, result)
