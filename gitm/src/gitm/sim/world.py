"""The simulator's world: a seeded, lazily generated grid of 20x20-block cells (spec 6a, "World model").

No voxels. Each cell has a biome, a surface inventory (counts of trees, plants, sand, passive mobs ...),
and an underground profile: for each 4-block y-band the count of every ore, lava, gravel and dirt block,
the rest being stone. Counts are Poisson draws from the vanilla 1.11 generation densities
(:data:`gitm.knowledge.hand.ORES`), seeded by (world seed, cell) with a cheap per-cell generator. Biomes come in regions of
``region x region`` cells so that a spawn in a desert means walking to find trees ("biome luck").
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..knowledge import hand

BAND = 4  # y-levels per underground band
N_BANDS = 16  # y 0..63


def layer_of(y: int) -> int:
    """Index of the underground band holding y (clamped to the modelled bands 0..15)."""
    return max(0, min(N_BANDS - 1, int(y) // BAND))


def _mix(*xs: int) -> list[int]:
    return [int(x) & 0xFFFFFFFF for x in xs]


def _rng(*xs: int) -> random.Random:
    """A cheap per-cell generator seeded by the mixed key (Python's Mersenne Twister)."""
    return random.Random(zlib.crc32(struct.pack(f"<{len(xs)}I", *_mix(*xs))) * 2654435761 + len(xs))


def poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw: Knuth's product method for lam < 30, a rounded normal above (counts of hundreds)."""
    if lam <= 0:
        return 0
    if lam >= 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@dataclass
class Cell:
    """One 20x20-block cell: biome, surface counts and lazily drawn underground band counts."""

    cx: int
    cz: int
    biome: str
    surface_y: int
    surface: dict[str, int]
    night: dict[str, int]
    bands: dict[int, dict[str, int]] = field(default_factory=dict)


class World:
    """Seeded cell grid. ``cell(cx, cz)`` creates a cell on first access; ``band(cell, y)`` its y-band.

    Args:
        seed: world seed; the same seed always gives the same world.
        cell_size: blocks per cell side (paper: 20).
        region: biome region side in cells.
    """

    def __init__(self, seed: int, cell_size: int = 20, region: int = 3, surface_density: float = 1.0):
        self.seed = int(seed)
        self.cell_size = cell_size
        self.region = region
        self.surface_density = surface_density
        self.cells: dict[tuple[int, int], Cell] = {}
        self._biomes = list(hand.BIOMES)
        w = np.array([hand.BIOMES[b]["weight"] for b in self._biomes], dtype=float)
        self._cum = np.cumsum(w / w.sum())
        self._surface_keys = {b: list(spec["surface"]) for b, spec in hand.BIOMES.items()}
        self._surface_means = {b: [float(spec["surface"][k]) for k in self._surface_keys[b]]
                               for b, spec in hand.BIOMES.items()}
        self._hostile = [m for m, spec in hand.MOBS.items() if spec.get("night")]
        area = cell_size * cell_size
        # expected ore blocks per (cell, band): veins/chunk * vein size * fill / y-range * band * area/256
        self._ore_mean: dict[str, np.ndarray] = {}
        for ore, spec in hand.ORES.items():
            lo, hi = spec["y"]
            per_level = spec["per_chunk"] * spec["vein"] * hand.VEIN_FILL / (hi - lo + 1) * area / 256.0
            levels = np.arange(N_BANDS * BAND)
            dens = np.where((levels >= lo) & (levels <= hi), per_level, 0.0)
            if "triangular" in spec:  # lapis: triangular around the centre, same total
                c, h = spec["triangular"], spec["triangular"]
                tri = np.clip(1 - np.abs(levels - c) / h, 0, None)
                dens = tri / tri.sum() * per_level * (hi - lo + 1)
            dens[: hand.BEDROCK_TOP + 1] = 0.0
            self._ore_mean[ore] = dens.reshape(N_BANDS, BAND).sum(1)

    # ------------------------------------------------------------------------------------------ cells
    def biome_at(self, cx: int, cz: int) -> str:
        rx, rz = cx // self.region, cz // self.region
        u = zlib.crc32(struct.pack("<3I", *_mix(self.seed, rx, rz))) / 2**32
        return self._biomes[int(np.searchsorted(self._cum, u, side="right"))]

    def cell(self, cx: int, cz: int) -> Cell:
        key = (cx, cz)
        c = self.cells.get(key)
        if c is None:
            biome = self.biome_at(cx, cz)
            rng = _rng(self.seed, cx, cz, 1)
            d = self.surface_density
            counts = [poisson(rng, lam * d) for lam in self._surface_means[biome]]
            surface = {k: n for k, n in zip(self._surface_keys[biome], counts) if n > 0}
            if "log" in surface:
                surface["leaves"] = 3 * surface["log"]
            dirt_like = biome not in ("ocean", "desert", "beach", "mesa", "mushroom_island")
            night = {m: n for m in self._hostile if (n := poisson(rng, 0.6)) > 0}
            if biome != "swampland":
                night.pop("slime", None)
            if biome in ("ocean", "river", "mushroom_island"):
                night = {}
            y = hand.SURFACE_Y + rng.randint(-2, 2) + (12 if biome == "extreme_hills" else 0)
            if not dirt_like:
                surface.setdefault("dirt", 0)
            c = Cell(cx, cz, biome, y, surface, night)
            self.cells[key] = c
        return c

    def band(self, cell: Cell, y: int) -> dict[str, int]:
        """Block counts of the band holding ``y`` (created on first access)."""
        b = layer_of(y)
        counts = cell.bands.get(b)
        if counts is None:
            rng = _rng(self.seed, cell.cx, cell.cz, 2, b)
            counts = {}
            for ore, means in self._ore_mean.items():
                lam = 0.0 if (ore == "emerald_ore" and cell.biome != "extreme_hills") else float(means[b])
                n = poisson(rng, lam)
                if n > 0:
                    counts[ore] = n
            total = self.cell_size * self.cell_size * BAND
            counts["stone"] = max(0, total - sum(counts.values()))
            cell.bands[b] = counts
        return counts

    def band_size(self) -> int:
        return self.cell_size * self.cell_size * BAND
