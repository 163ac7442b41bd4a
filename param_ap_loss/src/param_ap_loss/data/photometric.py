"""mmdet 2.x ``PhotoMetricDistortion`` as a torchvision v2 transform (official SSD-style pipeline).

mmdet runs it on a float32 BGR image in [0, 255] and converts to HSV with OpenCV, whose float HSV has
the hue in degrees [0, 360). So ``brightness_delta=32`` adds U(-32, 32) grey levels and ``hue_delta=18``
turns the hue by U(-18, 18) degrees (not 36: the 0-180 hue scale of OpenCV is for 8-bit images only).
Steps, each applied with probability ``p`` (0.5):

1. brightness: ``x += U(-delta, delta)`` (additive; torchvision's jitter is multiplicative);
2. contrast ``x *= U(range)``, either here or after step 5 (a coin decides);
3. saturation ``s *= U(range)`` and 4. hue ``h += U(-delta, delta)`` in HSV;
5. back to RGB, then (if not done in 2) contrast;
6. random permutation of the three channels.

Nothing is clipped in between (as officially). Here the image is float in [0, 1] (``delta / 255``);
RGB and BGR give the same hue circle, so the channel order does not matter. Random numbers come from
the torch global RNG, which :class:`repro_shared.data.SeededDataset` seeds per sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

_EPS = torch.finfo(torch.float32).eps


def rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB of any range -> (3, H, W) HSV: hue in degrees [0, 360), ``s = (v - min) / |v|``, ``v = max``
    (OpenCV's float formulas)."""
    r, g, b = img.unbind(0)
    v, _ = img.max(0)
    diff = v - img.min(0).values
    s = diff / (v.abs() + _EPS)
    k = 60.0 / (diff + _EPS)
    h = torch.where(v == r, (g - b) * k, torch.where(v == g, (b - r) * k + 120.0, (r - g) * k + 240.0))
    h = torch.where(h < 0, h + 360.0, h)
    return torch.stack([h, s, v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(3, H, W) HSV (hue in degrees, any sign / turn) -> RGB; inverse of :func:`rgb_to_hsv` for s <= 1."""
    h, s, v = hsv.unbind(0)
    h6 = torch.remainder(h / 60.0, 6.0)
    sector = h6.floor().clamp(0, 5).long()
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) per sector 0..5 of the hue circle
    table = torch.stack([torch.stack([v, t, p]), torch.stack([q, v, p]), torch.stack([p, v, t]),
                         torch.stack([p, q, v]), torch.stack([t, p, v]), torch.stack([v, p, q])])  # (6, 3, H, W)
    return table.gather(0, sector[None, None].expand(1, 3, *sector.shape))[0]


class PhotoMetricDistortion(T.Transform):
    """See the module docstring. Args are mmdet's (brightness in grey levels of 255, hue in degrees);
    ``p`` is the probability of each step, ``swap_p`` of the channel permutation. Only images change."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18, p: float = 0.5,
                 swap_p: float | None = None):
        super().__init__()
        self.brightness_delta, self.hue_delta = float(brightness_delta), float(hue_delta)
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)
        self.p = float(p)
        self.swap_p = self.p if swap_p is None else float(swap_p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def coin(prob: float) -> bool:
            return bool(torch.rand(()) < prob)

        def uniform(lo: float, hi: float) -> float:
            return float(torch.empty(()).uniform_(lo, hi))

        return {
            "brightness": uniform(-self.brightness_delta, self.brightness_delta) / 255.0 if coin(self.p) else None,
            "contrast_first": coin(0.5),
            "contrast": uniform(*self.contrast_range) if coin(self.p) else None,
            "saturation": uniform(*self.saturation_range) if coin(self.p) else None,
            "hue": uniform(-self.hue_delta, self.hue_delta) if coin(self.p) else None,
            "perm": torch.randperm(3) if coin(self.swap_p) else None,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x = inpt.as_subclass(torch.Tensor).float()
        if params["brightness"] is not None:
            x = x + params["brightness"]
        if params["contrast_first"] and params["contrast"] is not None:
            x = x * params["contrast"]
        if params["saturation"] is not None or params["hue"] is not None:
            hsv = rgb_to_hsv(x)
            if params["saturation"] is not None:
                hsv = torch.stack([hsv[0], hsv[1] * params["saturation"], hsv[2]])
            if params["hue"] is not None:
                hsv = torch.stack([torch.remainder(hsv[0] + params["hue"], 360.0), hsv[1], hsv[2]])
            x = hsv_to_rgb(hsv)
        if not params["contrast_first"] and params["contrast"] is not None:
            x = x * params["contrast"]
        if params["perm"] is not None:
            x = x[params["perm"]]
        return tv_tensors.wrap(x, like=inpt)
