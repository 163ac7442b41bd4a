"""Hand-written knowledge that the Minecraft 1.11 data of ``minecraft-data`` does not hold.

All numbers are vanilla 1.11 game facts written down by us (spec section 6a); none of this text comes
from a wiki. Each table says where a simplification was made.

Tables:

- :data:`SMELTING` -- furnace recipes ``output -> input`` (one input makes one output).
- :data:`FUELS` -- items a furnace burns and how many items one of them smelts.
- :data:`MOB_DROPS` -- entity drops (1.11 data has no ``entityLoot``): ``mob -> [(item, min, max, p)]``;
  each entry drops ``uniform{min..max}`` with probability ``p``.
- :data:`MOBS` -- health (half-hearts), where they spawn, hostile or not.
- :data:`ORES` -- vanilla 1.11 ore generation: vein size, veins per 16x16 chunk, y range.
- :data:`BIOMES` -- the simulator's biomes with weights and surface features per 20x20-block cell.
- :data:`DROP_OVERRIDES` -- block drops where ``blocks.json`` is wrong or too coarse for sampling.
- :data:`EXTRA_RECIPES` -- crafting-like recipes missing from the 1.11 data (iron_nugget is a 1.11.1 item;
  enchanting a book; farming wheat).
- :data:`APPLY` -- the ``apply`` action's outcomes (bucket on water, shears on sheep, ...).
- :data:`EXCLUDED` -- items that are not part of the Overworld tech tree (Nether/End, structures, Silk Touch).
"""

from __future__ import annotations

# output -> input; 200 steps (10 s) per item in the simulator.
SMELTING: dict[str, str] = {
    "iron_ingot": "iron_ore",
    "gold_ingot": "gold_ore",
    "glass": "sand",
    "stone": "cobblestone",
    "brick": "clay_ball",
    "hardened_clay": "clay",
    "cooked_beef": "beef",
    "cooked_porkchop": "porkchop",
    "cooked_chicken": "chicken",
    "cooked_mutton": "mutton",
    "cooked_rabbit": "rabbit",
    "cooked_fish": "fish",
    "baked_potato": "potato",
    "coal": "log",  # charcoal (coal:1) is one item with coal in our tables
    "dye": "cactus",  # cactus green; all dyes but the four named ones are one item ``dye``
}

# items smelted by one unit of fuel (vanilla burn time / 200 ticks)
FUELS: dict[str, float] = {
    "coal": 8.0,
    "coal_block": 80.0,
    "lava_bucket": 100.0,
    "log": 1.5,
    "planks": 1.5,
    "wooden_slab": 0.75,
    "stick": 0.5,
    "sapling": 0.5,
    "crafting_table": 1.5,
}

# mob -> [(item, min, max, probability)]; no Looting, killed by the player
MOB_DROPS: dict[str, list[tuple[str, int, int, float]]] = {
    "cow": [("leather", 0, 2, 1.0), ("beef", 1, 3, 1.0)],
    "pig": [("porkchop", 1, 3, 1.0)],
    "sheep": [("wool", 1, 1, 1.0), ("mutton", 1, 2, 1.0)],
    "chicken": [("feather", 0, 2, 1.0), ("chicken", 1, 1, 1.0)],
    "rabbit": [("rabbit_hide", 0, 1, 1.0), ("rabbit", 0, 1, 1.0), ("rabbit_foot", 1, 1, 0.10)],
    "squid": [("ink_sac", 1, 3, 1.0)],
    "zombie": [("rotten_flesh", 0, 2, 1.0), ("iron_ingot", 1, 1, 0.025 / 3),
               ("carrot", 1, 1, 0.025 / 3), ("potato", 1, 1, 0.025 / 3)],
    "skeleton": [("bone", 0, 2, 1.0), ("arrow", 0, 2, 1.0)],
    "spider": [("string", 0, 2, 1.0), ("spider_eye", 1, 1, 1 / 3)],
    "creeper": [("gunpowder", 0, 2, 1.0)],
    "slime": [("slime_ball", 0, 2, 1.0)],
    "enderman": [("ender_pearl", 0, 1, 1.0)],
}

# health in half-hearts; where: surface / night / swamp_night / water; hostile mobs hurt the player
MOBS: dict[str, dict] = {
    "cow": {"health": 10, "hostile": False},
    "pig": {"health": 10, "hostile": False},
    "sheep": {"health": 8, "hostile": False},
    "chicken": {"health": 4, "hostile": False},
    "rabbit": {"health": 3, "hostile": False},
    "squid": {"health": 10, "hostile": False},
    "zombie": {"health": 20, "hostile": True, "night": True},
    "skeleton": {"health": 20, "hostile": True, "night": True},
    "spider": {"health": 16, "hostile": True, "night": True},
    "creeper": {"health": 20, "hostile": True, "night": True},
    "enderman": {"health": 40, "hostile": True, "night": True},
    "slime": {"health": 16, "hostile": True, "night": True},
}

# melee damage (half-hearts) of the held weapon; anything else hits for 1
WEAPON_DAMAGE: dict[str, float] = {
    "wooden_sword": 4, "golden_sword": 4, "stone_sword": 5, "iron_sword": 6, "diamond_sword": 7,
    "wooden_axe": 7, "golden_axe": 7, "stone_axe": 9, "iron_axe": 9, "diamond_axe": 9,
}

# ore -> vein size, veins per 16x16 chunk, y range (inclusive); lapis is triangular around y=16 (+-16).
# Vanilla 1.11 world-generation defaults (emerald: single blocks, 3-8 per chunk, extreme hills only).
ORES: dict[str, dict] = {
    "coal_ore": {"vein": 17, "per_chunk": 20, "y": (0, 127)},
    "iron_ore": {"vein": 9, "per_chunk": 20, "y": (0, 63)},
    "gold_ore": {"vein": 9, "per_chunk": 2, "y": (0, 31)},
    "redstone_ore": {"vein": 8, "per_chunk": 8, "y": (0, 15)},
    "diamond_ore": {"vein": 8, "per_chunk": 1, "y": (0, 15)},
    "lapis_ore": {"vein": 7, "per_chunk": 1, "y": (0, 32), "triangular": 16},
    "emerald_ore": {"vein": 1, "per_chunk": 5.5, "y": (4, 31), "biomes": ("extreme_hills",)},
    "gravel": {"vein": 33, "per_chunk": 8, "y": (0, 255)},
    "dirt": {"vein": 33, "per_chunk": 10, "y": (0, 255)},
    "lava": {"vein": 12, "per_chunk": 1, "y": (5, 10)},  # still-lava pools (in place of lakes), below y=10
}
# fraction of a nominal vein that is actually ore on average (veins are ellipsoids cut by stone)
VEIN_FILL = 0.5

SURFACE_Y = 64
DIRT_DEPTH = 4  # dirt layer under the surface; stone below
BEDROCK_TOP = 4

# Biomes of the simulator with weights and mean counts of each surface object per 20x20 cell.
# Wood species are not tracked: every tree gives ``log`` (planks are one item in our tables).
_COMMON = {"tallgrass": 30, "red_flower": 2, "yellow_flower": 2, "dirt": 400, "pig": 1.0, "cow": 1.0,
           "sheep": 1.0, "chicken": 1.0, "egg": 0.3}
BIOMES: dict[str, dict] = {
    "plains": {"weight": 12, "surface": {**_COMMON, "log": 6, "double_plant": 3, "pumpkin": 0.1,
                                         "brown_mushroom": 0.2, "water": 2, "sand": 10}},
    "forest": {"weight": 14, "surface": {**_COMMON, "log": 60, "double_plant": 2, "brown_mushroom": 1,
                                         "red_mushroom": 0.5, "pumpkin": 0.05, "water": 1}},
    "birch_forest": {"weight": 6, "surface": {**_COMMON, "log": 60, "water": 1}},
    "taiga": {"weight": 7, "surface": {**_COMMON, "log": 45, "rabbit": 1.0, "brown_mushroom": 1,
                                       "red_mushroom": 1, "water": 1, "pumpkin": 0.1}},
    "jungle": {"weight": 4, "surface": {**_COMMON, "log": 90, "melon_block": 2, "cocoa": 4, "vine": 30,
                                        "water": 1}},
    "savanna": {"weight": 6, "surface": {**_COMMON, "log": 12, "double_plant": 4, "water": 1}},
    "desert": {"weight": 8, "surface": {"sand": 400, "sandstone": 60, "cactus": 6, "deadbush": 6,
                                        "reeds": 1, "rabbit": 0.8, "water": 0.3}},
    "swampland": {"weight": 4, "surface": {**_COMMON, "log": 25, "vine": 20, "waterlily": 8, "clay": 6,
                                           "reeds": 6, "water": 20, "brown_mushroom": 2, "red_mushroom": 1,
                                           "blue_orchid": 2}},
    "extreme_hills": {"weight": 5, "surface": {**_COMMON, "log": 10, "stone": 200, "gravel": 20,
                                               "water": 1}},
    "ice_plains": {"weight": 4, "surface": {"snow_layer": 300, "log": 3, "rabbit": 0.5, "dirt": 300,
                                            "water": 2}},
    "roofed_forest": {"weight": 4, "surface": {**_COMMON, "log": 80, "brown_mushroom": 3,
                                               "red_mushroom": 3, "water": 1}},
    "mesa": {"weight": 2, "surface": {"red_sand": 300, "stained_hardened_clay": 300,
                                      "hardened_clay": 100, "cactus": 3, "deadbush": 4, "water": 0.2}},
    "mushroom_island": {"weight": 0.3, "surface": {"mooshroom": 2, "brown_mushroom": 4, "red_mushroom": 4}},
    "river": {"weight": 5, "surface": {"water": 60, "sand": 60, "clay": 8, "reeds": 6, "squid": 0.5,
                                       "gravel": 20, "dirt": 100}},
    "ocean": {"weight": 8, "surface": {"water": 400, "sand": 40, "gravel": 40, "squid": 2, "clay": 2}},
    "beach": {"weight": 4, "surface": {"sand": 300, "water": 40, "reeds": 2, "sandstone": 20}},
}
# biome-name aliases (1.11 ids) used in the state string
BIOME_DISPLAY = {k: k for k in BIOMES}

# Things found on the surface that are entities (attacked) rather than blocks (mined).
SURFACE_MOBS = ("pig", "cow", "sheep", "chicken", "rabbit", "squid", "mooshroom")

# block -> list of (item, min, max, probability); replaces blocks.json where it is coarse or wrong
# for sampling (gravel's "minCount 0.9", leaves' 0-1 saplings and apples, tallgrass 0-1 seeds,
# clay without a maximum, cocoa's two entries, snow needs a shovel).
DROP_OVERRIDES: dict[str, list[tuple[str, int, int, float]]] = {
    "gravel": [("gravel", 1, 1, 0.9), ("flint", 1, 1, 0.1)],
    "leaves": [("sapling", 1, 1, 0.05), ("apple", 1, 1, 0.005)],
    "tallgrass": [("wheat_seeds", 1, 1, 0.125)],
    "clay": [("clay_ball", 4, 4, 1.0)],
    "cocoa": [("cocoa_beans", 2, 3, 1.0)],
    "grass": [("dirt", 1, 1, 1.0)],
    "snow_layer": [("snowball", 1, 1, 1.0)],
    "melon_block": [("melon", 3, 7, 1.0)],
    "redstone_ore": [("redstone", 4, 5, 1.0)],
    "lapis_ore": [("lapis_lazuli", 4, 8, 1.0)],
    "coal_ore": [("coal", 1, 1, 1.0)],
    "deadbush": [("stick", 0, 2, 1.0)],
    "egg": [("egg", 1, 1, 1.0)],
    "blue_orchid": [("red_flower", 1, 1, 1.0)],
    "stained_hardened_clay": [("stained_hardened_clay", 1, 1, 1.0)],
    "red_sand": [("sand", 1, 1, 1.0)],  # red sand shares the id ``sand`` (metadata 1) in 1.11
    "water": [],
    "lava": [],
}
# blocks that need a specific tool class to drop anything that blocks.json does not list
EXTRA_HARVEST = {"vine": ("shears",), "snow_layer": ("wooden_shovel", "stone_shovel", "iron_shovel",
                                                     "golden_shovel", "diamond_shovel")}

# Recipes missing from the 1.11 data (same schema as the extracted ones).
EXTRA_RECIPES: dict[str, list[dict]] = {
    # 1.11.1 item: the ingot -> 9 nuggets recipe is in recipes.json under an id that 1.11 items.json lacks
    "iron_nugget": [{"count": 9, "ingredients": {"iron_ingot": 1}, "table": False}],
    # the other half of the 1.11.1 nugget pair (9 nuggets -> 1 ingot)
    "iron_ingot": [{"count": 1, "ingredients": {"iron_nugget": 9}, "table": True}],
    # enchanting a book at an enchanting table (experience levels are not modelled by the simulator)
    "enchanted_book": [{"count": 1, "ingredients": {"book": 1, "lapis_lazuli": 1}, "table": False,
                        "station": "enchanting_table"}],
}

# The ``apply`` action (use key with a tool on a target). Keys are what it gives.
#   target: what must be visible and in reach; tools: any one of these in the inventory;
#   consumes: item used up (one per use); gives: (item, min, max) added to the inventory;
#   gives_block: a block placed in reach (mined afterwards); wear: the tool loses one durability;
#   steps: cost of one use in 20 Hz steps (default 20).
APPLY: dict[str, dict] = {
    "water_bucket": {"target": "water", "tools": ("bucket",), "consumes": "bucket", "gives": ("water_bucket", 1, 1)},
    "lava_bucket": {"target": "lava", "tools": ("bucket",), "consumes": "bucket", "gives": ("lava_bucket", 1, 1)},
    "milk_bucket": {"target": "cow", "tools": ("bucket",), "consumes": "bucket", "gives": ("milk_bucket", 1, 1)},
    "wool": {"target": "sheep", "tools": ("shears",), "gives": ("wool", 1, 3), "wear": True},
    "fish": {"target": "water", "tools": ("fishing_rod",), "gives": ("fish", 1, 1), "wear": True, "steps": 600},
    # farming: till dirt next to water with a hoe, plant seeds, wait for one harvest (~2 min at random ticks)
    "wheat": {"target": "dirt", "tools": ("wooden_hoe", "stone_hoe", "iron_hoe", "golden_hoe", "diamond_hoe"),
              "consumes": "wheat_seeds", "gives": ("wheat", 1, 1), "extra": ("wheat_seeds", 0, 3),
              "wear": True, "steps": 2400},
    # pour a water bucket onto a lava pool: 1-4 lava sources become obsidian in reach; the water is
    # scooped up again, so the bucket stays full (a simplification of placing and picking up water)
    "obsidian": {"target": "lava", "tools": ("water_bucket",), "gives_block": ("obsidian", 1, 4)},
}

# Not Overworld-obtainable without the Nether/End, structures/treasure, trading or Silk Touch
EXCLUDED = {
    "blaze_powder", "magma_cream", "end_bricks", "end_crystal", "end_rod", "ender_chest", "ender_eye",
    "fire_charge", "nether_brick_fence", "nether_brick_stairs", "netherbrick", "red_nether_brick",
    "nether_wart_block", "purpur_block", "purpur_pillar", "purpur_slab", "purpur_stairs",
    "purple_shulker_box", "black_shulker_box", "quartz_block", "quartz_stairs", "glowstone",
    "brewing_stand", "spectral_arrow", "beacon", "elytra", "chainmail_boots", "chainmail_chestplate",
    "chainmail_helmet", "chainmail_leggings", "prismarine", "written_book", "daylight_detector",
    "comparator", "observer", "mooshroom", "water", "lava", "egg_block",
}

# External information (the paper's "Info"): where things are found, written by us.
Y_LEVEL_HINT: dict[str, int] = {
    "coal_ore": 45, "iron_ore": 40, "gold_ore": 20, "redstone_ore": 12, "diamond_ore": 12,
    "lapis_ore": 16, "emerald_ore": 20, "lava": 10, "stone": 60, "gravel": 40,
}
