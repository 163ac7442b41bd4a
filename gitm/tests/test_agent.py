"""The agent loop: post-order execution with inventory skips, re-queue, ablation switches, milestones."""

import asyncio

from gitm.agent import Agent, AgentConfig, DirectBackend, tree_fn_from
from gitm.decomposer import OracleDecomposer
from gitm.planner import OraclePlanner
from gitm.sim import SimEnv


class Recording(DirectBackend):
    def __init__(self):
        super().__init__(OraclePlanner())
        self.requests = []

    async def answer(self, request, messages):
        self.requests.append((request, messages))
        return await super().answer(request, messages)


def play(goal, seed=0, cfg=None, inventory=None, preset="easy", step_limit=None):
    env = SimEnv(seed, config={"preset": preset}, inventory=inventory, step_limit=step_limit)
    backend = Recording()
    agent = Agent(env, backend, tree_fn_from(OracleDecomposer()), cfg=cfg or AgentConfig(), seed=seed)
    return asyncio.run(agent.run(goal, 1)), env, backend


def test_obtain_diamond_oracle_reaches_all_milestones():
    wins = 0
    for seed in range(6):
        r, env, _ = play("diamond", seed, preset="paper", step_limit=12000)
        wins += r.success
        if r.success:
            ms = r.milestones
            assert ms["crafting_table"] <= ms["wooden_pickaxe"] <= ms["stone_pickaxe"] <= ms["iron_pickaxe"] <= ms["diamond"]
    assert wins >= 5


def test_inventory_satisfied_subgoals_are_skipped():
    r, env, backend = play("wooden_pickaxe", inventory={"planks": 3, "stick": 2, "crafting_table": 1})
    assert r.success and r.subgoals == 1 and r.queries == 1
    assert backend.requests[0][0].goal.object == "wooden_pickaxe"


def test_better_tool_satisfies_a_basic_tool_requirement():
    r, env, _ = play("cobblestone", inventory={"stone_pickaxe": 1})
    assert r.success and "wooden_pickaxe" not in env.inventory and r.subgoals == 1


def test_no_feedback_requeries_with_the_first_state():
    cfg = AgentConfig(feedback=False, query_limit=3)
    r, env, backend = play("log", seed=3, cfg=cfg)
    for req, msgs in backend.requests:
        assert req.feedback is None and len(msgs) == 2  # system + the first query, nothing else


def test_without_info_the_goal_sentence_has_no_info():
    cfg = AgentConfig(external_info=False)
    r, env, backend = play("coal", cfg=cfg)
    assert all("Extra info" not in m[1]["content"] for _, m in backend.requests)
    r, env, backend = play("coal")
    assert any("y=45" in m[1]["content"] for _, m in backend.requests)


def test_requeue_when_a_prerequisite_is_lost():
    """A planner that wastes the crafting table makes the agent re-obtain it (re-queue), then succeed."""
    class Wasteful(Recording):
        async def answer(self, request, messages):
            self.requests.append((request, messages))
            if len(self.requests) == 1:
                return ('{"explanation": null, "thoughts": "", "action_list": [{"name": "place", '
                        '"args": {"object": "crafting_table"}}, {"name": "craft", "args": {"object": '
                        '{"wooden_pickaxe": 1}, "tool": "crafting_table"}}]}')
            return self.planner.plan(request)

    env = SimEnv(0, config={"preset": "easy"}, inventory={"planks": 7, "stick": 2, "crafting_table": 1})
    backend = Wasteful()
    agent = Agent(env, backend, tree_fn_from(OracleDecomposer()), seed=0)
    r = asyncio.run(agent.run("wooden_pickaxe", 1))
    assert r.success and any("re-queue wooden_pickaxe" in t for t in r.trace)
    assert [q[0].goal.object for q in backend.requests] == ["wooden_pickaxe", "crafting_table", "wooden_pickaxe"]
