"""Over-focus diagnostic: the concentration measures, causal attention maps, plot."""

import torch

from defocus.diagnostics import block_maps, concentration, overfocus_report, plot_maps
from defocus.models import build_model


def test_concentration_extremes():
    uniform = concentration(torch.ones(1, 20))
    assert uniform["entropy"].item() == 1.0 or abs(uniform["entropy"].item() - 1.0) < 1e-6
    assert abs(uniform["top_mass"].item() - 0.1) < 1e-6 and abs(uniform["front_mass"].item() - 0.5) < 1e-6
    onehot = torch.zeros(1, 20)
    onehot[0, 17] = 3.0
    c = concentration(onehot)
    assert c["entropy"].item() < 1e-6 and c["top_mass"].item() == 1.0 and c["front_mass"].item() == 0.0


def test_attention_map_is_causal_and_report(tmp_path):
    torch.manual_seed(0)
    m = build_model("defocus_tiny_test")
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    maps = block_maps(m, x, y, layer=1)
    M = maps["attn"]
    assert M.shape == (3, 17, 17)
    assert M.triu(1).abs().max() == 0  # no gradient from future tokens
    assert M.tril(-1).abs().sum() > 0
    assert maps["grad"].shape == (3, 16) and (maps["grad"] > 0).all()
    metrics, avg = overfocus_report(m, x, y, layers=(-2, 0))
    assert {"b1_grad_entropy", "b1_attn_row_entropy", "b0_cls_rf_top_mass", "b1_attn_row_cos",
            "b1_kernel_row_entropy", "b0_kernel_col_top_mass"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 + 1e-6 for v in metrics.values())
    png = plot_maps(avg, (4, 4), tmp_path / "maps.png")
    assert png.stat().st_size > 1000


def test_scan_kernel_reproduces_the_scan():
    from defocus.diagnostics import scan_kernel
    from defocus.ops import selective_scan_ref

    torch.manual_seed(0)
    E, L, N = 3, 9, 4
    u, delta = torch.randn(1, E, L), torch.rand(1, E, L)
    A, B, C = -torch.rand(E, N) - 0.1, torch.randn(1, N, L), torch.randn(1, N, L)
    alpha = scan_kernel(delta[0], A, B[0], C[0])
    assert alpha.triu(1).abs().max() == 0
    torch.testing.assert_close(torch.einsum("ets,es->et", alpha, u[0]), selective_scan_ref(u, delta, A, B, C)[0])
