"""Metrics: the Fréchet distance (FID's formula, via torch-fidelity), the reference-set writer, tiny-data probes."""

import pytest
import torch

from addp.metrics.fid import fid_is, frechet_distance, prepare_reference
from addp.metrics.tiny import label_entropy, linear_probe_accuracy


def test_frechet_distance_of_shifted_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    # same covariance, means 1 and 2 apart: |mu_a - mu_b|^2 = 5, trace term 0
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)
    # std 1 vs std 2 in each of 3 dimensions: Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) = 3 (2 - 1)^2
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64) * 2.0
    assert frechet_distance(a, b) == pytest.approx(3 * (2.0 - 1.0) ** 2, rel=0.1)


def test_reference_set_is_resized_centre_cropped_png(tmp_path):
    from PIL import Image

    src = tmp_path / "val" / "n01"
    src.mkdir(parents=True)
    Image.new("RGB", (400, 300), (10, 200, 30)).save(src / "ILSVRC2012_val_00000001.JPEG")
    Image.new("RGB", (300, 500), (0, 0, 255)).save(src / "ILSVRC2012_val_00000002.JPEG")
    assert prepare_reference(tmp_path / "val", tmp_path / "ref") == 2
    out = sorted((tmp_path / "ref").iterdir())
    assert [p.name for p in out] == ["ILSVRC2012_val_00000001.png", "ILSVRC2012_val_00000002.png"]
    for p in out:
        assert Image.open(p).size == (256, 256)
    assert prepare_reference(tmp_path / "val", tmp_path / "ref") == 2  # re-run keeps the files
    with pytest.raises(FileNotFoundError, match="no images under"):
        prepare_reference(tmp_path / "ref_empty_missing", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="folder of generated images"):
        fid_is(tmp_path / "nope", tmp_path / "ref")


def test_probe_and_label_entropy():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.nn.functional.one_hot(y, 4).double() + 0.1 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    assert linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]) == 100.0
    assert linear_probe_accuracy(torch.randn(150, 4, generator=g), y[:150], torch.randn(50, 4, generator=g), y[150:]) < 60
    uniform = torch.nn.functional.one_hot(torch.arange(10), 10).float()
    assert label_entropy(uniform) == pytest.approx(2.302585, abs=1e-5)
    assert label_entropy(torch.zeros(5, 10).index_fill_(1, torch.tensor([3]), 1.0)) == pytest.approx(0.0)


def test_val_cross_entropies_measure_the_pixel_pathway():
    """Rolling the rendered images changes ADDP's cross-entropy only through the encoder features: with
    ``decoder_embed`` zeroed the decoder cannot see the pixels and both numbers are equal; with it the roll
    changes them; the marginal baseline does not depend on the model."""
    from addp.models.addp import build_addp
    from addp.models.mage import build_mage
    from addp.models.vqgan import build_vqgan
    from addp.tiny_eval import val_cross_entropies

    torch.manual_seed(0)
    tok = build_vqgan("tiny_f4_64").eval()
    teacher = build_mage("mage_cpu_tiny", codebook_size=64, num_tokens=64).eval()
    model = build_addp("addp_vit_tiny", codebook_size=64).eval()
    x = torch.rand(12, 3, 32, 32)
    with torch.no_grad():
        model.decoder_embed.weight.normal_(std=1.0)   # make the pixel path matter at random init
    seen = val_cross_entropies(model, tok, teacher, x, chunk=4, seed=0)
    assert abs(seen["val_ce_addp_shuffled_images"] - seen["val_ce_addp"]) > 1e-6
    with torch.no_grad():
        model.decoder_embed.weight.zero_()
        model.decoder_embed.bias.zero_()
    blind = val_cross_entropies(model, tok, teacher, x, chunk=4, seed=0)
    assert blind["val_ce_addp_shuffled_images"] == blind["val_ce_addp"]
    assert blind["val_ce_marginal"] == pytest.approx(seen["val_ce_marginal"])
    assert seen["val_ce_marginal"] > 0
