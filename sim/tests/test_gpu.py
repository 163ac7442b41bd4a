"""GPU smoke tests (skipped without CUDA): each entry point's default for a few steps on CUDA, finite losses,
every parameter and buffer on the GPU; the CUDA forward equals the CPU forward."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_pretrain_steps_on_cuda(tmp_path, compose_config):
    from repro_shared.data import build_loader
    from sim.data import SiameseIMTransform, build_pretrain_dataset
    from sim.engine import pretrain_one_epoch
    from sim.tasks.common import build_pretrain_model

    cfg = compose_config("pretrain", ["data.train_subset=64", "train.batch_size=32"], tmp_path)
    dev = torch.device("cuda")
    model = build_pretrain_model(cfg).to(dev)
    ds = build_pretrain_dataset(cfg.data, SiameseIMTransform(32, 8, 10, crop_min=0.2, min_mask_block=4))
    loader = build_loader(ds, batch_size=32, seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for precision in ("fp32", "bf16", "fp16"):
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        loader.set_epoch(0)
        out = pretrain_one_epoch(model, loader, opt, scaler, epoch=0, epochs=1, lr=1e-3, warmup_epochs=0.5,
                                 base_momentum=0.99, neg_weight=0.02, clip_grad=1.0, device=dev, precision=precision)
        assert torch.isfinite(torch.tensor(out["loss"]))
    assert all(t.is_cuda for t in list(model.parameters()) + list(model.buffers()))


def test_entry_points_run_on_cuda(tmp_path, compose_config):
    from sim import tasks

    res = tasks.run_pretrain(compose_config("pretrain", ["data.train_subset=64", "train.batch_size=32",
                                                         "train.epochs=1", "device=cuda"], tmp_path / "pre"))
    assert torch.isfinite(torch.tensor(res["train_loss"])) and res["probe_top1"] > 10
    ft = tasks.run_classifier(compose_config("finetune", ["data.train_subset=64", "train.batch_size=32",
                                                          "train.epochs=1", "device=cuda"], tmp_path / "ft"),
                              mode="finetune")
    assert ft["top1"] is not None
    det = tasks.run_detection(compose_config("det", ["train.epochs=1", "data.num_train=16", "data.num_val=8",
                                                     "device=cuda"], tmp_path / "det"))
    assert torch.isfinite(torch.tensor(det["train_loss"]))
    seg = tasks.run_segmentation(compose_config("seg", ["train.epochs=1", "data.num_train=16", "data.num_val=4",
                                                        "device=cuda"], tmp_path / "seg"))
    assert torch.isfinite(torch.tensor(seg["train_loss"]))


def test_cuda_forward_equals_cpu():
    from sim.models import build_siameseim

    torch.manual_seed(0)
    m = build_siameseim("tiny", img_size=32, decoder_dim=64, decoder_heads=4, projector_depth=1, predictor_depth=2,
                        num_masked=10).eval()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    geo = torch.tensor([[0.1, -0.2, 1.3, 0.8, 1.0, 0.6]]).repeat(4, 1)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, :10] = True
    cpu = m(x1, x2, geo, mask)
    gpu = m.cuda()(x1.cuda(), x2.cuda(), geo.cuda(), mask.cuda())
    torch.testing.assert_close(gpu.pred.cpu(), cpu.pred, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.target.cpu(), cpu.target, atol=1e-4, rtol=1e-4)
