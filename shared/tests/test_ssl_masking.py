"""Block-wise mask generator: the exact RNG call order on a scripted case, counts, determinism."""

import random

import numpy as np
import pytest

from repro_shared.ssl.masking import BlockMaskGenerator


class ScriptedRandom:
    """Returns scripted values and records which method was called, in order."""

    def __init__(self, uniforms, randints, shuffle=lambda x: x.reverse()):
        self.uniforms, self.randints, self._shuffle = list(uniforms), list(randints), shuffle
        self.calls = []

    def uniform(self, a, b):
        self.calls.append(("uniform", a, b))
        return self.uniforms.pop(0)

    def randint(self, a, b):
        self.calls.append(("randint", a, b))
        return self.randints.pop(0)

    def shuffle(self, x):
        self.calls.append(("shuffle", len(x)))
        self._shuffle(x)


def test_scripted_case_by_hand():
    """4x4 grid, 10 cells, blocks of >= 4: every step of the algorithm checked against a hand-made mask."""
    log15 = np.log(1.5)
    uniforms = [4.0, 0.0,        # block 1: area 4, aspect 1 -> 2x2 at (1, 0): 4 new
                6.0, log15,      # block 2: area 6, aspect 1.5 -> h 3, w 2 at (0, 1): 4 new (2 overlap)
                2.0, 0.0,        # block 3: cap 2 (< min area; still drawn) -> 1x1 at (3, 3): 1 new
                1.0, 0.0]        # block 4 attempt 1: 1x1 at (0, 1), already masked -> nothing
    uniforms += [30.0, 0.0] * 9  # attempts 2..10: 5x5 does not fit -> no randint, loop ends at count 9
    gen = BlockMaskGenerator(4, 10, min_num_patches=4)
    rng = ScriptedRandom(uniforms, [1, 0, 0, 1, 3, 3, 0, 1])
    mask = gen(rng)
    expect = np.array([[0, 1, 1, 0],
                       [1, 1, 1, 0],
                       [1, 1, 1, 0],
                       [0, 0, 1, 1]])  # (3, 2): top-up, the last free cell in row-major order (reversed list)
    np.testing.assert_array_equal(mask, expect)
    names = [c[0] for c in rng.calls]
    assert names == (["uniform", "uniform", "randint", "randint"] * 4 + ["uniform", "uniform"] * 9 + ["shuffle"])
    # bounds of the draws: area in [min, cap], randint bounds inclusive of H - h
    assert rng.calls[0] == ("uniform", 4, 10) and rng.calls[2] == ("randint", 0, 2)
    assert rng.calls[4] == ("uniform", 4, 6) and rng.calls[6] == ("randint", 0, 1)
    assert rng.calls[8] == ("uniform", 4, 2) and rng.calls[10] == ("randint", 0, 3)
    assert rng.calls[12] == ("uniform", 4, 1)
    assert rng.calls[-1] == ("shuffle", 7)


def test_no_top_up_without_fixed_count():
    gen = BlockMaskGenerator(4, 10, min_num_patches=4, fixed_count=False)
    uniforms = [4.0, 0.0, 6.0, np.log(1.5), 2.0, 0.0, 1.0, 0.0] + [30.0, 0.0] * 9
    rng = ScriptedRandom(uniforms, [1, 0, 0, 1, 3, 3, 0, 1])
    assert gen(rng).sum() == 9 and ("shuffle", 7) not in rng.calls


@pytest.mark.parametrize("grid,count,min_block", [(14, 118, 16), (8, 38, 4), (4, 10, 4)])
def test_exact_count_and_blocks(grid, count, min_block):
    gen = BlockMaskGenerator(grid, count, min_num_patches=min_block)
    plain = BlockMaskGenerator(grid, count, min_num_patches=min_block, fixed_count=False)
    for seed in range(100):
        m = gen(random.Random(seed))
        assert m.shape == (grid, grid) and m.dtype == np.int64 and set(np.unique(m)) <= {0, 1}
        assert m.sum() == count
        p = plain(random.Random(seed))
        assert p.sum() <= count
        # the top-up only adds cells: the block phase of the same stream is contained in the final mask
        assert np.all(m >= p)
    if (grid, count) == (14, 118):  # spec: the block phase alone ends at 117-118 for ViT-B's setting
        sums = [plain(random.Random(s)).sum() for s in range(200)]
        assert min(sums) >= 110 and np.mean(sums) > 116


def test_global_random_and_instance_agree():
    gen = BlockMaskGenerator(14, 118, min_num_patches=16)
    random.seed(3)
    a = gen()
    b = gen(random.Random(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(gen(random.Random(4)), b)


def test_masks_are_blocky():
    """Block masking leaves far fewer mask/unmask edges than a random mask of the same count."""
    gen = BlockMaskGenerator(14, 118, min_num_patches=16)

    def edges(m):
        return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())

    rs = np.random.default_rng(0)
    block = np.mean([edges(gen(random.Random(s))) for s in range(50)])
    rand = []
    for _ in range(50):
        m = np.zeros(196, np.int64)
        m[rs.permutation(196)[:118]] = 1
        rand.append(edges(m.reshape(14, 14)))
    assert block < 0.6 * np.mean(rand)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_masking_patches"):
        BlockMaskGenerator(4, 17)
    with pytest.raises(ValueError, match="min_num_patches"):
        BlockMaskGenerator(4, 8, min_num_patches=0)
