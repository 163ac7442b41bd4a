"""``gitm.sim``: the offline text-level Minecraft simulator (spec section 6a).

The structured actions of :mod:`gitm.actions` are executed against a :class:`~gitm.sim.world.World` of
cell and band counts, so an episode costs O(actions), not O(steps). Every action reports the feedback
contract (success, message, inventory change, the new state) and advances the 20 Hz step counter by its
cost. The failure messages are the paper's reasons (spec 2.3): not visible, too far, no tool, not enough
materials, not found within 10,000 steps, attacked by a mob.

Conventions and the simplifications we chose (all configurable in :class:`SimConfig`):

- explore on the ground visits cells in BFS order (rings around the current cell), ``cell_cost`` steps
  each; an object with ``n`` instances in a cell is seen with probability ``1-(1-p_vis)^n``.
- explore underground tunnels straight at the current y (the paper's DFS, 1 wide x 2 high): each step of
  the tunnel exposes ``tunnel_exposure`` wall blocks, so an ore whose band density is ``d`` is seen with
  probability ``1-(1-d)^exposure`` per step; the number of steps to a sighting is drawn geometrically per
  cell (no per-step loop). A tunnel step breaks two stone blocks (two cobblestone) and wears the pickaxe
  once (we charge one use per step, half of vanilla's two).
- a wrong tool tier breaks the block but drops nothing (the feedback says so; the action still succeeds,
  as in the paper's table: "success when the block is broken").
- crafting/smelting tables must be in the inventory; craft tries the item's recipes canonical first and
  uses the first one the inventory can make (the ``materials`` argument is advisory, as the paper's craft
  API takes only the item; a mismatch is noted in the message).
- hostile mobs (``mobs=True``, the paper preset) attack on the surface at night and, rarely, underground;
  an attack interrupts the current action ("attacked by zombie"), costs health, and death ends the episode.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..actions import ACTIONS, Action, Feedback, State
from ..errors import GitmError
from ..knowledge import hand
from ..knowledge.tables import Knowledge
from .world import Cell, World, layer_of

MAX_HEALTH = 20
WATER_BIOMES = ("ocean", "river")
WATER_TARGETS = ("squid", "waterlily")


@dataclass
class SimConfig:
    """Simulator parameters (times in 20 Hz steps). ``preset`` ``paper`` has mobs, ``easy`` has none."""

    preset: str = "paper"
    break_speed: float = 100.0
    cell_size: int = 20
    region: int = 3
    surface_density: float = 1.0
    walk_blocks_per_s: float = 4.3
    explore_cap: int = 10_000
    dig_cap: int = 10_000
    scan_steps: int = 20
    p_vis: float = 0.3
    p_nopath_ground: float = 0.02
    p_nopath_water: float = 0.3
    approach_steps_per_block: int = 5
    tunnel_exposure: int = 6
    collect_steps: int = 10
    place_steps: int = 20
    craft_steps: int = 1
    smelt_steps: int = 200
    pillar_steps: int = 5
    attack_steps_per_hit: int = 10
    mobs: bool = True
    day_length: int = 24_000
    night_start: int = 13_000
    night_end: int = 23_000
    night_encounter_rate: float = 1 / 900
    underground_encounter_rate: float = 1 / 12_000
    encounter_damage_min: int = 2
    encounter_damage_max: int = 6
    regen_steps: int = 80

    @property
    def cell_cost(self) -> int:
        return math.ceil(self.cell_size / self.walk_blocks_per_s * 20)

    @property
    def block_walk_steps(self) -> int:
        return math.ceil(20 / self.walk_blocks_per_s)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SimConfig":
        """Build from a config mapping; unknown keys are an error that lists the known ones."""
        d = dict(d or {})
        preset = d.get("preset", "paper")
        if preset not in PRESETS:
            raise GitmError(f"unknown simulator preset {preset!r}; known presets: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise GitmError(f"unknown simulator settings {bad}; known: {', '.join(sorted(known))}")
        return cls(**{**PRESETS[preset], **d})


PRESETS: dict[str, dict] = {"paper": {"mobs": True}, "easy": {"mobs": False}}


@dataclass
class Sighting:
    """An object made visible by explore: where, how far (blocks), how many in reach after approach."""

    cell: tuple[int, int]
    layer: str | int  # "surface" or a band index
    distance: int
    cluster: int
    in_reach: bool = False


class _Fail(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class SimEnv:
    """One episode of the simulator.

    Args:
        seed: world seed and action-RNG seed (the same seed and actions give the same episode).
        knowledge: the tables (default: the shipped 1.11 extract).
        config: :class:`SimConfig` or a mapping for :meth:`SimConfig.from_dict`.
        step_limit: the episode ends when the step counter reaches it (None: no limit).
        inventory: the starting inventory (the learning curriculum starts with prerequisites).

    Attributes:
        steps: 20 Hz steps spent so far; ``health``; ``done`` (death or step limit);
        ledger: every inventory change as ``(item, delta, cause)`` (conservation checks);
        world_log: every change of the world's counts as ``(cell, layer, block, delta)``.
    """

    def __init__(self, seed: int, knowledge: Knowledge | None = None, config: SimConfig | dict | None = None,
                 step_limit: int | None = None, inventory: dict[str, int] | None = None):
        self.k = knowledge or Knowledge.default()
        self.cfg = config if isinstance(config, SimConfig) else SimConfig.from_dict(config)
        self.seed = int(seed)
        self.world = World(self.seed, self.cfg.cell_size, self.cfg.region, self.cfg.surface_density)
        self.rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 7])
        self.step_limit = step_limit
        self.inventory: Counter = Counter()
        self.ledger: list[tuple[str, int, str]] = []
        self.world_log: list[tuple[tuple[int, int], str | int, str, int]] = []
        self.durability: dict[str, int] = {}  # remaining uses of the tool in use per tool name
        self.steps = 0
        self.health = MAX_HEALTH
        self.done = False
        self.pos = (0, 0)
        self.underground = False
        self.y = self.world.cell(0, 0).surface_y
        self.dig_origin: tuple[tuple[int, int], int] | None = None
        self.tunnel_blocks = 0
        self.equipped: str | None = None
        self.visible: dict[str, Sighting] = {}
        for item, n in (inventory or {}).items():
            self._give(item, int(n), "start")

    # ----------------------------------------------------------------------------------------- state
    @property
    def cell(self) -> Cell:
        return self.world.cell(*self.pos)

    def state(self) -> State:
        return State(dict(sorted((k, v) for k, v in self.inventory.items() if v > 0)), self.cell.biome,
                     int(self.y), self.underground)

    def is_night(self) -> bool:
        t = self.steps % self.cfg.day_length
        return self.cfg.night_start <= t < self.cfg.night_end

    # ------------------------------------------------------------------------------------ bookkeeping
    def _give(self, item: str, n: int, cause: str) -> None:
        if n <= 0:
            return
        self.inventory[item] += n
        self.ledger.append((item, n, cause))

    def _take(self, item: str, n: int, cause: str) -> None:
        if n <= 0:
            return
        if self.inventory[item] < n:
            raise AssertionError(f"taking {n} {item} but only {self.inventory[item]} held")  # internal bug
        self.inventory[item] -= n
        if self.inventory[item] == 0:
            del self.inventory[item]
            self.durability.pop(item, None)
        self.ledger.append((item, -n, cause))

    def _world_change(self, cell: Cell, layer: str | int, block: str, delta: int) -> None:
        counts = cell.surface if layer == "surface" else cell.bands[layer]
        counts[block] = counts.get(block, 0) + delta
        if counts[block] < 0:
            raise AssertionError(f"world count of {block} went negative")  # internal bug
        self.world_log.append(((cell.cx, cell.cz), layer, block, delta))

    def _wear(self, tool: str | None, uses: int = 1) -> bool:
        """Use ``tool`` ``uses`` times; returns False when it broke (it is then removed)."""
        if tool is None or self.k.durability(tool) is None or self.inventory[tool] <= 0:
            return True
        left = self.durability.get(tool, self.k.durability(tool)) - uses
        if left <= 0:
            self._take(tool, 1, "broke")
            self.durability.pop(tool, None)
            if self.inventory[tool] > 0:
                self.durability[tool] = self.k.durability(tool)
            return False
        self.durability[tool] = left
        return True

    def _advance(self, cost: int) -> None:
        """Spend ``cost`` steps; raise _Fail when a mob interrupts or the step limit is reached."""
        cost = int(max(0, cost))
        if self.cfg.mobs and cost > 0:
            rate = 0.0
            if self.underground:
                rate = self.cfg.underground_encounter_rate
            elif self.is_night():
                rate = self.cfg.night_encounter_rate
            if rate > 0:
                t = int(self.rng.geometric(rate))
                if t <= cost:
                    self._spend(t)
                    mob = ("zombie", "skeleton", "spider", "creeper")[int(self.rng.integers(0, 4))]
                    dmg = int(self.rng.integers(self.cfg.encounter_damage_min, self.cfg.encounter_damage_max + 1))
                    self.health -= dmg
                    if self.health <= 0:
                        self.done = True
                        raise _Fail("died", f"attacked by {mob} and died")
                    raise _Fail("attacked", f"attacked by {mob} (health {self.health}/{MAX_HEALTH})")
        self._spend(cost)

    def _spend(self, cost: int) -> None:
        if self.step_limit is not None and self.steps + cost >= self.step_limit:
            self.steps = self.step_limit
            self.done = True
            raise _Fail("time_limit", f"the step limit of {self.step_limit} steps was reached")
        before = self.steps
        self.steps += cost
        regen = self.steps // self.cfg.regen_steps - before // self.cfg.regen_steps
        self.health = min(MAX_HEALTH, self.health + regen)

    # ------------------------------------------------------------------------------------------- step
    def step(self, action: Action) -> Feedback:
        """Execute one structured action; returns its feedback (never raises for bad actions)."""
        before = dict(self.inventory)
        steps0 = self.steps
        if self.done:
            success, message, reason = False, "the episode is over", "done"
        elif action.name not in ACTIONS:
            success, message, reason = False, f"unknown action {action.name}", "unknown_action"
        else:
            try:
                message = getattr(self, f"_do_{action.name}")(**action.args)
                success, reason = True, ""
            except _Fail as f:
                success, message, reason = False, f.message, f.reason
        delta = {k: self.inventory.get(k, 0) - before.get(k, 0)
                 for k in set(before) | set(self.inventory) if self.inventory.get(k, 0) != before.get(k, 0)}
        return Feedback(action, success, message, dict(sorted(delta.items())), self.state(),
                        self.steps - steps0, reason, self.done)

    # ------------------------------------------------------------------------------------ navigation
    def _counts_at(self, cell: Cell, layer: str | int) -> dict[str, int]:
        return cell.surface if layer == "surface" else cell.bands[layer]

    def _visible_count(self, cell: Cell, obj: str) -> int:
        n = cell.surface.get(obj, 0)
        if obj in cell.night and self.is_night():
            n += cell.night[obj]
        return n

    def _cluster(self, obj: str, available: int) -> int:
        if obj == "log":
            size = int(self.rng.integers(4, 7))
        elif obj in hand.ORES:
            size = max(1, int(self.rng.integers(1, max(2, int(hand.ORES[obj]["vein"] * hand.VEIN_FILL) + 1))))
        elif obj in hand.MOBS or obj in hand.SURFACE_MOBS:
            size = int(self.rng.integers(1, 4))
        elif obj in ("sand", "dirt", "stone", "snow_layer", "red_sand", "stained_hardened_clay",
                     "hardened_clay", "gravel", "sandstone", "water", "leaves", "tallgrass", "clay"):
            size = 64
        else:
            size = int(self.rng.integers(1, 4))
        return max(1, min(size, available))

    def _ring(self, r: int) -> list[tuple[int, int]]:
        if r == 0:
            return [(0, 0)]
        out = [(dx, -r) for dx in range(-r, r + 1)] + [(r, dz) for dz in range(-r + 1, r + 1)]
        out += [(dx, r) for dx in range(r - 1, -r - 1, -1)] + [(-r, dz) for dz in range(r - 1, -r, -1)]
        return out

    def _do_explore(self, object: str, strategy: str | None = None) -> str:
        obj = object
        if obj in self.visible and self.visible[obj].cell == self.pos:
            self._advance(self.cfg.scan_steps)
            return f"{obj} is visible"
        return self._explore_underground(obj) if self.underground else self._explore_surface(obj)

    def _explore_surface(self, obj: str) -> str:
        p_vis, spent, r = self.cfg.p_vis, 0, 0
        x0, z0 = self.pos
        while True:
            for dx, dz in self._ring(r):
                cost = self.cfg.scan_steps if r == 0 else self.cfg.cell_cost
                if spent + cost > self.cfg.explore_cap:
                    self._advance(self.cfg.explore_cap - spent)
                    raise _Fail("not_found", f"{obj} not found within {self.cfg.explore_cap} steps of exploring")
                self._advance(cost)
                spent += cost
                self.pos = (x0 + dx, z0 + dz)
                cell = self.cell
                self.y = cell.surface_y
                n = self._visible_count(cell, obj)
                if n > 0 and self.rng.random() < 1 - (1 - p_vis) ** n:
                    self.visible = {obj: Sighting(self.pos, "surface", int(self.rng.integers(3, 16)),
                                                  self._cluster(obj, n))}
                    return f"{obj} is visible"
            r += 1

    def _tunnel_tool(self) -> str | None:
        picks = [t for t in self.k.harvest_tools("stone") if self.inventory[t] > 0]
        return min(picks, key=lambda t: ("wooden", "golden", "stone", "iron", "diamond").index(t.split("_")[0])) if picks else None

    def _explore_underground(self, obj: str) -> str:
        spent, size = 0, self.cfg.cell_size
        band_total = self.world.band_size()
        layer = layer_of(self.y)
        while True:
            tool = self._tunnel_tool()
            if tool is None:
                raise _Fail("no_tool", f"no pickaxe in inventory to tunnel with; {obj} not found yet")
            per_block = 2 * self.k.break_steps("stone", tool, self.cfg.break_speed) + self.cfg.block_walk_steps
            cell = self.cell
            n = self.world.band(cell, self.y).get(obj, 0)
            p = 1 - (1 - n / band_total) ** self.cfg.tunnel_exposure if n > 0 else 0.0
            k = int(self.rng.geometric(p)) if p > 0 else size + 1  # tunnel steps to the first sighting
            blocks = min(k, size)
            budget = (self.cfg.explore_cap - spent) // per_block
            dug, ok = self._tunnel(min(blocks, budget), per_block, tool, cell, layer)
            spent += dug * per_block
            if not ok:
                continue  # the pickaxe broke: go on with the next one (sightings are re-drawn)
            if budget < blocks:
                self._advance(self.cfg.explore_cap - spent)
                raise _Fail("not_found", f"{obj} not found within {self.cfg.explore_cap} steps of exploring")
            if k <= size:
                self.visible = {obj: Sighting(self.pos, layer, 1, self._cluster(obj, n), in_reach=True)}
                return f"{obj} is visible"
            # DFS order: keep tunnelling straight (east) into the next, unexplored cell
            self.pos = (self.pos[0] + 1, self.pos[1])

    def _tunnel(self, blocks: int, per_block: int, tool: str, cell: Cell, layer: int) -> tuple[int, bool]:
        """Dig ``blocks`` tunnel steps (2 stone each): steps, wear, cobblestone. Returns (steps dug, tool ok)."""
        self.world.band(cell, self.y)
        for i in range(blocks):
            if cell.bands[layer].get("stone", 0) < 2:
                return i, True
            self._advance(per_block)
            self._world_change(cell, layer, "stone", -2)
            self._give("cobblestone", 2, "tunnel")
            self.tunnel_blocks += 1
            if not self._wear(tool):
                return i + 1, False
        return blocks, True

    def _do_approach(self, object: str) -> str:
        s = self.visible.get(object)
        if s is None or s.cell != self.pos:
            raise _Fail("not_visible", f"no {object} is visible; explore first")
        if s.in_reach:
            return f"{object} is within reach"
        p_fail = 0.0 if self.underground else (
            self.cfg.p_nopath_water if (self.cell.biome in WATER_BIOMES or object in WATER_TARGETS)
            else self.cfg.p_nopath_ground)
        self._advance(s.distance * self.cfg.approach_steps_per_block)
        if self.rng.random() < p_fail:
            self.visible.pop(object, None)
            raise _Fail("no_path", f"cannot find a path to {object}")
        for o, other in self.visible.items():
            other.in_reach = o == object
        return f"{object} is within reach"

    # ------------------------------------------------------------------------------------- gathering
    def _always_reachable(self, obj: str) -> int:
        """Blocks that surround the agent: stone in tunnels, dirt on the ground (counts available)."""
        if self.underground and obj == "stone":
            return self.world.band(self.cell, self.y).get("stone", 0)
        if not self.underground and obj in ("dirt", "grass"):
            return self.cell.surface.get("dirt", 0)
        return 0

    def _check_tool(self, tool: str | None) -> None:
        if tool is not None and self.inventory[tool] <= 0:
            raise _Fail("no_tool", f"no tool {tool} in inventory")

    def _do_mine(self, object: str, tool: str | None = None, count: int = 1) -> str:
        block = "dirt" if object == "grass" else object
        if block in hand.MOBS or block in hand.SURFACE_MOBS:
            raise _Fail("wrong_action", f"{object} is a mob; use attack")
        self._check_tool(tool)
        always = self._always_reachable(block)
        if always:
            cell, layer = self.cell, (layer_of(self.y) if self.underground else "surface")
            avail = always
        else:
            s = self.visible.get(block)
            if s is None or s.cell != self.pos:
                raise _Fail("not_visible", f"no {object} is visible; explore first")
            if not s.in_reach:
                raise _Fail("too_far", f"{object} is too far away; approach it first")
            cell, layer = self.world.cell(*s.cell), s.layer
            avail = s.cluster
        counts = self._counts_at(cell, layer)
        n = min(count, avail, counts.get(block, 0))
        if n <= 0:
            self.visible.pop(block, None)
            raise _Fail("not_visible", f"no {object} left in reach; explore again")
        harvest = self.k.can_harvest(block, tool)
        per = self.k.break_steps(block, tool, self.cfg.break_speed) + self.cfg.collect_steps
        mined, broke = 0, False
        for _ in range(n):
            self._advance(per)
            self._world_change(cell, layer, block, -1)
            mined += 1
            if harvest:
                for item, lo, hi, p in self.k.drops(block):
                    if p >= 1 or self.rng.random() < p:
                        self._give(item, int(self.rng.integers(lo, hi + 1)), f"mine {block}")
            if not self._wear(tool):
                broke = True
                break
        if not always:
            s = self.visible[block]
            s.cluster -= mined
            if s.cluster <= 0:
                self.visible.pop(block)
        msg = f"mined {mined} {object}"
        if not harvest:
            need = self.k.min_tool(block)
            msg += f" but got nothing: {object} needs a {need} or better"
        if broke:
            msg += f"; the {tool} broke"
        return msg

    def _do_attack(self, object: str, tool: str | None = None, count: int = 1) -> str:
        if object not in hand.MOBS and object not in hand.SURFACE_MOBS:
            raise _Fail("wrong_action", f"{object} is not a mob; use mine")
        self._check_tool(tool)
        s = self.visible.get(object)
        if s is None or s.cell != self.pos:
            raise _Fail("not_visible", f"no {object} is visible; explore first")
        if not s.in_reach:
            raise _Fail("too_far", f"{object} is too far away; approach it first")
        weapon = tool or self.equipped
        dmg = hand.WEAPON_DAMAGE.get(weapon or "", 1.0)
        hits = math.ceil(hand.MOBS.get(object, {"health": 10})["health"] / dmg)
        cell = self.world.cell(*s.cell)
        night_mob = object in cell.night and object not in cell.surface
        n = min(count, s.cluster)
        for _ in range(n):
            self._advance(hits * self.cfg.attack_steps_per_hit + self.cfg.collect_steps)
            if night_mob:
                cell.night[object] -= 1
                self.world_log.append(((cell.cx, cell.cz), "night", object, -1))
            else:
                self._world_change(cell, "surface", object, -1)
            for item, lo, hi, p in hand.MOB_DROPS.get(object, []):
                if p >= 1 or self.rng.random() < p:
                    self._give(item, int(self.rng.integers(lo, hi + 1)), f"kill {object}")
            if weapon:
                self._wear(weapon)
        s.cluster -= n
        if s.cluster <= 0:
            self.visible.pop(object)
        return f"killed {n} {object}"

    def _do_dig_down(self, y_level: int, tool: str | None = None) -> str:
        target = max(int(y_level), hand.BEDROCK_TOP + 1)
        if self.y <= target:
            return f"already at y={self.y}"
        self._check_tool(tool)
        if not self.underground:
            self.dig_origin = (self.pos, self.y)
            self.tunnel_blocks = 0
            self.underground = True
        self.visible = {}
        surface = self.dig_origin[1]
        spent = 0
        while self.y > target:
            below = self.y - 1
            block = "dirt" if below >= surface - hand.DIRT_DEPTH else "stone"
            use = tool if tool is not None else None
            if block == "stone" and (use is None or not self.k.can_harvest("stone", use)):
                raise _Fail("no_tool", f"need a pickaxe to dig through stone at y={below}; no tool given")
            cost = self.k.break_steps(block, use, self.cfg.break_speed) + 2
            if spent + cost > self.cfg.dig_cap:
                raise _Fail("not_found", f"could not reach y={target} within {self.cfg.dig_cap} steps")
            self._advance(cost)
            spent += cost
            if block == "stone":
                self.world.band(self.cell, below)
                self._world_change(self.cell, layer_of(below), "stone", -1)
                self._give("cobblestone", 1, "dig")
                if not self._wear(use):
                    self.y = below
                    raise _Fail("tool_broke", f"the {use} broke at y={below}")
            else:
                self._give("dirt", 1, "dig")
            self.y = below
        msg = f"reached y={self.y}"
        if int(y_level) < target:
            msg += f" (bedrock below y={target})"
        return msg

    def _do_go_up(self, tool: str | None = None, y_level: int | None = None) -> str:
        if not self.underground:
            return "already on the ground"
        (origin, surface) = self.dig_origin
        walk = self.tunnel_blocks * self.cfg.block_walk_steps  # back along the tunnel
        need = surface - self.y
        blocks = [b for b in ("dirt", "cobblestone") if self.inventory[b] > 0]
        have = sum(self.inventory[b] for b in blocks)
        if have < need:
            raise _Fail("no_materials", f"need {need} dirt or cobblestone to pillar up, have {have}")
        self._advance(walk + need * self.cfg.pillar_steps)
        left = need
        for b in blocks:
            use = min(left, self.inventory[b])
            self._take(b, use, "pillar")
            left -= use
        self.pos, self.y, self.underground = origin, surface, False
        self.tunnel_blocks = 0
        self.visible = {}
        return f"back on the ground at y={self.y}"

    # ------------------------------------------------------------------------------------ crafting
    def _do_craft(self, object: dict[str, int], materials: dict[str, int] | None = None,
                  tool: str | None = None) -> str:
        (item, qty), *rest = object.items()
        if rest:
            raise _Fail("bad_args", "craft one item at a time")
        if item in hand.SMELTING and not self.k.craft_recipes(item):
            return self._do_smelt(object, materials, tool)
        recipes = [r for r in self.k.craft_recipes(item)] if item in self.k.names else []
        if not recipes:
            raise _Fail("no_recipe", f"{item} cannot be crafted")
        made, used = 0, None
        placed = False
        while made < qty:
            r = next((r for r in recipes if all(self.inventory[m] >= q for m, q in r["ingredients"].items())), None)
            if r is None:
                break
            station = r.get("station") or ("crafting_table" if r.get("table") else None)
            if station and self.inventory[station] <= 0:
                raise _Fail("no_tool", f"no {station} in inventory" + (f"; crafted {made} {item}" if made else ""))
            if station and not placed:
                self._advance(self.cfg.place_steps)
                placed = True
            self._advance(self.cfg.craft_steps)
            for m, q in r["ingredients"].items():
                self._take(m, q, f"craft {item}")
            self._give(item, int(r["count"]), f"craft {item}")
            made += int(r["count"])
            used = r
        if made == 0:
            want = recipes[0]["ingredients"]
            have = {m: self.inventory[m] for m in want}
            raise _Fail("no_materials", f"not enough materials for {item}: need {want}, have {have}")
        note = ""
        if materials and used and set(materials) != set(used["ingredients"]):
            note = f" (the recipe used {used['ingredients']} per unit, not the materials given)"
        if made < qty:
            raise _Fail("no_materials", f"crafted only {made} of {qty} {item}: not enough materials{note}")
        return f"crafted {made} {item}{note}"

    def _do_smelt(self, object: dict[str, int], materials: dict[str, int] | None = None,
                  tool: str | None = None) -> str:
        (item, qty), *rest = object.items()
        if rest:
            raise _Fail("bad_args", "smelt one item at a time")
        inp = hand.SMELTING.get(item)
        if inp is None:
            raise _Fail("no_recipe", f"{item} cannot be smelted")
        if self.inventory["furnace"] <= 0:
            raise _Fail("no_tool", "no furnace in inventory")
        self._advance(self.cfg.place_steps)
        made, credit = 0, 0.0
        while made < qty and self.inventory[inp] > 0:
            if credit < 1:
                fuel = next((f for f in hand.FUELS if f != inp and self.inventory[f] > 0), None)
                if fuel is None:
                    break
                self._take(fuel, 1, f"fuel for {item}")
                if fuel == "lava_bucket":
                    self._give("bucket", 1, "emptied lava_bucket")
                credit += hand.FUELS[fuel]
            self._advance(self.cfg.smelt_steps)
            self._take(inp, 1, f"smelt {item}")
            self._give(item, 1, f"smelt {item}")
            credit -= 1
            made += 1
        if made == 0:
            if self.inventory[inp] <= 0:
                raise _Fail("no_materials", f"not enough materials for {item}: need {qty} {inp}, have 0")
            raise _Fail("no_fuel", f"no fuel in inventory to smelt {item} (coal, planks, log, ...)")
        if made < qty:
            raise _Fail("no_materials", f"smelted only {made} of {qty} {item}: not enough {inp} or fuel")
        return f"smelted {made} {item}"

    # --------------------------------------------------------------------------------------- others
    def _do_equip(self, object: str) -> str:
        if self.inventory[object] <= 0:
            raise _Fail("no_tool", f"no {object} in inventory")
        self.equipped = object
        self._advance(1)
        return f"equipped {object}"

    def _do_apply(self, object: str, tool: str) -> str:
        specs = [(out, s) for out, s in hand.APPLY.items() if s["target"] == object and tool in s["tools"]]
        if not specs:
            raise _Fail("no_recipe", f"using {tool} on {object} does nothing")
        out, spec = specs[0]
        self._check_tool(tool)
        if spec.get("consumes") and spec["consumes"] != tool and self.inventory[spec["consumes"]] <= 0:
            raise _Fail("no_materials", f"no {spec['consumes']} in inventory")
        if object == "dirt" and not self.underground:
            cell, layer = self.cell, "surface"
        else:
            s = self.visible.get(object)
            if s is None or s.cell != self.pos:
                raise _Fail("not_visible", f"no {object} is visible; explore first")
            if not s.in_reach:
                raise _Fail("too_far", f"{object} is too far away; approach it first")
            cell, layer = self.world.cell(*s.cell), s.layer
        self._advance(spec.get("steps", 20))
        if spec.get("consumes"):
            self._take(spec["consumes"], 1, f"apply {tool}")
        if "gives" in spec:
            it, lo, hi = spec["gives"]
            self._give(it, int(self.rng.integers(lo, hi + 1)), f"apply {tool} on {object}")
        if "extra" in spec:
            it, lo, hi = spec["extra"]
            self._give(it, int(self.rng.integers(lo, hi + 1)), f"apply {tool} on {object}")
        if spec.get("wear"):
            self._wear(tool)
        if "gives_block" in spec:
            blk, lo, hi = spec["gives_block"]
            s = self.visible[object]
            n = min(int(self.rng.integers(lo, hi + 1)), s.cluster, self._counts_at(cell, layer).get(object, 0))
            self._world_change(cell, layer, object, -n)
            self._world_change(cell, layer, blk, +n)
            s.cluster -= n
            if s.cluster <= 0:
                self.visible.pop(object)
            self.visible[blk] = Sighting(s.cell, layer, 1, n, in_reach=True)
            return f"{n} {object} turned into {blk}"
        return f"used {tool} on {object}"

    def _do_place(self, object: str, tool: str | None = None) -> str:
        if self.inventory[object] <= 0:
            raise _Fail("no_materials", f"no {object} in inventory")
        self._advance(self.cfg.place_steps)
        self._take(object, 1, "place")
        return f"placed {object}"

    def _do_build(self, blueprint: list) -> str:
        need = Counter()
        for entry in blueprint:
            block = entry[-1] if isinstance(entry, (list, tuple)) else entry.get("block") if isinstance(entry, dict) else entry
            need[str(block)] += 1
        missing = {b: n - self.inventory[b] for b, n in need.items() if self.inventory[b] < n}
        if missing:
            raise _Fail("no_materials", f"not enough materials to build: missing {dict(missing)}")
        self._advance(self.cfg.place_steps * sum(need.values()))
        for b, n in need.items():
            self._take(b, n, "build")
        return f"built {sum(need.values())} blocks"
