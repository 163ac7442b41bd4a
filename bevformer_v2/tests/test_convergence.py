"""Slow: a short training run on the synthetic set must beat the untrained model on held-out matched errors."""
import pytest
import torch

from bevformer_v2.data.dataset import BEVDataset
from bevformer_v2.engine import build_optimizer, infinite_loader, matched_errors, to_device
from bevformer_v2.losses import detector_losses, total_loss

CROP = (0, 8, 128, 72)


@pytest.mark.slow
def test_training_beats_untrained_on_val(infos, make_tiny):
    torch.manual_seed(0)
    train = BEVDataset(infos["train"], crop=CROP, test_height=64)
    val = BEVDataset(infos["val"], crop=CROP, test_height=64)
    model = make_tiny(grid_mask=False)
    before = matched_errors(model, val, "cpu")
    opt = build_optimizer(model, 1e-3, 0.01, 0.5)
    batches = infinite_loader(train, 1, 0, 0)
    model.train()
    for _ in range(300):
        batch = to_device(next(batches), "cpu")
        loss = total_loss(detector_losses(model(batch), batch, 1, True))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
    after = matched_errors(model, val, "cpu")
    assert after["matched_center_err"] < 0.8 * before["matched_center_err"], (before, after)
    assert after["matched_cls_prob"] > before["matched_cls_prob"], (before, after)
