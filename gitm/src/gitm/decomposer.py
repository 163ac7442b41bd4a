"""LLM Decomposer (paper 3.1, spec 2.2): goal tuples and the recursive sub-goal tree.

A goal is the tuple (Object, Count, Material, Tool, Info). ``decompose(object, count)`` gives the tuple;
the tree adds one child per material (with its quantity) and one for the tool (count 1), recursively,
until a node has neither. The tree is executed in post-order by :mod:`gitm.agent`, which skips what the
inventory already satisfies and re-derives counts from the current deficit.

Quantity rule (ours; the paper does not state it): a crafted node of count ``c`` whose recipe yields ``y``
needs ``ceil(c / y)`` recipe units, and every material quantity is multiplied by the units. Smelting
``c`` items needs ``c`` inputs and ``ceil(c / 8)`` coal as fuel.

Two modes with one schema: :class:`OracleDecomposer` (deterministic, from the tables; the offline
default) and :class:`LLMDecomposer` (the paper's: a chat prompt with retrieved knowledge, parsed
tolerantly; its answers are validated against the item names and fall back to nothing else).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Awaitable, Callable, Iterator

from .errors import GitmError, PlanParseError
from .knowledge import hand
from .knowledge.tables import Knowledge, Source
from .parsing import parse_goal

FUEL_ITEM = "coal"
MAX_DEPTH = 16


@dataclass(frozen=True)
class Goal:
    """The goal tuple (spec 2.1). ``material`` maps names to quantities (None when nothing is consumed)."""

    object: str
    count: int
    material: dict[str, int] | None
    tool: str | None
    info: str = ""

    def text(self, with_info: bool = True) -> str:
        """The paper's goal sentence: ``obtain COUNT OBJECT, given MATERIAL and TOOL. Extra info: INFO``."""
        mat = json.dumps(self.material) if self.material else "None"
        s = f"obtain {self.count} {self.object}, given {mat} and {self.tool or 'None'}."
        if with_info and self.info:
            s += f" Extra info: {self.info}"
        return s

    def prerequisites(self) -> dict[str, int]:
        """Everything that must be in the inventory before the final action: materials plus the tool."""
        need = dict(self.material or {})
        if self.tool:
            need[self.tool] = max(need.get(self.tool, 0), 1)
        return need

    def to_dict(self) -> dict:
        return {"object": self.object, "count": self.count, "material": self.material, "tool": self.tool,
                "info": self.info}


@dataclass
class Node:
    """A node of the sub-goal tree; children are materials (in recipe order) then the tool."""

    goal: Goal
    children: list["Node"] = field(default_factory=list)

    def postorder(self) -> Iterator["Node"]:
        for c in self.children:
            yield from c.postorder()
        yield self

    def render(self, indent: int = 0) -> str:
        g = self.goal
        extra = []
        if g.material:
            extra.append("materials " + ", ".join(f"{q} {m}" for m, q in g.material.items()))
        if g.tool:
            extra.append(f"tool {g.tool}")
        line = "  " * indent + f"- {g.count} {g.object}" + (f" ({'; '.join(extra)})" if extra else "")
        return "\n".join([line] + [c.render(indent + 1) for c in self.children])

    def size(self) -> int:
        return 1 + sum(c.size() for c in self.children)


def info_text(k: Knowledge, src: Source) -> str:
    """The external information (``Info``, at most 3 sentences) the oracle decomposer writes."""
    if src.kind == "mine":
        tool = f"a {src.tool} or better" if src.tool else "any tool or the hand"
        parts = [f"Mine {src.target} with {tool}."]
        if src.target in hand.ORES or src.target == "stone":
            y = hand.Y_LEVEL_HINT.get(src.target, 60)
            lo, hi = hand.ORES.get(src.target, {"y": (5, 60)})["y"]
            parts.append(f"{src.target} is underground between y={lo} and y={min(hi, 63)}; dig down to y={y}.")
        elif src.target == "obsidian":
            parts.append(f"Pour a water_bucket onto lava, which is underground below y=10; dig down to y={hand.Y_LEVEL_HINT['lava']}.")
        else:
            biomes = k.biomes_of("log" if src.target == "leaves" else src.target)
            if biomes:
                parts.append(f"{src.target} is on the surface in {', '.join(biomes[:4])} biomes.")
        if src.probability < 1:
            parts.append(f"Each block drops it with probability {src.probability:g}.")
        return " ".join(parts[:3])
    if src.kind == "attack":
        night = " at night" if hand.MOBS.get(src.target, {}).get("night") else ""
        return f"Kill a {src.target}; it is found on the surface{night}."
    if src.kind == "apply":
        spec = hand.APPLY[src.item]
        under = " It is underground below y=10." if spec["target"] == "lava" else ""
        return f"Use a {src.tool} on {spec['target']}.{under}"
    if src.kind == "smelt":
        return "Smelt in a furnace (kept in the inventory) with fuel."
    return f"Craft it{' with a ' + src.tool if src.tool else ''}."


class OracleDecomposer:
    """Deterministic, knowledge-grounded decomposer (``decomposer=oracle``): tuples from the tables."""

    def __init__(self, knowledge: Knowledge | None = None, with_info: bool = True):
        self.k = knowledge or Knowledge.default()
        self.with_info = with_info

    def goal(self, obj: str, count: int) -> Goal:
        """The goal tuple for ``count`` of ``obj`` (raises UnknownItemError for unknown names)."""
        if count < 1:
            raise GitmError(f"count must be >= 1, got {count} for {obj}")
        src = self.k.source(obj)
        return goal_from_source(self.k, src, count, self.with_info)

    def tree(self, obj: str, count: int = 1) -> Node:
        """The full sub-goal tree for ``count`` of ``obj``."""
        return build_tree(lambda o, c: self.goal(o, c), obj, count)


def goal_from_source(k: Knowledge, src: Source, count: int, with_info: bool = True) -> Goal:
    """Apply the quantity rule (module docstring) to one source."""
    material: dict[str, int] | None = None
    if src.kind == "craft":
        units = math.ceil(count / src.yield_)
        material = {m: q * units for m, q in src.materials}
    elif src.kind == "smelt":
        material = {src.materials[0][0]: count, FUEL_ITEM: math.ceil(count / hand.FUELS[FUEL_ITEM])}
    elif src.kind == "apply" and src.materials:
        material = {m: q * count for m, q in src.materials}
    if src.keeps:
        material = {**(material or {}), **{kk: 1 for kk in src.keeps}}
    info = info_text(k, src) if with_info else ""
    return Goal(src.item, int(count), material or None, src.tool, info)


def build_tree(goal_fn: Callable[[str, int], Goal], obj: str, count: int, _path: tuple = ()) -> Node:
    """Recursive tree from a (sync) goal function; guards against cycles and runaway depth."""
    if obj in _path or len(_path) > MAX_DEPTH:
        raise GitmError(f"decomposition of {_path[0] if _path else obj} loops through {' -> '.join(_path + (obj,))}")
    g = goal_fn(obj, count)
    node = Node(g)
    for m, q in (g.material or {}).items():
        node.children.append(build_tree(goal_fn, m, q, _path + (obj,)))
    if g.tool and g.tool not in (g.material or {}):
        node.children.append(build_tree(goal_fn, g.tool, 1, _path + (obj,)))
    return node


# ------------------------------------------------------------------------------------------- LLM mode
def prompt_text(name: str) -> str:
    """A prompt template shipped as package data (``gitm/prompts/<name>``)."""
    return resources.files("gitm").joinpath(f"prompts/{name}").read_text()


class LLMDecomposer:
    """The paper's LLM decomposer: retrieved knowledge + a chat prompt -> the goal tuple (App. A.1).

    Args:
        chat: ``async (messages) -> str``, e.g. :meth:`gitm.llm.LLMClient.chat_text`.
        retriever: ``search(query, k) -> [snippet]``.
        knowledge: validates the names in the answer (unknown names are a parse failure).
        top_k: snippets retrieved per goal (paper: not stated; ours 3).
        max_attempts: queries per node before the decomposition fails.
    """

    def __init__(self, chat: Callable[[list[dict]], Awaitable[str]], retriever, knowledge: Knowledge | None = None,
                 top_k: int = 3, max_attempts: int = 3, with_info: bool = True):
        self.chat, self.retriever, self.k = chat, retriever, knowledge or Knowledge.default()
        self.top_k, self.max_attempts, self.with_info = top_k, max_attempts, with_info
        self.system = prompt_text("decomposer_system.txt")
        self.failures: list[str] = []
        self._cache: dict[tuple[str, int], Goal] = {}

    def messages(self, obj: str, count: int) -> list[dict]:
        snippets = self.retriever.search(obj, self.top_k)
        user = prompt_text("decomposer_user.txt").format(count=count, object=obj,
                                                         knowledge="\n".join(f"- {s}" for s in snippets))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    async def goal(self, obj: str, count: int) -> Goal:
        """Query until a valid tuple comes back (at most ``max_attempts``); raises GitmError after that."""
        key = (obj, count)
        if key in self._cache:
            return self._cache[key]
        self.k.check_item(obj)
        last = ""
        for _ in range(self.max_attempts):
            text = await self.chat(self.messages(obj, count))
            try:
                d = parse_goal(text)
                for name in list((d["material"] or {})) + ([d["tool"]] if d["tool"] else []):
                    self.k.check_item(name)
            except (PlanParseError, GitmError) as e:
                last = str(e)
                self.failures.append(last)
                continue
            g = Goal(obj, count, d["material"], d["tool"], d["info"] if self.with_info else "")
            self._cache[key] = g
            return g
        raise GitmError(f"the LLM decomposer gave no valid goal tuple for {count} {obj} in "
                        f"{self.max_attempts} queries; last problem: {last}")

    async def tree(self, obj: str, count: int = 1, _path: tuple = ()) -> Node:
        if obj in _path or len(_path) > MAX_DEPTH:
            raise GitmError(f"the LLM decomposition of {_path[0] if _path else obj} loops through "
                            f"{' -> '.join(_path + (obj,))}")
        g = await self.goal(obj, count)
        node = Node(g)
        for m, q in (g.material or {}).items():
            node.children.append(await self.tree(m, q, _path + (obj,)))
        if g.tool and g.tool not in (g.material or {}):
            node.children.append(await self.tree(g.tool, 1, _path + (obj,)))
        return node
