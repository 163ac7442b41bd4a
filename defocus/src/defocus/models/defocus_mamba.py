"""De-focus Mamba classifier: 1D causal token sequence, CLS token at the end (spec §2.1, §2.4, §2.6).

Image (b, 3, S, S) -> patches (b, n_img, H) in row-major raster order -> append CLS -> (b, L, H),
L = n_img + 1 -> N blocks -> LayerNorm -> head(CLS) (b, ncls) [+ head2(image tokens) (b, L-1, ncls)].
"""

from __future__ import annotations

from dataclasses import asdict, fields

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from .mixer import DefocusMambaBlock, DefocusMambaMixer, MixerConfig

__all__ = ["DefocusMamba", "VARIANTS", "build_model", "drop_path_rates"]


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Per-block rates p_i = rate * i / (depth - 1) (torch.linspace(0, rate, depth)), spec §2.5."""
    return [x.item() for x in torch.linspace(0, rate, depth)]


class PatchEmbed(nn.Module):
    """Conv2d(in, H, k=s=patch) and row-major flatten: (b, C, S1, S2) -> (b, (S1/p)*(S2/p), H)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.proj.in_channels:
            raise ValueError(f"expected images (b, {self.proj.in_channels}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {p}; resize or pad the images to a "
                f"multiple of {p} (e.g. {max(p, h // p * p)}x{max(p, w // p * p)})"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # token index = row * (w/p) + col


def _head(embed_dim: int, num_classes: int, head_type: str) -> nn.Module:
    if head_type == "linear":  # IN1k_cls
        return nn.Linear(embed_dim, num_classes)
    if head_type == "mlp":  # IN22k_cls / IN22kto1k_cls: Linear(H, 3H) - Tanh - Linear(3H, ncls)
        return nn.Sequential(nn.Linear(embed_dim, 3 * embed_dim), nn.Tanh(), nn.Linear(3 * embed_dim, num_classes))
    raise ValueError(f"head_type must be 'linear' or 'mlp', got {head_type!r}")


class DefocusMamba(nn.Module):
    """De-focus Mamba classifier (official ``DefocusAttentionNetwork`` with ``MODEL.TYPE=mamba``).

    Args mirror ``MODEL.*``; ``mixer`` holds ``MODEL.MAMBA.*`` as a :class:`MixerConfig`.
    ``aux_loss``: "token_ce" (official code: head2 on every image token), "pooled_ce" (paper text:
    head2 on the mean of the image tokens) or "none" (no head2).
    ``drop_path_rate`` is the default global rate used when ``forward`` gets none (constant
    schedule); the training loop passes the scheduled rate explicitly.
    """

    def __init__(
        self,
        mixer: MixerConfig,
        depth: int = 24,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        aux_loss: str = "token_ce",
        head_type: str = "linear",
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        H = mixer.hidden_size
        self.mixer_cfg = mixer
        self.depth = depth
        self.num_classes = num_classes
        if aux_loss not in ("token_ce", "pooled_ce", "none"):
            raise ValueError(f"aux_loss must be 'token_ce', 'pooled_ce' or 'none', got {aux_loss!r}")
        self.aux_loss = aux_loss
        self.drop_path_rate = drop_path_rate
        self.patch_embed = PatchEmbed(patch_size, in_chans, H)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, H))
        self.blocks = nn.ModuleList([DefocusMambaBlock(mixer, use_checkpoint) for _ in range(depth)])
        self.norm = nn.LayerNorm(H, eps=1e-6)
        self.head = _head(H, num_classes, head_type)
        self.head2 = _head(H, num_classes, head_type) if aux_loss != "none" else None
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Spec §2.4: trunc-normal(0.02) Linears with zero bias, LayerNorm (1, 0), CLS trunc-normal(0.02),
        then the Mamba dt_proj init (zero Linear biases except dt_proj's). Convs keep PyTorch init."""
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, DefocusMambaMixer):
                m.reset_dt()

    def embed(self, x: Tensor) -> Tensor:
        """Images (b, C, S1, S2) -> tokens (b, L, H) with the CLS token appended last (no pos. embedding)."""
        tokens = self.patch_embed(x)
        return torch.cat([tokens, self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)], dim=1)

    def forward_features(self, x: Tensor, drop_path_rate: float | None = None) -> Tensor:
        """Images -> normalised tokens (b, L, H); the last token is the CLS."""
        rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
        h = self.embed(x)
        for blk, p in zip(self.blocks, drop_path_rates(rate, self.depth)):
            h = blk(h, p)
        return self.norm(h)

    def forward_head(self, feats: Tensor, return_aux: bool = False):
        """feats (b, L, H) -> CLS logits (b, ncls) [, aux logits].

        Aux logits: (b, L-1, ncls) per image token for "token_ce", (b, ncls) of the pooled image
        tokens for "pooled_ce", None for "none". Evaluation uses the CLS logits only.
        """
        logits = self.head(feats[:, -1])
        if not return_aux:
            return logits
        if self.aux_loss == "token_ce":
            return logits, self.head2(feats[:, :-1])
        if self.aux_loss == "pooled_ce":
            return logits, self.head2(feats[:, :-1].mean(1))
        return logits, None

    def forward(self, x: Tensor, drop_path_rate: float | None = None, return_aux: bool = False):
        return self.forward_head(self.forward_features(x, drop_path_rate), return_aux)


def _variant(H, depth, E, head_type="linear", **kw):
    return dict(mixer=dict(hidden_size=H, intermediate_size=E, **kw.pop("mixer", {})), depth=depth,
                head_type=head_type, **kw)


# Spec §2.6 (H, depth, E; N=16, R=48, k=4, G=64 for the released sizes) and §8.1 (tiny CPU configs;
# defocus_toy is our smaller default for the 1-minute CPU demo).
VARIANTS: dict[str, dict] = {
    "defocus_mamba_small": _variant(384, 24, 768),
    "defocus_mamba_base": _variant(768, 24, 1536),
    "defocus_mamba_large": _variant(1024, 48, 2048, head_type="mlp"),
    "defocus_mamba_large_22k": _variant(1024, 48, 2048, head_type="mlp", num_classes=21841),
    "defocus_tiny_test": _variant(32, 3, 64, patch_size=8, num_classes=10,
                                  mixer=dict(time_step_rank=8, group_norm_size=16)),
    "defocus_toy": _variant(32, 4, 64, patch_size=4, num_classes=10,
                            mixer=dict(time_step_rank=8, group_norm_size=16)),
    "defocus_pilot": _variant(48, 4, 96, patch_size=4, num_classes=10,
                              mixer=dict(time_step_rank=8, group_norm_size=32)),
}


def build_model(name: str, mixer: dict | None = None, **overrides) -> DefocusMamba:
    """Build a named variant; ``mixer`` overrides ``MixerConfig`` fields, other kwargs ``DefocusMamba``'s."""
    if name not in VARIANTS:
        raise ValueError(f"unknown model variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in VARIANTS[name].items()}
    mixer_kw = spec.pop("mixer")
    mixer_kw.update(mixer or {})
    known = {f.name for f in fields(MixerConfig)}
    bad = sorted(set(mixer_kw) - known)
    if bad:
        raise ValueError(f"unknown mixer option(s) {bad}; known: {sorted(known)}")
    spec.update(overrides)
    return DefocusMamba(MixerConfig(**mixer_kw), **spec)


def describe(model: DefocusMamba) -> dict:
    """Config of a built model, for checkpoints and logs."""
    return {"mixer": asdict(model.mixer_cfg), "depth": model.depth, "num_classes": model.num_classes,
            "aux_loss": model.aux_loss}
