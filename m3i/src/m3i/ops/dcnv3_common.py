"""What every DCNv3 backend shares: the op's geometry, its output size and its input checks.

The DCNv3 core (InternImage, Wang et al. CVPR 2023, Eq. 4; spec m3i.md section 6) for an input
``v (N, H, W, G*Cg)`` (channels last), offsets ``Δ (N, Ho, Wo, G*P*2)`` and masks ``m (N, Ho, Wo, G*P)``::

    y[n, h, w, g*Cg:(g+1)*Cg] = sum_{q<P} m[n, h, w, g, q] * bilinear(v[n, :, :, g], X_q, Y_q)

    q = i*kh + j  (i: x index over kw, OUTER; j: y index over kh, INNER; the official ``meshgrid`` order)
    c_x = dw*(kw-1)//2,  c_y = dh*(kh-1)//2
    X_q = c_x + w*sw + os*(-c_x + i*dw + Δ[n,h,w,g,q,0]) - pad_x     (pixel index in the unpadded map)
    Y_q = c_y + h*sh + os*(-c_y + j*dh + Δ[n,h,w,g,q,1]) - pad_y

Bilinear sampling reads zero at every integer pixel outside ``[0, H) x [0, W)`` (zero padding).
``os`` (``offset_scale``) scales the fixed kernel grid too, not only the learned offsets. With
``remove_center`` the centre point ``(kh*kw-1)//2`` is dropped (``P = kh*kw - 1``) and the masks are not
renormalised. ``Ho = (H + 2*pad_h - (dh*(kh-1)+1)) // sh + 1`` (``Wo`` likewise).

``pad_x``/``pad_y``: the official CUDA kernel pads H by ``pad_h`` and W by ``pad_w``. The official pure-PyTorch
reference ``dcnv3_core_pytorch`` calls ``F.pad(x, [0, 0, pad_h, pad_h, pad_w, pad_w])`` on a channels-last
tensor, which pads **W by pad_h and H by pad_w** (quirk 1 of the spec). The two agree whenever
``pad_h == pad_w``, which holds in every InternImage model (pad 1). :class:`DCNv3Geometry` carries both pads
and ``swap_pad`` says which convention a backend follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DCNv3Geometry", "check_inputs"]


@dataclass(frozen=True)
class DCNv3Geometry:
    """The integer / float hyper-parameters of one DCNv3 call (the official argument list)."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    group: int
    group_channels: int
    offset_scale: float
    remove_center: int
    swap_pad: bool = False  # True: the official pure-PyTorch padding (W by pad_h, H by pad_w)

    def __post_init__(self):
        for name in ("kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "group",
                     "group_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DCNv3 {name} must be >= 1, got {getattr(self, name)}")
        if self.pad_h < 0 or self.pad_w < 0:
            raise ValueError(f"DCNv3 padding must be >= 0, got ({self.pad_h}, {self.pad_w})")
        if self.remove_center and (self.kernel_h % 2 == 0 or self.kernel_h != self.kernel_w):
            raise ValueError("remove_center is only compatible with a square kernel of odd size, got "
                             f"{self.kernel_h}x{self.kernel_w}")

    @property
    def points(self) -> int:
        """``P``: sampling points per group."""
        return self.kernel_h * self.kernel_w - int(bool(self.remove_center))

    @property
    def centre(self) -> tuple[int, int]:
        """``(c_y, c_x)``: the kernel centre in padded pixels (official ``(d*(k-1))//2``)."""
        return (self.dilation_h * (self.kernel_h - 1)) // 2, (self.dilation_w * (self.kernel_w - 1)) // 2

    @property
    def pads(self) -> tuple[int, int]:
        """``(pad_y, pad_x)`` actually applied to (H, W) under this backend's convention."""
        return (self.pad_w, self.pad_h) if self.swap_pad else (self.pad_h, self.pad_w)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(Ho, Wo)`` for an ``H x W`` input."""
        py, px = self.pads
        ho = (height + 2 * py - (self.dilation_h * (self.kernel_h - 1) + 1)) // self.stride_h + 1
        wo = (width + 2 * px - (self.dilation_w * (self.kernel_w - 1) + 1)) // self.stride_w + 1
        return ho, wo

    def kernel_points(self, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(P, 2)`` fixed kernel offsets ``(x, y)`` in pixels, x-major (``q = i*kh + j``), centre removed
        when ``remove_center``: ``x = -c_x + i*dw``, ``y = -c_y + j*dh``."""
        cy, cx = self.centre
        i = torch.arange(self.kernel_w, device=device, dtype=dtype).repeat_interleave(self.kernel_h)
        j = torch.arange(self.kernel_h, device=device, dtype=dtype).repeat(self.kernel_w)
        pts = torch.stack([i * self.dilation_w - cx, j * self.dilation_h - cy], dim=-1)
        if self.remove_center:
            keep = torch.ones(pts.shape[0], dtype=torch.bool, device=device)
            keep[(self.kernel_h * self.kernel_w - 1) // 2] = False
            pts = pts[keep]
        return pts


def check_inputs(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, geo: DCNv3Geometry) -> tuple[int, int]:
    """Check the three tensors against the signature; returns ``(Ho, Wo)``.

    Raises:
        ValueError: naming the tensor whose shape disagrees (channels != group * group_channels, offsets or
            masks of the wrong size, batch sizes that differ).
    """
    if input.dim() != 4:
        raise ValueError(f"DCNv3 input must be channels-last (N, H, W, C), got shape {tuple(input.shape)}")
    n, h, w, c = input.shape
    if c != geo.group * geo.group_channels:
        raise ValueError(f"DCNv3 input has {c} channels but group * group_channels = "
                         f"{geo.group} * {geo.group_channels} = {geo.group * geo.group_channels}")
    ho, wo = geo.output_size(h, w)
    if ho < 1 or wo < 1:
        raise ValueError(f"DCNv3 input {h}x{w} is too small for kernel {geo.kernel_h}x{geo.kernel_w} with "
                         f"padding ({geo.pad_h}, {geo.pad_w}) and dilation ({geo.dilation_h}, {geo.dilation_w})")
    want_off = (n, ho, wo, geo.group * geo.points * 2)
    if tuple(offset.shape) != want_off:
        raise ValueError(f"DCNv3 offset must be (N, Ho, Wo, group*P*2) = {want_off}, got {tuple(offset.shape)}")
    want_mask = (n, ho, wo, geo.group * geo.points)
    if tuple(mask.shape) != want_mask:
        raise ValueError(f"DCNv3 mask must be (N, Ho, Wo, group*P) = {want_mask}, got {tuple(mask.shape)}")
    return ho, wo
