"""Training and evaluation loops (spec §3.3, §3.4): AdamW (backbone lr x0.5), linear warmup (start 1/3),
step decay x0.1, gradient clipping 35, gradient accumulation to the paper's global batch; evaluation =
NMS-free decoding -> nuScenes results JSON -> devkit DetectionEval.

Exact resume: the loader is ``repro_shared.data.build_loader`` (sample order seeded by (seed, epoch), each
sample's augmentation by (seed, epoch, index)) and every micro-batch reseeds the global RNGs with
``seed_step(seed, epoch, index)`` (GridMask, dropout). Micro-batch ``k`` of the run is batch ``k mod
len(loader)`` of epoch ``k div len(loader)``, and optimizer step ``s`` consumes micro-batches
``s * accum ... (s + 1) * accum - 1``: a checkpoint's step count alone says where to continue, also in the
middle of an epoch. The lr is a function of the step. Nothing else carries state from step to step (history
frames are loaded with each sample, there is no recurrent queue).
"""

from __future__ import annotations

import time

import torch

from repro_shared.data import seed_step
from repro_shared.guards import check_finite

from .data.dataset import collate
from .data.nusc_eval import boxes_to_results, evaluate_results
from .losses import detector_losses, hungarian_match, normalize_bbox, total_loss


PREDICTIONS = ("all_cls", "all_reg", "aux_cls", "aux_reg", "detr3d_cls", "detr3d_reg")  # matched outputs


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float):
    """AdamW (beta 0.9/0.999, eps 1e-8), wd on all params, ``img_backbone`` at lr x ``backbone_lr_mult``."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.split(".")[0] == "img_backbone" or ".img_backbone." in name else rest).append(p)
    groups = [dict(params=rest, lr=lr), dict(params=backbone, lr=lr * backbone_lr_mult)]
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)


def lr_factor(it: int, warmup_iters: int, warmup_ratio: float, step_iters) -> float:
    """mmcv linear warmup from ``warmup_ratio`` then x0.1 at each of ``step_iters``."""
    f = 0.1 ** sum(it >= s for s in step_iters)
    if it < warmup_iters:
        f *= 1 - (1 - it / warmup_iters) * (1 - warmup_ratio)
    return f


def to_device(batch: dict, device) -> dict:
    """Move the tensors a forward pass reads to ``device``; ``flip`` and the python flags stay on the host."""
    out = dict(batch)
    for k in ("imgs", "lidar2img", "bda", "intrinsics", "ego_k2t"):
        out[k] = batch[k].to(device, non_blocking=True)
    out["gt_boxes"] = [g.to(device) for g in batch["gt_boxes"]]
    out["gt_labels"] = [g.to(device) for g in batch["gt_labels"]]
    return out


def micro_batches(loader, first: int):
    """Yield ``(epoch, index in epoch, batch)`` of a ``ResumableLoader`` from global micro-batch ``first`` on."""
    epoch, start = divmod(first, len(loader))
    while True:
        loader.set_epoch(epoch, start)
        for i, batch in enumerate(loader, start=start):
            yield epoch, i, batch
        epoch, start = epoch + 1, 0


def train(model, loader, cfg, ctx, groups: int, seed: int = 0, start_step: int = 0, optimizer=None,
          save_fn=None) -> dict:
    """Run optimizer steps ``start_step .. cfg.iters - 1`` (each = ``cfg.accum`` micro-batches of ``loader``).

    Logs (``ctx.metrics``, step = steps done) every ``cfg.log_every`` steps, calls ``save_fn(step, optimizer)``
    every ``cfg.ckpt_every`` steps. Returns the last step's logged values.

    Raises:
        NonFiniteError: at the first non-finite prediction, loss term or gradient norm, naming the step (the
            1-based optimizer step being computed) and the term; nothing of that step is applied or saved.
    """
    device = ctx.device
    core = model.module if hasattr(model, "module") else model
    optimizer = optimizer or build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult)
    steps = [int(round(f * cfg.iters)) for f in cfg.lr_step_frac]
    stream = micro_batches(loader, start_step * cfg.accum)
    perspective = core.perspective and cfg.lambda_pers > 0
    model.train()
    last, t0, skipped, cur_epoch = {}, time.time(), 0, None
    for it in range(start_step, cfg.iters):
        f = lr_factor(it, cfg.warmup_iters, cfg.warmup_ratio, steps)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        sums: dict[str, float] = {}
        for _ in range(cfg.accum):
            epoch, index, batch = next(stream)
            if epoch != cur_epoch:
                _report_skipped(ctx, cur_epoch, skipped)
                cur_epoch, skipped = epoch, 0
            skipped += len(batch["skipped"])
            seed_step(seed, epoch, index)
            batch = to_device(batch, device)
            out = model(batch)
            check_finite({k: out[k] for k in PREDICTIONS if k in out}, step=it + 1, epoch=epoch, what="prediction")
            losses = detector_losses(out, batch, groups, perspective, core.fix_smooth_l1)
            loss = total_loss(losses, cfg.lambda_bev, cfg.lambda_pers) / cfg.accum
            names = [*losses, "loss"]
            values = torch.stack([v.detach().float() for v in losses.values()] + [loss.detach().float()]).tolist()
            check_finite(dict(zip(names, values)), step=it + 1, epoch=epoch)
            loss.backward()
            for k, v in zip(names, values):
                sums[k] = sums.get(k, 0.0) + (v if k == "loss" else v / cfg.accum)
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        check_finite({"grad_norm": gnorm}, step=it + 1, epoch=cur_epoch, what="gradient norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logs = dict(sums, lr=optimizer.param_groups[0]["lr"], grad_norm=gnorm, epoch=cur_epoch)
        logs["loss_bev"] = sum(v for k, v in sums.items() if k.endswith(("loss_cls", "loss_bbox")))
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iters:
            ctx.metrics.log(logs, step=it + 1)
            ctx.log.info("it %d/%d loss %.4f (bev %.4f) lr %.2e %.2fs/it", it + 1, cfg.iters, logs["loss"],
                         logs["loss_bev"], logs["lr"], (time.time() - t0) / (it + 1 - start_step))
        if save_fn is not None and cfg.ckpt_every and (it + 1) % cfg.ckpt_every == 0:
            save_fn(it + 1, optimizer)
        last = logs
    _report_skipped(ctx, cur_epoch, skipped)
    return last


def _report_skipped(ctx, epoch, skipped: int) -> None:
    if epoch is not None and skipped:
        ctx.log.warning("epoch %d: %d unreadable training samples were replaced (data.skip_corrupt=true); "
                        "their files are named in the warnings above", epoch, skipped)


@torch.no_grad()
def predict(model, dataset, device, class_range: dict, batch_size: int = 1, head: str = "bev") -> dict:
    """Decoded predictions of every sample of ``dataset`` as nuScenes results (sample token -> list).

    ``head``: ``bev`` (the detector) or ``perspective`` (the DD3D head alone, paper Tab. 2 'Perspective only')."""
    if head not in ("bev", "perspective"):
        raise ValueError(f"unknown eval head {head!r}; use 'bev' or 'perspective'")
    model.eval()
    results = {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        batch = to_device(batch, device)
        preds = model(batch) if head == "bev" else model.predict_perspective(batch)
        for i, (boxes, scores, labels) in zip(batch["index"], preds):
            info = dataset.infos[i]
            results[info["token"]] = boxes_to_results(info, boxes.double().cpu().numpy(), scores.cpu().numpy(),
                                                      labels.cpu().numpy(), class_range)[:500]
    return results


def evaluate(model, dataset, nusc, eval_set: str, out_dir, device, head: str = "bev") -> dict:
    """devkit metrics (NDS, mAP, mATE, mASE, mAOE, mAVE, mAAE, per-class AP) on ``dataset``."""
    from nuscenes.eval.common.config import config_factory

    rng = config_factory("detection_cvpr_2019").class_range
    results = predict(model, dataset, device, rng, head=head)
    return evaluate_results(nusc, results, eval_set, out_dir)


@torch.no_grad()
def matched_errors(model, dataset, device) -> dict:
    """Diagnostics of the BEV head on ``dataset`` that stay informative when detection AP is still ~0:
    Hungarian-match the last decoder layer's queries (group 0) to the GT (official costs) and report the
    mean centre distance (m, xy) and velocity error (m/s) of the matched pairs, and the matched class
    probability."""
    model.eval()
    dist, vel, prob, n = 0.0, 0.0, 0.0, 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate)
    core = model.module if hasattr(model, "module") else model
    Qg = core.pts_bbox_head.num_query + (core.pts_bbox_head.num_proposals if core.two_stage else 0)
    for batch in loader:
        batch = to_device(batch, device)
        all_cls, all_reg = core.forward_raw(batch)[:2]
        cls, reg = all_cls[-1, 0, :Qg], all_reg[-1, 0, :Qg]
        gt, lab = batch["gt_boxes"][0], batch["gt_labels"][0]
        if len(gt) == 0:
            continue
        qi, gi = hungarian_match(cls, reg, normalize_bbox(gt), lab)
        dist += float((reg[qi, :2] - gt[gi, :2]).norm(dim=-1).sum())
        vel += float((reg[qi, 8:10] - gt[gi, 7:9]).norm(dim=-1).sum())
        prob += float(cls[qi, lab[gi]].sigmoid().sum())
        n += len(qi)
    n = max(n, 1)
    return {"matched_center_err": dist / n, "matched_vel_err": vel / n, "matched_cls_prob": prob / n}
