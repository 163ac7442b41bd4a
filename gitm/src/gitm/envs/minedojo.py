"""Optional MineDojo back end (spec 6b): the same structured actions and feedback contract as ``gitm.sim``.

Requirements (none can be installed on our CI, so this module is **written against MineDojo 0.1's
documented API and has never been run**; its tests skip without ``minedojo``):

- ``pip install 'gitm[minedojo]'`` (MineDojo 0.1 from PyPI; newer versions on GitHub);
- JDK 8 (``openjdk-8-jdk``) on the PATH;
- ``xvfb`` (``xvfb-run``) or a display for headless runs;
- the first ``minedojo.make`` compiles Malmo with Gradle and downloads Minecraft 1.11.2 assets (internet
  once); a few GB of disk and about 4 GB of RAM per instance.

The interface scripts use LiDAR rays (every 5 deg) to find objects, the voxels (radius 10) for footing and
the inventory/location/life observations, as in the paper (App. A.2). Navigation is deliberately simple
(random-walk exploration with LiDAR checks, greedy approach, attack until the block is gone); the paper's
BFS/DFS and A* scripts were never released.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections import Counter

from ..actions import Action, Feedback, State
from ..errors import GitmError

# MultiDiscrete action of MineDojo: [fwd/back, left/right, jump/sneak/sprint, pitch, yaw, functional,
# craft argument, inventory argument]; functional: 0 noop, 1 use, 2 drop, 3 attack, 4 craft, 5 equip,
# 6 place, 7 destroy. Camera bins: 12 = no change, 15 degrees per bin.
NOOP = [0, 0, 0, 12, 12, 0, 0, 0]
FUNC = {"use": 1, "attack": 3, "craft": 4, "equip": 5, "place": 6}


def requirements_problem() -> str | None:
    """A sentence naming what is missing for MineDojo, or None when everything is there."""
    missing = []
    try:
        import minedojo  # noqa: F401  (only to see whether it is installed)
    except ImportError:
        missing.append("the minedojo package (pip install 'gitm[minedojo]')")
    java = shutil.which("java")
    if java is None:
        missing.append("JDK 8 on the PATH (apt-get install openjdk-8-jdk)")
    else:
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        if '"1.8' not in out:
            missing.append(f"JDK 8 (found: {out.splitlines()[0] if out else 'unknown java'})")
    import os

    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") is None:
        missing.append("a display or xvfb (apt-get install xvfb; run under xvfb-run)")
    if not missing:
        return None
    return ("env=minedojo needs " + "; ".join(missing) + ". The first run also compiles Malmo with Gradle and "
            "downloads Minecraft 1.11.2 assets, so it needs internet once. Use env=sim for the offline simulator.")


class MineDojoEnv:
    """MineDojo behind the structured-action interface (module docstring; untested here)."""

    def __init__(self, seed: int, cfg: dict | None = None, step_limit: int | None = None,
                 inventory: dict[str, int] | None = None):
        problem = requirements_problem()
        if problem:
            raise GitmError(problem)
        import minedojo

        cfg = dict(cfg or {})
        step = int(cfg.get("lidar_step_deg", 5))
        dist = float(cfg.get("lidar_distance", 64))
        rays = [(math.radians(p), math.radians(y), dist) for p in range(-90, 91, step) for y in range(-180, 180, step)]
        r = int(cfg.get("voxel_radius", 10))
        initial = None
        if inventory:
            from minedojo.sim import InventoryItem

            initial = [InventoryItem(slot=i, name=k, variant=None, quantity=int(v)) for i, (k, v) in enumerate(inventory.items())]
        self.env = minedojo.make(
            task_id=cfg.get("task_id", "open-ended"), image_size=tuple(cfg.get("image_size", (160, 256))),
            world_seed=int(seed), seed=int(seed), use_lidar=True, lidar_rays=rays, use_voxel=True,
            voxel_size=dict(xmin=-r, ymin=-r, zmin=-r, xmax=r, ymax=r, zmax=r),
            break_speed_multiplier=float(cfg.get("break_speed_multiplier", 100)),
            allow_mob_spawn=bool(cfg.get("allow_mob_spawn", True)),
            generate_world_type=cfg.get("generate_world_type", "default"), initial_inventory=initial)
        self.obs = self.env.reset()
        self.steps, self.step_limit, self.done = 0, step_limit, False
        self.surface: tuple | None = None
        from minedojo.sim.mc_meta import mc

        self.craft_index = {name: i for i, name in enumerate(mc.ALL_CRAFT_SMELT_ITEMS)}

    # ------------------------------------------------------------------------------------------ state
    @property
    def inventory(self) -> Counter:
        inv = Counter()
        for name, q in zip(self.obs["inventory"]["name"], self.obs["inventory"]["quantity"]):
            name = str(name).replace(" ", "_")
            if name not in ("air", "none"):
                inv[name] += int(q)
        return inv

    def state(self) -> State:
        loc = self.obs["location_stats"]
        y = int(float(loc["pos"][1]))
        biome = str(loc.get("biome_id", "unknown"))
        return State(dict(self.inventory), biome, y, self.surface is not None)

    def _act(self, a: list[int], n: int = 1) -> None:
        for _ in range(n):
            if self.done:
                return
            self.obs, _, done, _ = self.env.step(a)
            self.steps += 1
            if done or float(self.obs["life_stats"]["life"]) <= 0:
                self.done = True
            if self.step_limit is not None and self.steps >= self.step_limit:
                self.done = True

    def _seen(self, obj: str) -> tuple[float, float, float] | None:
        names = self.obs["rays"]["block_name"].ravel()
        dists = self.obs["rays"]["block_distance"].ravel()
        hits = [i for i, n in enumerate(names) if str(n).replace(" ", "_") == obj]
        ents = [i for i, n in enumerate(self.obs["rays"].get("entity_name", [])) if str(n) == obj]
        hits = hits or ents
        if not hits:
            return None
        i = min(hits, key=lambda j: dists[j])
        return float(dists[i]), i, len(names)

    # ------------------------------------------------------------------------------------------- step
    def step(self, action: Action) -> Feedback:
        before = dict(self.inventory)
        s0 = self.steps
        try:
            msg = getattr(self, f"_do_{action.name}")(**action.args)
            ok, reason = True, ""
        except _Fail as f:
            ok, msg, reason = False, f.message, f.reason
        except AttributeError:
            ok, msg, reason = False, f"{action.name} is not implemented for MineDojo", "unknown_action"
        after = self.inventory
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
                 if after.get(k, 0) != before.get(k, 0)}
        return Feedback(action, ok, msg, delta, self.state(), self.steps - s0, reason, self.done)

    def _do_explore(self, object: str, strategy: str | None = None) -> str:
        import random

        start = self.steps
        while self.steps - start < 10_000 and not self.done:
            if self._seen(object):
                return f"{object} is visible"
            a = list(NOOP)
            a[0] = 1
            a[2] = 1 if random.random() < 0.2 else 0
            a[4] = 12 + random.choice((-1, 0, 0, 1))
            self._act(a, 20)
        raise _Fail("not_found", f"{object} not found within 10000 steps of exploring")

    def _do_approach(self, object: str) -> str:
        for _ in range(200):
            seen = self._seen(object)
            if seen is None:
                raise _Fail("not_visible", f"no {object} is visible; explore first")
            if seen[0] < 2:
                return f"{object} is within reach"
            a = list(NOOP)
            a[0], a[2] = 1, 1
            self._act(a, 5)
        raise _Fail("no_path", f"cannot find a path to {object}")

    def _do_mine(self, object: str, tool: str | None = None, count: int = 1) -> str:
        if tool is not None and self.inventory[tool] <= 0:
            raise _Fail("no_tool", f"no tool {tool} in inventory")
        if tool is not None:
            self._do_equip(tool)
        mined = 0
        for _ in range(count):
            seen = self._seen(object)
            if seen is None:
                break
            if seen[0] > 4:
                raise _Fail("too_far", f"{object} is too far away; approach it first")
            a = list(NOOP)
            a[5] = FUNC["attack"]
            self._act(a, 40)
            mined += 1
        if not mined:
            raise _Fail("not_visible", f"no {object} is visible; explore first")
        return f"mined {mined} {object}"

    def _do_attack(self, object: str, tool: str | None = None, count: int = 1) -> str:
        return self._do_mine(object, tool, count).replace("mined", "attacked")

    def _do_craft(self, object: dict, materials: dict | None = None, tool: str | None = None) -> str:
        (item, qty), = object.items()
        if item not in self.craft_index:
            raise _Fail("no_recipe", f"{item} cannot be crafted")
        if tool is not None and self.inventory[tool] <= 0:
            raise _Fail("no_tool", f"no {tool} in inventory")
        start = self.inventory[item]
        for _ in range(qty):
            a = list(NOOP)
            a[5], a[6] = FUNC["craft"], self.craft_index[item]
            self._act(a)
            if self.inventory[item] >= start + qty:
                break
        made = self.inventory[item] - start
        if made <= 0:
            raise _Fail("no_materials", f"not enough materials for {item}")
        if made < qty:
            raise _Fail("no_materials", f"crafted only {made} of {qty} {item}: not enough materials")
        return f"crafted {made} {item}"

    _do_smelt = _do_craft

    def _do_equip(self, object: str) -> str:
        names = [str(n).replace(" ", "_") for n in self.obs["inventory"]["name"]]
        if object not in names:
            raise _Fail("no_tool", f"no {object} in inventory")
        a = list(NOOP)
        a[5], a[7] = FUNC["equip"], names.index(object)
        self._act(a)
        return f"equipped {object}"

    def _do_dig_down(self, y_level: int, tool: str | None = None) -> str:
        if tool is not None:
            self._do_equip(tool)
        if self.surface is None:
            self.surface = tuple(self.obs["location_stats"]["pos"])
        a = list(NOOP)
        a[3] = 0  # look straight down
        self._act(a)
        start = self.steps
        while self.state().y_level > int(y_level) and self.steps - start < 10_000 and not self.done:
            b = list(NOOP)
            b[5] = FUNC["attack"]
            self._act(b, 10)
        if self.state().y_level > int(y_level):
            raise _Fail("not_found", f"could not reach y={y_level} within 10000 steps")
        return f"reached y={self.state().y_level}"

    def _do_go_up(self, tool: str | None = None, y_level: int | None = None) -> str:
        if self.surface is None:
            return "already on the ground"
        start = self.steps
        names = [str(n).replace(" ", "_") for n in self.obs["inventory"]["name"]]
        block = next((b for b in ("dirt", "cobblestone") if b in names), None)
        if block is None:
            raise _Fail("no_materials", "need dirt or cobblestone to pillar up")
        while self.state().y_level < int(self.surface[1]) and self.steps - start < 10_000 and not self.done:
            a = list(NOOP)
            a[2], a[3], a[5], a[7] = 1, 0, FUNC["place"], names.index(block)
            self._act(a, 5)
        self.surface = None
        return f"back on the ground at y={self.state().y_level}"

    def _do_apply(self, object: str, tool: str) -> str:
        self._do_equip(tool)
        a = list(NOOP)
        a[5] = FUNC["use"]
        self._act(a)
        return f"used {tool} on {object}"

    def _do_place(self, object: str, tool: str | None = None) -> str:
        names = [str(n).replace(" ", "_") for n in self.obs["inventory"]["name"]]
        if object not in names:
            raise _Fail("no_materials", f"no {object} in inventory")
        a = list(NOOP)
        a[5], a[7] = FUNC["place"], names.index(object)
        self._act(a)
        return f"placed {object}"

    def close(self) -> None:
        self.env.close()


class _Fail(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message
