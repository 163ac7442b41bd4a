"""Frozen-feature probes of a pre-trained M3I backbone on the embedded shapes (spec m3i.md section 8, "Metrics").

Features come from the online backbone on the un-augmented 32 px images of ``probe_train`` (fit) and
``probe_test`` (score), 1000 each:

- **class**: a linear probe (multinomial logistic regression, standardised features) on the mean and the max of
  the dense tokens (concatenated: the mean alone dilutes a small object in its background), top-1 on the 10
  classes;
- **attribute**: the same probe for the three attributes the labels do not encode (size bucket, position
  quadrant, background texture), top-1 of each and their mean;
- **dense**: a per-token logistic regression predicting foreground (the token's 4x4 pixel cell is more than
  half shape) from the token alone; mIoU over {background, foreground} on the test tokens (the spec's probe);
- **seg**: the same per-token probe for 6 classes (background or the kind of the shape covering the cell), mIoU
  over the 6 classes: a harder dense probe, since foreground alone is nearly linearly separable from a cell's
  colours;
- **retrieval** (text-trained models only): image -> caption R@1 over the 1000 test captions, with the image's
  pooled global feature and the text tower; a hit is a retrieved caption with the same text (the templates
  repeat, so several images share a caption);
- ``probe_mean``: the mean of class, attribute and dense (the complementarity measure of the spec).

scikit-learn's ``LogisticRegression`` (lbfgs, C = 1, max 1000 iterations) is deterministic, so two identical
models give identical numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .data.shapes import shapes_split
from .data.views import eval_transform

__all__ = ["extract", "linear_probe", "miou", "evaluate_probes"]


def _split(split: str, size: int, limit: int | None):
    data = shapes_split(split, size)
    return data.subset(0, min(int(limit), len(data))) if limit else data


@torch.no_grad()
def extract(model, split: str, device: torch.device, *, size: int = 32, batch: int = 250,
            tokenizer=None, limit: int | None = None) -> dict[str, np.ndarray]:
    """Dense tokens ``(n, N, D)``, their mean and max ``(n, 2D)``, the global feature ``(n, Dg)`` and (with a text
    tower and ``tokenizer``) caption embeddings ``(n, Dg)`` of one shapes split (its first ``limit`` images), float32
    numpy."""
    data = _split(split, size, limit)
    tf = eval_transform()
    bb = model.backbone
    out: dict[str, list] = {"tokens": [], "global": [], "text": []}
    for s in range(0, len(data), batch):
        x = torch.stack([tf(img) for img in data.images[s:s + batch]]).to(device)
        tokens = bb.forward_dense(x)
        out["tokens"].append(tokens.float().cpu())
        if hasattr(bb, "forward_global") and (model.head is not None or model.text is not None):
            out["global"].append(bb.forward_global(tokens).float().cpu())
        if model.text is not None and tokenizer is not None:
            caps = torch.stack([tokenizer(c) for c in data.captions[s:s + batch]]).to(device)
            out["text"].append(model.text(caps).float().cpu())
    res = {k: torch.cat(v).numpy() for k, v in out.items() if v}
    res["pooled"] = np.concatenate([res["tokens"].mean(1), res["tokens"].max(1)], axis=1)
    return res


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray) -> tuple[float, np.ndarray]:
    """Logistic regression on standardised features; returns ``(top-1 in %, test predictions)``."""
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(train_x), train_y)
    pred = clf.predict(scaler.transform(test_x))
    return float((pred == test_y).mean() * 100.0), pred


def miou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean IoU in % over the classes ``0..num_classes-1`` that occur in ``target`` or ``pred`` (int arrays)."""
    pred, target = pred.astype(np.int64).ravel(), target.astype(np.int64).ravel()
    ious = []
    for cls in range(num_classes):
        union = np.sum((pred == cls) | (target == cls))
        if union:
            ious.append(np.sum((pred == cls) & (target == cls)) / union)
    return float(np.mean(ious) * 100.0)


def _token_labels(masks: np.ndarray, grid: int) -> np.ndarray:
    """Foreground label of each token: more than half of its cell is shape. ``(n, S, S)`` -> ``(n, grid*grid)``."""
    n, s, _ = masks.shape
    cell = s // grid
    frac = masks.reshape(n, grid, cell, grid, cell).mean(axis=(2, 4))
    return (frac > 0.5).reshape(n, -1)


def _token_kinds(masks: np.ndarray, kind: np.ndarray, grid: int) -> np.ndarray:
    """0 for background tokens, ``1 + kind`` for foreground ones -> int64 ``(n, grid*grid)``."""
    return _token_labels(masks, grid).astype(np.int64) * (1 + kind[:, None])


def evaluate_probes(model, device: torch.device, *, size: int = 32, tokenizer=None,
                    limit: int | None = None) -> dict[str, float]:
    """All probes of the module docstring on ``model`` (an :class:`m3i.models.m3i.M3IModel`), on the first ``limit``
    images of each probe split (default all 1000); the model's train/eval mode is restored afterwards."""
    was = model.training
    model.eval()
    tr = extract(model, "probe_train", device, size=size, tokenizer=tokenizer, limit=limit)
    te = extract(model, "probe_test", device, size=size, tokenizer=tokenizer, limit=limit)
    dtr, dte = _split("probe_train", size, limit), _split("probe_test", size, limit)
    res = {"probe_class_top1": linear_probe(tr["pooled"], dtr.labels, te["pooled"], dte.labels)[0]}
    attrs = {name: linear_probe(tr["pooled"], getattr(dtr, name), te["pooled"], getattr(dte, name))[0]
             for name in ("size", "quadrant", "background")}
    res.update({f"probe_attr_{k}_top1": v for k, v in attrs.items()})
    res["probe_attr_top1"] = float(np.mean(list(attrs.values())))
    grid = int(round(np.sqrt(tr["tokens"].shape[1])))
    ytr, yte = _token_labels(dtr.masks, grid), _token_labels(dte.masks, grid)
    d = tr["tokens"].shape[-1]
    _, pred = linear_probe(tr["tokens"].reshape(-1, d), ytr.ravel(), te["tokens"].reshape(-1, d), yte.ravel())
    res["probe_dense_miou"] = miou(pred, yte.ravel(), 2)
    ktr, kte = _token_kinds(dtr.masks, dtr.kind, grid), _token_kinds(dte.masks, dte.kind, grid)
    _, pred = linear_probe(tr["tokens"].reshape(-1, d), ktr.ravel(), te["tokens"].reshape(-1, d), kte.ravel())
    res["probe_seg_miou"] = miou(pred, kte.ravel(), 6)
    res["probe_mean"] = float(np.mean([res["probe_class_top1"], res["probe_attr_top1"], res["probe_dense_miou"]]))
    if "text" in te and "global" in te:
        img = te["global"] / np.linalg.norm(te["global"], axis=1, keepdims=True)
        txt = te["text"] / np.linalg.norm(te["text"], axis=1, keepdims=True)
        best = (img @ txt.T).argmax(1)
        caps = np.asarray(dte.captions)
        res["retrieval_r1"] = float((caps[best] == caps).mean() * 100.0)
    model.train(was)
    return res
