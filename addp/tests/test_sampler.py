"""Spec §3.3: the schedule, the re-masking step with fixed noise, sampling, and what the output may not depend on."""


import pytest
import torch

from addp.models.addp import build_addp
from addp.models.mage import build_mage
from addp.models.vqgan import build_vqgan
from addp.sampler import (SampleRNG, choice_temperature, generate_addp, generate_teacher, remask, sample_ids, save_grid,
                          save_pngs, unknown_count)


def test_unknown_counts_of_the_paper_schedule():
    counts = [unknown_count(s, 20, 256, "cosine") for s in range(20)]
    assert counts == [256, 253, 249, 244, 237, 229, 219, 208, 195, 182, 167, 151, 134, 117, 98, 80, 60, 41, 21, 1]
    assert [unknown_count(s, 4, 256, "linear") for s in range(4)] == [192, 128, 64, 1]
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        unknown_count(0, 4, 256, "exp")


def test_choice_temperature_modes():
    assert choice_temperature(0, 20, 6.0, "dynamic") == pytest.approx(6.0 * 19 / 20)
    assert choice_temperature(19, 20, 6.0, "dynamic") == pytest.approx(0.0)
    assert choice_temperature(7, 20, 6.0, "static") == 6.0
    with pytest.raises(ValueError, match="unknown temperature mode"):
        choice_temperature(0, 20, 6.0, "hot")


def test_remask_hand_case():
    """Scores log p(id) + tau g at unknown positions, +inf at known; the `count` lowest become unknown."""
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]])
    ids = torch.tensor([[0, 1, 1, 0]])           # chosen p: 0.9, 0.8, 0.4, 0.5
    mask = torch.tensor([[True, True, True, False]])  # position 3 is known: never re-masked
    zero = torch.zeros(1, 4)
    assert remask(probs, ids, mask, 2, 1.0, zero).tolist() == [[False, True, True, False]]
    # noise can reorder: a large Gumbel at position 2 lifts it above position 0
    g = torch.tensor([[0.0, 0.0, 2.0, -50.0]])
    assert remask(probs, ids, mask, 2, 1.0, g).tolist() == [[True, True, False, False]]
    # temperature 0 ignores the noise
    assert remask(probs, ids, mask, 1, 0.0, g).tolist() == [[False, False, True, False]]


def test_sample_ids_gumbel_max_and_top_p():
    logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))
    u = torch.tensor([[[0.2, 0.9, 0.5]]])
    expected = int((logits - torch.log(-torch.log(u))).argmax())
    assert int(sample_ids(logits, u)) == expected == 1
    # top_p 0.5 keeps only the most likely code (cumulative 0.6 >= 0.5)
    g = torch.Generator().manual_seed(0)
    draws = [int(sample_ids(logits, torch.rand(1, 1, 3, generator=g), "top_p", 0.5)) for _ in range(50)]
    assert set(draws) == {0}
    # top_p 0.7 keeps the first two
    draws = {int(sample_ids(logits, torch.rand(1, 1, 3, generator=g), "top_p", 0.7)) for _ in range(200)}
    assert draws == {0, 1}
    # categorical frequencies follow softmax
    many = sample_ids(logits.expand(1, 4000, 3), torch.rand(1, 4000, 3, generator=g))
    freq = torch.bincount(many.flatten(), minlength=3).double() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.03, rtol=0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = build_vqgan("tiny_f4_64").eval()
    model = build_addp("addp_vit_tiny", codebook_size=64, dropout=0.0).eval()
    teacher = build_mage("mage_cpu_tiny", codebook_size=64, num_tokens=64, dropout=0.0).eval()
    return tok, model, teacher


def test_generation_ignores_the_initial_image_and_batch_composition(tiny):
    tok, model, _ = tiny
    gen = dict(image_size=32, steps=4)
    with torch.no_grad():
        a = generate_addp(model, tok, SampleRNG(7, [0, 1, 2, 3]), **gen)
        b = generate_addp(model, tok, SampleRNG(7, [0, 1, 2, 3]), x_init=torch.rand(4, 3, 32, 32), **gen)
        c = generate_addp(model, tok, SampleRNG(7, [2, 3]), **gen)
        d = generate_addp(model, tok, SampleRNG(8, [0, 1, 2, 3]), **gen)
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b)                          # every token starts unknown: x_init has no effect
    torch.testing.assert_close(a[2:], c, atol=1e-5, rtol=1e-5)  # sample i depends on (seed, i) only
    assert not torch.allclose(a, d)


def test_generation_state_after_the_last_step(tiny, monkeypatch):
    """After T steps one position per row is still soft (the schedule's minimum is 1) and ids are codes."""
    from addp import sampler

    tok, model, teacher = tiny
    seen = {}
    real = sampler.alternating_generate

    def spy(*a, **k):
        out = real(*a, **k)
        seen["state"] = out
        return out

    monkeypatch.setattr(sampler, "alternating_generate", spy)
    with torch.no_grad():
        generate_addp(model, tok, SampleRNG(0, [0, 1]), image_size=32, steps=3)
    _, ids, mask = seen["state"]
    assert mask.sum(1).tolist() == [1, 1] and int(ids.max()) < 64
    with torch.no_grad():
        img = generate_teacher(teacher, tok, SampleRNG(0, [0, 1]), steps=3)
    assert img.shape == (2, 3, 32, 32)


def test_sample_rng_rows_are_seeded_per_index():
    a = SampleRNG(3, [5, 9]).rand(4)
    b = SampleRNG(3, [9]).rand(4)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert torch.isfinite(SampleRNG(0, [1]).gumbel(1000)).all()


def test_png_writers(tmp_path):
    from PIL import Image

    imgs = torch.zeros(2, 3, 4, 4)
    imgs[0, 0] = 1.0             # red
    imgs[1, 2] = 0.999           # 0.999 * 255 = 254.7 -> 254 (truncation, as the official writer)
    paths = save_pngs(imgs, tmp_path / "png", [7, 12])
    assert [p.name for p in paths] == ["000007.png", "000012.png"]
    assert Image.open(paths[0]).getpixel((0, 0)) == (255, 0, 0)
    assert Image.open(paths[1]).getpixel((1, 1)) == (0, 0, 254)
    assert save_grid(imgs, tmp_path / "g.png", nrow=2).stat().st_size > 0
