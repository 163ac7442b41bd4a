"""Slow: a short training run on the synthetic set must beat the untrained model on held-out matched errors."""
import pytest
import torch

from bevformer_v2.data.dataset import BEVDataset, collate
from bevformer_v2.engine import build_optimizer, matched_errors, micro_batches, to_device
from bevformer_v2.losses import detector_losses, total_loss
from repro_shared.data import build_loader

CROP = (0, 8, 128, 72)


@pytest.mark.slow
def test_training_beats_untrained_on_val(infos, make_tiny):
    torch.manual_seed(0)
    train = BEVDataset(infos["train"], crop=CROP, test_height=64)
    val = BEVDataset(infos["val"], crop=CROP, test_height=64)
    model = make_tiny(grid_mask=False)
    before = matched_errors(model, val, "cpu")
    opt = build_optimizer(model, 1e-3, 0.01, 0.5)
    batches = micro_batches(build_loader(train, batch_size=1, seed=0, collate_fn=collate), 0)
    model.train()
    for _ in range(300):
        batch = to_device(next(batches)[2], "cpu")
        loss = total_loss(detector_losses(model(batch), batch, 1, True))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
    after = matched_errors(model, val, "cpu")
    assert after["matched_center_err"] < 0.8 * before["matched_center_err"], (before, after)
    assert after["matched_cls_prob"] > before["matched_cls_prob"], (before, after)
