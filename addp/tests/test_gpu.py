"""GPU smoke tests (skipped without CUDA): each entry point's default for a few steps on the GPU, with the loss
finite and every parameter and buffer of the models on the GPU."""

import pytest
import torch

from helpers import SMALL, cfg_of

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GPU = [o for o in SMALL if o != "device=cpu"] + ["device=cuda"]


def _all_on_cuda(*modules):
    return all(t.device.type == "cuda" for m in modules for t in list(m.parameters()) + list(m.buffers()))


def test_train_chain_on_gpu(tmp_path, monkeypatch):
    from addp import stages
    from addp.cli import run_train

    seen = []
    real = stages.addp_train_step

    def spy(model, tokenizer, teacher, x0, *a, **k):
        out = real(model, tokenizer, teacher, x0, *a, **k)
        seen.append((_all_on_cuda(model, tokenizer, teacher), bool(torch.isfinite(out["loss"]))))
        return out

    monkeypatch.setattr(stages, "addp_train_step", spy)
    m = run_train(cfg_of(*GPU, f"cache_dir={tmp_path}/cache", f"+output_dir={tmp_path}/run"))
    assert seen and all(on_gpu and finite for on_gpu, finite in seen)
    assert m["tiny_fid_addp"] == m["tiny_fid_addp"]  # the evaluation ran on the GPU too


def test_bf16_sdpa_close_to_official_fp32_math():
    from addp.models import build_addp

    torch.manual_seed(0)
    a = build_addp("addp_vit_tiny", codebook_size=64, dropout=0.0).cuda().eval()
    b = build_addp("addp_vit_tiny", codebook_size=64, dropout=0.0, attn_impl="math").cuda().eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 3, 32, 32, device="cuda")
    ids = torch.randint(64, (4, 64), device="cuda")
    mask = torch.zeros(4, 64, dtype=torch.bool, device="cuda")
    mask[:, ::2] = True
    with torch.no_grad():
        ref = b(x, ids, mask)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = a(x, ids, mask).float()
    assert (fast - ref).abs().max() < 0.1 * ref.abs().max()


def test_downstream_entry_points_on_gpu(tmp_path):
    from addp.cli import run_det, run_finetune, run_seg

    ft = run_finetune(cfg_of("device=cuda", "data.limit=64", "train.epochs=1", "train.batch_size=32",
                             f"+output_dir={tmp_path}/ft", name="finetune"))
    assert 0 <= ft["top1"] <= 100
    small = ["device=cuda", "data.num_train=8", "data.num_val=4", "train.epochs=1", f"data.root={tmp_path}/shapes"]
    assert run_det(cfg_of(*small, f"+output_dir={tmp_path}/det", name="det"))["train_loss"] > 0
    assert run_seg(cfg_of(*small, f"+output_dir={tmp_path}/seg", name="seg"))["train_loss"] > 0
