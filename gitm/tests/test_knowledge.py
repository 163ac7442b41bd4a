"""Knowledge tables: the shipped extract equals a fresh build from minecraft-data, 1.11 facts, hand tables."""

import json
from importlib import resources

import pytest

from gitm.knowledge.tables import equivalent_tools


def test_shipped_extract_matches_a_fresh_build():
    pytest.importorskip("minecraft_data")
    from gitm.knowledge.build import build

    shipped = json.loads(resources.files("gitm").joinpath("data/mc1_11.json").read_text())
    fresh = json.loads(json.dumps(build("1.11")))
    assert fresh == shipped
    assert shipped["source"]["minecraft"] == "1.11" and shipped["source"]["paths"]["recipes"] == "pc/1.11"


def test_recipe_facts(knowledge):
    k = knowledge
    wp = k.source("wooden_pickaxe")
    assert dict(wp.materials) == {"planks": 3, "stick": 2} and wp.tool == "crafting_table"
    assert k.source("torch").yield_ == 4 and k.source("torch").tool is None          # 1x2 grid: no table
    assert k.source("paper").tool == "crafting_table" and k.source("paper").yield_ == 3
    assert k.source("iron_nugget").yield_ == 9                                         # hand: 1.11.1 item
    assert k.source("fence").yield_ == 3 and "dark_oak_fence" not in k.recipes       # planks family renamed
    assert all(r["ingredients"] != {"wooden_pickaxe": 2} for r in k.recipes["wooden_pickaxe"])  # repair dropped
    assert k.source("enchanted_book").tool == "enchanting_table"
    assert k.source("redstone_torch").kind == "craft"


def test_mining_facts(knowledge):
    k = knowledge
    assert k.min_tool("iron_ore") == "stone_pickaxe" and k.min_tool("diamond_ore") == "iron_pickaxe"
    assert k.min_tool("obsidian") == "diamond_pickaxe" and k.min_tool("log") is None
    assert not k.can_harvest("iron_ore", "wooden_pickaxe") and k.can_harvest("iron_ore", "stone_pickaxe")
    assert k.tool_speed("stone", "iron_pickaxe") == 6 and k.tool_speed("stone", "golden_pickaxe") == 12
    # break time: hardness 3 * 1.5 / speed 4 / multiplier 100 s -> ceil(20 t) steps
    assert k.break_steps("iron_ore", "stone_pickaxe", 100) == 1
    assert k.break_steps("iron_ore", "stone_pickaxe", 1) == 23
    assert k.break_steps("iron_ore", None, 1) == 300  # hand, not harvestable: 3 * 5 s
    assert k.durability("wooden_pickaxe") == 59 and k.durability("diamond_pickaxe") == 1561
    assert k.drops("redstone_ore") == [("redstone", 4, 5, 1.0)] and k.drops("gravel")[1] == ("flint", 1, 1, 0.1)
    assert k.source("coal").kind == "mine" and k.source("iron_ingot").kind == "smelt"
    assert k.source("leather").target == "cow" and k.source("string").target == "spider"


def test_tech_tree_list(knowledge):
    items = knowledge.tech_tree()
    assert len(items) == len(set(items)) == 236
    for must in ("diamond", "enchanted_book", "rabbit_stew", "golden_apple", "stone_slab2", "ink_sac",
                 "lapis_lazuli", "bone_meal", "iron_nugget", "obsidian", "cake"):
        assert must in items
    for never in ("blaze_powder", "ender_eye", "beacon", "elytra", "prismarine", "glowstone", "saddle"):
        assert never not in items


def test_tool_equivalence():
    assert equivalent_tools("stone_pickaxe") == ["stone_pickaxe", "iron_pickaxe", "diamond_pickaxe"]
    assert "golden_axe" in equivalent_tools("wooden_axe") and equivalent_tools("furnace") == ["furnace"]
