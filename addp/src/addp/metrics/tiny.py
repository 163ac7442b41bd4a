"""Tiny-data measurements (spec §8): a feature network for tiny-FID, a linear probe, label entropy.

These prove that the pipeline works and that the mechanism has the expected effect on the embedded
digits; they are never the paper's numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["DigitFeatureNet", "linear_probe_accuracy", "label_entropy"]


class DigitFeatureNet(nn.Module):
    """A small CNN classifier of the 32x32 digits whose penultimate activations (B, 64) are the
    "Inception features" of tiny-FID. Input (B, 3, 32, 32) in [0, 1]; output logits (B, 10)."""

    def __init__(self, num_classes: int = 10, width: int = 32, feat_dim: int = 64):
        super().__init__()
        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(3, width), nn.MaxPool2d(2), *conv(width, 2 * width), nn.MaxPool2d(2),
            *conv(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, feat_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.clamp(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                          seed: int = 0) -> float:
    """Top-1 (%) on ``val`` of a multinomial logistic regression (sklearn, standardised features, L2 C=1)
    fitted on ``train``; features (N, D), labels (N,)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(train_x.double().cpu().numpy(), train_y.cpu().numpy())
    return 100.0 * float(np.mean(clf.predict(val_x.double().cpu().numpy()) == val_y.cpu().numpy()))


def label_entropy(logits: torch.Tensor) -> float:
    """Entropy (nats) of the histogram of predicted labels (class coverage; ln(10) = 2.303 is uniform)."""
    counts = torch.bincount(logits.argmax(-1), minlength=logits.shape[-1]).double()
    p = counts / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum()) if counts.sum() else math.nan
