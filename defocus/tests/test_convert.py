"""Official-checkpoint converter: containers, prefixes, detection rename, 22k -> 1k head slicing."""

import torch

from defocus.models import build_model
from defocus.models.convert import convert_official_state_dict, load_official, slice_22k_heads_to_1k


def test_official_container_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = build_model("defocus_tiny_test").eval()
    official = {"model": {f"module.{k}": v for k, v in src.state_dict().items()},
                "model_ema": {k: v + 1.0 for k, v in src.state_dict().items()}, "epoch": 299}
    path = tmp_path / "defocus_mamba_tiny_cls.pth"
    torch.save(official, path)
    dst = build_model("defocus_tiny_test").eval()
    report = load_official(dst, path)
    assert report.ok and len(report.loaded) == len(src.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))
    ema = convert_official_state_dict(official, use_ema=True)
    torch.testing.assert_close(ema["cls_token"], src.cls_token.detach() + 1.0)


def test_detection_names_map_back():
    src = build_model("defocus_tiny_test", aux_loss="none")
    det = {("backbone." + k).replace("patch_embed.proj.", "patch_embed.projection."): v
           for k, v in src.state_dict().items()}
    det["neck.fpn1.0.weight"] = torch.zeros(1)
    conv = convert_official_state_dict({"state_dict": det})
    assert "patch_embed.proj.weight" in conv and "neck.fpn1.0.weight" in conv
    assert set(src.state_dict()) <= set(conv)


def test_slice_22k_heads():
    sd = {"head.2.weight": torch.arange(30.0).view(10, 3), "head.2.bias": torch.arange(10.0),
          "head2.2.weight": torch.arange(30.0).view(10, 3), "head.0.weight": torch.ones(3, 3)}
    out = slice_22k_heads_to_1k(sd, [7, 2])
    assert out["head.2.bias"].tolist() == [7.0, 2.0]
    assert out["head2.2.weight"].shape == (2, 3) and out["head.0.weight"].shape == (3, 3)
