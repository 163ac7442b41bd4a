"""Shared fixtures: a small synthetic nuScenes set (generated once per session) and tiny model configs."""
import sys

import pytest
import torch

TINY_HEAD = dict(bev_h=16, bev_w=16, num_query=30, group_detr=1, two_stage=False, num_proposals=10,
                 transformer=dict(frames=(0,), encoder=dict(num_layers=1, ffn_dims=64, num_heads=4),
                                  decoder=dict(num_layers=2, ffn_dims=64, num_heads=4)))


def tiny_model(frames=(0,), group_detr=1, two_stage=False, perspective=True, **kw):
    from bevformer_v2.models.bevformer_v2 import BEVFormerV2

    head = dict(TINY_HEAD, group_detr=group_detr, two_stage=two_stage)
    head["transformer"] = dict(TINY_HEAD["transformer"], frames=tuple(frames))
    return BEVFormerV2("tiny", tiny_channels=(8, 16, 32, 32), embed_dims=32, head=head, dd3d_convs=1,
                       perspective=perspective, **kw)


@pytest.fixture
def make_tiny():
    """Factory of tiny BEVFormerV2 models (C=32, BEV 16x16, 30 queries)."""
    return tiny_model


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from bevformer_v2.data.synthetic import make_synthetic_nuscenes

    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_nuscenes(root, samples_per_scene=4, objects_per_scene=12, img_w=128, img_h=72, seed=1)


@pytest.fixture(scope="session")
def nusc(synth_root):
    from nuscenes import NuScenes

    return NuScenes("v1.0-mini", str(synth_root), verbose=False)


@pytest.fixture(scope="session")
def infos(nusc):
    from nuscenes.utils.splits import create_splits_scenes

    from bevformer_v2.data.infos import build_infos

    s = create_splits_scenes()
    return dict(train=build_infos(nusc, s["mini_train"]), val=build_infos(nusc, s["mini_val"]))


CLI_OVERRIDES = ["data.synthetic.samples_per_scene=4", "data.synthetic.objects_per_scene=12",
                 "data.synthetic.img_w=128", "data.synthetic.img_h=72", "data.synthetic.seed=1",
                 "data.crop=[0,8,128,72]", "data.resize_heights=[64]", "data.test_height=64", "model.head.bev_h=16",
                 "model.head.bev_w=16", "model.head.num_query=30", "device=cpu"]


@pytest.fixture(scope="session")
def cli_overrides(synth_root):
    """Hydra overrides that point the entry points at the session's small synthetic set and shrink the model."""
    return [f"data.root={synth_root}", *CLI_OVERRIDES]


@pytest.fixture
def run_entry(monkeypatch):
    """Run a Hydra entry point (``bevformer_v2.cli.train`` / ``evaluate_cli``) in this process with CLI
    arguments; returns the message of the ``SystemExit`` it stopped with (None when it finished). Saves the
    interpreter start-up and imports of a subprocess; the ``error: ...`` exits are the same code path."""
    def run(entry, *args):
        monkeypatch.setattr(sys, "argv", ["bevformer-v2", *args])
        try:
            entry()
        except SystemExit as e:
            return str(e.code)
        return None
    return run


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield
