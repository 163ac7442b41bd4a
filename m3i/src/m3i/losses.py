"""The M3I objective (spec m3i.md sections 3.2-3.3): a sum of per-target mutual-information bounds.

    L = sum_{i in {A, B}} [ lambda_img L_img(i) + lambda_glb L_glb(i) ]                                     (2)

- ``L_img`` (Gaussian posterior with UniGrad's decorrelation, eq. 3): ``(mean_r ||p_r - t_r||^2 + w_neg mean_r
  p_r^T F p_r) / Dd`` with ``F = T^T T / n`` all-reduced over ranks
  (:func:`repro_shared.ssl.dense_unigrad.dense_unigrad_terms`);
  ``dense_loss="l2"`` drops the decorrelation term (``w_neg = 0``). A: intra-view (``lambda_intra``), B:
  inter-view (``lambda_inter``); both default to ``lambda_img = 1``.
- ``L_glb`` (Boltzmann posterior): the softmax cross-entropy over the class embeddings (a linear classifier,
  label smoothing 0.1) for samples with a label, and the CLIP InfoNCE (eq. 4) for samples with a caption:
  ``1/2 [CE(e^t U S^T) + CE(e^t S U^T)]`` with ``e^t`` clamped at 100, the other captions / images of the global
  batch as negatives. Samples without a label (without a caption) contribute no class (text) term; the
  mean runs over the samples that have the target (0 when none has it).

Every term is computed in float32 outside autocast.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn.functional as F

from repro_shared.ssl.dense_unigrad import dense_unigrad_terms

from .models.m3i import M3IOutput

__all__ = ["DENSE_LOSSES", "dense_loss", "category_loss", "clip_loss", "M3IObjective"]

DENSE_LOSSES = ("unigrad", "l2")
_NEG = -1.0e4  # a finite "minus infinity" for masked logits: exp underflows to 0, and 0 * CE stays 0


def dense_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "unigrad", neg_weight: float = 0.02
               ) -> torch.Tensor:
    """Eq. (3) on ``(..., Dd)`` predictions and normalised targets (float32 scalar).

    Raises:
        ValueError: an unknown ``kind`` (lists the known ones).
    """
    if kind not in DENSE_LOSSES:
        raise ValueError(f"unknown dense_loss {kind!r}; known: {', '.join(DENSE_LOSSES)}")
    return dense_unigrad_terms(pred, target, neg_weight if kind == "unigrad" else 0.0).loss


def category_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Label-smoothed softmax CE ``(1 - e) nll + e mean_k(-log p_k)``, averaged over the rows with ``labels >= 0``.

    Args:
        logits: ``(B, K)``; labels: ``(B,)`` int64, ``-1`` = no label for this sample.

    Returns:
        float32 scalar, 0 when no row has a label (no host sync).
    """
    with torch.autocast(device_type=logits.device.type if logits.device.type in ("cuda", "cpu") else "cpu",
                        enabled=False):
        logp = F.log_softmax(logits.float(), dim=-1)
        valid = labels >= 0
        nll = -logp.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
        per_row = (1.0 - smoothing) * nll + smoothing * (-logp.mean(-1))
        w = valid.float()
        return (per_row * w).sum() / w.sum().clamp(min=1.0)


def _gather_with_local_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``t`` concatenated along dim 0 (this rank's slice keeps its gradient; open_clip's
    ``gather_with_grad=False``); returns ``(gathered, offset of this rank)``."""
    if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
        return t, 0
    parts = [torch.empty_like(t) for _ in range(tdist.get_world_size())]
    tdist.all_gather(parts, t.detach().contiguous())
    rank = tdist.get_rank()
    parts[rank] = t
    return torch.cat(parts), rank * t.shape[0]


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, valid: torch.Tensor | None = None,
              *, symmetric: bool = True) -> torch.Tensor:
    """CLIP InfoNCE (eq. 4) over the captioned rows, negatives from every rank.

    Args:
        image, text: ``(B, D)`` embeddings of the same ``B`` images / their captions (normalised here).
        logit_scale: the log temperature ``t`` (``e^t`` clamped at 100).
        valid: bool ``(B,)``, rows that have a caption (default all); other rows are neither anchors nor negatives.
        symmetric: average image->text and text->image (CLIP); False is the literal ``I(z_x; z_text)`` bound.

    Returns:
        float32 scalar; 0 when no row has a caption.
    """
    valid = torch.ones(image.shape[0], dtype=torch.bool, device=image.device) if valid is None else valid
    with torch.autocast(device_type=image.device.type if image.device.type in ("cuda", "cpu") else "cpu",
                        enabled=False):
        u = F.normalize(image.float(), dim=-1)
        s = F.normalize(text.float(), dim=-1)
        all_u, offset = _gather_with_local_grad(u)
        all_s, _ = _gather_with_local_grad(s)
        all_valid, _ = _gather_with_local_grad(valid.float())
        scale = logit_scale.float().exp().clamp(max=100.0)
        labels = torch.arange(u.shape[0], device=u.device) + offset
        cols_ok = all_valid[None, :] > 0.5
        w = valid.float()

        def direction(a, b_all):
            logits = (scale * a @ b_all.T).masked_fill(~cols_ok, _NEG)
            return (F.cross_entropy(logits, labels, reduction="none") * w).sum() / w.sum().clamp(min=1.0)

        loss = direction(u, all_s)
        if symmetric:
            loss = 0.5 * (loss + direction(s, all_u))
    return loss


class M3IObjective:
    """Eq. (2) with configurable weights and per-sample target availability.

    Args:
        intra, inter, cls, txt: the weights ``lambda_intra``, ``lambda_inter``, ``lambda_cls``, ``lambda_txt``
            (a zero weight skips the term).
        dense_loss: ``"unigrad"`` (eq. 3) or ``"l2"``; neg_weight: ``w_neg`` (0.02).
        label_smoothing: of the category CE (0.1 [U]); symmetric_clip: eq. (4) as CLIP (True) or image->text only.

    Call ``objective(out, labels, has_text)`` with ``labels (B,)`` (``-1``: none) and ``has_text`` bool ``(B,)``
    per image ``k`` of the batch; returns ``{"loss_intra", "loss_inter", "loss_cls", "loss_txt", "loss": total}``
    (float32 scalars; the parts detached, only the terms that are on).

    Raises:
        ValueError: an unknown dense loss or a negative weight.
    """

    def __init__(self, *, intra: float = 1.0, inter: float = 1.0, cls: float = 1.0, txt: float = 1.0,
                 dense_loss: str = "unigrad", neg_weight: float = 0.02, label_smoothing: float = 0.1,
                 symmetric_clip: bool = True):
        if dense_loss not in DENSE_LOSSES:
            raise ValueError(f"unknown dense_loss {dense_loss!r}; known: {', '.join(DENSE_LOSSES)}")
        for name, w in (("intra", intra), ("inter", inter), ("cls", cls), ("txt", txt)):
            if w < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {w}")
        self.weights = {"intra": float(intra), "inter": float(inter), "cls": float(cls), "txt": float(txt)}
        self.dense_kind, self.neg_weight = dense_loss, float(neg_weight)
        self.smoothing, self.symmetric = float(label_smoothing), bool(symmetric_clip)

    def __call__(self, out: M3IOutput, labels: torch.Tensor | None = None,
                 has_text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w["intra"] and out.pred_intra is not None:
            terms["intra"] = dense_loss(out.pred_intra, out.target_intra, self.dense_kind, self.neg_weight)
        if w["inter"] and out.pred_inter is not None:
            terms["inter"] = dense_loss(out.pred_inter, out.target_inter, self.dense_kind, self.neg_weight)
        if w["cls"] and out.logits_a is not None and labels is not None:
            loss = category_loss(out.logits_a, labels, self.smoothing)
            if out.logits_b is not None:  # sample i's image B is image i - 1
                loss = loss + category_loss(out.logits_b, labels.roll(1, 0), self.smoothing)
            terms["cls"] = loss
        if w["txt"] and out.text is not None and has_text is not None:
            loss = clip_loss(out.global_a, out.text, out.logit_scale, has_text, symmetric=self.symmetric)
            if out.global_b is not None:  # re-align B's features with their images: row k <- sample k + 1
                loss = loss + clip_loss(out.global_b.roll(-1, 0), out.text, out.logit_scale, has_text,
                                        symmetric=self.symmetric)
            terms["txt"] = loss
        if not terms:
            raise ValueError("the M3I objective has no active term: every weight is 0 or its branch is switched off")
        total = sum(w[k] * v for k, v in terms.items())
        # the parts first: the non-finite check names the first bad entry, i.e. the term that diverged
        return {**{f"loss_{k}": v.detach() for k, v in terms.items()}, "loss": total}
