"""SiameseIM model: parameter counts, names, shapes, gradients only in the online branch, the EMA, the decoder
norm, attention equivalence, device independence."""

import math

import pytest
import torch
from torch import nn

from repro_shared.ssl.geometry import relative_geometry
from sim.models import PermuteBN, build_classifier, build_linear_probe, build_siameseim

TINY = dict(img_size=32, decoder_dim=64, decoder_heads=4, projector_depth=1, predictor_depth=2, num_masked=10)


def tiny(**kw):
    torch.manual_seed(0)
    return build_siameseim("tiny", **{**TINY, **kw})


def batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(B, 3, 32, 32, generator=g), torch.randn(B, 3, 32, 32, generator=g)
    mask = torch.zeros(B, 16, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(16, generator=g)[:10]] = True
    geo = torch.stack([relative_geometry((2, 3, 20, 24), (5 + b, 1, 30, 18), b % 2 == 0, False, 40) for b in range(B)])
    return x1, x2, geo, mask.reshape(B, 4, 4)


def test_vit_b_parameter_counts_match_the_official_model():
    """Spec section 2.2 (Dd = 768): 231.25 M in total, 129.94 M trainable, blocks 85.05 M, projector 14.18 M,
    predictor 28.35 M, patch embed 0.59 M (frozen), decoder_pos_mlp 1.18 M. Built on the meta device (no memory)."""
    with torch.device("meta"):
        m = build_siameseim("vit_base_patch16")
        vit_b = build_classifier("vit_base_patch16", 1000)
    count = lambda mod: sum(p.numel() for p in mod.parameters())
    assert round(count(m) / 1e6, 2) == 231.25
    assert round(sum(p.numel() for p in m.parameters() if p.requires_grad) / 1e6, 2) == 129.94
    assert round(count(m.blocks) / 1e6, 2) == 85.05 and round(count(m.mm_blocks) / 1e6, 2) == 85.05
    assert round(count(m.projector_decoder_blocks) / 1e6, 2) == 14.18
    assert round(count(m.predictor_decoder_blocks) / 1e6, 2) == 28.35
    assert round(count(m.decoder_pos_mlp) / 1e6, 2) == 1.18 and not m.patch_embed.proj.weight.requires_grad
    # official key layout (spec section 5)
    keys = set(m.state_dict())
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.mlp.fc2.bias", "decoder_pos_embed",
              "projector_decoder_blocks.1.norm2.bn.running_var", "predictor_decoder_blocks.3.attn.qkv.weight",
              "decoder_pred.weight", "decoder_pos_mlp.weight", "mm_patch_embed.proj.bias", "mm_cls_token",
              "mm_blocks.0.norm1.weight", "mm_decoder_embed.weight", "mm_mask_token",
              "mm_projector_decoder_blocks.0.norm1.bn.num_batches_tracked"):
        assert k in keys, k
    # the classifier downstream has the timm ViT-B/16 size of the spec (86.57 M)
    assert round(count(vit_b) / 1e6, 2) == 86.57


def test_encoder_names_load_into_a_timm_vit():
    m = tiny()
    vit = build_classifier("tiny", 10, img_size=32)
    enc = {k: v for k, v in m.state_dict().items() if k.startswith(("patch_embed.", "cls_token", "pos_embed", "blocks."))}
    missing, unexpected = vit.load_state_dict(enc, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"} and not unexpected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval().forward_features(x), m.eval().forward_encoder(x))


def test_forward_shapes_gradients_and_target_branch():
    m = tiny()
    x1, x2, geo, mask = batch()
    out = m(x1, x2, geo, mask, momentum=0.99)
    assert out.pred.shape == (4, 16, 64) and out.target.shape == (4, 16, 64) and not out.target.requires_grad
    torch.testing.assert_close(out.target.mean(-1), torch.zeros(4, 16), atol=1e-5, rtol=0)  # LN without affine
    out.pred.pow(2).mean().backward()
    trained = {n for n, p in m.named_parameters() if p.grad is not None}
    assert not any(n.startswith("mm_") for n in trained)
    assert "patch_embed.proj.weight" not in trained  # frozen at its random init
    for n in ("cls_token", "mask_token", "blocks.0.attn.qkv.weight", "decoder_pos_mlp.weight",
              "projector_decoder_blocks.0.norm1.bn.weight", "predictor_decoder_blocks.1.mlp.fc2.weight"):
        assert n in trained, n


def test_visible_indices_are_row_major():
    m = tiny()
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 1, 2, 5, 6, 7, 8, 9, 10, 15]] = True
    mask[1, 6:] = True
    assert m.visible_indices(mask).tolist() == [[3, 4, 11, 12, 13, 14], [0, 1, 2, 3, 4, 5]]


def test_momentum_update_and_its_place_in_the_step():
    m = tiny()
    with torch.no_grad():
        for p in m.blocks.parameters():
            p.add_(0.1)  # the online weights move, the target does not (yet)
    tgt, src = m.momentum_parameters()
    before = [t.clone() for t in tgt]
    m.momentum_update(0.9)
    for t, b, s in zip(tgt, before, src):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s, atol=1e-7, rtol=0)
    # predictor, decoder_pred, decoder_pos_mlp have no target copy; BN running stats are not averaged
    names = {id(p) for p in src}
    assert all(id(p) not in names for p in m.predictor_decoder_blocks.parameters())
    assert all(id(p) not in names for p in m.decoder_pos_mlp.parameters())
    # momentum 0 inside the forward: the target is then the online encoder + projector on view 2
    x1, x2, geo, mask = batch()
    m.eval()
    out = m(x1, x2, geo, mask, momentum=0.0)
    with torch.no_grad():
        t = m.decoder_embed(m.forward_encoder(x2))
        for blk in m.projector_decoder_blocks:
            t = blk(t)
        want = nn.functional.layer_norm(t[:, 1:], (64,), eps=1e-5)
    torch.testing.assert_close(out.target, want, atol=1e-5, rtol=1e-5)


def test_geometry_reaches_the_prediction():
    m = tiny().eval()
    x1, x2, geo, mask = batch()
    a = m(x1, x2, geo, mask).pred
    b = m(x1, x2, geo.roll(1, 0), mask).pred
    assert (a - b).abs().max() > 1e-3
    # the view-1 content reaches it too
    c = m(x1.flip(-1), x2, geo, mask).pred
    assert (a - c).abs().max() > 1e-3


def test_permute_bn_is_token_batchnorm():
    torch.manual_seed(0)
    pbn = PermuteBN(8)
    ref = nn.BatchNorm1d(8)
    x = torch.randn(3, 5, 8) * 3 + 1
    torch.testing.assert_close(pbn(x), ref(x.permute(0, 2, 1)).permute(0, 2, 1))
    torch.testing.assert_close(pbn.bn.running_mean, ref.running_mean)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pbn(x.bfloat16()).dtype == torch.float32


def test_sdpa_attention_equals_explicit_softmax():
    """timm's fused attention vs the official explicit form (scale q, subtract the row max, softmax)."""
    m = tiny().eval()
    attn = m.blocks[0].attn
    x = torch.randn(2, 7, 64)
    B, T, C = x.shape
    h = 4
    qkv = attn.qkv(x).reshape(B, T, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = (q * (C // h) ** -0.5) @ k.transpose(-2, -1)
    logits = logits - logits.max(-1, keepdim=True).values
    want = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


def test_layer_norm_decoder_and_options():
    m = tiny(decoder_norm="ln", online_ln=True)
    assert isinstance(m.predictor_decoder_blocks[0].norm1, nn.LayerNorm)
    assert not any(p.requires_grad for p in m.student_norm.parameters())
    x1, x2, geo, mask = batch()
    assert torch.isfinite(m(x1, x2, geo, mask).pred).all()
    assert tiny(train_patch_embed=True).patch_embed.proj.weight.requires_grad


def test_bad_configurations_name_the_problem():
    with pytest.raises(ValueError, match="known: tiny, vit_base_patch16"):
        build_siameseim("vit_gigantic")
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        build_siameseim("tiny", img_size=30)
    with pytest.raises(ValueError, match="num_masked"):
        build_siameseim("tiny", img_size=32, num_masked=16)
    with pytest.raises(ValueError, match="decoder_norm"):
        build_siameseim("tiny", img_size=32, decoder_norm="gn", num_masked=10)
    with pytest.raises(ValueError, match="known"):
        build_classifier("nope", 10)


def test_tables_follow_the_module_device():
    """All tables are parameters/buffers or built on the input's device: the forward runs on the meta device."""
    m = tiny().to("meta")
    x1, x2, geo, mask = (t.to("meta") for t in batch())
    out = m(x1, x2, geo, mask, momentum=0.99)
    assert out.pred.device.type == "meta" and out.target.device.type == "meta"


def test_linear_probe_freezes_all_but_the_head():
    m = build_linear_probe("tiny", 10, img_size=32)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"head.1.weight", "head.1.bias"}
    assert not m.head[0].affine and math.isclose(m.head[0].eps, 1e-6)
