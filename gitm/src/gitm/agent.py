"""The GITM agent: decompose, then plan each sub-goal with feedback and memory (spec 2.5).

``Agent.run(object, count)`` builds the sub-goal tree and executes it in post-order, skipping every node
that the inventory already satisfies. Each remaining sub-goal gets one growing conversation with the
planner (system prompt + the last ``history_k`` exchanges) and at most ``query_limit`` queries; each plan
runs action by action and stops at the first failure, whose feedback starts the next query. A parse
failure counts as a query. When a failure says that a tool or material is missing (it broke, a sibling
used it up), the sub-goal is re-queued: its children are re-derived from the current deficit and obtained
again (at most ``max_requeue`` times). Successful sub-goals add their executed actions to the memory.

Ablation switches (paper Table 3): ``decompose`` (off: one sub-goal, the goal itself), ``feedback`` (off:
every re-query is the first query again, without the failure or the new state), ``external_info`` (off:
the goal sentence has no Info), ``use_memory`` (off: no reference plan).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from .actions import Action, Feedback
from .decomposer import Goal, Node
from .errors import PlanParseError
from .knowledge.tables import equivalent_tools
from .memory import Memory, Summarise
from .parsing import parse_plan
from .planner import OraclePlanner, PlanRequest, default_prompts

OBTAIN_DIAMOND_MILESTONES = ("crafting_table", "wooden_pickaxe", "stone_pickaxe", "iron_pickaxe", "diamond")
REQUEUE_REASONS = ("no_tool", "no_materials", "no_fuel", "tool_broke")


@dataclass
class AgentConfig:
    """Agent settings (paper values: query_limit 30 per sub-goal; history is our choice, null = all)."""

    query_limit: int = 30
    history_k: int | None = 6
    decompose: bool = True
    feedback: bool = True
    external_info: bool = True
    use_memory: bool = True
    update_memory: bool = False
    max_requeue: int = 3
    milestones: tuple[str, ...] = OBTAIN_DIAMOND_MILESTONES


class PlannerBackend(Protocol):
    """Answers one planner query with text; ``messages`` is the rendered chat, ``request`` the same
    information structured (the deterministic planners read that, LLMs read the messages)."""

    name: str

    async def answer(self, request: PlanRequest, messages: list[dict]) -> str: ...


class DirectBackend:
    """A deterministic planner called in-process (``llm=oracle`` / ``llm=noisy_oracle``)."""

    def __init__(self, planner: OraclePlanner):
        self.planner, self.name = planner, planner.name

    async def answer(self, request: PlanRequest, messages: list[dict]) -> str:
        return self.planner.plan(request)


class ChatBackend:
    """An LLM behind :class:`gitm.llm.LLMClient` (the paper's planner)."""

    def __init__(self, chat: Callable[[list[dict]], Awaitable[str]], name: str):
        self.chat, self.name = chat, name

    async def answer(self, request: PlanRequest, messages: list[dict]) -> str:
        return await self.chat(messages)


@dataclass
class EpisodeResult:
    """What one episode produced; ``to_dict`` is one line of the results file."""

    goal: str
    count: int
    seed: int
    success: bool
    steps: int
    queries: int
    parse_failures: int
    subgoals: int
    milestones: dict[str, int | None]
    reason: str
    planner: str
    memory_updates: list[tuple[str, list[dict]]] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    def to_dict(self, with_trace: bool = False) -> dict:
        d = asdict(self)
        if not with_trace:
            d.pop("trace")
        return d


class _EpisodeOver(Exception):
    pass


class Agent:
    """Runs one episode (module docstring).

    Args:
        env: a back end with ``step(Action) -> Feedback``, ``state()``, ``done``, ``steps``, ``inventory``
            (:class:`gitm.sim.SimEnv` or the MineDojo adapter).
        backend: the planner (:class:`DirectBackend` or :class:`ChatBackend`).
        decompose_fn: ``async (object, count) -> Node`` (the decomposer's tree).
        memory: the text memory (read for references; written when ``cfg.update_memory``).
        summarise: the summariser used when the memory reaches N entries.
        seed: episode seed (the noisy planner's draws).
        on_trace: called with each trace line as it happens (``gitm-play`` prints them).
        remember_only: when set, only these sub-goal keys are written to the memory (the curriculum
            learns one sub-goal per episode).
    """

    def __init__(self, env, backend: PlannerBackend, decompose_fn: Callable[[str, int], Awaitable[Node]],
                 memory: Memory | None = None, summarise: Summarise | None = None,
                 cfg: AgentConfig | None = None, seed: int = 0, on_trace: Callable[[str], None] | None = None,
                 remember_only: set[str] | None = None):
        self.env, self.backend, self.decompose_fn = env, backend, decompose_fn
        self.memory, self.summarise = memory, summarise
        self.cfg = cfg or AgentConfig()
        self.seed = int(seed)
        self.prompts = default_prompts()
        self.on_trace = on_trace
        self.trace: list[str] = []
        self.queries = self.parse_failures = self.subgoals = 0
        self.milestones: dict[str, int | None] = {m: None for m in self.cfg.milestones}
        self.memory_updates: list[tuple[str, list[dict]]] = []
        self.reason = ""
        self.remember_only = remember_only

    # ------------------------------------------------------------------------------------------ trace
    def _log(self, line: str) -> None:
        self.trace.append(line)
        if self.on_trace:
            self.on_trace(line)

    def _track(self) -> None:
        for m, t in self.milestones.items():
            if t is None and self.env.inventory.get(m, 0) > 0:
                self.milestones[m] = self.env.steps

    # ------------------------------------------------------------------------------------------- run
    async def run(self, obj: str, count: int = 1) -> EpisodeResult:
        """Play one episode for ``count`` of ``obj``; never raises for planner or environment failures
        (they end the episode with ``reason``); raises for bad input (unknown item) and LLM errors."""
        tree = await self.decompose_fn(obj, count)
        self._log(f"goal: obtain {count} {obj}; sub-goal tree ({tree.size()} nodes):\n{tree.render()}")
        if not self.cfg.decompose:
            tree = Node(tree.goal, [])
        self._track()
        try:
            ok = await self._achieve(tree, count)
        except _EpisodeOver:
            ok = False
        success = ok and self.env.inventory.get(obj, 0) >= count
        if success:
            self.reason = "success"
        self._log(f"episode {'succeeded' if success else 'failed'} ({self.reason}) after {self.env.steps} steps, "
                  f"{self.queries} queries")
        return EpisodeResult(obj, count, self.seed, success, int(self.env.steps), self.queries, self.parse_failures,
                             self.subgoals, dict(self.milestones), self.reason, self.backend.name,
                             self.memory_updates, self.trace)

    def _child_need(self, node: Node, child: Node, deficit: int) -> int:
        g = node.goal
        if g.material and child.goal.object in g.material:
            return max(1, math.ceil(g.material[child.goal.object] * deficit / g.count))
        return 1  # the tool

    def _have(self, obj: str) -> int:
        """Held count of ``obj``; a tool counts any tool of the same kind and an equal or better tier."""
        inv = self.env.inventory
        return sum(inv.get(t, 0) for t in equivalent_tools(obj))

    async def _achieve(self, node: Node, need: int) -> bool:
        obj = node.goal.object
        for attempt in range(self.cfg.max_requeue + 1):
            have = self._have(obj)
            if have >= need:
                return True
            deficit = need - have
            for child in node.children:
                if not await self._achieve(child, self._child_need(node, child, deficit)):
                    return False
            have = self._have(obj)
            if have >= need:
                return True
            status = await self._solve(node.goal, need)
            if status == "success":
                return True
            if status != "requeue" or not node.children:
                return False
            self._log(f"re-queue {obj}: a prerequisite is missing")
        self.reason = f"re-queued {obj} {self.cfg.max_requeue} times"
        return False

    def _goal_for(self, g: Goal, need: int) -> Goal:
        deficit = need - self.env.inventory.get(g.object, 0)
        scale = deficit / g.count
        material = {m: max(1, math.ceil(q * scale)) for m, q in g.material.items()} if g.material else None
        keep = {m: 1 for m in (g.material or {}) if m in ("water_bucket",)}
        if material and keep:
            material.update(keep)
        return Goal(g.object, deficit, material, g.tool, g.info if self.cfg.external_info else "")

    async def _solve(self, goal0: Goal, need: int) -> str:
        """One sub-goal: query, execute, feed back, until satisfied, failed, or re-queue."""
        self.subgoals += 1
        goal = self._goal_for(goal0, need)
        key = goal.object
        reference = self.memory.reference(key) if (self.memory is not None and self.cfg.use_memory) else None
        sub_seed = zlib.crc32(f"{self.seed}:{self.subgoals}:{key}".encode())
        first = PlanRequest(goal, need, self.env.state(), reference=reference, seed=sub_seed)
        self._log(f"[sub-goal {self.subgoals}] {goal.text(self.cfg.external_info)}"
                  + (" (reference plan from memory)" if reference else ""))
        system = {"role": "system", "content": self.prompts.system}
        exchanges: list[tuple[dict, dict]] = []
        first_user = {"role": "user", "content": self.prompts.first(first, self.cfg.external_info)}
        request = first
        executed: list[Action] = []
        for q in range(self.cfg.query_limit):
            msgs = [system, first_user]
            hist = exchanges if self.cfg.history_k is None else exchanges[-self.cfg.history_k:]
            for a, u in hist:
                msgs += [a, u]
            request.query_index = q
            text = await self.backend.answer(request, msgs)
            self.queries += 1
            assistant = {"role": "assistant", "content": text}
            try:
                plan = parse_plan(text)
            except PlanParseError as e:
                self.parse_failures += 1
                self._log(f"  query {q + 1}: unusable answer ({e})")
                if self.cfg.feedback:
                    exchanges.append((assistant, {"role": "user", "content": self.prompts.error(str(e), self.env.state())}))
                    request = PlanRequest(goal, need, self.env.state(), None, str(e), reference, q + 1, sub_seed)
                continue
            self._log(f"  query {q + 1}: " + (f"({plan.explanation}) " if plan.explanation else "")
                      + "[" + ", ".join(a.short() for a in plan.actions) + "]")
            last: Feedback | None = None
            for action in plan.actions:
                last = self.env.step(action)
                self._track()
                self._log(f"    {action.short()} -> {'ok' if last.success else 'FAILED'}: {last.message} "
                          f"[{last.steps} steps, total {self.env.steps}]")
                if last.success:
                    executed.append(action)
                if self.env.done:
                    self.reason = last.reason or "episode over"
                    raise _EpisodeOver()
                if not last.success or self.env.inventory.get(key, 0) >= need:
                    break
            if self.env.inventory.get(key, 0) >= need:
                await self._remember(key, executed)
                return "success"
            if last is not None and not last.success and last.reason in REQUEUE_REASONS and self.cfg.decompose:
                missing = {m: n for m, n in goal.prerequisites().items() if self._have(m) < n}
                if missing:
                    return "requeue"
            if self.cfg.feedback:
                user = self.prompts.after(last) if last is not None else self.prompts.first(
                    PlanRequest(goal, need, self.env.state(), reference=reference), self.cfg.external_info)
                exchanges.append((assistant, {"role": "user", "content": user}))
                request = PlanRequest(goal, need, self.env.state(), last, None, reference, q + 1, sub_seed)
            else:  # no feedback: the same first query again (no failure, no new state)
                request = PlanRequest(goal, need, first.state, None, None, reference, q + 1, sub_seed)
        self.reason = f"query limit ({self.cfg.query_limit}) reached for {key}"
        self._log(f"  {self.reason}")
        return "failed"

    async def _remember(self, key: str, executed: list[Action]) -> None:
        if self.memory is None or not self.cfg.update_memory or not executed:
            return
        if self.remember_only is not None and key not in self.remember_only:
            return
        self.memory_updates.append((key, [a.to_dict() for a in executed]))
        summarised = await self.memory.add(key, executed, self.summarise)
        if summarised:
            self._log(f"  memory: summarised {key} into one reference plan")


def tree_fn_from(decomposer: Any) -> Callable[[str, int], Awaitable[Node]]:
    """``async (object, count) -> Node`` for either decomposer (the oracle's tree is synchronous)."""
    import inspect

    if inspect.iscoroutinefunction(decomposer.tree):
        return decomposer.tree

    async def tree(obj: str, count: int) -> Node:
        return decomposer.tree(obj, count)

    return tree
