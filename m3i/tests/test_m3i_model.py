"""The M3I model: mixing bookkeeping, token mix == pixel mix, EMA target without gradients, geometry routing,
InternImage path, device following, and the supervised special case."""

import pytest
import torch

from repro_shared.ssl.geometry import absolute_sincos_embedding
from repro_shared.ssl.momentum import momentum_pairs
from m3i.losses import M3IObjective, category_loss
from m3i.models.internimage import InternImage
from m3i.models.m3i import M3IModel, mix_pixels, split_by_mix
from m3i.models.text import TextTower
from m3i.models.vit import build_vit


def vit_model(**kw):
    torch.manual_seed(0)
    bb = build_vit("tiny", embed_dim=32, num_heads=2, depth=2, global_dim=16, pool_heads=2)
    text = TextTower(20, 8, 16, 1, 2, out_dim=16) if kw.pop("text", True) else None
    args = dict(grid_size=8, patch=4, count_a=32, decoder_dim=16, decoder_heads=2, projector_depth=1,
                predictor_depth=1, num_classes=10, text_tower=text)
    return M3IModel(bb, **{**args, **kw})


def batch(b=4, n=64, k=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    v1, v2 = torch.randn(b, 3, 32, 32, generator=g), torch.randn(b, 3, 32, 32, generator=g)
    geo = torch.tensor([[0.1, -0.2, 0.8, 1.1, 0.0, 1.0]]).repeat(b, 1)
    mix = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        mix[i, torch.randperm(n, generator=g)[:k]] = True
    text = torch.randint(4, 20, (b, 8), generator=g)
    return v1, v2, geo, mix, text


def test_split_by_mix_counts_add_up_and_keep_row_major_order():
    mix = torch.tensor([[True, False, True, False, False, True], [False, True, True, True, False, False]])
    a, rest = split_by_mix(mix, 3)
    assert a.tolist() == [[0, 2, 5], [1, 2, 3]] and rest.tolist() == [[1, 3, 4], [0, 4, 5]]


def test_token_mixing_equals_pixel_mixing_at_patch_granularity():
    model = vit_model().eval()
    v1, _, _, mix, _ = batch()
    xb = v1.roll(1, 0)
    tok = model.backbone.forward_dense(v1, xb, mix)
    pix = model.backbone.forward_dense(mix_pixels(v1, xb, mix, 4))
    torch.testing.assert_close(tok, pix, atol=1e-5, rtol=1e-5)
    px = mix_pixels(v1, xb, mix, 4)  # patch (r, c) comes from A exactly where mix says so
    r, c = 2, 5
    src = v1 if mix[0, r * 8 + c] else xb
    assert torch.equal(px[0, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4], src[0, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])


def test_forward_shapes_and_the_ema_target_never_gets_gradients():
    model = vit_model().train()
    v1, v2, geo, mix, text = batch()
    out = model(v1, v2, geo, mix, text)
    assert out.pred_intra.shape == out.target_intra.shape == (4, 32, 16)
    assert out.pred_inter.shape == out.target_inter.shape == (4, 64, 16)
    assert out.logits_a.shape == out.logits_b.shape == (4, 10) and out.text.shape == (4, 16)
    assert not model.target.training and not out.target_inter.requires_grad
    labels, has_text = torch.tensor([1, 2, -1, 3]), torch.ones(4, dtype=torch.bool)
    M3IObjective()(out, labels, has_text)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trained == [], trained  # every trainable parameter takes part (DDP needs no unused-parameter search)


def test_momentum_update_is_the_ema_formula_over_backbone_decoder_embed_and_projector():
    model = vit_model()
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in model.target.state_dict().items()}
    model.momentum_update(0.9)
    online = model.online.state_dict()
    for k, v in model.target.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * online[k])
    assert any(k.startswith("backbone.blocks") for k in before) and any(k.startswith("projector") for k in before)



def _fake_zero3(model, persist_online=True):
    """ZeRO-3's parameter attributes without DeepSpeed: every parameter gets a partition (``ds_tensor``, here the
    first half of its values) and is kept replicated (``ds_persist``), as ZeRO-3 does for small parameters."""
    for branch, persist in ((model.target, True), (model.online, persist_online)):
        for p in branch.parameters():
            p.ds_tensor = p.data.flatten()[: max(1, p.numel() // 2)].clone()
            p.ds_persist, p.ds_shape = persist, p.shape


def test_momentum_update_under_zero3_reaches_partitions_and_replicated_full_copies():
    """The forward reads a replicated parameter's full copy, and ZeRO-3 refreshes full copies only for the
    parameters its optimizer owns: the EMA must update the target's partitions and its full copies alike."""
    model = vit_model()
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    _fake_zero3(model)
    tgt, onl = momentum_pairs(model.online, model.target)
    full_before = [p.data.clone() for p in tgt]
    part_before = [p.ds_tensor.clone() for p in tgt]
    model.momentum_update(0.9)
    for p, o, fb, pb in zip(tgt, onl, full_before, part_before):
        torch.testing.assert_close(p.data, 0.9 * fb + 0.1 * o.data)
        torch.testing.assert_close(p.ds_tensor, 0.9 * pb + 0.1 * o.ds_tensor)
    model = vit_model()
    _fake_zero3(model, persist_online=False)
    with pytest.raises(ValueError, match="keeps a target-network parameter replicated but not its online twin"):
        model.momentum_update(0.9)

def test_identity_queries_carry_the_absolute_positions_and_inter_queries_the_geometry_of_image_i_minus_1():
    model = vit_model().eval()
    torch.testing.assert_close(model.identity_query_pos[0, :, :16], absolute_sincos_embedding(16, 8, cls_token=False))
    v1, v2, geo, mix, text = batch()
    base = model(v1, v2, geo, mix, text).pred_inter
    geo2 = geo.clone()
    geo2[1, 0] += 0.3  # move image 1's second view: only sample 2 (whose B is image 1) may change
    moved = model(v1, v2, geo2, mix, text).pred_inter
    changed = [(moved[i] - base[i]).abs().max().item() > 1e-6 for i in range(4)]
    assert changed == [False, False, True, False]


def test_supervised_special_case_equals_ce_on_each_images_pooled_feature():
    model = vit_model(text=False, dense=False)
    assert model.target is None and not hasattr(model, "predictor")
    v1, v2, geo, mix, _ = batch()
    labels = torch.tensor([3, 1, 4, 1])
    out = model(v1, v2, geo, mix)
    loss = M3IObjective(cls=1, txt=0, intra=0, inter=0)(out, labels, None)["loss"]
    tokens = model.backbone.forward_dense(v1, v1.roll(1, 0), mix)
    ha, hb = model.backbone.forward_global(tokens, mix), model.backbone.forward_global(tokens, ~mix)
    manual = category_loss(model.head(ha), labels) + category_loss(model.head(hb), labels.roll(1, 0))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # pooling over one image's tokens only: the other image's tokens do not move it
    tok2 = tokens.clone()
    tok2[~mix] += 5.0
    torch.testing.assert_close(model.backbone.forward_global(tok2, mix), ha)


def test_without_a_second_image_b_is_zeros_and_only_the_intra_view_target_remains():
    model = vit_model(second_image=False, text=False).eval()
    v1, v2, geo, mix, _ = batch()
    out = model(v1, v2, geo, mix)
    assert out.pred_inter is None and out.logits_b is None and out.pred_intra.shape == (4, 32, 16)
    tokens = model.backbone.forward_dense(mix_pixels(v1, torch.zeros_like(v1), mix, 4))
    torch.testing.assert_close(model.backbone.forward_global(tokens, mix), out.global_a, atol=1e-5, rtol=1e-5)


def test_internimage_backbone_mixes_pixels_and_runs_forward_backward():
    torch.manual_seed(0)
    bb = InternImage(core_op="DCNv3_pytorch", channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8], num_classes=0,
                     use_clip_projector=True, pretrain_embed_dim=32, attnpool_num_heads=4, clip_embed_dim=16,
                     center_feature_scale=True, res_post_norm=True, dw_kernel_size=5, drop_path_rate=0.0)
    model = M3IModel(bb, grid_size=4, patch=16, count_a=8, decoder_dim=16, decoder_heads=2, projector_depth=1,
                     predictor_depth=1, num_classes=5)
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    mix = torch.zeros(2, 16, dtype=torch.bool)
    mix[:, ::2] = True
    out = model(v1, v2, torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]] * 2), mix)
    torch.testing.assert_close(model.encode(v1, v1.roll(1, 0), mix), bb.forward_dense(mix_pixels(v1, v1.roll(1, 0), mix, 16)))
    loss = M3IObjective(txt=0)(out, torch.tensor([0, 4]), None)["loss"]
    loss.backward()
    assert bb.levels[0].blocks[0].dcn.offset.weight.grad is not None


def test_buffers_follow_the_model_to_another_device():
    model = vit_model().to("meta")
    v1, v2, geo, mix, text = (t.to("meta") for t in batch())
    out = model(v1, v2, geo, mix, text)
    assert out.pred_inter.device.type == "meta" and out.target_intra.device.type == "meta"


def test_configuration_errors_are_clear():
    bb = build_vit("tiny", embed_dim=32, num_heads=2, depth=1, global_dim=16, pool_heads=2)
    with pytest.raises(ValueError, match="count_a .* must be in 1..63"):
        M3IModel(bb, grid_size=8, patch=4, count_a=64)
    with pytest.raises(ValueError, match="out_dim 8 must equal the image global width 16"):
        M3IModel(bb, grid_size=8, patch=4, count_a=32, text_tower=TextTower(10, 8, 8, 1, 2, out_dim=8))
    with pytest.raises(ValueError, match="unknown ViT variant 'vit_giant'; known: tiny, vit_base_patch16"):
        build_vit("vit_giant")
