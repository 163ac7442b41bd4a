"""Dense UniGrad loss: hand-sized values, the gradient formula, the literal M x M form, fp32, 2-process F."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro_shared.ssl.dense_unigrad import dense_unigrad_loss, dense_unigrad_terms, target_correlation

HERE = Path(__file__).parent


def literal_mxm(pred, target, lam):
    """The official formula, written out with the full M x M matrix (float64)."""
    p, t = pred.reshape(-1, pred.shape[-1]).double(), target.reshape(-1, target.shape[-1]).double()
    pos = ((p - t) ** 2).sum(-1).mean()
    corr = t.T @ t / t.shape[0]
    neg = torch.diagonal(p @ corr @ p.T).mean()
    return (pos + lam * neg) / p.shape[-1]


def test_hand_sized_case():
    """M = 2, D = 2, every term computed by hand: pos = ((1 + 4) + (0 + 1)) / 2 = 3."""
    pred = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    terms = dense_unigrad_terms(pred, target, 0.5)
    # F = (t1 t1^T + t2 t2^T) / 2 = [[0, 0], [0, 4]] / 2 = [[0, 0], [0, 2]]
    torch.testing.assert_close(terms.correlation, torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
    assert terms.pos.item() == pytest.approx(3.0)
    # p1^T F p1 = 2 * 4 = 8; p2^T F p2 = 2 * 1 = 2 -> mean 5
    assert terms.neg.item() == pytest.approx(5.0)
    assert terms.loss.item() == pytest.approx((3.0 + 0.5 * 5.0) / 2)


def test_gradient_formula():
    torch.manual_seed(0)
    pred = torch.randn(3, 5, 8, requires_grad=True)
    target = torch.randn(3, 5, 8, requires_grad=True)
    lam = 0.02
    terms = dense_unigrad_terms(pred, target, lam)
    terms.loss.backward()
    M, D = 15, 8
    p, t = pred.detach().reshape(M, D), target.detach().reshape(M, D)
    expect = 2.0 / (M * D) * ((p - t) + lam * p @ terms.correlation)
    torch.testing.assert_close(pred.grad.reshape(M, D), expect, atol=1e-7, rtol=1e-5)
    assert target.grad is None  # no gradient into the targets


@pytest.mark.parametrize("lam", [0.0, 0.02, 1.0])
@pytest.mark.parametrize("dim", [16, 32, 768])
def test_equals_literal_mxm(lam, dim):
    torch.manual_seed(dim)
    pred, target = torch.randn(4, 49, dim), torch.nn.functional.layer_norm(torch.randn(4, 49, dim), (dim,))
    torch.testing.assert_close(dense_unigrad_loss(pred, target, lam).double(), literal_mxm(pred, target, lam),
                               rtol=1e-5, atol=0)


def test_float32_under_autocast_and_errors():
    pred = torch.randn(2, 4, 8).bfloat16()
    target = torch.randn(2, 4, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dense_unigrad_loss(pred, target)
    assert loss.dtype == torch.float32
    assert target_correlation(target).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        dense_unigrad_loss(pred, target[:, :3])
    with pytest.raises(ValueError, match="at least one row"):
        dense_unigrad_loss(torch.zeros(0, 8), torch.zeros(0, 8))


def test_meta_device():
    p = torch.randn(2, 3, 8, device="meta")
    assert dense_unigrad_loss(p, p).device.type == "meta"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.dist
def test_two_processes_use_the_global_correlation(tmp_path):
    """Two gloo ranks holding halves of a batch: F equals the full batch's T^T T / M on both ranks, and each
    rank's loss is its half of the batch with that global F."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(HERE / "unigrad_dist_worker.py"), str(tmp_path / "out")],
                                      env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    g = torch.Generator().manual_seed(0)
    pred_all, target_all = torch.randn(2, 6, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    full_corr = target_all.reshape(-1, 16).T @ target_all.reshape(-1, 16) / 12
    for rank in range(2):
        out = torch.load(tmp_path / f"out.{rank}.pt")
        torch.testing.assert_close(out["corr"], full_corr, atol=1e-6, rtol=1e-6)
        p, t = pred_all[rank], target_all[rank]
        want = (((p - t) ** 2).sum(-1).mean() + 0.5 * ((p @ full_corr) * p).sum(-1).mean()) / 16
        torch.testing.assert_close(out["loss"], want, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(out["corr"], target_correlation(t))  # the local F alone would differ


def test_gradcheck_float64_and_blocks(monkeypatch):
    """The analytic backward against finite differences (float64), and block-wise accumulation over several row
    blocks equal to one block."""
    import repro_shared.ssl.dense_unigrad as du

    torch.manual_seed(0)
    p = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 6, dtype=torch.float64)
    corr = t.T @ t / 7
    assert torch.autograd.gradcheck(lambda x: du._DenseUniGrad.apply(x, t, corr), (p,))
    pred, target = torch.randn(50, 16, requires_grad=True), torch.randn(50, 16)
    whole = dense_unigrad_loss(pred, target, 0.3)
    (g_whole,) = torch.autograd.grad(whole, pred)
    monkeypatch.setattr(du, "_CHUNK_ROWS", 7)
    blocks = dense_unigrad_loss(pred, target, 0.3)
    (g_blocks,) = torch.autograd.grad(blocks, pred)
    torch.testing.assert_close(blocks, whole, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_blocks, g_whole, rtol=1e-6, atol=1e-9)


def test_gradient_in_the_dtype_of_pred():
    pred = torch.randn(2, 3, 8, dtype=torch.bfloat16, requires_grad=True)
    dense_unigrad_loss(pred, torch.randn(2, 3, 8)).backward()
    assert pred.grad.dtype == torch.bfloat16
