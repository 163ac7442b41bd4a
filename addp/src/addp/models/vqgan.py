"""The frozen VQ tokenizer: MAGE's PyTorch port of the MaskGIT VQGAN ("vqgan_jax_strongaug", spec §2.1).

Every quirk the released weights need is kept:

- no ``quant_conv`` / ``post_quant_conv``: ``encode = quantize(encoder(x))``, ``decode = decoder(z_q)``;
- :class:`ResBlock` has bias-free 3x3 convs, and where the channel count changes its 1x1
  ``nin_shortcut`` (out -> out, no bias) is applied to the *residual branch output* ``h``, not to ``x``:
  the block returns ``nin_shortcut(h) + h`` (no identity path from ``x``);
- the encoder's ``conv_in`` has no bias and its downsampling is 2x2 average pooling (no parameters);
  the decoder upsamples with nearest x2 followed by a 3x3 conv with bias;
- no attention anywhere (``attn_resolutions`` of the official config is ignored);
- inputs are RGB in [0, 1]; outputs are roughly in [0, 1] and not clamped here.

Token index ``i = r * w + c`` (row-major over the latent grid, as the official flattening).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQGANConfig", "VQGAN", "ResBlock", "VQGAN_PRESETS", "build_vqgan"]


@dataclass
class VQGANConfig:
    """Sizes of a :class:`VQGAN`. Defaults are the released MAGE tokenizer (``configs/release/vqgan.yaml``)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    num_groups: int = 32          # GroupNorm groups (32 in the release; the tiny tokenizer uses fewer channels)
    resolution: int = 256         # image side the tokenizer was trained at (used for grid-size checks)

    def __post_init__(self):
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        if self.z_channels != self.embed_dim:
            raise ValueError(f"z_channels ({self.z_channels}) must equal embed_dim ({self.embed_dim}): the MaskGIT "
                             "tokenizer has no quant_conv between the encoder and the codebook")

    @property
    def downsample(self) -> int:
        """Image-to-grid stride, 2 ** (number of levels - 1)."""
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d


VQGAN_PRESETS: dict[str, dict] = {
    # MAGE / ADDP release: 256x256 -> 16x16 tokens, K=1024, 54.52 M parameters
    "maskgit_f16_1024": {},
    # CPU demo (spec §8): 32x32 -> 8x8 tokens, K=64 codes of dim 32
    "tiny_f4_64": dict(ch=16, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=32, embed_dim=32, n_embed=64,
                       num_groups=8, resolution=32),
}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible by num_groups={groups}")
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """``h = conv2(drop(swish(GN2(conv1(swish(GN1(x)))))))``; returns ``x + h`` or, when the channel
    count changes, ``nin_shortcut(h) + h`` (the MaskGIT-port quirk, spec §2.1).

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(h) if self.nin_shortcut is not None else x) + h


class _Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv with bias (key ``upsample.conv``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], resample: nn.Module | None, resample_name: str) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    if resample is not None:
        setattr(level, resample_name, resample)
    return level


def _mid(ch: int, dropout: float, groups: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResBlock(ch, ch, dropout, groups)
    mid.block_2 = ResBlock(ch, ch, dropout, groups)
    return mid


class Encoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, z_channels, H / f, W / f), f = 2 ** (levels - 1)."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1, bias=False)
        mults = (1,) + c.ch_mult
        self.down = nn.ModuleList()
        for i, m in enumerate(c.ch_mult):
            cin, cout = c.ch * mults[i], c.ch * m
            blocks = [ResBlock(cin if j == 0 else cout, cout, c.dropout, c.num_groups) for j in range(c.num_res_blocks)]
            last = i == len(c.ch_mult) - 1
            self.down.append(_level(blocks, None if last else nn.AvgPool2d(2, 2), "downsample"))
        top = c.ch * c.ch_mult[-1]
        self.mid = _mid(top, c.dropout, c.num_groups)
        self.norm_out = _norm(top, c.num_groups)
        self.conv_out = nn.Conv2d(top, c.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h * f, w * f); levels run from the coarsest (``up[-1]``) to ``up[0]``."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        ch_in = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, ch_in, 3, padding=1)
        self.mid = _mid(ch_in, c.dropout, c.num_groups)
        levels: list[nn.Module] = []
        for i in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[i]
            blocks = [ResBlock(ch_in if j == 0 else cout, cout, c.dropout, c.num_groups) for j in range(c.num_res_blocks)]
            levels.insert(0, _level(blocks, _Upsample(cout) if i != 0 else None, "upsample"))
            ch_in = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch_in, c.num_groups)
        self.conv_out = nn.Conv2d(ch_in, c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-vector quantiser: ``argmin_k |z|² + |e_k|² - 2 z·e_k`` (key ``embedding.weight`` (K, C))."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` (B, C, h, w) -> ids (B, h*w) int64 and the code vectors ``z_q`` (B, C, h, w) (no gradient trick)."""
        B, C, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)
        e = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        ids = d.argmin(dim=1)
        z_q = e[ids].view(B, h, w, C).permute(0, 3, 1, 2)
        return ids.view(B, h * w), z_q


class VQGAN(nn.Module):
    """MaskGIT-architecture VQGAN (spec §2.1): ``encoder``, ``decoder``, ``quantize`` (official key names).

    Images are (B, 3, H, W) in [0, 1]; token ids (B, L) with L = (H / f) * (W / f); code vectors
    (B, C, H / f, W / f).
    """

    def __init__(self, config: VQGANConfig | None = None, **kwargs):
        super().__init__()
        self.config = config or VQGANConfig(**kwargs)
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = VectorQuantizer(self.config.n_embed, self.config.embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        """(K, C) code vectors."""
        return self.quantize.embedding.weight

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    def grid_size(self, image_size: int) -> int:
        """Token grid side for square images of side ``image_size``.

        Raises:
            ValueError: if ``image_size`` is not a multiple of the tokenizer's stride.
        """
        f = self.config.downsample
        if image_size % f:
            raise ValueError(f"image size {image_size} is not a multiple of the tokenizer stride {f}")
        return image_size // f

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> ids (B, L) and code vectors z_q (B, C, h, w)."""
        return self.quantize(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Code vectors (hard, soft or mixed) (B, C, h, w) -> images (B, 3, H, W), not clamped."""
        return self.decoder(z)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> code vectors (B, C, h, w) on a square grid."""
        B, L = ids.shape
        s = _side(L)
        return self.codebook[ids].view(B, s, s, -1).permute(0, 3, 1, 2)

    def embed_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """Code probabilities (B, L, K) -> expected code vectors ``probs @ codebook`` (B, C, h, w)."""
        B, L, K = probs.shape
        s = _side(L)
        return (probs @ self.codebook.to(probs.dtype)).view(B, s, s, -1).permute(0, 3, 1, 2)

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> images (B, 3, H, W)."""
        return self.decode(self.embed_ids(ids))

    def forward(self, x: torch.Tensor, restart_unused_codes: bool = False):
        """Training forward of the tiny tokenizer: reconstruction through straight-through code vectors.

        With ``restart_unused_codes`` every code that no position of the batch chose is first moved onto a
        random encoder output of the batch (a stateless dead-code restart; the randomness comes from the
        global torch RNG, which the training loop seeds per step; under a process group rank 0's codebook
        is broadcast so that all ranks agree).

        Returns:
            ``(x_rec (B, 3, H, W), z (B, C, h, w) encoder output, z_q (B, C, h, w) code vectors, ids (B, L))``.
        """
        z = self.encoder(x).float()
        if restart_unused_codes:
            with torch.no_grad():
                used = torch.bincount(self.quantize(z)[0].flatten(), minlength=self.codebook_size) > 0
                dead = (~used).nonzero().flatten()
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                pick = torch.randint(len(flat), (dead.numel(),), device=flat.device)
                self.codebook[dead] = flat[pick].to(self.codebook.dtype)
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.broadcast(self.quantize.embedding.weight.data, 0)
        ids, z_q = self.quantize(z)
        return self.decoder(z + (z_q - z).detach()), z, z_q, ids

    def decode_mixed(self, ids: torch.Tensor, probs: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """Token-to-pixel step (spec §3.2 step 5, §3.3 step 6): position ``i`` uses the expected code vector
        under ``probs[:, i]`` where ``soft[:, i]`` is True and the code of ``ids[:, i]`` elsewhere.

        Shapes: ids (B, L), probs (B, L, K), soft (B, L) bool -> images (B, 3, H, W).
        """
        hard, expected = self.embed_ids(ids), self.embed_probs(probs)
        B, L = soft.shape
        s = _side(L)
        return self.decode(torch.where(soft.view(B, 1, s, s), expected.to(hard.dtype), hard))


def _side(L: int) -> int:
    s = int(round(L ** 0.5))
    if s * s != L:
        raise ValueError(f"{L} tokens do not form a square grid")
    return s


def build_vqgan(preset: str = "maskgit_f16_1024", **overrides) -> VQGAN:
    """A :class:`VQGAN` from a named preset (``VQGAN_PRESETS``) with optional size overrides.

    Raises:
        ValueError: for an unknown preset, listing the known ones.
    """
    if preset not in VQGAN_PRESETS:
        raise ValueError(f"unknown tokenizer preset {preset!r}; known: {', '.join(VQGAN_PRESETS)}")
    return VQGAN(VQGANConfig(**{**VQGAN_PRESETS[preset], **overrides}))

