"""Pieces the entry points share: backbones and the M3I model from the config, step checkpoints."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from torch import nn

from repro_shared.train import StepCheckpointer

from ..data.shapes import VOCAB
from ..data.text import build_tokenizer
from ..models.internimage import VARIANTS as INTERNIMAGE_VARIANTS
from ..models.internimage import build_internimage
from ..models.m3i import M3IModel
from ..models.text import TextTower
from ..models.vit import VIT_VARIANTS, build_vit

__all__ = ["BACKBONES", "token_stride", "build_backbone", "build_m3i", "build_tokenizer_from", "DeepSpeedCheckpointer"]

BACKBONES = ("vit", "internimage")
_INTERNIMAGE_STRIDE = 16  # the dense neck's output stride


def _plain(node: Any) -> dict:
    return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}


def token_stride(m: DictConfig) -> int:
    """Pixels per token of the dense grid: the ViT patch, or 16 for InternImage (the x3/x4 neck).

    Raises:
        ValueError: an unknown ViT variant (the message lists the known ones).
    """
    if m.backbone == "vit":
        if m.variant not in VIT_VARIANTS:
            raise ValueError(f"unknown ViT variant {m.variant!r}; known: {', '.join(VIT_VARIANTS)}")
        return int(_plain(m.get("overrides")).get("patch_size", VIT_VARIANTS[m.variant]["patch_size"]))
    return _INTERNIMAGE_STRIDE


def build_backbone(m: DictConfig, input_size: int) -> nn.Module:
    """The online backbone of ``cfg.model``: a :class:`~m3i.models.vit.ViTBackbone` or an InternImage with the
    dense neck and attention pooling (``use_clip_projector``; official widths for H/G, ``model.dense_dim`` /
    ``model.global_dim`` for the others).

    Raises:
        ValueError: an unknown backbone or variant (the message lists the known ones).
    """
    extra = _plain(m.get("overrides"))
    if m.backbone == "vit":
        if m.variant not in VIT_VARIANTS:
            raise ValueError(f"unknown ViT variant {m.variant!r}; known: {', '.join(VIT_VARIANTS)}")
        return build_vit(m.variant, **{"img_size": input_size, "drop_path_rate": float(m.drop_path_rate),
                                       "global_dim": int(m.global_dim), "pool_heads": m.get("pool_heads"),
                                       "train_patch_embed": bool(m.train_patch_embed), **extra})
    if m.backbone == "internimage":
        if m.variant not in INTERNIMAGE_VARIANTS:
            raise ValueError(f"unknown InternImage variant {m.variant!r}; known: {', '.join(INTERNIMAGE_VARIANTS)}")
        kw: dict[str, Any] = {"num_classes": 0, "use_clip_projector": True, "with_cp": bool(m.with_cp),
                              "drop_path_rate": float(m.drop_path_rate), "core_op": str(m.get("core_op", "DCNv3"))}
        if not INTERNIMAGE_VARIANTS[m.variant].get("use_clip_projector"):
            kw.update(pretrain_embed_dim=int(m.dense_dim), clip_embed_dim=int(m.global_dim),
                      attnpool_num_heads=int(m.get("pool_heads") or 16))
        return build_internimage(m.variant, **{**kw, **extra})
    raise ValueError(f"unknown model.backbone {m.backbone!r}; known: {', '.join(BACKBONES)}")


def build_tokenizer_from(d: DictConfig):
    """The caption tokenizer of ``cfg.data`` (``words`` over the shapes vocabulary, or ``clip_bpe``)."""
    return build_tokenizer(str(d.tokenizer), vocab=VOCAB, context_length=int(d.context_length))


def build_m3i(cfg: DictConfig, count_a: int, tokenizer=None) -> M3IModel:
    """:class:`M3IModel` of ``cfg.model`` / ``cfg.objective`` / ``cfg.data``: branches whose weight is 0 are not
    built (no decoder / target for a global-only objective, no class head without ``cls``, no text tower without
    ``txt``), so DDP finds no unused parameter."""
    m, o, d = cfg.model, cfg.objective, cfg.data
    backbone = build_backbone(m, int(d.input_size))
    text = None
    if float(o.txt) > 0:
        if tokenizer is None:
            raise ValueError("objective.txt > 0 needs a tokenizer (data.tokenizer)")
        t = m.text
        text = TextTower(tokenizer.vocab_size, tokenizer.context_length, int(t.width), int(t.depth), int(t.heads),
                         out_dim=backbone.global_dim)
    stride = token_stride(m)
    return M3IModel(backbone, grid_size=int(d.input_size) // stride, patch=stride, count_a=count_a,
                    dense=float(o.intra) > 0 or float(o.inter) > 0, intra=float(o.intra) > 0,
                    inter=float(o.inter) > 0, second_image=bool(o.second_image), decoder_dim=int(m.decoder_dim),
                    decoder_heads=int(m.decoder_heads), projector_depth=int(m.projector_depth),
                    predictor_depth=int(m.predictor_depth), num_classes=int(d.num_classes) if float(o.cls) > 0 else 0,
                    text_tower=text, online_ln=bool(m.online_ln))


class DeepSpeedCheckpointer(StepCheckpointer):
    """``repro_shared.train.StepCheckpointer`` for a DeepSpeed engine: its own sharded format (``engine.save_checkpoint`` into
    ``checkpoints/deepspeed/step<N>``, every rank writes its shard), the step, results and epoch statistics in the
    client state; ``resume("auto")`` loads the newest tag (DeepSpeed's ``latest`` file)."""

    def __init__(self, ctx, *, engine, iters: int, every: int, extra: Callable[[], dict[str, Any]]):
        self.ctx, self.engine, self.iters, self.every, self.extra = ctx, engine, iters, every, extra
        self.ckpt_dir = ctx.checkpoint_dir / "deepspeed"

    def save(self, steps_done: int, epoch_stats: dict | None) -> None:
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=f"step{steps_done}",
                                    client_state={"step": steps_done, "extra": {**self.extra(),
                                                                                "epoch_stats": epoch_stats}})

    def resume(self, spec: str | None) -> dict | None:
        if spec in (None, "", "none", "None") or not (self.ckpt_dir / "latest").is_file():
            return None
        path, client = self.engine.load_checkpoint(str(self.ckpt_dir) if spec == "auto" else str(spec))
        return None if path is None else client
