"""Frozen-feature evaluations of a pre-trained encoder: logistic-regression probes and the geometry gap.

- :func:`extract_features`: mean of the patch tokens (linear-probe protocol) or the CLS token (few-shot
  protocol) of the last block, no final norm.
- :func:`logistic_probe`: scikit-learn multinomial logistic regression. ``protocol="linear"`` standardises the
  features (the role of MAE's BN head); ``protocol="fewshot"`` centres them on each set's own mean and
  L2-normalises every row, then fits with L2 penalty and no intercept, ``C = 1 / lambda`` (cyanure's
  ``lambd = lambda / n``; SiameseIM: lambda 0.1 for ViT-B, 0.01 for ViT-L). cyanure itself is used when
  installed (``pip install cyanure-openblas``).
- :func:`geometry_gap`: the pre-training loss on held-out pairs with the true relative geometry and with the
  geometry shuffled across the batch (spec section 8, check 1).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .losses import siameseim_loss
from .models.siameseim import SiameseIM

__all__ = ["extract_features", "logistic_probe", "geometry_gap"]


@torch.no_grad()
def extract_features(encode, dataset: Dataset, device: torch.device, *, pool: str = "mean",
                     batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features of every sample of a labelled dataset.

    Args:
        encode: ``images (B, 3, H, W) -> tokens (B, 1 + N, C)`` (e.g. ``SiameseIM.forward_encoder``).
        pool: ``"mean"`` (patch tokens) or ``"cls"``.

    Returns:
        ``features`` float64 ``(n, C)``, ``labels`` int64 ``(n,)``.
    """
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        t = encode(x.to(device)).float()
        feats.append((t[:, 1:].mean(1) if pool == "mean" else t[:, 0]).cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats).double().numpy(), torch.cat(labels).numpy()


def _center_normalize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def logistic_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                   protocol: str = "linear", lambd: float = 0.1, C: float = 1.0, max_iter: int = 1000) -> float:
    """Top-1 accuracy (percent) of a logistic regression fitted on ``train`` features, scored on ``test``.

    Args:
        protocol: ``"linear"`` (standardised features, ``C``, intercept) or ``"fewshot"`` (centre + L2-normalise
            each set, no intercept, ``C = 1 / lambd``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xte, yte) = train, test
    if protocol == "linear":
        scaler = StandardScaler().fit(xtr)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(xtr), ytr)
        return 100.0 * float(clf.score(scaler.transform(xte), yte))
    if protocol != "fewshot":
        raise ValueError(f"protocol must be 'linear' or 'fewshot', got {protocol!r}")
    xtr, xte = _center_normalize(xtr), _center_normalize(xte)
    try:
        import cyanure as cyan

        clf = cyan.MultiClassifier(loss="multiclass-logistic", penalty="l2", fit_intercept=False)
        lam = lambd / len(xtr)  # the official main_logistic.py call
        clf.fit(xtr, ytr, it0=10, lambd=lam, lambd2=lam, nthreads=-1, tol=1e-3, solver="auto", seed=0, max_epochs=300)
        return 100.0 * float(clf.score(xte, yte))
    except ImportError:
        clf = LogisticRegression(C=1.0 / lambd, fit_intercept=False, max_iter=max_iter).fit(xtr, ytr)
        return 100.0 * float(clf.score(xte, yte))


@torch.no_grad()
def geometry_gap(model: SiameseIM, pairs: Iterable, device: torch.device, neg_weight: float) -> dict[str, float]:
    """Mean pre-training loss on held-out pairs with the true geometry and with the geometry rolled by one
    sample in each batch (each query then encodes another pair's crop geometry).

    Runs in ``eval()`` mode (BN running statistics, no EMA update); restores the mode afterwards.

    Args:
        pairs: batches ``(x1, x2, geometry, mask)``.

    Returns:
        ``{"loss_true", "loss_shuffled", "geometry_gap": loss_shuffled - loss_true}``.
    """
    was = model.training
    model.eval()
    true, shuffled, n = 0.0, 0.0, 0
    for x1, x2, geometry, mask in pairs:
        x1, x2, geometry, mask = (t.to(device) for t in (x1, x2, geometry, mask))
        true += float(siameseim_loss(model(x1, x2, geometry, mask), neg_weight)["loss"]) * len(x1)
        shuffled += float(siameseim_loss(model(x1, x2, geometry.roll(1, 0), mask), neg_weight)["loss"]) * len(x1)
        n += len(x1)
    model.train(was)
    return {"loss_true": true / n, "loss_shuffled": shuffled / n, "geometry_gap": (shuffled - true) / n}
