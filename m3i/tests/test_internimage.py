"""InternImage: official layout and parameter counts, every flag, checkpointing, layer decay, converter round trip."""

import pickle

import pytest
import torch
import torch.nn.functional as F
from official_layout import OFFICIAL, official_layout

from repro_shared.checkpoint import UntrustedCheckpointError
from m3i.convert import convert_internimage, infer_internimage_config, read_state_dict
from m3i.models.dcnv3 import DCNv3
from m3i.models.internimage import InternImage, build_internimage, internimage_param_groups

#: published sizes: T/S/B from the HF model listing (0.1 M), L/XL from the README (1 M), H "1.08B" (README),
#: G "3B" (README); our counts include the 1000-class head of the released IN-1k checkpoints
PUBLISHED = {"t": (29.9e6, 0.05e6), "s": (50.1e6, 0.05e6), "b": (97.5e6, 0.05e6), "l": (223e6, 0.5e6),
             "xl": (335e6, 0.5e6), "g": (3e9, 0.5e9)}


def meta_model(variant, **kw):
    with torch.device("meta"):
        return build_internimage(variant, **kw)


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_state_dict_has_the_official_keys_and_shapes(variant):
    ours = {k: tuple(v.shape) for k, v in meta_model(variant, num_classes=1000).state_dict().items()}
    assert ours == official_layout(**OFFICIAL[variant], num_classes=1000)


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_parameter_counts_match_the_published_ones(variant):
    n = sum(p.numel() for p in meta_model(variant, num_classes=1000).parameters())
    if variant == "h":  # "1.08B" in the README is our 1,089,636,760 truncated to two decimals
        assert 1.08e9 <= n < 1.09e9, n
    else:
        want, tol = PUBLISHED[variant]
        assert abs(n - want) <= tol, (variant, n)


def tiny(**kw):
    cfg = dict(core_op="DCNv3_pytorch", channels=16, depths=[1, 1, 3, 1], groups=[1, 2, 4, 8], num_classes=5,
               drop_path_rate=0.0)
    return InternImage(**{**cfg, **kw})


def tiny_h(**kw):
    return tiny(dw_kernel_size=5, res_post_norm=True, level2_post_norm=True, level2_post_norm_block_ids=[0, 2],
                center_feature_scale=True, use_clip_projector=True, pretrain_embed_dim=32, attnpool_num_heads=4,
                clip_embed_dim=24, **kw)


def test_tiny_models_run_forward_and_backward_with_the_pytorch_core():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for model in (tiny(), tiny_h(), tiny(post_norm=True, layer_scale=1e-5)):
        out = model(x)
        assert out.shape == (2, 5)
        out.square().sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    seq = tiny().forward_features_seq_out(x)
    assert [tuple(s.shape) for s in seq] == [(2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 64), (2, 2, 2, 128)]
    dense = tiny_h().forward_dense(x)
    assert dense.shape == (2, 16, 32)  # stride 16 grid (4 x 4) of pretrain_embed_dim tokens


def test_the_three_residual_forms_follow_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 6, 16)
    for flags in (dict(), dict(post_norm=True), dict(post_norm=True, layer_scale=0.3), dict(layer_scale=0.3),
                  dict(res_post_norm=True)):
        blk = tiny(**flags).levels[0].blocks[0]
        for p in blk.parameters():  # move every norm / scale away from its init
            p.data.add_(0.1 * torch.randn_like(p))
        d, m, n1, n2 = blk.dcn, blk.mlp, blk.norm1, blk.norm2
        g1 = blk.gamma1 if "layer_scale" in flags else 1.0
        g2 = blk.gamma2 if "layer_scale" in flags else 1.0
        if flags.get("post_norm"):
            y = x + g1 * n1(d(x))
            y = y + g2 * n2(m(y))
        elif flags.get("res_post_norm"):
            y = x + blk.res_post_norm1(d(n1(x)))
            y = y + blk.res_post_norm2(m(n2(y)))
        else:
            y = x + g1 * d(n1(x))
            y = y + g2 * m(n2(y))
        torch.testing.assert_close(blk(x), y)


def test_level2_post_norms_follow_their_blocks_and_stage_norm_rules():
    model = tiny_h()
    calls = []
    stage = model.levels[2]
    for j, b in enumerate(stage.blocks):
        b.register_forward_hook(lambda *_, j=j: calls.append(f"block{j}"))
    for k, n in enumerate(stage.post_norms):
        n.register_forward_hook(lambda *_, k=k: calls.append(f"post{k}"))
    stage.norm.register_forward_hook(lambda *_: calls.append("norm"))
    model(torch.randn(1, 3, 64, 64))
    assert calls == ["block0", "post0", "block1", "block2", "post1", "norm"]
    assert not hasattr(tiny(post_norm=True).levels[0], "norm")                        # S/B/L/XL: no stage norm
    assert hasattr(tiny(post_norm=True, center_feature_scale=True).levels[0], "norm")  # G: stage norm


def test_dcnv3_module_at_init_is_a_box_filter_gated_by_the_centre_feature_scale():
    torch.manual_seed(0)
    dcn = DCNv3(channels=8, group=2, center_feature_scale=True, impl="reference")
    x = torch.randn(2, 5, 5, 8)
    v = dcn.input_proj(x)
    box = F.avg_pool2d(v.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=True).permute(0, 2, 3, 1)
    torch.testing.assert_close(dcn(x), dcn.output_proj(0.5 * box + 0.5 * v))  # uniform 1/9 mask, s = sigmoid(0)


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    a, b = tiny_h(), tiny_h(with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ga = torch.autograd.grad(a(x).sum(), list(a.parameters()))
    gb = torch.autograd.grad(b(x).sum(), list(b.parameters()))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_lr_decay_keywords_and_param_groups_follow_the_official_rules():
    model = tiny(depths=[2, 2, 2, 2], groups=[1, 1, 1, 1])
    r = model.lr_decay_keywords(0.5)
    assert r["levels.3.blocks.1."] == 1.0 and r["levels.3.blocks.0."] == 0.5 and r["levels.2.blocks.1."] == 0.25
    assert r["levels.0.blocks.0."] == 0.5 ** 7 and r["patch_embed"] == 0.5 ** 7
    assert r["levels.0.downsample"] == r["levels.1.blocks.0."] == 0.5 ** 5 and r["levels.2.norm"] == 0.5
    groups = internimage_param_groups(model, 0.05, 1e-3, layer_decay=0.5, dcn_lr_mul=0.1)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["levels.3.blocks.1.dcn.offset.weight"])] == pytest.approx((1e-4, 0.05))
    assert lr_of[id(named["levels.3.blocks.1.dcn.mask.weight"])] == pytest.approx((1e-3, 0.05))  # mask not scaled
    assert lr_of[id(named["levels.3.blocks.0.mlp.fc1.bias"])] == pytest.approx((5e-4, 0.0))
    assert lr_of[id(named["patch_embed.conv1.weight"])] == pytest.approx((1e-3 * 0.5 ** 7, 0.05))
    assert lr_of[id(named["head.weight"])] == pytest.approx((1e-3, 0.05))
    assert sum(len(g["params"]) for g in groups) == len(named)
    plain = internimage_param_groups(model, 0.05, 1e-3, dcn_lr_mul=0.1)  # official: no DCN mult without layer decay
    assert {g["lr"] for g in plain} == {1e-3}


def test_buffers_and_every_computation_follow_the_module_to_another_device():
    model = tiny_h().to("meta")
    out = model(torch.randn(2, 3, 64, 64, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 5)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown InternImage variant 'xxl'; known: t, s, b, l, xl, h, g"):
        build_internimage("xxl")
    with pytest.raises(ValueError, match="unknown core_op 'DCNv4'; known: DCNv3, DCNv3_pytorch, DCNv3_triton"):
        tiny(core_op="DCNv4")


# ----------------------------------------------------------------------------------------------- converter
def synthetic_official(layout: dict, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(3) if s == () else torch.randn(s, generator=g)) for k, s in layout.items()}


def test_converter_round_trip_of_a_synthetic_official_checkpoint(tmp_path):
    layout = official_layout(16, [1, 1, 3, 1], [1, 2, 4, 8], num_classes=7, res_post_norm=True,
                             center_feature_scale=True, level2_ids=[0, 2], use_clip_projector=True, dw_kernel_size=5,
                             pretrain_dim=32, clip_dim=24)
    sd = synthetic_official(layout)
    path = tmp_path / "internimage_tiny_h.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)
    loaded = read_state_dict(path)
    cfg = infer_internimage_config(loaded)
    assert cfg["res_post_norm"] and cfg["center_feature_scale"] and cfg["use_clip_projector"] and not cfg["post_norm"]
    assert cfg["dw_kernel_size"] == 5 and cfg["groups"] == [1, 2, 4, 8] and cfg["num_classes"] == 7
    model, report = convert_internimage(loaded, None, level2_post_norm_block_ids=[0, 2], attnpool_num_heads=4,
                                        core_op="DCNv3_pytorch")
    assert report.ok and len(report.loaded) == len(sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    model.eval()(torch.randn(1, 3, 64, 64))  # the converted model runs


@pytest.mark.parametrize("variant", ["h", "g", "t", "xl"])
def test_converter_accepts_the_full_size_official_layout_and_checks_the_head_constants(variant):
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in official_layout(**OFFICIAL[variant], num_classes=21841).items()}
        model, report = convert_internimage(sd, variant)
    assert report.ok and model.head.out_features == 21841
    if variant == "h":
        bad = dict(sd)
        bad["clip_projector.cross_dcn.proj.weight"] = torch.empty(512, 1024, device="meta")
        with pytest.raises(ValueError, match="clip_embed_dim=512; the official model has 1024 and 768"):
            convert_internimage(bad, "h")
        with pytest.raises(ValueError, match="not an InternImage-G: channels: file 320 vs g 512"):
            convert_internimage(sd, "g")


def test_converter_reads_safetensors_with_the_transformers_prefix_and_refuses_pickled_code(tmp_path):
    from safetensors.torch import save_file

    sd = synthetic_official(official_layout(16, [1, 1, 1, 1], [1, 2, 4, 8], num_classes=3))
    save_file({"model." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    assert read_state_dict(tmp_path / "w.safetensors").keys() == sd.keys()
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(flag), "w"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": sd, "payload": Evil()}, f, protocol=2)
    with pytest.raises(UntrustedCheckpointError, match="trust_checkpoint=true"):
        read_state_dict(tmp_path / "evil.pth")
    assert not flag.exists()
