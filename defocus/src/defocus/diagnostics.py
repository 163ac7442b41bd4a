"""Over-focus diagnostic for causal token models (paper App. B.1, scalarised as in spec §8.2).

For block ``l`` with input tokens X (b, L, H) and output Y (b, L, H), image tokens s = 0..L-2:
* gradient map      g_s    = ||dCE(head(CLS), y) / dX_s||          (same CLS-only loss for every model)
* CLS receptive field r_s   = ||d||Y_CLS|| / dX_s||
* attention map     M[t, s] = ||d||Y_t|| / dX_s||, s < t (diagonal = residual, set to 0); s > t is 0 by causality
Each map is normalised to a distribution over the eligible image tokens and summarised by
* normalised entropy  H = -sum p log p / log n (1 = uniform, 0 = one token),
* top mass            share of mass on the top ceil(f n) tokens (f = 0.1),
* front-half mass     share on the first half of the raster sequence,
The same row/column measures are reported for the selective scan's implicit attention kernel
(Mamba viewed as causal linear attention, spec §2.2 step 7):
    K[t, s] = mean_e | sum_n C'_t[n] exp(sum_{s<j<=t} Delta_j[e] A[e,n]) Delta_s[e] B'_s[n] |,  s <= t
which is the effective weight of input token s in the scan output at t (it ignores the conv and gate).

and for M: mean row entropy, column concentration (share of all mass in the top-f key columns: the
"vertical stripes" of paper Fig. 1) and the mean pairwise cosine similarity of rows. Over-focus =
low entropy, high top mass, low front-half mass, high column concentration.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.defocus_mamba import DefocusMamba

__all__ = ["concentration", "block_maps", "implicit_kernel", "scan_kernel", "overfocus_report", "plot_maps"]


def concentration(w: Tensor, top_fraction: float = 0.1) -> dict[str, Tensor]:
    """w (b, n) non-negative weights -> per-sample entropy, top mass, front-half mass, each (b,)."""
    n = w.shape[-1]
    p = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1) / math.log(n) if n > 1 else torch.ones(w.shape[0])
    k = max(1, math.ceil(top_fraction * n))
    top = p.topk(k, dim=-1).values.sum(-1)
    front = p[:, : n // 2].sum(-1) if n > 1 else torch.zeros(w.shape[0])
    return {"entropy": ent, "top_mass": top, "front_mass": front}


def _block_input(model: DefocusMamba, images: Tensor, layer: int) -> Tensor:
    with torch.no_grad():
        h = model.embed(images)
        for blk in model.blocks[:layer]:
            h = blk(h)
    return h.detach().requires_grad_(True)


def block_maps(model: DefocusMamba, images: Tensor, labels: Tensor, layer: int) -> dict[str, Tensor]:
    """Gradient map g (b, L-1), CLS receptive field r (b, L-1) and attention map M (b, L, L) at block ``layer``.

    Runs in eval mode (no drop path); one backward per query row for M.
    """
    model.eval()
    X = _block_input(model, images, layer)
    # gradient map of the CLS-only loss
    h = X
    for blk in model.blocks[layer:]:
        h = blk(h)
    loss = F.cross_entropy(model.head(model.norm(h)[:, -1]).float(), labels, reduction="sum")
    g = torch.autograd.grad(loss, X)[0].norm(dim=-1)[:, :-1]
    # receptive field of the CLS output and the full approximate attention map of this block
    Y = model.blocks[layer](X)
    norms = Y.float().norm(dim=-1)  # (b, L)
    L = X.shape[1]
    rows = [torch.autograd.grad(norms[:, t].sum(), X, retain_graph=t < L - 1)[0].norm(dim=-1) for t in range(L)]
    M = torch.stack(rows, dim=1)  # (b, t, s)
    M = M * (1 - torch.eye(L, dtype=M.dtype, device=M.device))  # remove the residual diagonal
    return {"grad": g.detach(), "cls_rf": M[:, -1, :-1].detach(), "attn": M.detach()}


@torch.no_grad()
def implicit_kernel(model: DefocusMamba, images: Tensor, layer: int) -> Tensor:
    """Implicit attention kernel K (b, L, L) of block ``layer``'s selective scan (channel-mean of |alpha|)."""
    model.eval()
    X = _block_input(model, images, layer).detach()
    blk = model.blocks[layer]
    mix = blk.mixer
    u, dt, _, B, C = mix.ssm_inputs(blk.norm(X))
    delta = mix.effective_delta(dt)
    A = -torch.exp(mix.A_log.float())
    # one image at a time: (E, L, L, N) intermediates
    return torch.stack([scan_kernel(delta[i], A, B[i], C[i]).abs().mean(0) for i in range(X.shape[0])])


def scan_kernel(delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """Signed kernel alpha (E, L, L) of one sequence: scan output y[e, t] = sum_s alpha[e, t, s] u[e, s].

    delta (E, L), A (E, N), B and C (N, L).
    """
    S = torch.cumsum(delta.float()[:, :, None] * A[:, None, :], dim=1)  # (E, L, N)
    diff = S[:, :, None, :] - S[:, None, :, :]  # (E, t, s, N), <= 0 for s <= t
    L = diff.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=delta.device).tril()
    decay = torch.exp(diff.masked_fill(~causal[None, :, :, None], float("-inf")))
    return torch.einsum("nt,etsn,ns,es->ets", C.float(), decay, B.float(), delta.float())


def _attn_metrics(M: Tensor, top_fraction: float, prefix: str = "attn") -> dict[str, float]:
    """Row entropy, column concentration and row cosine similarity of M (b, L, L) over image keys."""
    Mi = M[:, :, :-1]  # keys: image tokens
    n_keys = Mi.shape[-1]
    ents = []
    for t in range(2, M.shape[1]):  # queries with at least two earlier image keys
        k = min(t, n_keys)
        ents.append(concentration(Mi[:, t, :k], top_fraction)["entropy"])
    row_entropy = torch.stack(ents, 1).mean().item()
    col_mass = Mi.sum(1)  # (b, n_keys)
    col_top = concentration(col_mass, top_fraction)["top_mass"].mean().item()
    rows = F.normalize(Mi[:, 1:], dim=-1)  # (b, L-1, n_keys), skip the first row (no earlier key)
    sim = rows @ rows.transpose(1, 2)
    r = sim.shape[1]
    off = (sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)) / (r * (r - 1))
    return {f"{prefix}_row_entropy": row_entropy, f"{prefix}_col_top_mass": col_top,
            f"{prefix}_row_cos": off.mean().item()}


def overfocus_report(model: DefocusMamba, images: Tensor, labels: Tensor, layers=(-2,), top_fraction: float = 0.1,
                     batch_size: int = 64) -> tuple[dict[str, float], dict[int, dict[str, Tensor]]]:
    """Scalar over-focus metrics per block (keys ``b{l}_...``) and the image-averaged maps for plotting."""
    metrics: dict[str, float] = {}
    maps: dict[int, dict[str, Tensor]] = {}
    for layer in layers:
        li = layer % model.depth
        parts = [block_maps(model, images[i:i + batch_size], labels[i:i + batch_size], li)
                 for i in range(0, len(images), batch_size)]
        m = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        K = implicit_kernel(model, images, li)
        m["kernel"] = K * (1 - torch.eye(K.shape[-1], dtype=K.dtype, device=K.device))  # drop the diagonal
        for name in ("grad", "cls_rf"):
            for k, v in concentration(m[name], top_fraction).items():
                metrics[f"b{li}_{name}_{k}"] = v.mean().item()
        metrics.update({f"b{li}_{k}": v for k, v in _attn_metrics(m["attn"], top_fraction).items()})
        metrics.update({f"b{li}_{k}": v for k, v in _attn_metrics(m["kernel"], top_fraction, "kernel").items()})
        maps[li] = {k: (v / v.amax(dim=tuple(range(1, v.dim())), keepdim=True).clamp_min(1e-30)).mean(0)
                    for k, v in m.items()}
    return metrics, maps


def plot_maps(maps: dict[int, dict[str, Tensor]], grid: tuple[int, int], path: str | Path, title: str = "") -> Path:
    """PNG: per block, the attention map M (query x key), the gradient map and the CLS receptive field on
    the patch grid (each normalised by its max per image, then averaged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), 4, figsize=(15, 3.6 * len(maps)), squeeze=False)
    for row, (li, m) in enumerate(sorted(maps.items())):
        ax = axes[row]
        im = ax[0].imshow(m["attn"].numpy(), cmap="viridis")
        ax[0].set(title=f"block {li}: attention map ||dY_t/dX_s||", xlabel="key s", ylabel="query t")
        fig.colorbar(im, ax=ax[0], fraction=0.046)
        im = ax[1].imshow(m["kernel"].numpy(), cmap="viridis")
        ax[1].set(title=f"block {li}: implicit scan kernel", xlabel="key s", ylabel="query t")
        fig.colorbar(im, ax=ax[1], fraction=0.046)
        for a, k, name in ((ax[2], "grad", "gradient map ||dCE/dX_s||"), (ax[3], "cls_rf", "CLS receptive field")):
            im = a.imshow(m[k].reshape(grid).numpy(), cmap="magma")
            a.set(title=f"block {li}: {name}")
            a.axis("off")
            fig.colorbar(im, ax=a, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
