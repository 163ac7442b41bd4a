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


def test_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    """A file whose unpickling would call a function (here os.mkdir) is refused by name; trust_checkpoint=true
    is the explicit opt-in (and then the function does run, which shows the check can see it)."""
    import os

    import pytest

    from repro_shared.checkpoint import UntrustedCheckpointError

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    path = tmp_path / "defocus_mamba_base_cls.pth"
    torch.save({"model": build_model("defocus_tiny_test").state_dict(), "payload": Payload()}, path)
    dst = build_model("defocus_tiny_test")
    with pytest.raises(UntrustedCheckpointError, match=r"defocus_mamba_base_cls\.pth.*mkdir.*trust_checkpoint=true"):
        load_official(dst, path)
    assert not marker.exists()
    report = load_official(dst, path, trust_checkpoint=True)
    assert marker.exists() and report.ok


def test_official_container_types_are_allowed(tmp_path, monkeypatch):
    """The official training container (yacs CfgNode config, numpy scalar accuracy, Namespace) loads weights-only
    without yacs installed: the CfgNode comes back as a plain mapping (through the OfficialConfigNode stand-in)."""
    import argparse
    import sys

    import numpy as np

    from defocus.models.convert import read_official

    pkg = tmp_path / "fake" / "yacs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(
        "class CfgNode(dict):\n"
        "    def __init__(self, d=None):\n"
        "        super().__init__(d or {})\n"
        "        self.__dict__['__immutable__'] = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    from yacs.config import CfgNode  # the fake module, only while saving

    src = build_model("defocus_tiny_test")
    cfg = CfgNode({"MODEL": CfgNode({"NAME": "defocus_mamba_base", "DROP_PATH": 0.75}), "TAG": "default"})
    path = tmp_path / "official.pth"
    torch.save({"model": src.state_dict(), "config": cfg, "max_accuracy": np.float64(82.0), "epoch": 299,
                "args": argparse.Namespace(local_rank=0)}, path)
    for name in ("yacs.config", "yacs"):
        sys.modules.pop(name)
    monkeypatch.undo()  # yacs is not importable any more
    raw = read_official(path)
    assert isinstance(raw["config"], dict) and raw["config"]["MODEL"]["DROP_PATH"] == 0.75
    assert float(raw["max_accuracy"]) == 82.0
    dst = build_model("defocus_tiny_test")
    assert load_official(dst, path).ok
    torch.testing.assert_close(dst.cls_token, src.cls_token)


def test_convert_cli_slices_22k_ema_heads(tmp_path):
    from defocus.cli import convert

    sd = {"head.2.weight": torch.arange(30.0).view(10, 3), "head.2.bias": torch.arange(10.0)}
    torch.save({"model": sd, "model_ema": {k: v + 100 for k, v in sd.items()}}, tmp_path / "in.pth")
    (tmp_path / "map.txt").write_text("4\n1\n")
    out = convert([str(tmp_path / "in.pth"), str(tmp_path / "out.pth"), "--use-ema", "--map22kto1k",
                   str(tmp_path / "map.txt")])
    got = torch.load(out, weights_only=True)["model"]
    assert got["head.2.bias"].tolist() == [104.0, 101.0] and got["head.2.weight"].shape == (2, 3)
