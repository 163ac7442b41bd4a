"""Device placement (issue 18). CPU: the model and the detection backbone run with every parameter on the
"meta" device, so no tensor is created on a fixed device inside forward. GPU (marked ``gpu``, skipped without
CUDA): each entry point's default runs a few optimizer steps on CUDA with a finite loss and every parameter
and buffer of the model on the GPU; the Triton scan is compared with the reference in test_scan.py."""

import pytest
import torch

from defocus.models import build_model
from defocus.models.detection import DefocusMambaBackbone
from defocus.models.mixer import MixerConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_forward_on_meta_device_creates_nothing_elsewhere():
    m = build_model("defocus_tiny_test").to("meta")
    logits, aux = m(torch.empty(2, 3, 32, 32, device="meta"), drop_path_rate=0.2, return_aux=True)
    assert logits.device.type == "meta" and aux.shape == (2, 16, 10)
    mix = MixerConfig(hidden_size=32, intermediate_size=64, state_size=16, time_step_rank=8, group_norm_size=16)
    bb = DefocusMambaBackbone(mix, depth=2, patch_size=8, pretrain_size=32).to("meta")
    assert bb(torch.empty(1, 3, 40, 56, device="meta")).shape == (1, 32, 5, 7)


def _all_on_cuda(module):
    tensors = list(module.parameters()) + list(module.buffers())
    return tensors and all(t.device.type == "cuda" for t in tensors)


@pytest.mark.gpu
@cuda
def test_train_default_steps_on_cuda(tmp_path):
    from hydra import compose, initialize_config_module

    from defocus.cli import build_data, build_from_cfg
    from defocus.engine import train_one_epoch
    from defocus.recipe import build_optimizer

    with initialize_config_module("defocus.configs", version_base=None):
        cfg = compose("train", overrides=["data.train_subset=256", "precision=bf16"])
    device = torch.device("cuda")
    model = build_from_cfg(cfg).to(device)
    loader, _, _ = build_data(cfg)
    loader.set_epoch(0)
    opt = build_optimizer(model, 3e-3, 0.05)
    out = train_one_epoch(model, loader, opt, None, epoch=0, device=device, drop_path_rate=0.3, aux_weight=0.5,
                          clip_grad=10.0, precision="bf16")
    assert torch.isfinite(torch.tensor(out["loss"])) and _all_on_cuda(model)
    assert all(s["exp_avg"].device.type == "cuda" for s in opt.state.values())


@pytest.mark.gpu
@cuda
def test_train_and_detect_entry_points_on_cuda(tmp_path):
    from hydra import compose, initialize_config_module

    from defocus.cli import run_train
    from defocus.detect import run_detect

    with initialize_config_module("defocus.configs", version_base=None):
        tr = compose("train", overrides=["train.epochs=1", "data.train_subset=256", f"+output_dir={tmp_path}/t"])
        det = compose("detect", overrides=["train.epochs=1", "data.num_train=16", "data.num_val=4",
                                           f"+output_dir={tmp_path}/d"])
    final = run_train(tr)
    assert torch.isfinite(torch.tensor(final["train_loss"])) and "device cuda" in (tmp_path / "t" / "log.txt").read_text()
    res = run_detect(det)
    assert torch.isfinite(torch.tensor(res["train_loss"])) and "device cuda" in (tmp_path / "d" / "log.txt").read_text()


@pytest.mark.gpu
@cuda
def test_detector_step_on_cuda():
    from defocus.models.detection import build_detector

    mix = MixerConfig(hidden_size=32, intermediate_size=64, state_size=16, time_step_rank=8, group_norm_size=16)
    det = build_detector(mix, depth=2, num_classes=3, patch_size=16, pretrain_size=64, min_size=64,
                         max_size=96).cuda().train()
    images = [torch.rand(3, 64, 80, device="cuda")]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]], device="cuda"),
                "labels": torch.tensor([1], device="cuda")}]
    loss = sum(det(images, targets).values())
    loss.backward()
    assert torch.isfinite(loss) and _all_on_cuda(det)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 6e-2)])
def test_triton_scan_matches_float64_reference_on_cuda(dtype, tol):
    """The compiled Triton kernels at a model-like size (E 128, L 197 = 7 chunks, group 64) vs the float64
    reference: output, last state and every gradient, relative to the largest reference value."""
    from defocus.ops import selective_scan_ref
    from defocus.ops.selective_scan_triton import selective_scan_triton

    g = torch.Generator().manual_seed(0)
    b, E, L, N = 2, 128, 197, 16
    ins = [torch.randn(b, E, L, generator=g), torch.rand(b, E, L, generator=g) * 0.5 - 1.0,
           -torch.rand(E, N, generator=g) * 4 - 0.1, torch.randn(b, N, L, generator=g),
           torch.randn(b, N, L, generator=g), torch.randn(E, generator=g), torch.randn(b, E, L, generator=g),
           torch.randn(E, generator=g) * 0.1]
    w = torch.randn(b, E, L, generator=g, dtype=torch.float64)
    res = []
    for dev, dt, fn in (("cpu", torch.float64, selective_scan_ref), ("cuda", dtype, selective_scan_triton)):
        ts = [t.to(dev, torch.float32 if i in (2, 5, 7) and dt != torch.float64 else dt).requires_grad_()
              for i, t in enumerate(ins)]
        out, last = fn(*ts, delta_softplus=True, return_last_state=True, group_size=64)
        loss = (out.double() * w.to(dev)).sum() + 0.3 * (last.double() ** 2).sum()
        res.append([out, last, *torch.autograd.grad(loss, ts)])
    for got, ref in zip(res[1], res[0]):
        ref = ref.double()
        assert (got.double().cpu() - ref).abs().max() <= tol * ref.abs().max()
