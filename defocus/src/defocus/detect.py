"""``defocus-detect``: train and COCO-evaluate the De-focus Mamba detector (our torchvision adaptation)."""

from __future__ import annotations

from itertools import cycle, islice
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from repro_shared import checkpoint, run, toydata

from .data.coco import CocoBoxes, coco_bbox_eval, collate
from .models.convert import convert_official_state_dict
from .models.defocus_mamba import VARIANTS
from .models.detection import build_detector, load_classification_weights
from .models.mixer import MixerConfig


def build_detection_data(cfg: DictConfig, out_dir: Path):
    d = cfg.data
    if d.name == "shapes":
        root = Path(d.root) if d.root else out_dir / "shapes"
        tr = toydata.make_shapes_dataset(root, "train", d.num_train, d.image_size, seed=cfg.seed)
        va = toydata.make_shapes_dataset(root, "val", d.num_val, d.image_size, seed=cfg.seed)
        return CocoBoxes(tr.image_dir, tr.ann_file, 0.5), CocoBoxes(va.image_dir, va.ann_file)
    if d.name == "coco":
        root = Path(d.root or "")
        return (CocoBoxes(root / "train2017", root / "annotations" / "instances_train2017.json", 0.5),
                CocoBoxes(root / "val2017", root / "annotations" / "instances_val2017.json"))
    raise ValueError(f"unknown data.name {d.name!r}; use 'shapes' or 'coco'")


def build_from_cfg(cfg: DictConfig, num_classes: int):
    m = cfg.model
    if m.name not in VARIANTS:
        raise ValueError(f"unknown model variant {m.name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    spec = VARIANTS[m.name]
    mixer = MixerConfig(**{**spec["mixer"], **OmegaConf.to_container(m.mixer, resolve=True)})
    return build_detector(mixer, spec["depth"], num_classes + 1, detector=m.detector,
                          patch_size=m.patch_size, pretrain_size=m.pretrain_size,
                          drop_path_rate=m.drop_path_rate, min_size=m.min_size, max_size=m.max_size,
                          **OmegaConf.to_container(m.get("detector_kwargs") or {}, resolve=True))


def run_detect(cfg: DictConfig) -> dict:
    ctx = run.setup_run(cfg, name="defocus")
    train_set, val_set = build_detection_data(cfg, ctx.out_dir)
    model = build_from_cfg(cfg, len(train_set.cat_ids)).to(ctx.device)
    t = cfg.train
    if t.init:
        sd = convert_official_state_dict(torch.load(t.init, map_location="cpu", weights_only=False))
        ctx.log.info("backbone init from %s: %s", t.init, load_classification_weights(model.backbone.body, sd))
    body = [p for n, p in model.named_parameters() if n.startswith("backbone.body.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.body.")]
    opt = torch.optim.AdamW([{"params": body, "lr": t.lr * t.backbone_lr_mult}, {"params": rest}],
                            lr=t.lr, weight_decay=t.weight_decay)
    loader = DataLoader(train_set, batch_size=cfg.data.batch_size, shuffle=True, collate_fn=collate,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    model.train()
    for step, (images, targets) in enumerate(islice(cycle(loader), t.steps)):
        losses = model([im.to(ctx.device) for im in images],
                       [{k: (v.to(ctx.device) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        if step % 25 == 0 or step == t.steps - 1:
            ctx.metrics.log({"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}, step=step)
            ctx.log.info("step %d | loss %.4f", step, loss.item())
    val_loader = DataLoader(val_set, batch_size=cfg.data.batch_size, collate_fn=collate)
    res = coco_bbox_eval(model, val_loader, val_set, ctx.device)
    res["final_loss"] = loss.item()
    checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, t.steps), model=model,
                               optimizer=opt, step=t.steps, config=cfg)
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("bbox AP %.2f AP50 %.2f AP75 %.2f", res["bbox_AP"], res["bbox_AP50"], res["bbox_AP75"])
    ctx.metrics.close()
    return res


detect = hydra.main(version_base=None, config_path="configs", config_name="detect")(run_detect)
