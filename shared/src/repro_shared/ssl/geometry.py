"""Two-view crop geometry and the sin-cos position embeddings that encode it (SiameseIM, M3I).

Three pieces (spec sim.md sections 2.1 and 2.4):

- :class:`PairedViewCrop`: two views of one image by an independent horizontal flip and an independent
  RandomResizedCrop each, plus the six numbers that place view 2 in view 1's frame:
  ``geometry = [di, dj, dh, dw, rel_flip, dj_flip]`` with, for boxes ``(i, j, h, w)`` (top row, left column,
  height, width, each in the frame of its own possibly flipped image of width ``W``)::

      di = (i2 - i1) / h1     dj = (j2 - j1) / w1     dh = h2 / h1     dw = w2 / w1
      rel_flip = flip1 XOR flip2                      dj_flip = (W - j1 - j2) / w1

- :func:`view2_centres_in_view1`: the centre of each view-2 patch ``(r, c)`` in view 1's patch-grid units
  (integers are patch indices)::

      y = G*di + dh*(r + 1/2) - 1/2
      x = G*dj + dw*(c + 1/2) - 1/2           (rel_flip = 0)
      x = G*dj_flip - dw*(c + 1/2) - 1/2      (rel_flip = 1: view-1 column u1 and view-2 column u2 show the
                                               same original column when u1 = W - j1 - j2 - u2)

- :func:`relative_sincos_embedding` (the decoder queries' geometry, ``(B, G*G, 2*D)``) and
  :func:`absolute_sincos_embedding` (the fixed ``(1 + G*G, D)`` table). Both put the **row before the
  column**, unlike MAE's/timm's helper (column first): with the same box and flip state the first ``D``
  channels of the relative embedding equal the absolute table, which the method relies on.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms import RandomResizedCrop

__all__ = ["GEOMETRY_FIELDS", "relative_geometry", "PairedViewCrop", "view2_centres_in_view1",
           "absolute_sincos_embedding", "relative_sincos_embedding"]

#: column names of a geometry vector ``(..., 6)``
GEOMETRY_FIELDS = ("delta_i", "delta_j", "delta_h", "delta_w", "rel_flip", "delta_j_flip")


def relative_geometry(box1: tuple[float, float, float, float], box2: tuple[float, float, float, float],
                      flip1: bool, flip2: bool, width: float) -> torch.Tensor:
    """The six numbers of view 2 relative to view 1 (module docstring), float32 ``(6,)``.

    Args:
        box1, box2: ``(i, j, h, w)`` in pixels, each in the frame of its own (flipped) image.
        flip1, flip2: whether each view's image was flipped horizontally before cropping.
        width: the original image width ``W`` in pixels.

    Raises:
        ValueError: a box with non-positive height or width.
    """
    i1, j1, h1, w1 = (float(v) for v in box1)
    i2, j2, h2, w2 = (float(v) for v in box2)
    if min(h1, w1, h2, w2) <= 0:
        raise ValueError(f"crop boxes need positive height and width, got {box1} and {box2}")
    return torch.tensor([(i2 - i1) / h1, (j2 - j1) / w1, h2 / h1, w2 / w1, float(bool(flip1) != bool(flip2)),
                         (float(width) - j1 - j2) / w1], dtype=torch.float32)


class PairedViewCrop:
    """Independent flip, then independent RandomResizedCrop, for two views of one PIL image.

    Random draws, in this order, from torch's global RNG (as SiameseIM's ``DataAugmentationForSIM``):
    ``flip1``, ``flip2`` (``torch.rand(1) < flip_p`` each), then torchvision's
    ``RandomResizedCrop.get_params`` for view 1 and for view 2 (10 attempts, then the centre-crop fallback).

    Args:
        size: output side in pixels (224).
        scale: crop area range as a fraction of the image (SiameseIM ``crop_min`` 0.08 to 1).
        ratio: aspect ratio range (log-uniform).
        interpolation: resize filter (bicubic in SiameseIM).
        flip_p: probability of flipping each view.

    Call: ``view1, view2, geometry = crop(img)`` with PIL views of ``size x size`` and ``geometry`` float32
    ``(6,)`` as :func:`relative_geometry`; the two crops need not overlap.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
                 interpolation: InterpolationMode = InterpolationMode.BICUBIC, flip_p: float = 0.5):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.interpolation, self.flip_p = interpolation, float(flip_p)

    def __repr__(self) -> str:
        return (f"PairedViewCrop(size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
                f"interpolation={self.interpolation.value}, flip_p={self.flip_p})")

    def __call__(self, img: Any) -> tuple[Any, Any, torch.Tensor]:
        flip1 = bool(torch.rand(1) < self.flip_p)
        flip2 = bool(torch.rand(1) < self.flip_p)
        img1 = TF.hflip(img) if flip1 else img
        img2 = TF.hflip(img) if flip2 else img
        box1 = RandomResizedCrop.get_params(img1, list(self.scale), list(self.ratio))
        box2 = RandomResizedCrop.get_params(img2, list(self.scale), list(self.ratio))
        width = TF.get_image_size(img)[0]
        view1 = TF.resized_crop(img1, *box1, [self.size, self.size], self.interpolation)
        view2 = TF.resized_crop(img2, *box2, [self.size, self.size], self.interpolation)
        return view1, view2, relative_geometry(box1, box2, flip1, flip2, width)


def view2_centres_in_view1(geometry: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of view 2's ``G x G`` patches in view 1's patch-grid units, float32.

    Args:
        geometry: ``(B, 6)`` as :func:`relative_geometry` (any float dtype, any device).
        grid_size: ``G``.

    Returns:
        ``y, x``: each ``(B, G*G)``, view-2 patches in row-major order (index ``r*G + c``).
    """
    g = geometry.float()
    di, dj, dh, dw, rflip, dj_flip = g.unbind(-1)
    idx = torch.arange(grid_size, dtype=torch.float32, device=g.device) + 0.5
    rows = idx.repeat_interleave(grid_size)  # r + 1/2 for token r*G + c
    cols = idx.repeat(grid_size)             # c + 1/2
    y = grid_size * di[:, None] + dh[:, None] * rows - 0.5
    x_same = grid_size * dj[:, None] + dw[:, None] * cols
    x_flip = grid_size * dj_flip[:, None] - dw[:, None] * cols
    x = torch.where(rflip[:, None] > 0.5, x_flip, x_same) - 0.5
    return y, x


def _omega(dim4: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Frequencies ``10000^(-k / dim4)``, ``k = 0..dim4-1``."""
    return 1.0 / (10000.0 ** (torch.arange(dim4, dtype=dtype, device=device) / dim4))


def absolute_sincos_embedding(dim: int, grid_size: int, cls_token: bool = True,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos table, row before column, float32 ``(1 + G*G, D)`` (``(G*G, D)`` without CLS).

    Row ``1 + r*G + c`` is ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with ``w_k = 10000^(-k/(D/4))``,
    each block ``D/4`` long; the CLS row is zeros. Computed in float64 and rounded once to float32, as
    the official numpy helper.

    Raises:
        ValueError: ``dim`` not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos embedding width must be divisible by 4, got {dim}")
    d4 = dim // 4
    omega = _omega(d4, torch.device(device or "cpu"), torch.float64)
    pos = torch.arange(grid_size, dtype=torch.float64, device=omega.device)
    r = (pos.repeat_interleave(grid_size)[:, None] * omega).reshape(-1, 1, d4)  # (N, 1, D/4)
    c = (pos.repeat(grid_size)[:, None] * omega).reshape(-1, 1, d4)
    table = torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1).reshape(-1, dim)
    if cls_token:
        table = torch.cat([table.new_zeros(1, dim), table], dim=0)
    return table.float()


def relative_sincos_embedding(geometry: torch.Tensor, dim: int, grid_size: int) -> torch.Tensor:
    """Sin-cos embedding of view 2's patch positions and scale in view 1's frame, ``(B, G*G, 2*D)`` float32.

    Eight blocks of ``D/4``: ``[sin y w, cos y w, sin x w, cos x w, sin s_h w, cos s_h w, sin s_w w, cos s_w w]``
    with ``(y, x)`` from :func:`view2_centres_in_view1`, ``s_h = 10 ln dh``, ``s_w = 10 ln dw`` and
    ``w_k = 10000^(-k/(D/4))``. Computed in float32 (autocast off) and detached, as the official
    ``get_2d_sincos_pos_embed_relative``; the output lives on ``geometry``'s device.

    Args:
        geometry: ``(B, 6)`` as :func:`relative_geometry`.
        dim: ``D`` (the decoder width; the output has ``2*D`` channels).
        grid_size: ``G``.

    No host sync: a non-positive ``dh``/``dw`` (impossible for real crops) gives non-finite values, which
    the training loop's non-finite check reports.

    Raises:
        ValueError: ``dim`` not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos embedding width must be divisible by 4, got {dim}")
    autocast_device = geometry.device.type if geometry.device.type in ("cuda", "cpu", "xpu") else "cpu"
    with torch.autocast(device_type=autocast_device, enabled=False):
        g = geometry.detach().float()
        y, x = view2_centres_in_view1(g, grid_size)
        omega = _omega(dim // 4, g.device, torch.float32)
        pos = torch.stack([y, x], dim=-1)[..., None] * omega                    # (B, N, 2, D/4)
        scale = (10.0 * torch.log(g[:, 2:4]))[:, None, :, None] * omega          # (B, 1, 2, D/4)
        pos = torch.stack([pos.sin(), pos.cos()], dim=3)                          # (B, N, 2, 2, D/4)
        scale = torch.stack([scale.sin(), scale.cos()], dim=3).expand(-1, pos.shape[1], -1, -1, -1)
        return torch.cat([pos, scale], dim=2).reshape(g.shape[0], -1, 2 * dim)

