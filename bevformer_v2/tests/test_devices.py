"""Issue 18: tensors follow the model's device. CPU checks run the model on the ``meta`` device (a tensor made on
the CPU inside the forward pass would raise there); ``gpu`` tests run the default entry point and a training step
on CUDA and skip cleanly without it."""
import json
import os
import subprocess
import sys

import pytest
import torch

from bevformer_v2.data.dataset import BEVDataset, collate
from bevformer_v2.engine import to_device

CROP = (0, 8, 128, 72)
BIN = os.path.dirname(sys.executable)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _batch(infos, frames=(0,), train=True, bda=False):
    ds = BEVDataset(infos["train"], frames=frames, crop=CROP, test_height=64, train=train, bda=bda, flip=train)
    return collate([ds[0], ds[1]])


@pytest.mark.parametrize("frames,train,temporal_mode", [((0,), True, "reencode"), ((-1, 0), True, "warp"),
                                                        ((-1, 0, 1), False, "reencode")])
def test_forward_on_the_meta_device_makes_no_host_tensors(infos, make_tiny, frames, train, temporal_mode):
    model = make_tiny(frames=frames, group_detr=2, temporal_mode=temporal_mode).to("meta").train(train)
    batch = to_device(_batch(infos, frames, train, bda=train), "meta")
    all_cls, all_reg, dd3d, value = model.forward_raw(batch)
    assert all_cls.device.type == all_reg.device.type == value.device.type == "meta"
    assert all_cls.shape[:3] == (2, 2, 30 * (2 if train else 1))
    if train:
        assert all(m.device.type == "meta" for maps in dd3d.values() for m in maps)


def test_to_device_keeps_host_flags_on_the_host(infos):
    batch = to_device(_batch(infos), "meta")
    assert batch["imgs"].is_meta and batch["lidar2img"].is_meta and batch["gt_boxes"][0].is_meta
    assert batch["flip"].device.type == "cpu" and isinstance(batch["bda_identity"], bool)


def test_bi_directional_frames_take_the_current_image_from_the_middle(infos, make_tiny):
    """frames (-1, 0, 1): the current frame (offset 0) is index 1 of the T axis. The perspective head sees only
    the current frame, so changing the past or future images leaves its outputs unchanged, and changing the
    current one does not."""
    torch.manual_seed(0)
    model = make_tiny(frames=(-1, 0, 1), grid_mask=False).train()
    batch = _batch(infos, (-1, 0, 1), train=False)
    assert model.cur == 1

    def dd3d_cls(imgs):
        torch.manual_seed(0)
        with torch.no_grad():
            return model.forward_raw(dict(batch, imgs=imgs))[2]["cls"][0]

    ref = dd3d_cls(batch["imgs"])
    for t, changes in ((0, False), (2, False), (1, True)):
        imgs = batch["imgs"].clone()
        imgs[:, t] = imgs[:, t].flip(-1)
        assert (not torch.equal(dd3d_cls(imgs), ref)) == changes, t


# ------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@cuda
def test_default_entry_point_runs_a_few_steps_on_cuda(cli_overrides, tmp_path):
    out = tmp_path / "run"
    args = [a for a in cli_overrides if a != "device=cpu"]
    res = subprocess.run([f"{BIN}/bevformer-v2-train", f"hydra.run.dir={out}", "train.iters=5", "train.log_every=1",
                          *args], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "device cuda" in (out / "log.txt").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert torch.isfinite(torch.tensor(m["train_loss"])) and "NDS" in m


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("frames,two_stage", [((0,), False), ((-1, 0), True)])
def test_train_step_on_cuda_keeps_every_tensor_on_the_gpu(infos, make_tiny, tmp_path, frames, two_stage):
    import logging
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    import repro_shared.ops.msda as msda
    from bevformer_v2.engine import train
    from repro_shared.data import build_loader
    from repro_shared.logging import MetricsWriter

    calls = {"n": 0}
    real = msda.msda_triton

    def counting(*a):
        calls["n"] += 1
        return real(*a)

    msda.msda_triton = counting
    try:
        torch.manual_seed(0)
        model = make_tiny(frames=frames, group_detr=2, two_stage=two_stage).cuda()
        loader = build_loader(BEVDataset(infos["train"], frames=frames, crop=CROP, test_height=64, train=True),
                              batch_size=1, seed=0, collate_fn=collate)
        cfg = OmegaConf.create(dict(iters=3, accum=1, lr=4e-4, weight_decay=0.01, backbone_lr_mult=0.5,
                                    warmup_iters=1, warmup_ratio=1 / 3, lr_step_frac=[0.8], grad_clip=35.0,
                                    lambda_bev=1.0, lambda_pers=1.0, log_every=1, ckpt_every=0))
        ctx = SimpleNamespace(device=torch.device("cuda"), log=logging.getLogger("t"), metrics=MetricsWriter(tmp_path))
        logs = train(model, loader, cfg, ctx, groups=2)
    finally:
        msda.msda_triton = real
    assert calls["n"] > 0, "the Triton MSDA was not used on CUDA tensors"
    assert torch.isfinite(torch.tensor(logs["loss"]))
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert t.device.type == "cuda", name


@pytest.mark.gpu
@cuda
def test_model_with_triton_msda_matches_the_reference_on_cuda(infos, make_tiny):
    from bevformer_v2.losses import detector_losses, total_loss

    batch = to_device(_batch(infos, (-1, 0)), "cuda")
    results = {}
    for impl in ("reference", "triton"):
        torch.manual_seed(0)
        model = make_tiny(frames=(-1, 0), group_detr=2, grid_mask=False).cuda().train()
        for m in model.modules():
            if hasattr(m, "msda_impl"):
                m.msda_impl = impl
        for m in model.modules():  # dropout off: the two runs must see the same network
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        out = model(batch)
        loss = total_loss(detector_losses(out, batch, 2, True))
        loss.backward()
        results[impl] = (out["all_cls"].detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(results["triton"][0], results["reference"][0], atol=1e-4, rtol=1e-4)
    for n, g in results["reference"][1].items():
        torch.testing.assert_close(results["triton"][1][n], g, atol=1e-3, rtol=1e-3, msg=lambda m: f"{n}: {m}")
