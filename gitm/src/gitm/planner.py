"""LLM Planner (paper 3.2, spec 2.4-2.5): prompts, the deterministic planners, and request (de)serialisation.

The planner sees one growing conversation per sub-goal: the system prompt, a first query with the state,
the goal sentence and the reference plan from memory (form i), then feedback after each plan: "succeeded,
continue" (form ii) or "failed because ..., revise from the failed action" (form iii). Templates are
package data (``gitm/prompts/planner_*.txt``, our paraphrase of App. A.3).

Planners speak that protocol and return the answer *text* (parsed by :func:`gitm.parsing.parse_plan`):

- an LLM through :class:`gitm.llm.LLMClient` (the paper);
- :class:`OraclePlanner` (``llm=oracle``): deterministic and knowledge-grounded; for every query it emits
  the canonical action list for the sub-goal from the current state, which is also its repair rule
  (not visible -> explore, too far -> approach, underground and the target is a surface item -> go_up;
  a missing tool or material is re-queued by the agent). Its numbers are never GITM results;
- :class:`NoisyOraclePlanner` (``llm=noisy_oracle``): the oracle with errors (spec 8.3): it drops each
  step with probability p, uses a wrong tool tier with probability q and a wrong y-level with probability
  r; the rates fall when a reference plan (memory) or external info is given. A harness check, not an LLM.

:func:`request_from_messages` reads a :class:`PlanRequest` back from the rendered chat, which is how the
loopback server (:mod:`gitm.llm.testing`) answers real HTTP requests from the oracle.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .actions import Action, Feedback, State
from .decomposer import Goal, OracleDecomposer, prompt_text
from .knowledge import hand
from .knowledge.tables import Knowledge, equivalent_tools

PICK_TIERS = ("wooden_pickaxe", "stone_pickaxe", "iron_pickaxe", "diamond_pickaxe", "golden_pickaxe")
WEAPONS = ("diamond_sword", "iron_sword", "stone_sword", "wooden_sword", "golden_sword")


def fill(template: str, **values: Any) -> str:
    """Replace ``{key}`` for the given keys only (the templates hold literal JSON braces)."""
    for k, v in values.items():
        template = template.replace("{" + k + "}", str(v))
    return template


def _j(x: Any) -> str:
    return json.dumps(x, sort_keys=False)


@dataclass
class PlanRequest:
    """Everything a planner may use for one query.

    Attributes:
        goal: the sub-goal tuple; ``goal.count`` is what is still missing when the sub-goal started.
        target: the inventory count of ``goal.object`` that completes the sub-goal.
        state: the current state.
        feedback: the last action's feedback (None on the first query or without feedback).
        error: the parse error of the previous answer, if that was the problem.
        reference: the reference plan from memory (None when memory is off or empty).
        query_index: 0-based query number within the sub-goal.
        seed: seed for the noisy planner's draws of this query.
    """

    goal: Goal
    target: int
    state: State
    feedback: Feedback | None = None
    error: str | None = None
    reference: list[Action] | None = None
    query_index: int = 0
    seed: int = 0


# ----------------------------------------------------------------------------------------- rendering
class Prompts:
    """The planner templates (package data), rendered into chat messages."""

    def __init__(self):
        self.system = prompt_text("planner_system.txt")
        self.user = prompt_text("planner_user.txt")
        self.success = prompt_text("planner_success.txt")
        self.failure = prompt_text("planner_failure.txt")
        self.parse_error = prompt_text("planner_parse_error.txt")

    def first(self, req: PlanRequest, with_info: bool = True) -> str:
        ref = _j([a.to_dict() for a in req.reference]) if req.reference else "none"
        return fill(self.user, inventory=_j(req.state.inventory), environment=req.state.environment(),
                    goal=req.goal.text(with_info), reference=ref)

    def after(self, fb: Feedback) -> str:
        tpl = self.success if fb.success else self.failure
        return fill(tpl, action=_j(fb.action.to_dict()), message=fb.message, delta=_j(fb.inventory_delta),
                    inventory=_j(fb.state.inventory), environment=fb.state.environment())

    def error(self, err: str, state: State) -> str:
        return fill(self.parse_error, error=err, inventory=_j(state.inventory), environment=state.environment())

    def action_section(self) -> str:
        """The action descriptions of the system prompt (the summariser prompt reuses them)."""
        s = self.system
        return s[s.index("Actions"):s.index("Restrictions")].strip()


@functools.lru_cache(maxsize=1)
def default_prompts() -> Prompts:
    """The package's prompt templates, read once per process."""
    return Prompts()


_LINE = {k: re.compile(rf"^{k}: (.*)$", re.M) for k in ("Inventory", "Environment", "Goal", "Reference plan")}
_GOAL = re.compile(r"obtain (\d+) (\S+), given (.*?) and (\S+?)\.(?: Extra info: (.*))?$", re.S)
_ENV = re.compile(r"biome: (\S+), y_level: (-?\d+), (on the ground|underground)")
_FB = re.compile(r"^Action (\{.*\}) (succeeded|failed): (.*)$", re.M)


def _state_from(text: str) -> State | None:
    inv, env = _LINE["Inventory"].search(text), _LINE["Environment"].search(text)
    if not inv or not env:
        return None
    m = _ENV.search(env.group(1))
    if not m:
        return None
    return State(json.loads(inv.group(1)), m.group(1), int(m.group(2)), m.group(3) == "underground")


def request_from_messages(messages: list[dict]) -> PlanRequest:
    """Recover the :class:`PlanRequest` from a rendered planner chat (first query + latest feedback).

    Raises:
        ValueError: the chat is not a planner conversation rendered by :class:`Prompts`.
    """
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("no user message")
    first = users[0]
    g = _LINE["Goal"].search(first)
    s0 = _state_from(first)
    if not g or s0 is None:
        raise ValueError("the first user message is not a planner query")
    m = _GOAL.match(g.group(1).strip())
    if not m:
        raise ValueError(f"cannot read the goal sentence {g.group(1)!r}")
    count, obj = int(m.group(1)), m.group(2)
    material = None if m.group(3) == "None" else json.loads(m.group(3))
    tool = None if m.group(4) == "None" else m.group(4)
    goal = Goal(obj, count, material, tool, m.group(5) or "")
    last = users[-1]
    state = _state_from(last) or s0
    fb = None
    f = _FB.search(last) if len(users) > 1 else None
    if f:
        from .actions import normalize_action

        fb = Feedback(normalize_action(json.loads(f.group(1))), f.group(2) == "succeeded", f.group(3), {}, state)
    ref_line = _LINE["Reference plan"].search(first)
    reference = None
    if ref_line and ref_line.group(1).strip() != "none":
        from .actions import normalize_action

        reference = [normalize_action(a) for a in json.loads(ref_line.group(1))]
    n_queries = sum(1 for mm in messages if mm.get("role") == "assistant")
    return PlanRequest(goal, s0.inventory.get(obj, 0) + count, state, fb, None, reference, n_queries)


def plan_text(actions: list[Action], thoughts: str, explanation: str | None = None) -> str:
    return json.dumps({"explanation": explanation, "thoughts": thoughts,
                       "action_list": [a.to_dict() for a in actions]})


# --------------------------------------------------------------------------------------- the oracle
class OraclePlanner:
    """Deterministic planner from the tables (module docstring). ``plan(request) -> answer text``."""

    name = "oracle"

    def __init__(self, knowledge: Knowledge | None = None):
        self.k = knowledge or Knowledge.default()
        self.decomposer = OracleDecomposer(self.k, with_info=False)

    # the canonical plan of one sub-goal from a state ------------------------------------------------
    def _best_tool(self, block: str, inv: dict[str, int], fallback: str | None) -> str | None:
        tools = self.k.harvest_tools(block)
        if not tools:
            return None
        held = [t for t in PICK_TIERS + tuple(sorted(tools)) if t in tools and inv.get(t, 0) > 0]
        return held[0] if held else fallback

    def _y_for(self, block: str) -> int:
        return hand.Y_LEVEL_HINT.get(block, 60)

    def _y_ok(self, block: str, state: State) -> bool:
        if not state.underground:
            return False
        lo, hi = hand.ORES.get(block, {"y": (5, 60)})["y"]
        return state.y_level <= min(hi, 60) and state.y_level >= lo

    def steps_for(self, obj: str, deficit: int, state: State, goal: Goal | None = None,
                  y_override: int | None = None) -> list[Action]:
        """The canonical actions that obtain ``deficit`` more ``obj`` from ``state``."""
        src = self.k.source(obj)
        inv = state.inventory
        A = Action
        if src.kind == "craft":
            units = math.ceil(deficit / src.yield_)
            return [A("craft", {"object": {obj: deficit}, "materials": {m: q * units for m, q in src.materials},
                                "tool": src.tool}, f"{deficit} {obj} in the inventory")]
        if src.kind == "smelt":
            inp = src.materials[0][0]
            return [A("smelt", {"object": {obj: deficit}, "materials": {inp: deficit}, "tool": "furnace"},
                      f"{deficit} {obj} in the inventory")]
        target = src.target
        out: list[Action] = []
        if src.kind == "mine":
            where = "underground" if target in ("obsidian", "lava") else self.k.location(target)
            if target == "obsidian":
                where_block = "lava"
            else:
                where_block = target
            if where == "underground":
                if not self._y_ok(where_block, state):
                    if state.underground and state.y_level < self._y_for(where_block) - 20:
                        out.append(A("go_up", {"tool": None}, "back on the ground"))
                    y = y_override if y_override is not None else self._y_for(where_block)
                    out.append(A("dig_down", {"y_level": y, "tool": self._best_tool("stone", inv, "wooden_pickaxe")},
                                 f"at y={y}"))
            elif state.underground:
                out.append(A("go_up", {"tool": None}, "back on the ground"))
            tool = self._best_tool(target, inv, src.tool)
            drops = [d for d in self.k.drops(target) if d[0] == obj]
            per_block = max(1, drops[0][1]) if drops and drops[0][3] >= 1 else 0
            count = math.ceil(deficit / per_block) if per_block else 64
            if target == "obsidian":
                out += [A("explore", {"object": "lava", "strategy": "branching"}, "lava is visible"),
                        A("approach", {"object": "lava"}, "lava in reach"),
                        A("apply", {"object": "lava", "tool": "water_bucket"}, "obsidian in reach"),
                        A("mine", {"object": "obsidian", "tool": tool, "count": count}, f"{deficit} obsidian")]
                return out
            if target == "stone" and (state.underground or where == "underground"):
                return out + [A("mine", {"object": "stone", "tool": tool, "count": count}, f"{deficit} {obj}")]
            strategy = "branching" if where == "underground" else "area"
            return out + [A("explore", {"object": target, "strategy": strategy}, f"{target} is visible"),
                          A("approach", {"object": target}, f"{target} in reach"),
                          A("mine", {"object": target, "tool": tool, "count": count}, f"{deficit} {obj}")]
        if src.kind == "attack":
            if state.underground:
                out.append(A("go_up", {"tool": None}, "back on the ground"))
            weapon = next((w for w in WEAPONS if inv.get(w, 0) > 0), None)
            mean = max(src.yield_, 0.5)
            count = min(64, math.ceil(deficit / mean))
            return out + [A("explore", {"object": target, "strategy": "area"}, f"{target} is visible"),
                          A("approach", {"object": target}, f"{target} in reach"),
                          A("attack", {"object": target, "tool": weapon, "count": count}, f"{deficit} {obj}")]
        # apply
        spec = hand.APPLY[obj]
        tool = next((t for t in spec["tools"] if inv.get(t, 0) > 0), spec["tools"][0])
        reps = [A("apply", {"object": target, "tool": tool}, f"{obj} in the inventory")] * (
            deficit if "consumes" in spec or obj == "wheat" else 1)
        if target == "lava":
            if not self._y_ok("lava", state):
                out.append(A("dig_down", {"y_level": self._y_for("lava"),
                                          "tool": self._best_tool("stone", inv, "wooden_pickaxe")}, "at lava level"))
        elif state.underground:
            out.append(A("go_up", {"tool": None}, "back on the ground"))
        if target == "dirt":
            return out + reps
        return out + [A("explore", {"object": target, "strategy": "area"}, f"{target} is visible"),
                      A("approach", {"object": target}, f"{target} in reach")] + reps

    def flat_steps(self, goal: Goal, target: int, state: State) -> list[Action]:
        """All actions for ``goal`` including every missing prerequisite (post-order over the oracle tree,
        simulated on a copy of the inventory); used when a prerequisite is missing."""
        inv = dict(state.inventory)
        sim_state = State(inv, state.biome, state.y_level, state.underground)
        out: list[Action] = []

        def need(obj: str, want: int, path: tuple = ()) -> None:
            have = sum(inv.get(t, 0) for t in equivalent_tools(obj))
            if have >= want or obj in path or len(path) > 12:
                return
            g = self.decomposer.goal(obj, want - have)
            for m, q in (g.material or {}).items():
                need(m, q, path + (obj,))
            if g.tool:
                need(g.tool, 1, path + (obj,))
            deficit = want - inv.get(obj, 0)
            if deficit <= 0:
                return
            acts = self.steps_for(obj, deficit, sim_state)
            out.extend(acts)
            for m, q in (g.material or {}).items():
                if m not in ("water_bucket",):
                    inv[m] = max(0, inv.get(m, 0) - q)
            inv[obj] = inv.get(obj, 0) + deficit
            for a in acts:
                if a.name == "dig_down":
                    sim_state.underground, sim_state.y_level = True, a.args["y_level"]
                elif a.name == "go_up":
                    sim_state.underground, sim_state.y_level = False, hand.SURFACE_Y

        need(goal.object, target)
        return out

    def actions(self, req: PlanRequest) -> tuple[list[Action], str]:
        """(actions, thoughts) for one query."""
        inv = req.state.inventory
        deficit = req.target - inv.get(req.goal.object, 0)
        if deficit <= 0:
            return [], f"{req.goal.object} is already in the inventory"
        missing = {m: q for m, q in req.goal.prerequisites().items()
                   if sum(inv.get(t, 0) for t in equivalent_tools(m)) < q}
        if missing:
            return self.flat_steps(req.goal, req.target, req.state), \
                f"missing prerequisites {missing}; obtain them first"
        return self.steps_for(req.goal.object, deficit, req.state, req.goal), \
            f"obtain {deficit} {req.goal.object} the canonical way"

    def plan(self, req: PlanRequest) -> str:
        acts, thoughts = self.actions(req)
        expl = None
        if req.feedback is not None and not req.feedback.success:
            expl = f"the action {req.feedback.action.name} failed: {req.feedback.message}"
        elif req.error:
            expl = f"the last answer was not usable: {req.error}"
        return plan_text(acts, thoughts, expl)


@dataclass
class NoiseConfig:
    """Error rates of :class:`NoisyOraclePlanner` (spec 8.3) and how memory and info reduce them."""

    p_drop: float = 0.15       # drop each step
    q_tool: float = 0.25       # wrong (lower) tool tier on mine / dig_down
    r_y: float = 0.6           # wrong y-level on dig_down without external info
    r_y_info: float = 0.05     # ... with external info (the y-level is in the goal's info)
    memory_factor: float = 0.25  # all rates multiplied by this when a reference plan is given


class NoisyOraclePlanner(OraclePlanner):
    """The oracle with seeded mistakes (module docstring); deterministic given ``request.seed``."""

    name = "noisy_oracle"

    def __init__(self, knowledge: Knowledge | None = None, noise: NoiseConfig | dict | None = None):
        super().__init__(knowledge)
        self.noise = noise if isinstance(noise, NoiseConfig) else NoiseConfig(**(noise or {}))

    def actions(self, req: PlanRequest) -> tuple[list[Action], str]:
        acts, thoughts = super().actions(req)
        rng = np.random.default_rng([req.seed & 0xFFFFFFFF, req.query_index, 11])
        n = self.noise
        f = n.memory_factor if req.reference else 1.0
        has_info = "y=" in req.goal.info
        out = []
        for a in acts:
            if rng.random() < n.p_drop * f:
                continue
            if a.name in ("mine", "dig_down") and a.args.get("tool") in PICK_TIERS[1:4] and rng.random() < n.q_tool * f:
                lower = PICK_TIERS[PICK_TIERS.index(a.args["tool"]) - 1]
                a = replace(a, args={**a.args, "tool": lower})
            if a.name == "dig_down" and rng.random() < (n.r_y_info if has_info else n.r_y) * f:
                a = replace(a, args={**a.args, "y_level": int(rng.integers(30, 61))})
            out.append(a)
        return out, thoughts
