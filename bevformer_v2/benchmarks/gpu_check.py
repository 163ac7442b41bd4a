"""Device check of bevformer_v2: one prepared script for a session that is lent a GPU (``make gpu-check``).

1. Every CUDA path against its reference, forward and backward: the three MSDA call sites (spatial
   cross-attention, temporal self-attention, decoder cross-attention) at R50 nuScenes sizes with the Triton
   kernels vs the grid_sample reference, and the tiny model's loss and gradients with each.
2. The tiny default training step (``bevformer-v2-train``'s model and image size): CUDA vs the CPU at 2 threads,
   seconds per iteration and the ratio (issue 18's goal: >= 5x).
3. The R50 nuScenes-size training step of ``experiment=r50_t1_24ep`` (6 cameras 1600x900 cropped to 640x1600,
   BEV 200x200, 900 queries x 11 Group-DETR groups, DD3D head): seconds per iteration and peak memory.

One JSON line per check / measurement; exit status 1 if a check fails. Without CUDA it prints one line saying
"GPU: not run" and exits 0. ``--smoke`` runs every section on the CPU at toy sizes (tests the script itself).
Inputs are random tensors with the synthetic rig's camera geometry and random boxes: timings, not accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
from hydra import compose, initialize_config_module
from pyquaternion import Quaternion

from bevformer_v2.cli import build_model
from bevformer_v2.data.constants import CAMERAS
from bevformer_v2.data.synthetic import LIDAR_ROTATION, LIDAR_TRANSLATION, box_corners, camera_matrices
from bevformer_v2.engine import build_optimizer, to_device
from bevformer_v2.losses import detector_losses, total_loss
from bevformer_v2.models.attention import (CustomMSDeformableAttention, SpatialCrossAttention, TemporalSelfAttention,
                                           visible_queries)


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def model_config(overrides: list):
    with initialize_config_module("bevformer_v2.configs", version_base=None):
        return compose("train", overrides=overrides)


# ------------------------------------------------------------------------------------------------ inputs
def make_batch(full_wh=(1600, 900), crop=(0, 260, 1600, 900), frames=(0,), n_gt=30, seed=0) -> dict:
    """One synthetic sample in ``collate``'s layout: caffe-scale random images of the cropped size, the synthetic
    rig's lidar2img, ``n_gt`` random boxes (cars / pedestrians) and their mono targets in each camera."""
    rng = np.random.default_rng(seed)
    W0, H0 = full_wh
    x1, y1, x2, y2 = crop
    H, W = y2 - y1, x2 - x1
    Hp, Wp = -(-H // 32) * 32, -(-W // 32) * 32
    l2e = np.eye(4)
    l2e[:3, :3], l2e[:3, 3] = LIDAR_ROTATION.rotation_matrix, LIDAR_TRANSLATION
    wlh = np.where(rng.random((n_gt, 1)) < 0.7, [[1.9, 4.6, 1.7]], [[0.7, 0.7, 1.8]])
    boxes = np.concatenate([rng.uniform(-40, 40, (n_gt, 2)), rng.uniform(-1.5, 0.5, (n_gt, 1)), wlh,
                            rng.uniform(-math.pi, math.pi, (n_gt, 1)), rng.normal(0, 2, (n_gt, 2))], 1)
    labels = np.where(wlh[:, 0] > 1, 3, 6)
    lidar2img, intr, mono = [], [], []
    for ch in CAMERAS:
        K, R_c2e, t_c2e = camera_matrices(ch, W0, H0)
        K = np.array([[1, 0, -x1], [0, 1, -y1], [0, 0, 1.0]]) @ K
        c2e = np.eye(4)
        c2e[:3, :3], c2e[:3, 3] = R_c2e, t_c2e
        l2c = np.linalg.inv(np.linalg.inv(l2e) @ c2e)  # lidar -> camera
        K4 = np.eye(4)
        K4[:3, :3] = K
        lidar2img.append(K4 @ l2c)
        intr.append(K)
        b2d, b3d, lab = [], [], []
        for b, c in zip(boxes, labels):
            corners = box_corners(b[:3], b[3:6], b[6]) @ l2c[:3, :3].T + l2c[:3, 3]
            if (corners[:, 2] < 0.1).any():
                continue
            uv = corners @ K.T
            uv = uv[:, :2] / uv[:, 2:]
            bb = [max(uv[:, 0].min(), 0), max(uv[:, 1].min(), 0), min(uv[:, 0].max(), W), min(uv[:, 1].max(), H)]
            if bb[2] - bb[0] < 2 or bb[3] - bb[1] < 2:
                continue
            R = l2c[:3, :3] @ Quaternion(axis=(0, 0, 1), angle=b[6]).rotation_matrix
            q = Quaternion(matrix=R, atol=1e-6).elements
            b2d.append(bb)
            b3d.append([*q, *(l2c[:3, :3] @ b[:3] + l2c[:3, 3]), *b[3:6]])
            lab.append(c)
        mono.append(dict(boxes2d=torch.tensor(b2d, dtype=torch.float32).reshape(-1, 4),
                         labels=torch.tensor(lab, dtype=torch.long), box3d=torch.tensor(b3d, dtype=torch.float32
                                                                                       ).reshape(-1, 10),
                         attr=torch.ones(len(lab), dtype=torch.long), speed=torch.ones(len(lab)),
                         K=torch.tensor(K, dtype=torch.float32)))
    T = len(frames)
    g = torch.Generator().manual_seed(seed)
    return dict(imgs=torch.randn(1, T, 6, 3, Hp, Wp, generator=g) * 50,
                lidar2img=torch.tensor(np.stack(lidar2img), dtype=torch.float32)[None, None].repeat(1, T, 1, 1, 1),
                img_shape=(Hp, Wp), gt_boxes=[torch.tensor(boxes, dtype=torch.float32)],
                gt_labels=[torch.tensor(labels)], bda=torch.eye(3)[None], bda_identity=True,
                flip=torch.zeros(1, dtype=torch.bool), mono=[mono],
                intrinsics=torch.tensor(np.stack(intr), dtype=torch.float32)[None],
                ego_k2t=torch.eye(4)[None, None].repeat(1, T, 1, 1), index=[0], skipped=[])


# ------------------------------------------------------------------------------------------------ timing
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_time(model, batch, groups: int, device, warmup: int, reps: int) -> float:
    """Median seconds of one training step (forward, losses, backward, clip 35, AdamW) on ``device``."""
    model.to(device).train()
    opt = build_optimizer(model, 4e-4, 0.01, 0.5)
    b = to_device(batch, device)
    times = []
    for k in range(warmup + reps):
        _sync(device)
        t = time.perf_counter()
        out = model(b)
        loss = total_loss(detector_losses(out, b, groups, model.perspective))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if k >= warmup:
            times.append(time.perf_counter() - t)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"non-finite loss {float(loss.detach())} in the timed step")
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ checks
def _set_impl(module, impl: str) -> None:
    for m in module.modules():
        if hasattr(m, "msda_impl"):
            m.msda_impl = impl


FAST = "triton"  # the implementation checked against the reference; ``--smoke`` checks the reference against itself


def _compare(name: str, run, module, device, tol: float) -> bool:
    """Run ``run(module)`` with the reference and with Triton from the same state (BatchNorm running statistics
    change in a training forward); compare outputs and parameter gradients."""
    res = {}
    state = copy.deepcopy(module.state_dict())
    for key, impl in (("reference", "reference"), ("triton", FAST)):
        module.load_state_dict(state)
        _set_impl(module, impl)
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = run(module)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
        (out * g).sum().backward()
        res[key] = (out.detach().float(), {n: p.grad.detach().float().clone() for n, p in module.named_parameters()
                                            if p.grad is not None})
    (o_r, g_r), (o_t, g_t) = res["reference"], res["triton"]
    d_out = float((o_t - o_r).abs().max() / o_r.abs().max().clamp(min=1e-12))
    d_grad = max(float((g_t[n] - g_r[n]).abs().max() / g_r[n].abs().max().clamp(min=1e-12)) for n in g_r)
    ok = d_out < tol and d_grad < 10 * tol
    emit(check="cuda_vs_reference", path=name, device=str(device), rel_max_diff_out=d_out, rel_max_diff_grad=d_grad,
         ok=ok)
    return ok


def msda_call_site_checks(device, smoke: bool) -> bool:
    """SCA / TSA / decoder attention at R50 sizes (toy sizes with ``smoke``): Triton vs reference."""
    C, M = (32, 4) if smoke else (256, 8)
    bev = (8, 8) if smoke else (200, 200)
    levels = ((8, 16), (4, 8), (2, 4), (1, 2)) if smoke else ((80, 200), (40, 100), (20, 50), (10, 25))
    S = sum(h * w for h, w in levels)
    starts = tuple(sum(h * w for h, w in levels[:i]) for i in range(len(levels)))
    HW = bev[0] * bev[1]
    g = torch.Generator().manual_seed(0)
    query = torch.randn(1, HW, C, generator=g).to(device)
    pos = torch.randn(1, HW, C, generator=g).to(device)
    ok = True
    sca = SpatialCrossAttention(C, 6, 4, 8, M, dropout=0.0).to(device)
    torch.nn.init.normal_(sca.deformable_attention.attention_weights.weight, std=0.02)
    feats = torch.randn(6, S, 1, C, generator=g).to(device)
    ref_cam = (torch.rand(6, 1, HW, 4, 2, generator=g) * 1.2 - 0.1).to(device)
    mask = (torch.rand(6, 1, HW, 4, generator=g) < 0.3).to(device)
    vis = visible_queries(ref_cam, mask)
    ok &= _compare("spatial_cross_attention", lambda m: m(query, feats, vis, levels, starts), sca, device, 1e-4)
    tsa = TemporalSelfAttention(C, M, 1, 4, dropout=0.0).to(device)
    torch.nn.init.normal_(tsa.attention_weights.weight, std=0.02)
    ref2d = torch.rand(1, HW, 1, 2, generator=g).to(device)
    ok &= _compare("temporal_self_attention", lambda m: m(query, pos, ref2d, (bev,), (0,)), tsa, device, 1e-4)
    dec = CustomMSDeformableAttention(C, M, 1, 4, dropout=0.0).to(device)
    torch.nn.init.normal_(dec.attention_weights.weight, std=0.02)
    nq = 50 if smoke else 900
    q = torch.randn(1, nq, C, generator=g).to(device)
    qp = torch.randn(1, nq, C, generator=g).to(device)
    ref = torch.rand(1, nq, 2, generator=g).to(device)
    ok &= _compare("decoder_cross_attention", lambda m: m(q, qp, query, ref, (bev,), (0,)), dec, device, 1e-4)
    return ok


def tiny_model_check(device) -> bool:
    cfg = model_config(["data.frames=[-1,0]", "model.head.group_detr=2", "model.grid_mask=false"])
    batch = to_device(make_batch((192, 108), (0, 12, 192, 108), (-1, 0), n_gt=12), device)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.frames).to(device).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    def run(m):
        losses = detector_losses(m(batch), batch, 2, True)
        return total_loss(losses)[None]

    return _compare("tiny_model_loss_and_grads", run, model, device, 1e-4)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, toy sizes: exercise the script without a GPU")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if not torch.cuda.is_available() and not a.smoke:
        emit(check="gpu_check", status="GPU: not run", reason="no CUDA device visible")
        return 0
    device = torch.device("cpu" if a.smoke else "cuda")
    name = "cpu (smoke)" if a.smoke else torch.cuda.get_device_name()
    emit(check="gpu_check", device=name, torch=torch.__version__)
    global FAST
    if a.smoke:  # the Triton kernels need CUDA (their CPU check is the interpreter test in shared/tests)
        FAST = "reference"
    ok = msda_call_site_checks(device, a.smoke)
    ok &= tiny_model_check(device)
    reps, warm = (1, 0) if a.smoke else (a.reps, 2)
    # tiny default step: CUDA vs 2 CPU threads (the laptop reference)
    cfg = model_config([])
    batch = make_batch((192, 108), (0, 12, 192, 108), tuple(cfg.data.frames), n_gt=14)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads if a.smoke else 2)
    t_cpu = train_step_time(build_model(cfg.model, cfg.data.frames), batch, 1, torch.device("cpu"), warm, reps)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t_dev = train_step_time(build_model(cfg.model, cfg.data.frames), batch, 1, device, warm, reps)
    emit(bench="train_step", config="tiny default (bevformer-v2-train)", device=name, median_s=round(t_dev, 4),
         cpu_2_threads_median_s=round(t_cpu, 4), speedup_vs_cpu=round(t_cpu / t_dev, 2), goal=">= 5x on CUDA")
    # R50 nuScenes-size step
    overrides = ["experiment=r50_t1_24ep"]
    full, crop = ((1600, 900), (0, 260, 1600, 900))
    if a.smoke:
        overrides += ["model=tiny", "model.head.group_detr=2"]
        full, crop = ((192, 108), (0, 12, 192, 108))
    cfg = model_config(overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.frames)
    batch = make_batch(full, crop, tuple(cfg.data.frames), n_gt=30)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = train_step_time(model, batch, int(cfg.model.head.group_detr), device, warm, reps)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
    emit(bench="train_step", config="r50_t1_24ep: 6 cams 640x1600 (1600x900 cropped), BEV 200x200, 900x11 queries"
         if not a.smoke else "smoke: tiny model, r50_t1_24ep schedule", device=name, median_s=round(t, 4),
         peak_mem_GiB=peak, params_M=round(sum(p.numel() for p in model.parameters()) / 1e6, 1))
    emit(check="gpu_check", ok=bool(ok))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
