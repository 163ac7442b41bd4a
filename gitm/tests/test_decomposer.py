"""Decompositions computed by hand from the Minecraft 1.11 recipes, asserted exactly (spec 2.2 quantity rule:
a crafted node of count c with recipe yield y needs ceil(c/y) units; smelting c items needs c inputs and
ceil(c/8) coal; children are the materials in recipe order, then the tool)."""

import pytest

from gitm.decomposer import OracleDecomposer
from gitm.errors import UnknownItemError


def T(obj, count, *children):
    return (obj, count, tuple(children))


def shape(node):
    return (node.goal.object, node.goal.count, tuple(shape(c) for c in node.children))


LOG = T("log", 1)
def PL(n): return T("planks", n, LOG)          # one log gives 4 planks
ST2 = T("stick", 2, PL(2))                       # 2 planks give 4 sticks
CT = T("crafting_table", 1, PL(4))
WP = T("wooden_pickaxe", 1, PL(3), ST2, CT)
def COB(n): return T("cobblestone", n, WP)      # mine stone with a wooden pickaxe
SP = T("stone_pickaxe", 1, COB(3), ST2, CT)
FUR = T("furnace", 1, COB(8), CT)
def INGOT(n): return T("iron_ingot", n, T("iron_ore", n, SP), T("coal", -(-n // 8), WP), FUR)
IP = T("iron_pickaxe", 1, INGOT(3), ST2, CT)
def DIA(n): return T("diamond", n, IP)
DP = T("diamond_pickaxe", 1, DIA(3), ST2, CT)
BUCKET = T("bucket", 1, INGOT(3), CT)
BOOK = T("book", 1, T("leather", 1), T("paper", 3, T("reeds", 3), CT))   # 3 reeds -> 3 paper (3 wide: table)
OBS4 = T("obsidian", 4, T("water_bucket", 1, T("bucket", 1, INGOT(3), CT)), DP)
WHOE = T("wooden_hoe", 1, PL(2), ST2, CT)

HAND = {
    ("crafting_table", 1): CT,
    ("wooden_pickaxe", 1): WP,
    ("stone_pickaxe", 1): SP,
    ("furnace", 1): FUR,
    ("torch", 1): T("torch", 1, T("coal", 1, WP), T("stick", 1, PL(2))),   # torch yields 4: one unit
    ("iron_pickaxe", 1): IP,
    ("bucket", 1): BUCKET,
    ("diamond_pickaxe", 1): DP,
    ("enchanting_table", 1): T("enchanting_table", 1, BOOK, DIA(2), OBS4, CT),
    ("stone_slab", 7): T("stone_slab", 7, COB(6), CT),                # 6 slabs per 3 cobblestone: 2 units
    ("ladder", 3): T("ladder", 3, T("stick", 7, PL(4)), CT),          # 3 ladders per 7 sticks; 7 sticks = 2 units
    ("iron_block", 1): T("iron_block", 1, INGOT(9), CT),               # 9 ingots: 2 coal of fuel
    ("cake", 1): T("cake", 1, T("egg", 1), T("milk_bucket", 3, T("bucket", 3, INGOT(9), CT)),
                   T("sugar", 2, T("reeds", 2)), T("wheat", 3, T("wheat_seeds", 3), WHOE), CT),
}


@pytest.mark.parametrize("key", list(HAND), ids=[f"{k[1]}x{k[0]}" for k in HAND])
def test_decomposition_exact(key):
    assert shape(OracleDecomposer(with_info=False).tree(*key)) == HAND[key]


def test_goal_tuples_and_info():
    d = OracleDecomposer()
    g = d.goal("iron_ingot", 3)
    assert (g.material, g.tool) == ({"iron_ore": 3, "coal": 1}, "furnace")
    g = d.goal("diamond", 1)
    assert g.material is None and g.tool == "iron_pickaxe"
    assert "y=12" in g.info and g.info.count(".") <= 3
    assert d.goal("log", 5).tool is None
    assert d.goal("redstone", 1).tool == "iron_pickaxe"
    assert d.goal("lapis_lazuli", 1).tool == "stone_pickaxe"
    assert d.goal("obsidian", 1).tool == "diamond_pickaxe"
    assert "Extra info: " in d.goal("diamond", 1).text() and "Extra info" not in d.goal("diamond", 1).text(False)


def test_postorder_children_first():
    objs = [n.goal.object for n in OracleDecomposer().tree("stone_pickaxe", 1).postorder()]
    assert objs[-1] == "stone_pickaxe" and objs[0] == "log"
    assert objs.index("wooden_pickaxe") < objs.index("cobblestone")


def test_unknown_item_lists_close_matches():
    with pytest.raises(UnknownItemError, match="did you mean.*iron_pickaxe"):
        OracleDecomposer().goal("iron_pickax", 1)
    with pytest.raises(UnknownItemError, match="not obtainable in the Overworld"):
        OracleDecomposer().goal("blaze_powder", 1)
