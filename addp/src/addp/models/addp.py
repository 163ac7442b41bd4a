"""The trainable pixel-to-token network of ADDP (official ``MaskedGenerativeEncoderViT``, spec §2.3).

Encoder ``E``: a ViT over the rendered image ``x_t`` (all patches, no masking). Decoder ``G``: reads the
encoder features at the *reliable* positions, the embeddings of the reliable token ids, and predicts
logits over the vocabulary at every position.

Tensors of the official checkpoints that no forward uses (``decoder_pos_embed``, ``pos_token_embed``,
``pos_mask_embed``, ``decoder_pred``) are not modules here; the converter drops them by name.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from torch import nn

from .mage import vocab_layout
from .transformer import Block, MlmLayer, init_official_

__all__ = ["ADDP", "ADDP_VARIANTS", "build_addp", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ADDP(nn.Module):
    """ADDP encoder + decoder (spec §2.3); parameter names as in the official state dict.

    Args:
        img_size, patch_size: the encoder's patch grid must equal the tokenizer's token grid
            (16x16 for 256 / 16; 8x8 for the CPU demo's 32 / 4).
        codebook_size: K; the vocabulary is K + ``num_class_ids`` (1000 in the release; 1 in the CPU demo)
            + 1 mask id.
        embed_dim, depth, num_heads: encoder.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder; ``decoder_embed_dim`` must equal
            ``embed_dim`` (width-D tensors are added to decoder activations, spec §11).
        dropout: on the embedding output (``tokenizer_dropout``), attention probabilities, attention
            projections and MLPs of encoder and decoder (0.1 in pre-training).
        drop_path: stochastic depth of every block (0 in pre-training).
        attn_impl: ``"sdpa"`` | ``"math"``.

    Raises:
        ValueError: for ``decoder_embed_dim != embed_dim`` or an image size not divisible by the patch size.
    """

    def __init__(self, img_size: int = 256, patch_size: int = 16, in_chans: int = 3, codebook_size: int = 1024,
                 num_class_ids: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 768,
                 decoder_depth: int = 8, decoder_num_heads: int = 16, mlp_ratio: float = 4.0, dropout: float = 0.1,
                 drop_path: float = 0.0, attn_impl: str = "sdpa"):
        super().__init__()
        if decoder_embed_dim != embed_dim:
            raise ValueError(f"decoder_embed_dim ({decoder_embed_dim}) must equal embed_dim ({embed_dim}): "
                             "token embeddings and decoder_pos_mask_embed (width embed_dim) enter the decoder stream")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size, self.codebook_size = img_size, codebook_size
        self.vocab_size, _, _ = vocab_layout(codebook_size, num_class_ids)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.num_tokens = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.tokenizer_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.tokenizer_dropout = nn.Dropout(dropout)
        blk = dict(mlp_ratio=mlp_ratio, qkv_bias=True, drop=dropout, attn_drop=dropout, attn_impl=attn_impl)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, drop_path=drop_path, **blk) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim))
        self.decoder_pos_mask_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.decoder_pos_token_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, drop_path=drop_path, **blk)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.token_emb = nn.Embedding(self.vocab_size, embed_dim)
        self.mlm_layer = MlmLayer(decoder_embed_dim, embed_dim, self.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        """Official initialisation: normal(0.02) for position tables, cls / mask tokens and ``token_emb``
        (learned, not sin-cos), xavier-uniform for the flattened patch projection and every Linear."""
        for p in (self.pos_embed, self.decoder_pos_embed_learned, self.decoder_pos_token_embed,
                  self.decoder_pos_mask_embed, self.cls_token, self.mask_token, self.token_emb.weight):
            nn.init.normal_(p, std=0.02)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        init_official_(self)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): images (B, 3, H, W) in [0, 1] (clamped here) -> features (B, 1 + N, D) (spec §2.3 steps 1-4).

        Raises:
            ValueError: if the image size differs from the model's ``img_size``.
        """
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ADDP expects {self.img_size}x{self.img_size} images, got {tuple(x.shape[-2:])}; "
                             "set data.img_size to the model's img_size")
        x = (x.clamp(0, 1) - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)
        p = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(p.shape[0], -1, -1)
        h = self.tokenizer_dropout(self.tokenizer_norm(torch.cat([cls, p], dim=1)))
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    def forward_decoder(self, e: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """G(e, z, m) (spec §2.3 decoder steps 1-6).

        Args:
            e: encoder features (B, 1 + N, D).
            ids: token ids (B, N); only the reliable ones (``mask == False``) are read.
            mask: (B, N) bool, True = unreliable; every row must hold the same number of True.

        Returns:
            logits (B, 1 + N + n_reliable, V); positions ``1..N`` are the grid.

        Raises:
            ValueError: if the rows of ``mask`` hold different numbers of reliable tokens.
        """
        B, L, _ = e.shape
        keep = mask.logical_not()
        n_keep = keep.sum(1)
        if bool((n_keep != n_keep[:1]).any()):
            raise ValueError("every sample of a batch must have the same number of reliable tokens "
                             f"(got {sorted(set(n_keep.tolist()))})")
        full_mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)[..., None]   # cls feature is replaced too
        h = torch.where(full_mask, self.mask_token.to(e.dtype), self.decoder_embed(e))
        pos = torch.where(torch.cat([mask.new_zeros(B, 1), mask], dim=1)[..., None],
                          self.decoder_pos_mask_embed, self.decoder_pos_embed_learned)
        tok = self.token_emb(ids)[keep].view(B, -1, h.shape[-1])
        tok_pos = self.decoder_pos_token_embed[:, 1:].expand(B, -1, -1)[keep].view(B, -1, h.shape[-1])
        x = torch.cat([h, tok], dim=1) + torch.cat([pos, tok_pos], dim=1).to(h.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.mlm_layer(self.decoder_norm(x), self.token_emb.weight.detach())

    def forward(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixel-to-token: images (B, 3, H, W), ids (B, N), mask (B, N) -> grid logits (B, N, V)."""
        return self.forward_decoder(self.forward_encoder(x), ids, mask)[:, 1: 1 + self.num_tokens]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-pooled patch features of the encoder (B, D) for linear probing (cls token excluded)."""
        return self.forward_encoder(x)[:, 1:].mean(dim=1)


ADDP_VARIANTS: dict[str, dict] = {
    "addp_vit_base_patch16": dict(img_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                  decoder_embed_dim=768, decoder_depth=8, decoder_num_heads=16),
    "addp_vit_large_patch16": dict(img_size=256, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                   decoder_embed_dim=1024, decoder_depth=8, decoder_num_heads=16),
    # CPU demo (spec §8): 32x32 images, patch 4 -> 8x8 grid, D 64, depth 4, decoder depth 2
    "addp_vit_tiny": dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, decoder_embed_dim=64,
                          decoder_depth=2, decoder_num_heads=4, num_class_ids=1),
}


def build_addp(name: str, *, codebook_size: int, **overrides) -> ADDP:
    """An ADDP variant by name (``ADDP_VARIANTS``) with optional overrides (dropout, attn_impl, ...).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in ADDP_VARIANTS:
        raise ValueError(f"unknown ADDP variant {name!r}; known: {', '.join(ADDP_VARIANTS)}")
    return ADDP(codebook_size=codebook_size, **{**ADDP_VARIANTS[name], **overrides})
