"""Training recipe: scheduled drop path, aux-loss wiring, param groups, LR schedule, a short training run."""

import pytest
import torch

from defocus.engine import evaluate, train_one_epoch
from defocus.losses import defocus_loss, soft_cross_entropy
from defocus.models import build_model
from defocus.recipe import (
    build_optimizer,
    build_scheduler,
    no_weight_decay,
    param_groups,
    scale_lr,
    scheduled_drop_path_rate,
)


def test_scheduled_drop_path_values():
    """Base config 0.1 -> 0.75 over 300 epochs (spec §3.2)."""
    r = [scheduled_drop_path_rate(e, 300, 0.1, 0.75) for e in (0, 100, 150, 299)]
    assert r == pytest.approx([0.1, 0.1 + 100 / 299 * 0.65, 0.1 + 150 / 299 * 0.65, 0.75])
    assert [round(v, 3) for v in r] == [0.1, 0.317, 0.426, 0.75]
    assert scheduled_drop_path_rate(0, 1, 0.1, 0.7) == 0.1  # guarded EPOCHS - 1 = 0
    assert scheduled_drop_path_rate(19, 20, 0.1, 0.7) == pytest.approx(0.7)  # Large 1k fine-tune


def test_param_groups_no_decay_set():
    m = build_model("defocus_tiny_test")
    names = {n: no_weight_decay(n, p) for n, p in m.named_parameters()}
    for n in ("blocks.0.norm.weight", "blocks.0.mixer.A_log", "blocks.0.mixer.D", "blocks.0.mixer.freq",
              "blocks.0.mixer.conv1d.bias", "blocks.0.mixer.dt_proj.bias", "cls_token", "norm.weight",
              "norm.bias", "head.bias", "head2.bias", "patch_embed.proj.bias"):
        assert names[n], n
    for n in ("blocks.0.mixer.in_proj.weight", "blocks.0.mixer.conv1d.weight", "blocks.0.mixer.dt_proj.weight",
              "blocks.0.mixer.x_proj.weight", "blocks.0.mixer.out_proj.weight", "head.weight",
              "patch_embed.proj.weight"):
        assert not names[n], n
    g = param_groups(m, 0.05)
    assert g[0]["weight_decay"] == 0.05 and g[1]["weight_decay"] == 0.0
    assert sum(len(x["params"]) for x in g) == len(list(m.parameters()))


def test_aux_loss_weight_wiring_and_jensen():
    torch.manual_seed(0)
    logits, aux, y = torch.randn(4, 10), torch.randn(4, 7, 10), torch.randint(0, 10, (4,))
    t = torch.nn.functional.one_hot(y, 10).float()
    ce = soft_cross_entropy(logits, t)
    ce_aux = torch.stack([soft_cross_entropy(aux[:, i], t) for i in range(7)]).mean()
    for w in (0.0, 0.5, 0.8):
        out = defocus_loss(logits, aux, y, aux_weight=w)
        torch.testing.assert_close(out["loss"], (1 - w) * ce + w * ce_aux)
    torch.testing.assert_close(defocus_loss(logits, None, y)["loss"], ce)
    # official per-token CE >= CE of the mean logits (pooled, linear head), Jensen
    assert defocus_loss(logits, aux, y)["loss_aux"] >= defocus_loss(logits, aux.mean(1), y)["loss_aux"]
    # the aux weight reaches head2 through the model
    m = build_model("defocus_tiny_test")
    x = torch.rand(2, 3, 32, 32)
    for w, expect_grad in ((0.0, False), (0.5, True)):
        m.zero_grad()
        lg, ax = m(x, return_aux=True)
        defocus_loss(lg, ax, torch.tensor([1, 2]), aux_weight=w)["loss"].backward()
        assert (m.head2.weight.grad.abs().sum() > 0) == expect_grad


def test_lr_scaling_and_schedule():
    assert scale_lr(5e-4, 1024) == pytest.approx(1e-3)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    sch = build_scheduler(opt, epochs=10, warmup_epochs=2, iters_per_epoch=5, min_lr=1e-5, warmup_lr=1e-6)
    lrs = []
    for it in range(50):
        sch.step_update(it)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-6)
    assert max(lrs) == pytest.approx(1e-3, rel=1e-6) and lrs.index(max(lrs)) == 10
    assert lrs[-1] < 2e-5 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_short_training_lowers_loss_and_beats_chance():
    torch.manual_seed(0)
    from repro_shared import toydata

    x, y = toydata.load_digits("train", image_size=16, channels=3)
    xv, yv = toydata.load_digits("val", image_size=16, channels=3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:512], y[:512]), batch_size=64,
                                         shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=256)
    m = build_model("defocus_toy")
    opt = build_optimizer(m, 3e-3, 0.05)
    sch = build_scheduler(opt, 6, 1, len(loader), 1e-4, 1e-5)
    losses = [train_one_epoch(m, loader, opt, sch, epoch=e, device=torch.device("cpu"),
                              drop_path_rate=0.1, aux_weight=0.5, clip_grad=10.0)["loss"] for e in range(6)]
    assert losses[-1] < losses[0] - 0.3
    assert evaluate(m, val, torch.device("cpu"))["top1"] > 30.0  # chance = 10 %


def _batches(n, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, 3, size, size, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(n)]


def test_lr_schedule_runs_at_the_official_offset():
    """Issue 15.6: the official loop calls step_update(epoch*iters + step) after each step (spec §3.5), so optimizer
    steps 0 and 1 both run at warmup_lr and the peak lr is first used by step warmup_t + 1 = 11."""
    torch.manual_seed(0)
    m = build_model("defocus_tiny_test")
    opt = build_optimizer(m, 1e-3, 0.05)
    sch = build_scheduler(opt, epochs=10, warmup_epochs=2, iters_per_epoch=5, min_lr=1e-5, warmup_lr=1e-6)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    data = _batches(5)
    for epoch in range(3):
        train_one_epoch(m, data, opt, sch, epoch=epoch, device=torch.device("cpu"), drop_path_rate=0.0,
                        aux_weight=0.5, clip_grad=10.0)
    assert len(seen) == 15
    assert seen[0] == pytest.approx(1e-6) and seen[1] == pytest.approx(1e-6)
    assert seen[2] == pytest.approx(1e-6 + (1e-3 - 1e-6) / 10)  # warm-up value of t = 1
    assert seen.index(max(seen)) == 11 and seen[11] == pytest.approx(1e-3)
    assert seen[10] == pytest.approx(1e-6 + 9 * (1e-3 - 1e-6) / 10)


@pytest.mark.parametrize("head,term", [("head", "loss_cls"), ("head2", "loss_aux")])
def test_nan_prediction_stops_the_step_with_named_error(head, term):
    """Issue 15.2: a NaN in a prediction raises NonFiniteError naming the step and the loss term, before the
    optimizer touches the weights (the last good checkpoint stays the newest)."""
    from repro_shared.guards import NonFiniteError

    torch.manual_seed(0)
    m = build_model("defocus_tiny_test")
    with torch.no_grad():
        getattr(m, head).bias[3] = float("nan")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = build_optimizer(m, 1e-3, 0.05)
    with pytest.raises(NonFiniteError, match=rf"'{term}' = nan .*at step 5 \(epoch 1\)"):
        train_one_epoch(m, _batches(5), opt, None, epoch=1, device=torch.device("cpu"), drop_path_rate=0.0,
                        aux_weight=0.5, clip_grad=10.0)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)
    assert not opt.state  # no optimizer step was taken
