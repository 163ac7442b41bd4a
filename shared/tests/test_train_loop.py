"""repro_shared.train (autocast, epoch sums, step checkpoints) and repro_shared.finetune.train_classifier_epoch:
an epoch interrupted at a mid-epoch checkpoint and resumed from it ends with the weights, optimizer state and
epoch means of the uninterrupted epoch, with Mixup, drop-out randomness and an EMA in play."""

import pytest
import torch
from timm.utils import ModelEmaV2
from torch import nn
from torch.utils.data import TensorDataset

from repro_shared.data import build_loader
from repro_shared.finetune import build_mixup, classification_criterion, eval_loader, train_classifier_epoch
from repro_shared.guards import NonFiniteError
from repro_shared.train import StepCheckpointer, accumulate, autocast, epoch_means, new_epoch_stats


def test_autocast_contexts():
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'; use one of fp32, bf16, fp16"):
        autocast(torch.device("cpu"), "fp8")


def test_epoch_sums_by_hand():
    s = new_epoch_stats()
    accumulate(s, {"loss": 1.0, "acc": 0.5})
    accumulate(s, {"loss": 3.0, "acc": 1.5})
    s["skipped"] = 2
    assert epoch_means(s) == {"loss": 2.0, "acc": 1.0, "skipped": 2}
    assert epoch_means(new_epoch_stats()) == {"skipped": 0}


def _setup(tmp_path, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    g = torch.Generator().manual_seed(1)
    ds = TensorDataset(torch.randn(40, 3, 4, 4, generator=g), torch.randint(0, 4, (40,), generator=g))
    loader = build_loader(ds, batch_size=8, seed=3)
    ema = ModelEmaV2(model, decay=0.9)
    ckpt = StepCheckpointer(tmp_path / name, model=model, optimizer=opt, scaler=scaler, iters=len(loader), every=2,
                            keep_last=5, config={"x": 1}, extra=lambda: {"ema": ema.module.state_dict()})
    return model, opt, scaler, loader, ema, ckpt


def _epoch(model, opt, scaler, loader, ema, ckpt, *, start_batch=0, stats=None, stop_after=None):
    mixup = build_mixup(4, mixup=0.8, cutmix=1.0, label_smoothing=0.1)

    def after(steps_done, st):
        ckpt.after_step(steps_done, st)
        if stop_after is not None and steps_done == stop_after:
            raise KeyboardInterrupt  # the "kill"

    loader.set_epoch(1, start_batch)
    return train_classifier_epoch(model, loader, opt, scaler, classification_criterion(mixup, 0.1),
                                  lambda k: 1e-2 * (1 + k) / 10, epoch=1, device=torch.device("cpu"), seed=7,
                                  mixup=mixup, clip_grad=1.0, ema=ema, stats=stats, after_step=after)


def test_classifier_epoch_resumed_mid_epoch_is_exact(tmp_path):
    model, opt, scaler, loader, ema, ckpt = _setup(tmp_path, "full")
    full = _epoch(model, opt, scaler, loader, ema, ckpt)
    assert len(loader) == 5 and sorted(p.name for p in (tmp_path / "full").glob("ckpt_*.pt")) == [
        "ckpt_000000006.pt", "ckpt_000000008.pt"]  # steps 6 and 8 of epoch 1 (5..9); not the epoch end 10

    model2, opt2, scaler2, loader2, ema2, ckpt2 = _setup(tmp_path, "killed")
    with pytest.raises(KeyboardInterrupt):
        _epoch(model2, opt2, scaler2, loader2, ema2, ckpt2, stop_after=7)
    model3, opt3, scaler3, loader3, ema3, ckpt3 = _setup(tmp_path, "killed")  # a fresh process
    state = ckpt3.resume("auto")
    assert state["step"] == 6 and state["extra"]["epoch_stats"]["steps"] == 1
    ema3.module.load_state_dict(state["extra"]["ema"])
    resumed = _epoch(model3, opt3, scaler3, loader3, ema3, ckpt3, start_batch=6 - 5,
                     stats=state["extra"]["epoch_stats"])
    assert resumed == full
    for a, b in zip(model.state_dict().values(), model3.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.module.state_dict().values(), ema3.module.state_dict().values()):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == opt3.param_groups[0]["lr"] == pytest.approx(1e-2 * 10 / 10)


def test_classifier_epoch_stops_at_a_non_finite_loss(tmp_path):
    model, opt, scaler, loader, ema, ckpt = _setup(tmp_path, "nan")
    with torch.no_grad():
        model[4].bias.fill_(float("nan"))
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(NonFiniteError, match="step 5"):
        _epoch(model, opt, scaler, loader, ema, ckpt)
    for a, b in zip(before, model.parameters()):  # the optimizer never touched the weights
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0, equal_nan=True)


def test_eval_loader_keeps_order_and_skips_none():
    ds = [(torch.tensor([float(i)]), i) for i in range(5)]
    ds[2] = None
    batches = list(eval_loader(ds, batch_size=2, skip_corrupt=True))
    assert [b[1].tolist() for b in batches] == [[0, 1], [3], [4]]


def test_restore_fresh_start_says_how_to_continue_and_resumed_position(tmp_path):
    """resume=auto in a fresh run folder starts at step 0 and tells how to continue an earlier (killed) run;
    after a checkpoint it returns the step, the unfinished epoch's sums and the extra dict."""
    class Log:
        def __init__(self):
            self.lines = []

        def info(self, msg, *args):
            self.lines.append(msg % args)

    model = nn.Linear(2, 2)
    ckpt = StepCheckpointer(tmp_path / "checkpoints", model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                            scaler=None, iters=4, every=0, keep_last=1, config={}, extra=lambda: {"results": {"a": 1}})
    log = Log()
    assert ckpt.restore("auto", log) == (0, None, {})
    assert "hydra.run.dir=" in log.lines[-1] and str(tmp_path / "checkpoints") in log.lines[-1]
    assert ckpt.restore(None, log) == (0, None, {}) and len(log.lines) == 1  # resume off: nothing to say
    ckpt.save(6, {"sums": {"loss": 2.0}, "steps": 2, "skipped": 0})
    step, stats, extra = ckpt.restore("auto", log)
    assert (step, stats["steps"], extra["results"]) == (6, 2, {"a": 1})
    assert log.lines[-1] == "resumed from step 6 (epoch 1, batch 2 of 4)"
