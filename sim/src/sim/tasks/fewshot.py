"""``sim-fewshot``: the released 1 % protocol (MSN's ``main_logistic``): logistic regression on the frozen CLS
token of the last block (no norm) of a few labelled images per class, scored on the validation set."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torchvision import transforms as T

from repro_shared import run
from repro_shared.data import ImageFolder

from ..data import LabelledDigits, read_subset_file
from ..models import build_classifier
from ..probe import extract_features, logistic_probe
from .common import load_init

__all__ = ["run_fewshot"]


def run_fewshot(cfg: DictConfig) -> dict:
    """Features -> centre + L2-normalise -> multinomial logistic regression (L2, no intercept, ``C = 1 / lambda``;
    cyanure when installed) -> ``metrics.json`` ``{"top1", "num_train"}``."""
    init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="sim")
    d, f = cfg.data, cfg.fewshot
    size = int(d.input_size)
    model = build_classifier(cfg.model.variant, 0, img_size=size, drop_path_rate=0.0)
    load_init(model, init_path, cfg, ctx.log)
    model = model.to(ctx.device).eval()
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if d.name == "digits":
        tf = T.Compose([T.ToTensor(), norm])
        train = LabelledDigits("train", size, tf, fraction=float(f.fraction))
        val = LabelledDigits("val", size, tf)
    elif d.name == "imagenet":
        tf = T.Compose([T.Resize(int(f.resize)), T.CenterCrop(size), T.ToTensor(), norm])  # bilinear, as official
        root = run.data_root(d, "train/<wnid>/<image> and val/<wnid>/<image>")
        train = read_subset_file(ImageFolder(root / "train", tf, key="data.root"), f.subset_file)
        val = ImageFolder(root / "val", tf, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: digits, imagenet")
    with torch.no_grad():
        tr = extract_features(model.forward_features, train, ctx.device, pool="cls", batch_size=int(f.batch_size))
        te = extract_features(model.forward_features, val, ctx.device, pool="cls", batch_size=int(f.batch_size))
    top1 = logistic_probe(tr, te, protocol="fewshot", lambd=float(f.lambd))
    res = {"top1": top1, "num_train": len(tr[1])}
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("few-shot top1 %.2f with %d training images (lambda %g)", top1, len(tr[1]), float(f.lambd))
    ctx.metrics.close()
    return res
