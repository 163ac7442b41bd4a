"""Converter: official key layouts -> our modules key by key; loading errors list the keys; safe loading."""

import functools
import pickle

import pytest
import torch

from addp.convert import (ADDP_UNUSED, MAGE_UNUSED, finetune_backbone_state_dict, load_strict, mage_state_dict,
                          resize_pos_embed, split_addp_state_dict)
from addp.models.addp import build_addp
from addp.models.mage import build_mage
from addp.models.vqgan import build_vqgan
from addp.weights import load_addp, load_teacher, load_tokenizer, read_weights, save_weights
from repro_shared.checkpoint import CheckpointError, UntrustedCheckpointError

from official_layout import official_addp, official_mage


def test_full_size_addp_b_checkpoint_layout_converts_key_by_key():
    """Random ViT-B-sized official layout (meta tensors: shapes only): every tensor lands in our three modules
    with its shape; exactly the unused tensors and the tokenizer's second copy are dropped."""
    with torch.device("meta"):
        tok = build_vqgan("maskgit_f16_1024")
        teacher = build_mage("mage_vit_base_patch16", codebook_size=1024, num_tokens=256)
        model = build_addp("addp_vit_base_patch16", codebook_size=1024)
        sd = official_addp(model, tok, teacher, patch=16, meta=True)
        parts = split_addp_state_dict(sd)
        fresh = {"model": build_addp("addp_vit_base_patch16", codebook_size=1024), "vqgan": build_vqgan(),
                 "token_predictor": build_mage("mage_vit_base_patch16", codebook_size=1024, num_tokens=256)}
    for name, module in fresh.items():
        report = load_strict(module, parts[name], name)
        assert report.ok and len(report.loaded) == len(module.state_dict())
    n_vq = len(tok.state_dict())
    expected_dropped = set(ADDP_UNUSED) | {"token_predictor.vqgan." + k for k in tok.state_dict()} | \
        {"token_predictor." + k for k in MAGE_UNUSED}
    assert set(parts["dropped"]) | {"token_predictor." + k for k in MAGE_UNUSED} == expected_dropped
    assert len(sd) == (len(parts["model"]) + n_vq + len(parts["token_predictor"]) + len(parts["dropped"])
                       + len(MAGE_UNUSED))


@pytest.fixture()
def tiny_modules():
    torch.manual_seed(0)
    tok = build_vqgan("tiny_f4_64")
    teacher = build_mage("mage_cpu_tiny", codebook_size=64, num_tokens=64)
    model = build_addp("addp_vit_tiny", codebook_size=64)
    return tok, teacher, model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_through_official_files(tmp_path, tiny_modules):
    tok, teacher, model = tiny_modules
    addp_file = tmp_path / "addp-official.pth"
    torch.save({"model": official_addp(model, tok, teacher, patch=4), "epoch": 1599}, addp_file)
    kw = dict(codebook_size=64)
    assert _same(load_addp(addp_file, variant="addp_vit_tiny", **kw), model)
    assert _same(load_tokenizer(addp_file, preset="tiny_f4_64"), tok)
    assert _same(load_teacher(addp_file, variant="mage_cpu_tiny", num_tokens=64, **kw), teacher)
    mage_file = tmp_path / "mage.pth"
    torch.save({"model": official_mage(teacher, tok, patch=4)}, mage_file)
    assert _same(load_teacher(mage_file, variant="mage_cpu_tiny", num_tokens=64, **kw), teacher)
    vq_file = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": {**tok.state_dict(), "loss.discriminator.main.0.weight": torch.randn(2)}}, vq_file)
    loaded = load_tokenizer(vq_file, preset="tiny_f4_64")
    assert _same(loaded, tok) and not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    # ours -> file -> ours, rebuilt from the stored constructor arguments
    ours = tmp_path / "ours.pt"
    save_weights(ours, model, "addp", dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4,
                                           decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4,
                                           num_class_ids=1, codebook_size=64))
    assert _same(load_addp(ours, variant="ignored_for_our_files", codebook_size=64), model)
    with pytest.raises(CheckpointError, match="holds 'addp' weights, but a tokenizer file was expected"):
        load_tokenizer(ours)


def test_missing_unexpected_and_mismatched_keys_are_errors_that_list_them(tiny_modules):
    tok, teacher, model = tiny_modules
    sd = split_addp_state_dict(official_addp(model, tok, teacher, patch=4))["model"]
    fresh = build_addp("addp_vit_tiny", codebook_size=64)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    bad = dict(sd)
    del bad["decoder_norm.weight"]
    bad["blocks.9.attn.qkv.weight"] = torch.zeros(1)
    bad["mask_token"] = torch.zeros(1, 1, 32)
    with pytest.raises(CheckpointError) as err:
        load_strict(fresh, bad, "ADDP", "x.pth")
    msg = str(err.value)
    assert "decoder_norm.weight" in msg and "blocks.9.attn.qkv.weight" in msg and "mask_token" in msg
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # nothing was loaded
    with pytest.raises(CheckpointError, match="differs from its tokenizer copy"):
        off = official_addp(model, tok, teacher, patch=4)
        off["token_predictor.vqgan.decoder.conv_out.bias"] = off["token_predictor.vqgan.decoder.conv_out.bias"] + 1
        split_addp_state_dict(off)
    assert set(mage_state_dict(official_mage(teacher, tok, patch=4))) == set(teacher.state_dict())


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/addp_pickle_exploit_ran", "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    import os

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "x": _Exploit()}, f)
    if os.path.exists("/tmp/addp_pickle_exploit_ran"):
        os.remove("/tmp/addp_pickle_exploit_ran")
    with pytest.raises(UntrustedCheckpointError, match="evil.pth.*trust_checkpoint=true"):
        read_weights(path, "addp")
    assert not os.path.exists("/tmp/addp_pickle_exploit_ran")


def test_missing_weight_files_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer tokenizer.path is not set; expected the official "
                                                 "vqgan_jax_strongaug.ckpt"):
        load_tokenizer(None)
    with pytest.raises(FileNotFoundError, match=r"teacher teacher.path = '/nope.pth' does not exist.*mage-vit"):
        load_teacher("/nope.pth", variant="mage_cpu_tiny", codebook_size=64, num_tokens=64)


def test_finetune_backbone_export_and_position_resize(tiny_modules):
    import timm

    _, _, model = tiny_modules
    for keep in (False, True):
        sd = finetune_backbone_state_dict(model.state_dict(), keep_tokenizer_norm=keep)
        vit = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, num_classes=10, global_pool="avg",
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
        if keep:  # timm's pre_norm=True would drop the patch-embedding bias the checkpoint has
            vit.norm_pre = torch.nn.LayerNorm(64, eps=1e-6)
        missing, unexpected = vit.load_state_dict(sd, strict=False)
        assert not unexpected and sorted(missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert ("norm_pre.weight" in sd) == keep and not any(k.startswith(("norm.", "tokenizer_norm")) for k in sd)
    pe = torch.randn(1, 1 + 16, 8)
    assert resize_pos_embed(pe, 4) is pe
    const = torch.ones(1, 1 + 16, 8)
    out = resize_pos_embed(const, 6)
    assert out.shape == (1, 1 + 36, 8)
    torch.testing.assert_close(out, torch.ones_like(out))
    sd = finetune_backbone_state_dict(model.state_dict(), new_grid=14)
    assert sd["pos_embed"].shape == (1, 1 + 196, 64)
    assert torch.equal(sd["pos_embed"][:, 0], model.pos_embed[:, 0].detach())
