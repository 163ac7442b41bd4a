"""The frozen token predictor: MAGE, a masked generative model in VQ-token space (spec §2.2).

ADDP uses it only through :meth:`MAGE.sample_tokens` (predicted code distributions from a partially
masked token map, no token dropping). :meth:`MAGE.forward` is MAGE's own pre-training forward (with
token dropping), used to train the tiny teacher of the CPU demo.

Vocabulary (V = K + 1000 + 1): ids ``0..K-1`` are codes, the next 1000 are class labels (unused by
ADDP), the last id ``V - 1`` is the mask token; the sequence starts with the fake class label
``K + 1100 - 1024`` (= 1100 for K = 1024). The CPU-demo variants keep a single class id
(``num_class_ids=1``, V = K + 2): the 1000 unused class rows would be most of their output layer.

Parameters carried by the official checkpoints but never used in any forward (``patch_embed``,
``cls_token``, ``pos_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_pred``) are not
modules here; the converter drops them by name (``addp.models.convert``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Block, MlmLayer, init_official_

__all__ = ["MAGE", "MAGE_VARIANTS", "build_mage", "vocab_layout"]

FAKE_CLASS_OFFSET = 1100 - 1024   # the official fake class label is class id 76


def vocab_layout(codebook_size: int, num_class_ids: int = 1000) -> tuple[int, int, int]:
    """``(vocab_size, fake_class_label, mask_token_label)``: ``V = K + num_class_ids + 1``, the fake class
    label ``K + min(76, num_class_ids - 1)`` (``K + 1100 - 1024`` officially), the mask id ``V - 1``.

    Raises:
        ValueError: if ``num_class_ids < 1``.
    """
    if num_class_ids < 1:
        raise ValueError(f"num_class_ids must be >= 1 (the fake class label lives there), got {num_class_ids}")
    vocab = codebook_size + num_class_ids + 1
    return vocab, codebook_size + min(FAKE_CLASS_OFFSET, num_class_ids - 1), vocab - 1


class BertEmbeddings(nn.Module):
    """Word + learned position embeddings, LayerNorm (eps 1e-6), dropout (official key names).

    ``position_ids`` is a persistent buffer (it is in the released state dicts).
    Shapes: ids (B, L) -> (B, L, D).
    """

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)))
        nn.init.normal_(self.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_embeddings(self.position_ids[:, : ids.shape[1]])
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + pos))


class MAGE(nn.Module):
    """MAGE token predictor (spec §2.2).

    Args:
        codebook_size: K.
        num_class_ids: class-label ids in the vocabulary (1000 in the release).
        num_tokens: N, the token-grid size (256 for 16x16).
        embed_dim, depth, num_heads: encoder width / blocks / heads.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder.
        dropout: on embeddings, attention probabilities, attention projection and MLP (0.1 in MAGE).
        attn_impl: ``"sdpa"`` or ``"math"`` (see :class:`addp.models.transformer.Attention`).
    """

    def __init__(self, codebook_size: int = 1024, num_tokens: int = 256, num_class_ids: int = 1000, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, decoder_embed_dim: int = 768, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, dropout: float = 0.1, attn_impl: str = "sdpa"):
        super().__init__()
        self.codebook_size, self.num_tokens = codebook_size, num_tokens
        self.vocab_size, self.fake_class_label, self.mask_token_label = vocab_layout(codebook_size, num_class_ids)
        self.token_emb = BertEmbeddings(self.vocab_size, embed_dim, num_tokens + 1, dropout)
        blk = dict(mlp_ratio=mlp_ratio, qkv_bias=True, drop=dropout, attn_drop=dropout, attn_impl=attn_impl)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, **blk) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens + 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, **blk)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.mlm_layer = MlmLayer(decoder_embed_dim, embed_dim, self.vocab_size)
        nn.init.normal_(self.decoder_pos_embed_learned, std=0.02)
        init_official_(self)

    def _input_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) ids and mask (True = unknown) -> (B, 1 + N) with the fake class label first and mask ids."""
        if ids.shape[1] != self.num_tokens:
            raise ValueError(f"MAGE expects {self.num_tokens} tokens per image, got {ids.shape[1]}")
        masked = torch.where(mask, torch.full_like(ids, self.mask_token_label), ids)
        return torch.cat([torch.full_like(ids[:, :1], self.fake_class_label), masked], dim=1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the whole vocabulary at every grid position.

        Args:
            ids: (B, N) int64 token ids.
            mask: (B, N) bool, True = masked (replaced by the mask id; the decoder sees the cls feature there).
            drop: optional (B, N) bool with the same count per row, ``drop ⊆ mask``: positions removed from
                the encoder input (MAGE pre-training drops ``ceil(N * 0.5)`` tokens; ``sample_tokens`` none).

        Returns:
            (B, N, V) logits (the class position is removed).
        """
        x = self.token_emb(self._input_ids(ids, mask))
        B, L, D = x.shape
        if drop is not None:
            keep = torch.cat([drop.new_zeros(B, 1), drop], dim=1).logical_not()
            x = x[keep].view(B, -1, D)
        for blk in self.blocks:
            x = blk(x)
        h = self.decoder_embed(self.norm(x))
        pad = h[:, :1].expand(B, L, -1)           # pad_with_cls_token: the decoder's class-token feature
        if drop is not None:
            h = pad.masked_scatter(keep[..., None], h)
        full_mask = torch.cat([mask.new_zeros(B, 1), mask], dim=1)
        h = torch.where(full_mask[..., None], pad, h) + self.decoder_pos_embed_learned
        for blk in self.decoder_blocks:
            h = blk(h)
        logits = self.mlm_layer(self.decoder_norm(h), self.token_emb.word_embeddings.weight.detach())
        return logits[:, 1:]

    def encoder_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean over the token positions of the encoder output for an unmasked token map (B, N) -> (B, D)
        (the token-input representation the spec's linear-probe comparison uses)."""
        x = self.token_emb(self._input_ids(ids, torch.zeros_like(ids, dtype=torch.bool)))
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1:].mean(dim=1)

    def sample_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted code distribution ``softmax(logits[..., :K])`` (B, N, K) from a masked token map
        (no token dropping), the official ``sample_tokens(..., return_pred_tokens=False)``.

        The expected code vectors (``return_pred_tokens=True``) are ``VQGAN.embed_probs`` of this.
        Dropout is active if the module is in train mode (the official pre-training quirk, spec §2.2).
        """
        return F.softmax(self.forward(ids, mask)[..., : self.codebook_size].float(), dim=-1)


MAGE_VARIANTS: dict[str, dict] = {
    "mage_vit_base_patch16": dict(embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=768, decoder_depth=8,
                                  decoder_num_heads=16),
    "mage_vit_large_patch16": dict(embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=1024, decoder_depth=8,
                                   decoder_num_heads=16),
    # the official repo's tiny config
    "mage_vit_tiny_patch16": dict(embed_dim=256, depth=12, num_heads=4, decoder_embed_dim=256, decoder_depth=8,
                                  decoder_num_heads=4),
    # CPU demo teacher (spec §8): D 64, depth 2, decoder depth 1
    "mage_cpu_tiny": dict(embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=64, decoder_depth=1,
                          decoder_num_heads=4, num_class_ids=1),
}


def build_mage(name: str, *, codebook_size: int, num_tokens: int, **overrides) -> MAGE:
    """A MAGE variant by name (``MAGE_VARIANTS``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in MAGE_VARIANTS:
        raise ValueError(f"unknown token-predictor variant {name!r}; known: {', '.join(MAGE_VARIANTS)}")
    return MAGE(codebook_size=codebook_size, num_tokens=num_tokens, **{**MAGE_VARIANTS[name], **overrides})
