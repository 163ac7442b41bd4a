"""Short knowledge texts for the decomposer's retrieval (paper section 3.1, spec 2.2), in our own words.

Two kinds, as in the paper: (a) one sentence per crafting/smelting recipe, generated from the tables;
(b) short paragraphs on where things are found and how they are mined, generated from the same tables
and the hand-written ore/biome/mob facts (no wiki text is shipped; spec section 11, licensing).
"""

from __future__ import annotations

from . import hand
from .tables import Knowledge


def _mats(materials: dict[str, int]) -> str:
    return ", ".join(f"{q} {m}" for m, q in materials.items())


def recipe_sentences(k: Knowledge) -> list[str]:
    """Kind (a): ``crafting Q X needs these materials and this tool`` for every recipe we can use."""
    out = []
    for item in k.tech_tree():
        for s in k.sources(item):
            if s.kind == "craft":
                tool = s.tool or "no tool"
                out.append(f"crafting {int(s.yield_)} {item} needs {_mats(dict(s.materials))} and {tool}.")
            elif s.kind == "smelt":
                out.append(f"smelting 1 {item} needs 1 {s.materials[0][0]} and fuel (coal, planks or logs) "
                           f"in a furnace; the furnace must be in the inventory.")
    return out


def where_paragraph(k: Knowledge, block: str) -> str:
    """Where ``block`` (or mob) is found, with y-levels for underground blocks."""
    if block in hand.ORES:
        ore = hand.ORES[block]
        lo, hi = ore["y"]
        best = hand.Y_LEVEL_HINT.get(block)
        biomes = f" only in {', '.join(ore['biomes'])} biomes" if "biomes" in ore else ""
        tip = f"; dig down to about y={best} and tunnel to find it" if best else ""
        return f"{block} is found underground{biomes} between y={lo} and y={hi}{tip}."
    if block == "stone":
        return ("stone lies under a few blocks of dirt everywhere (below about y=60); digging down or "
                "tunnelling through it gives cobblestone when mined with a pickaxe.")
    if block in hand.MOBS:
        when = " at night" if hand.MOBS[block].get("night") else ""
        biomes = k.biomes_of(block)
        where = f" in {', '.join(biomes)} biomes" if biomes else ""
        return f"{block} is a mob that appears on the surface{where}{when}."
    biomes = k.biomes_of(block)
    if block == "leaves":
        biomes = k.biomes_of("log")
    if biomes:
        return f"{block} is found on the surface in {', '.join(biomes)} biomes."
    return f"{block} does not occur naturally; it is made by the agent."


def source_paragraphs(k: Knowledge) -> list[str]:
    """Kind (b): how each raw item is obtained and where its block or mob lives."""
    out = []
    for item in k.tech_tree():
        for s in k.sources(item):
            if s.kind == "mine":
                tool = f"with a {s.tool} or better" if s.tool else "by hand or with any tool"
                chance = f" (dropped with probability {s.probability:g})" if s.probability < 1 else ""
                extra = (" Pour a water_bucket onto lava to make obsidian first." if s.target == "obsidian" else "")
                out.append(f"{item} is obtained by mining {s.target} {tool}{chance}. "
                           f"{where_paragraph(k, s.target)}{extra}")
            elif s.kind == "attack":
                chance = f" with probability {s.probability:g}" if s.probability < 1 else ""
                out.append(f"{item} drops from killing a {s.target}{chance}. {where_paragraph(k, s.target)}")
            elif s.kind == "apply":
                spec = hand.APPLY[item]
                out.append(f"{item} is obtained by using a {s.tool} on {spec['target']}. "
                           f"{where_paragraph(k, spec['target'])}")
    out.append("Pickaxe tiers: a wooden pickaxe mines stone and coal ore; a stone pickaxe also mines iron "
               "and lapis ore; an iron pickaxe also mines gold, redstone, diamond and emerald ore; only a "
               "diamond pickaxe mines obsidian. Mining a block with a weaker tool breaks it but drops nothing.")
    out.append("Crafting recipes larger than 2x2 need a crafting_table in the inventory; smelting needs a "
               "furnace and fuel in the inventory.")
    return out


def knowledge_snippets(k: Knowledge | None = None) -> list[str]:
    """All snippets: recipe sentences then source paragraphs (deterministic order)."""
    k = k or Knowledge.default()
    return recipe_sentences(k) + source_paragraphs(k)
