"""The lr of every optimizer step against mmcv's iteration-based hooks (official runner): before iteration ``k``
(0-based, ``runner.iter``) the warm-up factor is ``1 - (1 - k / warmup) * (1 - ratio)`` and the step decay is
``0.1 ** #{s : k >= s}``; so step 0 runs at ``ratio * lr`` and the first decayed step is step ``s`` itself."""

import pytest

from bevformer_v2.engine import lr_factor


def test_lr_of_each_step_matches_mmcv_hooks():
    warmup, ratio, steps = 2000, 1 / 3, [35160]  # released R50 config: 2000 iters from 1/3; x0.1 at epoch 20 of 24
    assert lr_factor(0, warmup, ratio, steps) == pytest.approx(1 / 3)          # not the next step's value
    assert lr_factor(1, warmup, ratio, steps) == pytest.approx(1 - (1 - 1 / 2000) * (2 / 3))
    assert lr_factor(1999, warmup, ratio, steps) == pytest.approx(1 - (1 / 2000) * (2 / 3))
    assert lr_factor(2000, warmup, ratio, steps) == 1.0                        # peak at the official step
    assert lr_factor(35159, warmup, ratio, steps) == 1.0
    assert lr_factor(35160, warmup, ratio, steps) == pytest.approx(0.1)
    assert lr_factor(5, 10, 0.5, [3, 8]) == pytest.approx(0.1 * (1 - 0.5 * 0.5))  # warm-up and decay multiply
