"""Dense transfer: De-focus Mamba backbone + ViTDet simple feature pyramid + a torchvision detector.

Backbone (spec §2.8, official ``Defocus_Mamba_Backbone``): the classification blocks with
* window token reordering: pad the image (bottom/right) to a multiple of ``pretrain_size`` pixels,
  patchify, order tokens as (window_row, window_col, in_row, in_col) so that each pretrain-sized window
  is one contiguous raster run (paper Fig. 7), append the CLS token, run the blocks, LayerNorm
  (eps 1e-5), drop the CLS, undo the permutation and crop to ceil(H/16) x ceil(W/16);
* constant stochastic depth linspace(0, 0.5, depth); fp32; rope/delta scale factors from the config
  (Base: 20.0 / 4.57).
Neck: SimpleFPN (strides 4, 8, 16, 32; ConvT/MaxPool, then 1x1 + LN2d and 3x3 + LN2d to 256 channels).

OUR ADAPTATION (differs from the official setup): the official detector is mmdet DINO-4scale (900
queries, deformable transformer, focal/L1/GIoU losses, contrastive denoising). DINO is not available in
torchvision, so :func:`build_detector` puts the backbone + SimpleFPN under torchvision's Faster R-CNN
(default) or RetinaNet, with a fifth max-pooled level for the RPN anchors. COCO numbers of the paper are
therefore not expected from this detector.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .defocus_mamba import PatchEmbed, drop_path_rates
from .mixer import DefocusMambaBlock, MixerConfig

__all__ = ["DefocusMambaBackbone", "SimpleFPN", "BackboneWithSimpleFPN", "build_detector", "window_order"]


def window_order(gh: int, gw: int, n: int) -> Tensor:
    """Permutation of the (gh*gw) raster indices into window-major order (windows of n x n tokens).

    ``tokens_window = tokens_raster[:, perm]``; gh and gw must be multiples of n.
    """
    idx = torch.arange(gh * gw).view(gh // n, n, gw // n, n)
    return idx.permute(0, 2, 1, 3).reshape(-1)


class DefocusMambaBackbone(nn.Module):
    """Images (b, 3, H, W) -> one stride-``patch_size`` map (b, C, ceil(H/p), ceil(W/p))."""

    def __init__(self, mixer: MixerConfig, depth: int = 24, patch_size: int = 16, in_chans: int = 3,
                 pretrain_size: int = 224, drop_path_rate: float = 0.5, window_reorder: bool = True):
        super().__init__()
        if pretrain_size % patch_size:
            raise ValueError(f"pretrain_size {pretrain_size} must be a multiple of patch_size {patch_size}")
        H = mixer.hidden_size
        self.patch_size, self.pretrain_size, self.window_reorder = patch_size, pretrain_size, window_reorder
        self.out_channels = H
        self.patch_embed = PatchEmbed(patch_size, in_chans, H)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, H))
        self.blocks = nn.ModuleList([DefocusMambaBlock(mixer) for _ in range(depth)])
        self.dpr = drop_path_rates(drop_path_rate, depth)
        self.norm = nn.LayerNorm(H, eps=1e-5)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p, s = self.patch_size, self.pretrain_size if self.window_reorder else self.patch_size
        x = F.pad(x, (0, (-w) % s, 0, (-h) % s))  # zero padding at the bottom/right ("corner")
        feat = self.patch_embed.proj(x)  # (b, C, gh, gw)
        C, gh, gw = feat.shape[1:]
        tokens = feat.flatten(2).transpose(1, 2)
        perm = window_order(gh, gw, s // p).to(x.device) if self.window_reorder else None
        if perm is not None:
            tokens = tokens[:, perm]
        tokens = torch.cat([tokens, self.cls_token.expand(b, -1, -1)], dim=1)
        for blk, rate in zip(self.blocks, self.dpr):
            tokens = blk(tokens, rate)
        tokens = self.norm(tokens)[:, :-1]
        if perm is not None:
            tokens = tokens[:, torch.argsort(perm)]
        out = tokens.transpose(1, 2).reshape(b, C, gh, gw)
        return out[:, :, : -(-h // p), : -(-w // p)]


class LayerNorm2d(nn.LayerNorm):
    """Channel LayerNorm on (b, C, H, W), eps 1e-6."""

    def __init__(self, c: int):
        super().__init__(c, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFPN(nn.Module):
    """ViTDet simple pyramid from one stride-16 map (b, C, h, w) to 4 maps of ``out_channels`` at strides 4-32."""

    def __init__(self, in_dim: int, out_channels: int = 256):
        super().__init__()
        c = in_dim
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), LayerNorm2d(c // 2), nn.GELU(),
                                  nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(c, c // 2, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)
        self.lateral = nn.ModuleList()
        self.output = nn.ModuleList()
        for cin in (c // 4, c // 2, c, c):
            self.lateral.append(nn.Sequential(nn.Conv2d(cin, out_channels, 1, bias=False), LayerNorm2d(out_channels)))
            self.output.append(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                             LayerNorm2d(out_channels)))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        return [out(lat(f)) for f, lat, out in zip(feats, self.lateral, self.output)]


class BackboneWithSimpleFPN(nn.Module):
    """torchvision detector interface: images -> OrderedDict('0'..'3' strides 4-32, 'pool' stride 64)."""

    def __init__(self, backbone: DefocusMambaBackbone, out_channels: int = 256, extra_pool: bool = True):
        super().__init__()
        self.body = backbone
        self.fpn = SimpleFPN(backbone.out_channels, out_channels)
        self.out_channels = out_channels
        self.extra_pool = extra_pool

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        levels = self.fpn(self.body(x))
        out = OrderedDict((str(i), f) for i, f in enumerate(levels))
        if self.extra_pool:
            out["pool"] = F.max_pool2d(levels[-1], 1, 2, 0)
        return out


def build_detector(mixer: MixerConfig, depth: int, num_classes: int, detector: str = "fasterrcnn",
                   patch_size: int = 16, pretrain_size: int = 224, drop_path_rate: float = 0.5,
                   min_size: int = 800, max_size: int = 1333, **kwargs) -> nn.Module:
    """torchvision Faster R-CNN / RetinaNet over the De-focus Mamba backbone + SimpleFPN (our adaptation).

    ``num_classes`` includes the background class for Faster R-CNN (torchvision convention).
    """
    backbone = DefocusMambaBackbone(mixer, depth, patch_size, pretrain_size=pretrain_size,
                                    drop_path_rate=drop_path_rate)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if detector == "fasterrcnn":
        from torchvision.models.detection import FasterRCNN

        return FasterRCNN(BackboneWithSimpleFPN(backbone), num_classes=num_classes, min_size=min_size,
                          max_size=max_size, image_mean=mean, image_std=std, **kwargs)
    if detector == "retinanet":
        from torchvision.models.detection import RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        return RetinaNet(BackboneWithSimpleFPN(backbone), num_classes=num_classes, anchor_generator=anchors,
                         min_size=min_size, max_size=max_size, image_mean=mean, image_std=std, **kwargs)
    raise ValueError(f"detector must be 'fasterrcnn' or 'retinanet', got {detector!r}")


def load_classification_weights(backbone: DefocusMambaBackbone, state_dict: dict):
    """Copy a classification state dict (ours or converted official) into the backbone; heads are dropped."""
    from repro_shared import checkpoint

    return checkpoint.load_state_dict_remapped(backbone, state_dict, drop=(r"^head",))
