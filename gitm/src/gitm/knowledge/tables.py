"""The knowledge tables: how each item is obtained, with which materials and tool, and where.

:class:`Knowledge` joins the extracted Minecraft 1.11 data (``gitm/data/mc1_11.json``, see
:mod:`gitm.knowledge.build`) with the hand tables of :mod:`gitm.knowledge.hand`. It is the single source
used by the oracle decomposer and planner, the simulator, the knowledge texts and the tech-tree list, so
that they can never disagree.

Canonical source rule (which of several ways to obtain an item the oracle decomposer uses; spec 2.2):

1. :data:`CANONICAL_KIND` overrides, each with its reason;
2. otherwise the first by (kind order, depth, materials per unit, data order), where the kind order is
   reliable mine (the block drops the item with probability >= 0.5) < reliable attack < apply < smelt
   < craft < unreliable mine/attack (flint, apples, zombie carrots), and depth is the length of the longest
   prerequisite chain (items with no prerequisite have depth 0).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from dataclasses import dataclass, field
from importlib import resources

from ..errors import UnknownItemError
from . import hand

# Tool tiers (the order in which the "most basic" usable tool is picked); gold is as weak as wood for
# harvesting but costs gold, so it is tried last.
TIER_ORDER = ("wooden", "stone", "iron", "diamond", "golden")
KIND_ORDER = {"mine": 0, "attack": 1, "apply": 2, "smelt": 3, "craft": 4, "unreliable": 5}

# item -> source kind that the oracle decomposer uses, where the general rule picks a worse one
CANONICAL_KIND = {
    "stick": "craft",          # dead bushes also drop sticks, but only in deserts
    "hardened_clay": "smelt",  # mesa biomes hold it, but they are rare; clay is everywhere near water
    "iron_ingot": "smelt",     # not 9 nuggets (which come from an ingot)
    "gold_ingot": "smelt",     # not 9 nuggets
    "stone": "smelt",          # smelting cobblestone; natural stone drops cobblestone
    "sand": "mine",
    "wool": "attack",          # killing a sheep needs no shears
}
# item -> the one ingredient that picks among equal-cost crafting recipes
CANONICAL_INGREDIENT = {"stone_slab": "cobblestone", "cobblestone_wall": "cobblestone",
                        "wooden_button": "planks", "dye": "red_flower", "stonebrick": "stone"}


TOOL_TIERS = ("wooden", "golden", "stone", "iron", "diamond")
TOOL_KINDS = ("pickaxe", "axe", "shovel", "sword", "hoe")


def equivalent_tools(tool: str) -> list[str]:
    """``tool`` and the same kind of tool of an equal or better tier (a stone_pickaxe does what a
    wooden_pickaxe does); for anything that is not a tiered tool, just ``[tool]``. Gold counts as wood."""
    tier, _, kind = tool.partition("_")
    if tier not in TOOL_TIERS or kind not in TOOL_KINDS:
        return [tool]
    rank = {"wooden": 0, "golden": 0, "stone": 1, "iron": 2, "diamond": 3}
    return [f"{t}_{kind}" for t in TOOL_TIERS if rank[t] >= rank[tier]]


@dataclass(frozen=True)
class Source:
    """One way to obtain an item.

    Attributes:
        kind: ``craft`` | ``smelt`` | ``mine`` | ``attack`` | ``apply``.
        item: what it gives.
        yield_: items per unit (one recipe use, one smelt, one block, one kill, one use).
        materials: ``((name, qty), ...)`` consumed per unit (smelting lists its input only; fuel is
            added by the decomposer).
        tool: the most basic tool it needs in the inventory (crafting_table, furnace, a pickaxe, a bucket
            ...), or None.
        target: the block mined, mob attacked or object applied to (None for craft/smelt).
        probability: chance that one unit gives the item at all (drops with p < 1).
    """

    kind: str
    item: str
    yield_: float = 1.0
    materials: tuple[tuple[str, int], ...] = ()
    tool: str | None = None
    target: str | None = None
    probability: float = 1.0
    keeps: tuple[str, ...] = field(default=())  # needed in the inventory but not consumed (apply)

    @property
    def reliable(self) -> bool:
        return self.probability >= 0.5


def _load_data() -> dict:
    return json.loads(resources.files("gitm").joinpath("data/mc1_11.json").read_text())


def _tier(tool: str) -> int:
    for i, t in enumerate(TIER_ORDER):
        if tool.startswith(t + "_"):
            return i
    return len(TIER_ORDER)


class Knowledge:
    """Queries over the Minecraft 1.11 tables plus the hand tables (see the module docstring).

    Build it once (``Knowledge.default()`` caches one instance per process); all methods are pure.
    """

    def __init__(self, data: dict | None = None):
        self.data = data if data is not None else _load_data()
        self.items = self.data["items"]
        self.blocks = self.data["blocks"]
        self.materials = self.data["materials"]
        self.recipes: dict[str, list[dict]] = {k: list(v) for k, v in self.data["recipes"].items()}
        for k, extra in hand.EXTRA_RECIPES.items():
            self.recipes.setdefault(k, []).extend(extra)
        self.surface_blocks = sorted({b for biome in hand.BIOMES.values() for b in biome["surface"]} | {"leaves"})
        self.underground_blocks = sorted(set(hand.ORES) | {"stone", "dirt"})
        self.world_mobs = sorted(set(hand.MOB_DROPS))
        self._sources = self._all_sources()
        self.depth = self._depths()
        self.names = sorted(set(self._sources) | set(self.items) | set(self.blocks))

    # ----------------------------------------------------------------------------------------- lookups
    @staticmethod
    @functools.lru_cache(maxsize=1)
    def default() -> "Knowledge":
        """The process-wide instance built from the shipped ``mc1_11.json``."""
        return Knowledge()

    def check_item(self, name: str) -> str:
        """Return ``name`` if some source gives it, else raise :class:`UnknownItemError` with suggestions."""
        if name in self._sources:
            return name
        close = difflib.get_close_matches(str(name), list(self._sources), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = "" if close else f"; obtainable items include {', '.join(sorted(self._sources)[:12])}, ..."
        why = (" (it is not obtainable in the Overworld without structures, trading or Silk Touch)"
               if name in self.items or name in self.blocks else "")
        raise UnknownItemError(f"unknown item {name!r}{why}{hint}{known} "
                               f"(names are Minecraft 1.11 ids, e.g. planks, log, iron_pickaxe)")

    def sources(self, item: str) -> list[Source]:
        """Every known way to obtain ``item`` (raises UnknownItemError for unknown names)."""
        return list(self._sources[self.check_item(item)])

    def source(self, item: str) -> Source:
        """The canonical source of ``item`` (module docstring rule)."""
        return self._canonical(self.check_item(item))

    def drops(self, block: str) -> list[tuple[str, int, int, float]]:
        """``[(item, min, max, p)]`` a broken ``block`` drops with the right tool."""
        if block in hand.DROP_OVERRIDES:
            return list(hand.DROP_OVERRIDES[block])
        b = self.blocks.get(block)
        if b is None:
            return [(block, 1, 1, 1.0)]
        return [(d["item"], int(d["min"]), int(d["max"]), 1.0) for d in b["drops"]]

    def harvest_tools(self, block: str) -> tuple[str, ...]:
        """Tools that make ``block`` drop its items (empty: any tool or the hand)."""
        if block in hand.EXTRA_HARVEST:
            return hand.EXTRA_HARVEST[block]
        return tuple(self.blocks.get(block, {}).get("harvest_tools", ()))

    def min_tool(self, block: str) -> str | None:
        """The most basic tool that harvests ``block`` (None: the hand does)."""
        tools = self.harvest_tools(block)
        return min(tools, key=lambda t: (_tier(t), t)) if tools else None

    def can_harvest(self, block: str, tool: str | None) -> bool:
        """Whether breaking ``block`` with ``tool`` (None = hand) drops anything."""
        tools = self.harvest_tools(block)
        return not tools or (tool is not None and tool in tools)

    def tool_speed(self, block: str, tool: str | None) -> float:
        """Speed multiplier of ``tool`` on ``block`` (``materials.json``; 1 for the hand or a wrong tool)."""
        mat = self.blocks.get(block, {}).get("material")
        if tool is None or mat is None:
            return 1.0
        return float(self.materials.get(mat, {}).get(tool, 1.0))

    def break_steps(self, block: str, tool: str | None, multiplier: float = 100.0) -> int:
        """20 Hz steps to break ``block``: ``ceil(20 * hardness * (1.5 if harvestable else 5) / speed / mult)``."""
        hardness = self.blocks.get(block, {}).get("hardness") or 0.0
        if hardness < 0:  # bedrock
            return 10**9
        t = hardness * (1.5 if self.can_harvest(block, tool) else 5.0) / self.tool_speed(block, tool) / multiplier
        return max(1, math.ceil(20 * t))

    def durability(self, item: str) -> int | None:
        """Uses before ``item`` breaks (``maxDurability``), or None for items that do not wear."""
        return self.items.get(item, {}).get("durability")

    def stack_size(self, item: str) -> int:
        return int(self.items.get(item, {}).get("stack", 64))

    def craft_recipes(self, item: str) -> list[dict]:
        """Crafting recipes of ``item``, canonical first (the simulator tries them in this order)."""
        recipes = list(self.recipes.get(item, []))
        canon = self._canonical(item) if item in self._sources else None
        if canon is not None and canon.kind == "craft":
            mats = dict(canon.materials)
            recipes.sort(key=lambda r: r["ingredients"] != mats)
        return recipes

    def needs_table(self, recipe: dict) -> bool:
        return bool(recipe.get("table"))

    def location(self, block: str) -> str:
        """``surface`` or ``underground``: where the oracle looks for ``block`` first."""
        if block in hand.Y_LEVEL_HINT and block not in ("gravel",):
            return "underground"
        return "surface" if block in self.surface_blocks or block in self.world_mobs else "underground"

    def biomes_of(self, block: str) -> list[str]:
        return [b for b, spec in hand.BIOMES.items() if spec["surface"].get(block, 0) > 0]

    def is_hostile(self, mob: str) -> bool:
        return bool(hand.MOBS.get(mob, {}).get("hostile"))

    def tech_tree(self) -> list[str]:
        """The Overworld items our tables can obtain (our reconstruction of the paper's 262-item list)."""
        return sorted(i for i in self._sources if i not in hand.EXCLUDED)

    # -------------------------------------------------------------------------------------- building
    def _all_sources(self) -> dict[str, list[Source]]:
        out: dict[str, list[Source]] = {}

        def add(s: Source) -> None:
            out.setdefault(s.item, []).append(s)

        world_blocks = sorted(set(self.surface_blocks) | set(self.underground_blocks) | {"obsidian"})
        for block in world_blocks:
            if block in hand.SURFACE_MOBS:
                continue
            tool = self.min_tool(block)
            for item, lo, hi, p in self.drops(block):
                if hi <= 0:
                    continue
                add(Source("mine", item, (lo + hi) / 2 * p, (), tool, block, p))
        for mob, drops in hand.MOB_DROPS.items():
            for item, lo, hi, p in drops:
                if hi > 0:
                    add(Source("attack", item, (lo + hi) / 2 * p, (), None, mob, p))
        for item, spec in hand.APPLY.items():
            if "gives_block" in spec:
                continue  # obsidian: a block that is then mined (added below)
            mats = ((spec["consumes"], 1),) if spec.get("consumes") else ()
            tool = None if spec.get("consumes") in spec["tools"] else spec["tools"][0]  # a bucket is used up
            add(Source("apply", item, 1.0, mats, tool, spec["target"], 1.0))
        # obsidian: pour a water bucket on lava, then mine the obsidian with a diamond pickaxe
        for s in out.get("obsidian", []):
            out["obsidian"] = [Source("mine", "obsidian", 1.0, (), s.tool, "obsidian", 1.0, keeps=("water_bucket",))]
        for item, inp in hand.SMELTING.items():
            add(Source("smelt", item, 1.0, ((inp, 1),), "furnace", None, 1.0))
        for item, recipes in self.recipes.items():
            for r in recipes:
                tool = r.get("station") or ("crafting_table" if r.get("table") else None)
                add(Source("craft", item, float(r["count"]), tuple(sorted(r["ingredients"].items())), tool))
        return self._reachable(out)

    def _reachable(self, sources: dict[str, list[Source]]) -> dict[str, list[Source]]:
        """Keep only sources whose materials, tool and target are themselves obtainable (fixpoint)."""
        world = set(self.surface_blocks) | set(self.underground_blocks) | set(self.world_mobs) | {"obsidian"}
        have: set[str] = set()
        ok: dict[str, list[Source]] = {}
        changed = True
        while changed:
            changed = False
            for item, lst in sources.items():
                for s in lst:
                    if s in ok.get(item, []):
                        continue
                    need = [m for m, _ in s.materials] + ([s.tool] if s.tool else []) + list(s.keeps)
                    target_ok = s.target is None or s.target in world
                    if target_ok and all(n in have for n in need):
                        ok.setdefault(item, []).append(s)
                        if item not in have:
                            have.add(item)
                        changed = True
        return ok

    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for _ in range(64):
            changed = False
            for item, lst in self._sources.items():
                best = None
                for s in lst:
                    need = [m for m, _ in s.materials] + ([s.tool] if s.tool else []) + list(s.keeps)
                    if all(n in depth for n in need):
                        d = 1 + max((depth[n] for n in need), default=-1)
                        best = d if best is None else min(best, d)
                if best is not None and depth.get(item) != best:
                    depth[item] = best
                    changed = True
            if not changed:
                break
        return depth

    def _rank(self, s: Source) -> tuple:
        kind = s.kind if s.kind in ("craft", "smelt", "apply") or s.reliable else "unreliable"
        need = [m for m, _ in s.materials] + ([s.tool] if s.tool else [])
        d = 1 + max((self.depth.get(n, 99) for n in need), default=-1)
        per_unit = sum(q for _, q in s.materials) / max(s.yield_, 1e-9)
        return (KIND_ORDER[kind], d, per_unit)

    @functools.lru_cache(maxsize=None)
    def _canonical(self, item: str) -> Source:
        lst = self._sources[item]
        if item in CANONICAL_KIND:
            pref = [s for s in lst if s.kind == CANONICAL_KIND[item]]
            lst = pref or lst
        if item in CANONICAL_INGREDIENT:
            pref = [s for s in lst if CANONICAL_INGREDIENT[item] in dict(s.materials)]
            lst = pref or lst
        return min(lst, key=self._rank)
