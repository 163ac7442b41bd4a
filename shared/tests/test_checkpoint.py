"""Atomic, verified checkpoints; resume after SIGKILL; remapping loader for official weights."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from repro_shared import checkpoint
from repro_shared.checkpoint import CheckpointError

HERE = Path(__file__).parent


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _save(tmp_path, step=3, **kw):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    path = checkpoint.save_checkpoint(checkpoint.checkpoint_path(tmp_path, step), model=model, optimizer=opt,
                                      step=step, epoch=1, config={"lr": 1e-2}, extra={"best": 0.5}, **kw)
    return path, model, opt


def test_roundtrip_restores_everything(tmp_path):
    path, model, opt = _save(tmp_path)
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    path2 = checkpoint.save_checkpoint(tmp_path / "ckpt_000000004.pt", model=model, optimizer=opt, step=4)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    state = checkpoint.load_checkpoint(path2, model=fresh, optimizer=fresh_opt)
    assert state["step"] == 4
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    first = checkpoint.load_checkpoint(path, restore_rng=False)
    assert first["config"] == {"lr": 1e-2} and first["extra"] == {"best": 0.5} and first["epoch"] == 1


def test_truncated_checkpoint_is_rejected_and_model_untouched(tmp_path):
    path, _, _ = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    target = _model()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_checkpoint(path, model=target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_corrupt_and_unmarked_checkpoints_are_rejected(tmp_path):
    path, _, _ = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load_checkpoint(path)
    (tmp_path / "ckpt_000000003.pt.done").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_checkpoint(tmp_path / "nope.pt")


def test_model_mismatch_is_reported_before_loading(tmp_path):
    path, _, _ = _save(tmp_path)
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    before = other[0].weight.clone()
    with pytest.raises(CheckpointError, match="shape-mismatched"):
        checkpoint.load_checkpoint(path, model=other)
    assert torch.equal(other[0].weight, before)  # the fitting layer was not loaded either


def test_auto_resume_skips_invalid_newest_and_prunes(tmp_path):
    _save(tmp_path, step=1)
    _save(tmp_path, step=2)
    newest, _, _ = _save(tmp_path, step=3)
    newest.with_name(newest.name + ".done").unlink()  # as if killed while writing the marker
    assert checkpoint.find_latest_checkpoint(tmp_path).name == "ckpt_000000002.pt"
    state = checkpoint.resume(tmp_path, "auto", model=_model())
    assert state["step"] == 2
    assert checkpoint.resume(tmp_path, None, model=_model()) is None
    assert checkpoint.resume(tmp_path / "empty", "auto", model=_model()) is None
    _save(tmp_path, step=4, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_000000003.pt", "ckpt_000000004.pt"]


def test_sigkill_then_auto_resume_matches_uninterrupted_run(tmp_path):
    script = HERE / "resume_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, str(script), str(tmp_path / "full"), "-1"], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    # killed with SIGKILL at step 13 (last checkpoint at step 10): steps 11-13 are lost and redone
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "13"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "final.pt").exists()
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "-1"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step 10" in resumed.stdout
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Official(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)


def test_remapped_loader_reports_and_loads():
    src = {"module.backbone.proj.weight": torch.ones(8, 4), "module.backbone.proj.bias": torch.ones(8),
           "module.fc.weight": torch.ones(5, 8), "module.extra_token": torch.ones(1)}
    model = _Official()
    report = checkpoint.load_state_dict_remapped(
        model, src, strip_prefixes=("module.",), rename=[(r"^backbone\.proj\.", "patch_embed."), (r"^fc\.", "head.")]
    )
    assert report.loaded == ["patch_embed.bias", "patch_embed.weight"]
    assert report.unexpected == ["extra_token"]
    assert report.mismatched == [("head.weight", (5, 8), (3, 8))]
    assert report.missing == ["head.bias"]
    assert torch.equal(model.patch_embed.weight, torch.ones(8, 4))
    assert not report.ok and "shape mismatch head.weight" in str(report)
    with pytest.raises(CheckpointError, match="do not match"):
        checkpoint.load_state_dict_remapped(_Official(), src, strip_prefixes=("module.",), strict=True)


def test_weights_file_errors(tmp_path):
    good = tmp_path / "w.pth"
    torch.save({"state_dict": {"a": torch.zeros(2)}, "meta": "x"}, good)
    assert list(checkpoint.load_weights_file(good)) == ["a"]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load_weights_file(bad)


def test_config_differences_and_check_same_run(tmp_path):
    from repro_shared.checkpoint import check_same_run, config_differences, flatten_config

    assert flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    saved = {"train": {"lr": 0.01, "resume": "auto"}, "eval": {"bs": 8}, "data": {"root": "a", "root_x": 1}}
    here = {"train": {"lr": 0.02, "resume": None}, "eval": {"bs": 2}, "data": {"root": "b", "root_x": 2}, "new": 1}
    assert config_differences(saved, here, ("train.resume", "eval.", "data.root")) == [
        "data.root_x: 2 here, 1 saved", "new: 1 here, None saved", "train.lr: 0.02 here, 0.01 saved"]
    assert config_differences(saved, saved) == []

    ckpts = tmp_path / "checkpoints"
    assert check_same_run(ckpts, here) is None  # nothing to compare with
    model = nn.Linear(2, 2)
    checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpts, 3), model=model, step=3, config=saved)
    with pytest.raises(ValueError, match=r"another configuration \(data.root_x: 2 here, 1 saved; new: 1 here, None "
                                         r"saved; train.lr.*train.resume=none to start over"):
        check_same_run(ckpts, here, ("train.resume", "eval.", "data.root"))
    same_but_paths = {**saved, "data": {"root": "/elsewhere", "root_x": 1}}
    assert check_same_run(ckpts, same_but_paths, ("data.root",)) == checkpoint.checkpoint_path(ckpts, 3)
