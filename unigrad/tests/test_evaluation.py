"""kNN (official weighting), effective rank, embedding spread, logistic probe."""

import math

import torch
import torch.nn.functional as F

from unigrad.evaluation import effective_rank, embedding_std, knn_predict, knn_top1, linear_probe_top1


def test_knn_predict_weights_neighbours_by_exp_sim_over_t():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    q = F.normalize(torch.tensor([[0.6, 0.8]]), dim=1)
    # k = 3: the two class-1 items and the closer class-0 item vote with exp(cos / t)
    sims = q @ bank.T
    top = sims[0].topk(3)
    score = torch.zeros(2)
    for s, i in zip(top.values, top.indices):
        score[labels[i]] += math.exp(float(s) / 0.1)
    pred = knn_predict(q, bank.T, labels, 2, k=3, t=0.1)
    assert pred[0].tolist() == score.argsort(descending=True).tolist()
    assert knn_top1(bank, labels, bank, labels, k=1) == 100.0


def test_effective_rank_and_spread_of_collapsed_and_spread_embeddings():
    collapsed = torch.ones(50, 8) * torch.randn(1, 8)
    assert abs(effective_rank(collapsed) - 1.0) < 1e-6
    assert embedding_std(collapsed) < 1e-6
    assert abs(effective_rank(torch.eye(6)) - 6.0) < 1e-9
    spread = F.normalize(torch.randn(4000, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert 14.0 < effective_rank(spread) <= 16.0
    assert 0.95 < embedding_std(spread) < 1.05


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = F.one_hot(y, 4).float() * 3 + 0.3 * torch.randn(200, 4, generator=g)
    assert linear_probe_top1(x[:150], y[:150], x[150:], y[150:]) == 100.0
