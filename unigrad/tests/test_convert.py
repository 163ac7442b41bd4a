"""The converter on a synthetic checkpoint in the official key layout (released files cannot be downloaded here)."""

import pickle

import pytest
import torch
import torchvision
from torch import nn

from conftest import make_cfg
from repro_shared.checkpoint import CheckpointError, UntrustedCheckpointError
from unigrad import cli
from unigrad.losses import UniGradLoss
from unigrad.models import SiameseNet
from unigrad.models.convert import load_encoder_weights, to_torchvision_resnet


def _official_checkpoint(path, with_f=True):
    """What the official Pretrainer saves: the DDP state dict ("module." prefix), optimizer, scaler, step, epoch, F."""
    torch.manual_seed(0)
    net = SiameseNet("resnet18", 64, 32)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # make online and momentum weights differ from init
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    f = torch.rand(32, 32)
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "optimizer": opt.state_dict(),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 0},
                "step": 1251, "epoch": 0, "F": (f + f.T).half() if with_f else None}, path)
    return net, (f + f.T).half().float()


def test_official_checkpoint_to_ours_loads_strictly_and_carries_F(tmp_path):
    net, f = _official_checkpoint(tmp_path / "official.pth")
    cli.run_convert(make_cfg("convert", [f"input={tmp_path / 'official.pth'}", f"output={tmp_path / 'ours.pt'}"], tmp_path))
    out = torch.load(tmp_path / "ours.pt", weights_only=True)
    fresh = SiameseNet("resnet18", 64, 32)
    fresh.load_state_dict(out["model"])  # strict: every key of our model, nothing else
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    loss = UniGradLoss(32)
    loss.load_state_dict(out["loss_state"])
    assert torch.equal(loss.F, f) and bool(loss.F_initialized) and loss.F.dtype == torch.float32


def test_official_checkpoint_to_torchvision_gives_the_same_features(tmp_path):
    net, _ = _official_checkpoint(tmp_path / "official.pth", with_f=False)
    for branch, encoder in (("online", net.encoder), ("momentum", net.momentum_encoder)):
        out = tmp_path / f"tv_{branch}.pt"
        cli.run_convert(make_cfg("convert", [f"input={tmp_path / 'official.pth'}", f"output={out}", "format=torchvision",
                                             f"branch={branch}"], tmp_path))
        tv = torchvision.models.resnet18()
        missing, unexpected = tv.load_state_dict(torch.load(out, weights_only=True), strict=False)
        assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
        tv.fc = nn.Identity()
        x = torch.randn(2, 3, 32, 32)
        tv.eval(), encoder.eval()
        torch.testing.assert_close(tv(x), encoder(x))


def test_encoder_weights_load_from_every_kind_of_file(tmp_path):
    net, _ = _official_checkpoint(tmp_path / "official.pth")
    want = net.encoder.state_dict()
    got = load_encoder_weights(tmp_path / "official.pth")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, bare)
    assert torch.equal(load_encoder_weights(bare, branch="momentum")["0.weight"], net.momentum_encoder[0].weight)
    with pytest.raises(Exception, match="momentum_encoder"):
        torch.save({f"encoder.{k}": v for k, v in want.items()}, tmp_path / "online_only.pt")
        load_encoder_weights(tmp_path / "online_only.pt", branch="momentum")
    assert "conv1.weight" in to_torchvision_resnet({f"encoder.{k}": v for k, v in want.items()})


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"module.encoder.0.weight": torch.zeros(1)}, "x": _Evil()}, fh)
    with pytest.raises(UntrustedCheckpointError, match="trust_checkpoint=true"):
        cli.run_convert(make_cfg("convert", [f"input={path}", f"output={tmp_path / 'o.pt'}"], tmp_path))
    assert "this must never run" not in capsys.readouterr().out
    assert not (tmp_path / "o.pt").exists()


def test_converter_errors_name_the_input_and_the_fix(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(CheckpointError, match=r"input=.*no_tensors.pt: no tensors found"):
        cli.run_convert(make_cfg("convert", [f"input={tmp_path / 'no_tensors.pt'}", f"output={tmp_path / 'o.pt'}"], tmp_path))
    tiny = SiameseNet("tiny_cnn", 16, 8, tiny_widths=(4, 8, 16))
    torch.save({"model": tiny.state_dict()}, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="format=torchvision needs a ResNet encoder .* use format=ours"):
        cli.run_convert(make_cfg("convert", [f"input={tmp_path / 'tiny.pt'}", f"output={tmp_path / 'o.pt'}",
                                             "format=torchvision"], tmp_path))
    assert not (tmp_path / "o.pt").exists()
