"""Representation metrics: weighted kNN (official monitor), a logistic-regression probe, effective rank.

All work on features extracted once with :func:`extract_features` (frozen network, eval mode). Under a
process group each rank extracts its shard and the features are all-gathered, so every rank holds the
whole bank (as the official ``knn_eval``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .losses.common import gather

__all__ = ["extract_features", "knn_predict", "knn_top1", "linear_probe_top1", "effective_rank", "embedding_std"]


@torch.no_grad()
def extract_features(module: nn.Module, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (M, D) float32, labels (M,) int64)`` of ``module`` (eval mode) over ``loader``'s ``(x, y)`` batches,
    gathered over ranks (each rank's shard must have the same size). ``module``'s train/eval mode is restored."""
    was_training = module.training
    module.eval()
    feats, labels = [], []
    for x, y in loader:
        feats.append(module(x.to(device, non_blocking=True)).float())
        labels.append(y.to(device))
    module.train(was_training)
    return gather(torch.cat(feats)), gather(torch.cat(labels))


def knn_predict(feature: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
                t: float) -> torch.Tensor:
    """Official weighted kNN: classes ranked by ``sum over the k most similar bank items of exp(sim / t)``.

    Args:
        feature: (B, D) l2-normalised queries. bank: (D, M) l2-normalised bank (transposed, as the official code).
        bank_labels: (M,). k: neighbours (200 on ImageNet). t: temperature (0.1).

    Returns:
        (B, num_classes) class indices, best first.
    """
    sim = feature @ bank
    sim_weight, sim_idx = sim.topk(k=min(k, bank.shape[1]), dim=-1)
    sim_labels = torch.gather(bank_labels.expand(feature.shape[0], -1), -1, sim_idx)
    weight = (sim_weight / t).exp()
    one_hot = F.one_hot(sim_labels, num_classes).to(weight.dtype)  # (B, k, classes)
    scores = (one_hot * weight.unsqueeze(-1)).sum(1)
    return scores.argsort(dim=-1, descending=True)


def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, *, k: int = 200, t: float = 0.1, chunk: int = 1024) -> float:
    """Top-1 accuracy (%) of :func:`knn_predict` with the train features as the bank (features l2-normalised here)."""
    bank = F.normalize(train_feats, dim=1).T.contiguous()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    q = F.normalize(test_feats, dim=1)
    correct = 0
    for s in range(0, q.shape[0], chunk):
        pred = knn_predict(q[s:s + chunk], bank, train_labels, classes, k, t)
        correct += int((pred[:, 0] == test_labels[s:s + chunk]).sum())
    return 100.0 * correct / max(q.shape[0], 1)


def linear_probe_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                      test_labels: torch.Tensor, *, c: float = 1.0, max_iter: int = 2000) -> float:
    """Top-1 accuracy (%) of an l2-regularised multinomial logistic regression (scikit-learn, lbfgs) on
    standardised frozen features: the quick probe of the tiny runs (the paper protocol is ``unigrad-lineval``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = train_feats.cpu().double().numpy(), test_feats.cpu().double().numpy()
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(x_tr), train_labels.cpu().numpy())
    return 100.0 * float(np.mean(clf.predict(scaler.transform(x_te)) == test_labels.cpu().numpy()))


def effective_rank(embeddings: torch.Tensor) -> float:
    """``exp(H(p))``, ``p = sigma / sum(sigma)`` over the singular values of the (M, C) embedding matrix (Roy &
    Vetterli 2007; RankMe). 1 for a collapsed representation (all rows equal), up to min(M, C).
    The rows are used as given (not centred): a collapse to one direction gives rank 1."""
    s = torch.linalg.svdvals(embeddings.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(-(p * p.log()).sum()))


def embedding_std(embeddings: torch.Tensor) -> float:
    """Mean per-dimension std of the l2-normalised embeddings times sqrt(C): ~1 for well spread unit vectors,
    0 at collapse (the SimSiam collapse monitor)."""
    u = F.normalize(embeddings.double(), dim=1)
    return float(u.std(0).mean() * math.sqrt(u.shape[1]))
