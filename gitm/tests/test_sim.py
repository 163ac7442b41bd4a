"""Simulator invariants (spec 6a): item conservation, tool tiers, durability, smelting fuel, crafting
tables, exploration limits, determinism, mobs."""

from collections import Counter

import pytest

from gitm.actions import Action
from gitm.sim import SimEnv


def A(name, **args):
    return Action(name, args)


def find(env, obj):
    fb = env.step(A("explore", object=obj))
    assert fb.success, fb.message
    assert env.step(A("approach", object=obj)).success or env.step(A("explore", object=obj)).success


def forest_env(seed=0, **kw):
    """An easy-preset episode whose spawn cell has trees (first seed that does)."""
    for s in range(seed, seed + 200):
        env = SimEnv(s, config={"preset": "easy"}, **kw)
        if env.cell.surface.get("log", 0) > 0:
            return env
    raise AssertionError("no forest spawn in 200 seeds")


def test_conservation_ledger_and_world():
    env = forest_env(inventory={"wooden_pickaxe": 1, "stone_pickaxe": 1, "crafting_table": 1})
    start = Counter(env.inventory)
    find(env, "log")
    env.step(A("mine", object="log", count=3))
    env.step(A("craft", object={"planks": 8}))
    env.step(A("dig_down", y_level=40, tool="wooden_pickaxe"))
    env.step(A("explore", object="iron_ore"))
    env.step(A("mine", object="iron_ore", tool="stone_pickaxe", count=2))
    env.step(A("mine", object="stone", tool="stone_pickaxe", count=5))
    # every inventory change is in the ledger, and the ledger adds up to the inventory
    total = Counter()
    for item, d, _ in env.ledger:
        total[item] += d
    assert +total == +Counter(env.inventory)
    assert total - start == Counter(env.inventory) - start
    # blocks removed from the world = blocks mined/dug (stone gives cobblestone 1:1 with a pickaxe)
    removed = Counter()
    for _, _, block, d in env.world_log:
        removed[block] -= d
    gained_cobble = sum(d for item, d, cause in env.ledger if item == "cobblestone" and d > 0)
    assert removed["stone"] == gained_cobble
    logs = sum(d for item, d, cause in env.ledger if item == "log" and cause == "mine log")
    assert removed["log"] == logs == 3
    # crafting conserves according to the recipe: 1 log -> 4 planks
    planks = sum(d for item, d, c in env.ledger if item == "planks")
    used_logs = -sum(d for item, d, c in env.ledger if item == "log" and c == "craft planks")
    assert planks == 4 * used_logs


def test_wrong_tier_drops_nothing_then_right_tier_drops_ore():
    env = forest_env(inventory={"wooden_pickaxe": 5, "stone_pickaxe": 1})
    env.step(A("dig_down", y_level=30, tool="wooden_pickaxe"))
    assert env.step(A("explore", object="iron_ore")).success
    fb = env.step(A("mine", object="iron_ore", tool="wooden_pickaxe", count=1))
    assert fb.success and "got nothing" in fb.message and "stone_pickaxe" in fb.message
    assert env.inventory["iron_ore"] == 0 and fb.inventory_delta.get("iron_ore") is None
    env.visible.clear()
    assert env.step(A("explore", object="iron_ore")).success
    fb = env.step(A("mine", object="iron_ore", tool="stone_pickaxe", count=1))
    assert fb.success and fb.inventory_delta == {"iron_ore": 1}


def test_missing_tool_and_not_visible_and_too_far():
    env = forest_env()
    fb = env.step(A("mine", object="iron_ore", tool="stone_pickaxe"))
    assert not fb.success and fb.reason == "no_tool" and fb.message == "no tool stone_pickaxe in inventory"
    fb = env.step(A("mine", object="log"))
    assert not fb.success and fb.reason == "not_visible"
    assert env.step(A("explore", object="log")).success
    s = env.visible["log"]
    if not s.in_reach:
        fb = env.step(A("mine", object="log"))
        assert not fb.success and fb.reason == "too_far"


def test_durability_breaks_tool():
    env = forest_env(inventory={"wooden_pickaxe": 1})
    env.step(A("dig_down", y_level=55, tool="wooden_pickaxe"))
    fb = env.step(A("mine", object="stone", tool="wooden_pickaxe", count=200))
    used = sum(1 for item, d, c in env.ledger if item == "cobblestone" and d > 0)
    assert "broke" in fb.message
    assert env.inventory["wooden_pickaxe"] == 0
    assert used == 59  # maxDurability of the wooden pickaxe: 59 blocks (dig_down included)


def test_smelting_needs_furnace_and_fuel():
    env = SimEnv(0, config={"preset": "easy"}, inventory={"iron_ore": 3})
    fb = env.step(A("smelt", object={"iron_ingot": 3}, materials={"iron_ore": 3}, tool="furnace"))
    assert not fb.success and fb.reason == "no_tool"
    env = SimEnv(0, config={"preset": "easy"}, inventory={"iron_ore": 3, "furnace": 1})
    fb = env.step(A("smelt", object={"iron_ingot": 3}, materials={"iron_ore": 3}, tool="furnace"))
    assert not fb.success and fb.reason == "no_fuel" and env.inventory["iron_ore"] == 3
    env = SimEnv(0, config={"preset": "easy"}, inventory={"iron_ore": 3, "furnace": 1, "planks": 1})
    fb = env.step(A("smelt", object={"iron_ingot": 3}, tool="furnace"))
    assert not fb.success and env.inventory["iron_ingot"] == 1  # one plank burns 1.5 items: one completes
    env = SimEnv(0, config={"preset": "easy"}, inventory={"iron_ore": 3, "furnace": 1, "coal": 1})
    fb = env.step(A("smelt", object={"iron_ingot": 3}, tool="furnace"))
    assert fb.success and fb.inventory_delta == {"coal": -1, "iron_ingot": 3, "iron_ore": -3}
    assert fb.steps == 20 + 3 * 200


def test_crafting_table_required_partial_and_advisory_materials():
    env = SimEnv(0, config={"preset": "easy"}, inventory={"planks": 5, "stick": 2})
    fb = env.step(A("craft", object={"wooden_pickaxe": 1}, materials={"planks": 3, "stick": 2}))
    assert not fb.success and fb.message == "no crafting_table in inventory"
    env = SimEnv(0, config={"preset": "easy"}, inventory={"log": 1})
    fb = env.step(A("craft", object={"planks": 8}))
    assert not fb.success and fb.inventory_delta == {"log": -1, "planks": 4} and "only 4 of 8" in fb.message
    env = SimEnv(0, config={"preset": "easy"}, inventory={"log": 1})
    fb = env.step(A("craft", object={"planks": 4}, materials={"wood": 1}))
    assert fb.success and "not the materials given" in fb.message
    fb = env.step(A("craft", object={"diamond_pickaxe": 1}))
    assert not fb.success and fb.reason == "no_materials"


def test_explore_cap_and_wrong_place():
    env = SimEnv(3, config={"preset": "easy"})
    fb = env.step(A("explore", object="diamond_ore"))  # ores are not visible from the surface
    assert not fb.success and fb.reason == "not_found" and fb.steps == 10_000
    assert "not found within 10000 steps" in fb.message


def test_same_seed_same_episode():
    def play(seed):
        env = SimEnv(seed, inventory={"wooden_pickaxe": 1, "stone_pickaxe": 1})
        out = []
        for a in [A("explore", object="log"), A("approach", object="log"), A("mine", object="log", count=4),
                  A("dig_down", y_level=12, tool="stone_pickaxe"), A("explore", object="diamond_ore")]:
            fb = env.step(a)
            out.append((fb.success, fb.message, fb.steps, tuple(sorted(fb.inventory_delta.items()))))
        return out, env.steps
    assert play(5) == play(5)
    assert play(5) != play(6)


def test_night_mobs_attack_on_the_surface_and_can_kill():
    env = SimEnv(1, config={"preset": "paper", "night_encounter_rate": 0.01, "encounter_damage_min": 25,
                            "encounter_damage_max": 25})
    env.steps = 13_500  # night
    fb = env.step(A("explore", object="diamond_ore"))
    assert not fb.success and fb.reason == "died" and env.done
    assert not env.step(A("explore", object="log")).success
    easy = SimEnv(1, config={"preset": "easy"})
    easy.steps = 13_500
    assert easy.step(A("explore", object="diamond_ore")).reason == "not_found"


def test_step_limit_ends_episode():
    env = SimEnv(0, step_limit=500)
    fb = env.step(A("explore", object="diamond_ore"))
    assert not fb.success and fb.reason == "time_limit" and env.done and env.steps == 500


def test_obsidian_by_water_bucket_on_lava():
    env = SimEnv(2, config={"preset": "easy"}, inventory={"diamond_pickaxe": 1, "water_bucket": 1, "stone_pickaxe": 1})
    assert env.step(A("dig_down", y_level=10, tool="stone_pickaxe")).success
    for _ in range(5):
        if env.step(A("explore", object="lava")).success:
            break
    fb = env.step(A("apply", object="lava", tool="water_bucket"))
    assert fb.success and "obsidian" in fb.message
    fb = env.step(A("mine", object="obsidian", tool="diamond_pickaxe", count=1))
    assert fb.success and fb.inventory_delta == {"obsidian": 1}
    assert env.inventory["water_bucket"] == 1


def test_bad_config_is_one_clear_error():
    from gitm.errors import GitmError
    with pytest.raises(GitmError, match="unknown simulator settings.*known"):
        SimEnv(0, config={"break_sped": 1})
    with pytest.raises(GitmError, match="unknown simulator preset 'hard'; known presets: paper, easy"):
        SimEnv(0, config={"preset": "hard"})
