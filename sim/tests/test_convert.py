"""Converter: official layout -> ours / timm / detectron2, key checks, the position-table check, safe loading."""

import argparse
import os

import pytest
import torch

from repro_shared.checkpoint import CheckpointError, UntrustedCheckpointError
from sim.convert import check_pos_embed, encoder_state_dict, load_encoder_weights, read_weights
from sim.models import build_classifier, build_siameseim
from sim.tasks.convert import convert_file

TINY = dict(img_size=32, decoder_dim=64, decoder_heads=4, projector_depth=1, predictor_depth=2, num_masked=10)


def official_file(path, **changes):
    """A file in the official container layout: {model, optimizer, epoch, scaler, args (argparse.Namespace)}."""
    torch.manual_seed(1)
    model = build_siameseim("tiny", **TINY)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("mm_"):
                p.add_(0.5)  # a target branch that differs from the online one
    sd = {**model.state_dict(), **changes}
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 1599, "scaler": {"scale": 1.0},
                "args": argparse.Namespace(model="sim_vit_base_patch16", decoder_embed_dim=64)}, path)
    return sd


def test_round_trips(tmp_path):
    sd = official_file(tmp_path / "official.pth")
    rep = convert_file(str(tmp_path / "official.pth"), str(tmp_path / "ours.pth"), to="ours", variant="tiny")
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["loaded"] == len(sd)
    ours = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    convert_file(str(tmp_path / "official.pth"), str(tmp_path / "timm.pth"), to="timm", variant="tiny")
    enc = torch.load(tmp_path / "timm.pth", weights_only=True)
    vit = build_classifier("tiny", 0, img_size=32)
    missing, unexpected = vit.load_state_dict(enc, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias"} and not unexpected
    assert torch.equal(vit.blocks[1].mlp.fc1.weight, sd["blocks.1.mlp.fc1.weight"])
    convert_file(str(tmp_path / "official.pth"), str(tmp_path / "tgt.pth"), to="timm", variant="tiny", target=True)
    tgt = torch.load(tmp_path / "tgt.pth", weights_only=True)
    assert torch.equal(tgt["blocks.0.attn.qkv.weight"], sd["mm_blocks.0.attn.qkv.weight"])
    assert torch.equal(tgt["pos_embed"], sd["pos_embed"])
    convert_file(str(tmp_path / "official.pth"), str(tmp_path / "d2.pth"), to="detectron2", variant="tiny")
    assert set(torch.load(tmp_path / "d2.pth", weights_only=True)["model"]) == set(enc)


def test_finetuned_classifier_file(tmp_path):
    vit = build_classifier("tiny", 10, img_size=32)
    torch.save({"model": vit.state_dict(), "epoch": 99, "args": argparse.Namespace(nb_classes=10)}, tmp_path / "ft.pth")
    convert_file(str(tmp_path / "ft.pth"), str(tmp_path / "out.pth"), to="timm", variant="tiny")
    out = torch.load(tmp_path / "out.pth", weights_only=True)
    assert {"fc_norm.weight", "head.weight"} <= set(out)
    other = build_classifier("tiny", 10, img_size=32)
    assert load_encoder_weights(other, tmp_path / "ft.pth").ok
    torch.testing.assert_close(other.head.weight, vit.head.weight)


def test_wrong_keys_and_tables_are_refused(tmp_path):
    sd = official_file(tmp_path / "o.pth")
    with pytest.raises(CheckpointError, match="weights do not match"):
        convert_file(str(tmp_path / "o.pth"), str(tmp_path / "x.pth"), to="ours", variant="vit_base_patch16")
    # a MAE/timm column-first table is named as such
    g, c = 4, 64
    table = sd["pos_embed"][0]
    grid = table[1:].reshape(g, g, c)
    col_first = torch.cat([table[:1], torch.cat([grid[..., c // 2:], grid[..., :c // 2]], -1).reshape(-1, c)])[None]
    torch.save({"model": {**sd, "pos_embed": col_first}}, tmp_path / "mae.pth")
    with pytest.raises(ValueError, match="column-first"):
        convert_file(str(tmp_path / "mae.pth"), str(tmp_path / "y.pth"), to="timm", variant="tiny")
    assert check_pos_embed(sd["pos_embed"]) < 1e-6
    with pytest.raises(CheckpointError, match="no momentum encoder"):
        encoder_state_dict({"blocks.0.x": torch.zeros(1)}, target=True)
    with pytest.raises(ValueError, match="known: ours, timm, detectron2"):
        convert_file(str(tmp_path / "o.pth"), str(tmp_path / "z.pth"), to="mmseg", variant="tiny")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_untrusted_pickles_are_refused(tmp_path, monkeypatch):
    """A file whose pickle would call a function on load is refused, naming the type, and the call never runs;
    trust_checkpoint=true is the explicit opt-in."""
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"w": torch.zeros(1)}, "evil": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UntrustedCheckpointError, match="trust_checkpoint=true"):
        read_weights(tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "missing.pth")


def test_foreign_or_misfit_weights_give_one_line(tmp_path):
    """A file from another model (no encoder keys) or of another size fails with one line naming counts and keys."""
    torch.save({"model": {"encoder.weight": torch.zeros(3, 3)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(build_classifier("tiny", 10, img_size=32), tmp_path / "foreign.pt")
    msg = str(e.value)
    assert "\n" not in msg and "0 tensors loaded" in msg and "cls_token" in msg
    assert "not a SiameseIM" in msg
    torch.save({"model": build_classifier("tiny", 10, img_size=48).state_dict()}, tmp_path / "big.pt")
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(build_classifier("tiny", 10, img_size=32), tmp_path / "big.pt")
    msg = str(e.value)
    assert "\n" not in msg and "pos_embed: file (1, 37, " in msg and "model.variant or data.input_size" in msg


def test_convert_foreign_file_one_line(tmp_path):
    """sim-convert of a file without a ViT encoder fails with one CheckpointError line (was KeyError 'pos_embed')."""
    torch.save({"model": {"encoder.weight": torch.zeros(3, 3)}}, tmp_path / "foreign.pt")
    for to in ("ours", "timm", "detectron2"):
        with pytest.raises(CheckpointError, match=r"holds no ViT encoder .*encoder.weight"):
            convert_file(str(tmp_path / "foreign.pt"), str(tmp_path / "out.pth"), to=to, variant="tiny")
    official_file(tmp_path / "official.pth")
    with pytest.raises(CheckpointError) as e:  # a tiny file converted as ViT-B: one line with the shape example
        convert_file(str(tmp_path / "official.pth"), str(tmp_path / "out.pth"), to="timm", variant="vit_base_patch16")
    assert "\n" not in str(e.value) and "convert.variant=vit_base_patch16" in str(e.value)
