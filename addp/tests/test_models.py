"""The three networks against the spec: sizes, the tokenizer's quirks, the decoder's information flow."""

import pytest
import torch

from addp.models.addp import ADDP, build_addp
from addp.models.mage import build_mage, vocab_layout
from addp.models.transformer import Attention
from addp.models.vqgan import VQGAN, ResBlock, VQGANConfig, build_vqgan


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_spec():
    """Spec §2.1-2.3: VQGAN 54.52 M; ADDP-B trainable 146.86 M / L 410.42 M (incl. the official unused
    tensors we do not hold); MAGE-B 200.99 M / L 464.41 M (incl. its tokenizer copy and unused tensors)."""
    with torch.device("meta"):
        vq = build_vqgan()
        addp_b = build_addp("addp_vit_base_patch16", codebook_size=1024)
        addp_l = build_addp("addp_vit_large_patch16", codebook_size=1024)
        mage_b = build_mage("mage_vit_base_patch16", codebook_size=1024, num_tokens=256)
        mage_l = build_mage("mage_vit_large_patch16", codebook_size=1024, num_tokens=256)
    assert n_params(vq) == 54_515_587
    # official unused but trainable: pos_token_embed, pos_mask_embed (257 x D), decoder_pred Linear(D, 768)
    unused_addp = lambda D: 2 * 257 * D + D * 768 + 768  # noqa: E731
    assert round((n_params(addp_b) + unused_addp(768)) / 1e6, 2) in (146.86, 146.87)
    assert round((n_params(addp_l) + unused_addp(1024)) / 1e6, 2) == 410.42
    # MAGE unused: patch_embed Conv(3, D, 16), cls, pos_embed, mask_token, decoder_pos_embed, decoder_pred
    unused_mage = lambda D: (D * 768 + D) + D + 257 * D + D + 257 * D + (D * 768 + 768)  # noqa: E731
    assert round((n_params(mage_b) + unused_mage(768) + 54_515_587) / 1e6, 2) == 200.99
    assert round((n_params(mage_l) + unused_mage(1024) + 54_515_587) / 1e6, 2) == 464.41


def test_vocab_layout_of_the_release():
    assert vocab_layout(1024) == (2025, 1100, 2024)
    assert vocab_layout(64, 1) == (66, 64, 65)
    with pytest.raises(ValueError, match="num_class_ids"):
        vocab_layout(64, 0)


def test_vqgan_state_dict_names_follow_the_release():
    keys = set(build_vqgan("maskgit_f16_1024").state_dict())
    for k in ("encoder.conv_in.weight", "encoder.down.2.block.0.nin_shortcut.weight", "encoder.mid.block_1.norm1.weight",
              "encoder.norm_out.weight", "encoder.conv_out.bias", "decoder.conv_in.bias", "decoder.up.4.upsample.conv.bias",
              "decoder.up.1.block.0.nin_shortcut.weight", "decoder.conv_out.bias", "quantize.embedding.weight"):
        assert k in keys, k
    # no quant_conv / post_quant_conv, bias-free encoder conv_in and ResBlock convs, pooling without parameters
    assert not any("quant_conv" in k or "downsample" in k for k in keys)
    assert "encoder.conv_in.bias" not in keys and "encoder.down.0.block.0.conv1.bias" not in keys
    assert "decoder.up.0.upsample.conv.weight" not in keys  # level 0 does not upsample


def test_resblock_shortcut_reads_the_residual_branch_not_the_input():
    """The MaskGIT-port quirk: with in != out the block returns nin_shortcut(h) + h, so zero convs give 0
    whatever x is; with in == out it is x + h."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4)
    for in_ch, out_ch, expect_zero in ((8, 16, True), (8, 8, False)):
        blk = ResBlock(in_ch, out_ch, 0.0, groups=4)
        torch.nn.init.zeros_(blk.conv2.weight)
        y = blk(x)
        assert torch.equal(y, torch.zeros_like(y)) if expect_zero else torch.equal(y, x)


def test_quantizer_picks_the_nearest_code_in_row_major_order():
    vq = VQGAN(VQGANConfig(ch=8, ch_mult=(1,), num_res_blocks=1, z_channels=2, embed_dim=2, n_embed=3, num_groups=4))
    vq.quantize.embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    z = torch.tensor([[2.9, 0.2], [0.9, 1.2], [0.1, -0.1], [2.0, 0.1]])  # positions (0,0) (0,1) (1,0) (1,1)
    ids, z_q = vq.quantize(z.t().reshape(1, 2, 2, 2))
    assert ids.tolist() == [[2, 1, 0, 2]]
    assert torch.equal(z_q[0, :, 0, 1], torch.tensor([1.0, 1.0]))


def test_decode_mixed_uses_expected_codes_only_at_soft_positions(monkeypatch):
    vq = build_vqgan("tiny_f4_64")
    monkeypatch.setattr(vq, "decode", lambda z: z)
    ids = torch.randint(64, (2, 4))
    probs = torch.softmax(torch.randn(2, 4, 64), -1)
    soft = torch.tensor([[True, False, False, True], [False, False, False, False]])
    z = vq.decode_mixed(ids, probs, soft).permute(0, 2, 3, 1).reshape(2, 4, -1)
    expected = torch.where(soft[..., None], probs @ vq.codebook, vq.codebook[ids])
    torch.testing.assert_close(z, expected)


def test_tokenizer_shapes_and_grid_check():
    vq = build_vqgan("tiny_f4_64")
    ids, z_q = vq.encode(torch.rand(2, 3, 32, 32))
    assert ids.shape == (2, 64) and z_q.shape == (2, 32, 8, 8)
    assert vq.decode(z_q).shape == (2, 3, 32, 32)
    assert vq.grid_size(32) == 8
    with pytest.raises(ValueError, match="not a multiple of the tokenizer stride"):
        vq.grid_size(30)
    with pytest.raises(ValueError, match="unknown tokenizer preset 'huge'.*tiny_f4_64"):
        build_vqgan("huge")


def tiny_addp(**kw):
    torch.manual_seed(0)
    return build_addp("addp_vit_tiny", codebook_size=64, dropout=0.0, **kw).eval()


def test_addp_decoder_reads_only_reliable_positions():
    """Spec §2.3: encoder features at unreliable positions and the cls feature are replaced by the mask token,
    token ids are read only where m = 0; the decoder sequence is 1 + N + n_reliable long."""
    model = tiny_addp()
    B, N = 2, model.num_tokens
    e = torch.randn(B, 1 + N, 64)
    ids = torch.randint(64, (B, N))
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[:, ::3] = True
    out = model.forward_decoder(e, ids, mask)
    assert out.shape == (B, 1 + N + int((~mask[0]).sum()), model.vocab_size)
    e2, ids2 = e.clone(), ids.clone()
    e2[:, 0] += 5.0                       # the cls feature
    e2[:, 1:][mask] += 5.0                # features at unreliable positions
    ids2[mask] = (ids2[mask] + 1) % 64    # ids at unreliable positions
    torch.testing.assert_close(model.forward_decoder(e2, ids2, mask), out)
    ids3 = ids.clone()
    ids3[~mask] = (ids3[~mask] + 1) % 64  # reliable ids matter
    assert not torch.allclose(model.forward_decoder(e, ids3, mask), out)
    e3 = e.clone()
    e3[:, 1:][~mask] += 1.0               # and so do the features at reliable positions
    assert not torch.allclose(model.forward_decoder(e3, ids, mask), out)


def test_addp_rejects_unequal_reliable_counts_and_wrong_sizes():
    model = tiny_addp()
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, :3] = True
    with pytest.raises(ValueError, match="same number of reliable tokens"):
        model(torch.rand(2, 3, 32, 32), torch.zeros(2, 64, dtype=torch.long), mask)
    with pytest.raises(ValueError, match=r"expects 32x32 images, got \(48, 48\)"):
        model.forward_encoder(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="decoder_embed_dim .* must equal embed_dim"):
        ADDP(img_size=32, patch_size=4, embed_dim=64, depth=1, num_heads=4, decoder_embed_dim=32, decoder_depth=1,
             decoder_num_heads=4, codebook_size=64)
    with pytest.raises(ValueError, match="unknown ADDP variant 'addp_vit_huge'.*addp_vit_base_patch16"):
        build_addp("addp_vit_huge", codebook_size=64)
    with pytest.raises(ValueError, match="unknown token-predictor variant 'mage_x'.*mage_vit_large_patch16"):
        build_mage("mage_x", codebook_size=64, num_tokens=64)


def test_output_projection_is_tied_but_gets_no_gradient():
    """logits = LN(GELU(fc(h))) @ token_emb.weight.detach(): with every position unreliable the input path
    is unused, so token_emb gets no gradient at all; mlm_layer.bias does."""
    model = tiny_addp()
    mask = torch.ones(2, 64, dtype=torch.bool)
    model(torch.rand(2, 3, 32, 32), torch.zeros(2, 64, dtype=torch.long), mask).logsumexp(-1).sum().backward()
    assert model.token_emb.weight.grad is None or not model.token_emb.weight.grad.any()
    assert model.mlm_layer.bias.grad.abs().sum() > 0


def test_encoder_normalises_clamped_pixels_with_buffers_that_follow_the_module():
    model = tiny_addp()
    assert "pixel_mean" not in model.state_dict()  # not in the official checkpoint
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model.forward_encoder(x * 3 - 1), model.forward_encoder((x * 3 - 1).clamp(0, 1)))
    meta = tiny_addp().to("meta")
    assert all(t.device.type == "meta" for t in list(meta.parameters()) + list(meta.buffers()))
    out = meta.forward_encoder(torch.rand(2, 3, 32, 32, device="meta"))  # (the decoder's gather is data-dependent)
    assert out.device.type == "meta" and out.shape == (2, 65, 64)


def test_sdpa_and_official_math_attention_agree_in_fp32():
    torch.manual_seed(0)
    a = Attention(64, 4, attn_impl="sdpa").eval()
    b = Attention(64, 4, attn_impl="math").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 17, 64)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown attn_impl 'flash3'"):
        Attention(64, 4, attn_impl="flash3")


def test_mage_ignores_masked_and_dropped_ids_and_starts_with_the_fake_class():
    torch.manual_seed(0)
    mage = build_mage("mage_cpu_tiny", codebook_size=64, num_tokens=64).eval()
    ids = torch.randint(64, (2, 64))
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, 10:50] = True
    seq = mage._input_ids(ids, mask)
    assert (seq[:, 0] == mage.fake_class_label).all() and (seq[:, 1:][mask] == mage.mask_token_label).all()
    p = mage.sample_tokens(ids, mask)
    assert p.shape == (2, 64, 64)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 64))
    ids2 = ids.clone()
    ids2[mask] = 0
    torch.testing.assert_close(mage.sample_tokens(ids2, mask), p)
    drop = torch.zeros_like(mask)
    drop[:, 10:42] = True                     # drop ⊆ mask, same count per row
    out = mage(ids, mask, drop)
    assert out.shape == (2, 64, mage.vocab_size)
    torch.testing.assert_close(mage(ids2, mask, drop), out)
