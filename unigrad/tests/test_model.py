"""The siamese network: official layout and sizes, momentum copies, EMA order, devices."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from unigrad.models import SiameseNet, build_encoder, projection_mlp


def test_resnet50_encoder_and_projector_match_the_official_sizes_and_layout():
    enc, dim = build_encoder("resnet50")
    assert dim == 2048
    assert sum(p.numel() for p in enc.parameters()) == 23_508_032
    proj = projection_mlp(2048, 2048, 2048)
    assert sum(p.numel() for p in proj.parameters()) == 12_593_152
    keys = set(proj.state_dict())
    assert "0.0.weight" in keys and "0.0.bias" not in keys and "0.1.running_mean" in keys  # no bias before BN
    assert "1.0.weight" in keys and "1.0.bias" not in keys and "1.1.weight" in keys
    assert {"2.0.weight", "2.0.bias"} <= keys and not any(k.startswith("2.1") for k in keys)  # no BN/ReLU on output
    assert isinstance(proj[0][2], nn.ReLU) and len(proj[2]) == 1
    # official Sequential indices: 0 conv1, 1 bn1, 4..7 layer1..4, 8 avgpool, 9 flatten
    assert isinstance(enc[0], nn.Conv2d) and isinstance(enc[1], nn.BatchNorm2d) and isinstance(enc[9], nn.Flatten)
    # zero_init_residual: every block's last BN starts at gamma = 0
    assert torch.count_nonzero(enc[4][0].bn3.weight) == 0


def test_encoder_matches_torchvision_resnet_features():
    torch.manual_seed(0)
    enc, _ = build_encoder("resnet18")
    tv = torchvision.models.resnet18()
    tv.load_state_dict({**{f"{n}.{k}": v for n, i in (("conv1", 0), ("bn1", 1), ("layer1", 4), ("layer2", 5),
                                                        ("layer3", 6), ("layer4", 7))
                           for k, v in enc[i].state_dict().items()}, "fc.weight": tv.fc.weight, "fc.bias": tv.fc.bias})
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    enc.eval(), tv.eval()
    torch.testing.assert_close(enc(x), tv(x))


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet50, resnet18, tiny_cnn"):
        build_encoder("vit_b")


def test_momentum_copies_start_equal_get_no_gradient_and_follow_the_ema():
    torch.manual_seed(0)
    net = SiameseNet("tiny_cnn", 16, 8, tiny_widths=(4, 8, 8))
    for (n, p), (_, q) in zip(net.encoder.named_parameters(), net.momentum_encoder.named_parameters()):
        assert torch.equal(p, q) and not q.requires_grad, n
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = [p.detach().clone() for p in (*net.encoder.parameters(), *net.projector.parameters())]
    before = [p.detach().clone() for p in (*net.momentum_encoder.parameters(), *net.momentum_projector.parameters())]
    bn_before = net.momentum_encoder[1].running_mean.clone()
    x1, x2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    out = net(x1, x2, mm=0.9)
    after = list((*net.momentum_encoder.parameters(), *net.momentum_projector.parameters()))
    for b, o, a in zip(before, online, after):
        torch.testing.assert_close(a, 0.9 * b + 0.1 * o, rtol=0, atol=1e-6)  # official m * t + (1 - m) * o
    # momentum forward ran AFTER the update, in train mode (its own BN statistics moved)
    probe = copy.deepcopy(net)
    probe.momentum_encoder[1].running_mean.copy_(bn_before)  # running stats do not affect a train-mode forward
    torch.testing.assert_close(out.z1m, probe.momentum_projector(probe.momentum_encoder(x1)))
    assert not torch.equal(net.momentum_encoder[1].running_mean, bn_before)
    assert out.z1m.grad_fn is None and out.z1.grad_fn is not None
    # BN buffers are not EMA-ed: the online running stats are not copied into the momentum branch
    assert not torch.equal(net.encoder[1].running_mean, net.momentum_encoder[1].running_mean)
    with pytest.raises(ValueError, match="pass the step's momentum"):
        net(x1, x2)


def test_without_momentum_branch_and_with_a_learned_predictor():
    net = SiameseNet("tiny_cnn", 16, 8, momentum=False, predictor_hidden_dim=12, tiny_widths=(4, 8, 8))
    assert not hasattr(net, "momentum_encoder")
    out = net(torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8))
    assert out.z1m is None and out.p1.shape == (3, 8)


def test_every_parameter_and_buffer_follows_the_module():
    net = SiameseNet("tiny_cnn", 16, 8, tiny_widths=(4, 8, 8)).to("meta")
    assert all(t.device.type == "meta" for t in (*net.parameters(), *net.buffers()))
    out = net(torch.randn(2, 3, 8, 8, device="meta"), torch.randn(2, 3, 8, 8, device="meta"), mm=0.99)
    assert out.z2m.device.type == "meta"
