"""``gitm-build-data``: extract the compact Minecraft 1.11 tables from the PyPI ``minecraft-data`` package.

The package (3.20.0, MIT, ~100 MB of JSON) holds ``pc/1.11/{items,blocks,recipes,materials,biomes,foods}.json``
(``dataPaths.json`` maps 1.11.2, MineDojo's version, onto the same 1.11 files). We keep what the agent and
the simulator use and write ``gitm/data/mc1_11.json`` (well under 1 MB), which ships with the package, so
``minecraft-data`` is only needed to regenerate it (``pip install 'gitm[data]'``).

Normalisation (spec section 11, "1.11 data quirks"):

- names drop metadata: every wood variant is ``planks`` / ``log``, every wool colour ``wool``. The four
  dye variants the paper names are kept apart: ``ink_sac`` (dye:0), ``cocoa_beans`` (3), ``lapis_lazuli`` (4),
  ``bone_meal`` (15); other colours are one item ``dye``.
- repair recipes (two damaged tools -> one) and recipes that contain their own result (re-dyeing,
  banner patterns, book copying) are dropped.
- the 1.11 data pins dark-oak planks in the planks-family recipes and keys fences, doors, gates and
  stairs under their dark-oak ids; with one ``planks`` item these are the oak ids (``fence``,
  ``wooden_door``, ``fence_gate``, ``oak_stairs``); the redstone torch recipe gives the block id
  ``unlit_redstone_torch``, renamed to the item ``redstone_torch``.
- recipes whose ids are unknown to 1.11 ``items.json`` (the 1.11.1 ``iron_nugget``) are dropped here
  and written by hand in :mod:`gitm.knowledge.hand`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ..errors import GitmError

MC_VERSION = "1.11"
DYE_VARIANTS = {0: "ink_sac", 3: "cocoa_beans", 4: "lapis_lazuli", 15: "bone_meal"}
RENAMES = {"dark_oak_door": "wooden_door", "dark_oak_fence": "fence", "dark_oak_fence_gate": "fence_gate",
           "dark_oak_stairs": "oak_stairs", "unlit_redstone_torch": "redstone_torch"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "mc1_11.json"


def minecraft_data_dir(version: str = MC_VERSION) -> tuple[Path, dict[str, str], str]:
    """Locate the installed ``minecraft-data`` JSON for ``version``.

    Returns:
        (data root, ``dataPaths`` entry of the version, package version).

    Raises:
        GitmError: ``minecraft-data`` is not installed or has no ``pc/<version>`` entry.
    """
    try:
        import importlib.metadata as md

        import minecraft_data  # noqa: F401  (imported to find its folder)
    except ImportError as e:
        raise GitmError("gitm-build-data needs the PyPI package minecraft-data: pip install 'gitm[data]' "
                        "(or pip install minecraft-data==3.20.0)") from e
    root = Path(minecraft_data.__file__).resolve().parent / "data" / "data"
    paths = json.loads((root / "dataPaths.json").read_text())["pc"]
    if version not in paths:
        known = ", ".join(sorted(paths, key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")]))
        raise GitmError(f"minecraft-data has no pc/{version} data; it has: {known}")
    return root, paths[version], md.version("minecraft-data")


def _load(root: Path, paths: dict[str, str], what: str):
    return json.loads((root / paths[what] / f"{what}.json").read_text())


def build(version: str = MC_VERSION) -> dict:
    """Read ``minecraft-data`` and return the compact table dict written to ``mc1_11.json``."""
    root, paths, pkg_version = minecraft_data_dir(version)
    items, blocks = _load(root, paths, "items"), _load(root, paths, "blocks")
    recipes, materials = _load(root, paths, "recipes"), _load(root, paths, "materials")
    biomes, foods = _load(root, paths, "biomes"), _load(root, paths, "foods")

    id_name = {b["id"]: b["name"] for b in blocks}
    id_name.update({i["id"]: i["name"] for i in items})

    def name_of(entry) -> str | None:
        if entry is None:
            return None
        iid, meta = (entry["id"], entry.get("metadata")) if isinstance(entry, dict) else (entry, None)
        if iid not in id_name:
            raise KeyError(iid)
        name = id_name[iid]
        if name == "dye":
            name = DYE_VARIANTS.get(meta, "dye")
        return RENAMES.get(name, name)

    out_recipes: dict[str, list[dict]] = {}
    dropped = Counter()
    for rs in recipes.values():
        for r in rs:
            try:
                result = name_of(r["result"])
                if "inShape" in r:
                    cells = [c for row in r["inShape"] for c in row if c is not None]
                    rows, cols = len(r["inShape"]), max(len(row) for row in r["inShape"])
                    table = rows > 2 or cols > 2
                else:
                    cells = list(r["ingredients"])
                    table = len(cells) > 4
                ingredients = Counter(name_of(c) for c in cells)
            except KeyError as e:
                dropped[f"unknown id {e.args[0]}"] += 1
                continue
            if result in ingredients:
                dropped["contains its result (repair, re-dye, copy)"] += 1
                continue
            entry = {"count": int(r["result"]["count"]), "ingredients": dict(sorted(ingredients.items())),
                     "table": table}
            lst = out_recipes.setdefault(result, [])
            if entry not in lst:
                lst.append(entry)

    out_items = {}
    for i in items:
        name = i["name"]
        rec = {"id": i["id"], "stack": i["stackSize"]}
        if "maxDurability" in i:
            rec["durability"] = i["maxDurability"]
        out_items.setdefault(name, rec)
    out_blocks = {}
    for b in blocks:
        drops = []
        for d in b.get("drops", []):
            try:
                drops.append({"item": name_of(d["drop"]), "min": d.get("minCount", 1),
                              "max": d.get("maxCount", d.get("minCount", 1))})
            except KeyError:
                continue
        out_blocks[b["name"]] = {
            "hardness": b.get("hardness"), "material": b.get("material"),
            "harvest_tools": sorted(id_name[int(k)] for k in b.get("harvestTools", {})),
            "drops": drops,
        }
    out_materials = {m: {id_name[int(k)]: v for k, v in tools.items()} for m, tools in materials.items()}
    return {
        "source": {"package": "minecraft-data", "package_version": pkg_version, "minecraft": version,
                   "paths": {k: paths[k] for k in ("items", "blocks", "recipes", "materials", "biomes", "foods")},
                   "dropped_recipes": dict(dropped)},
        "items": out_items,
        "blocks": out_blocks,
        "recipes": dict(sorted(out_recipes.items())),
        "materials": out_materials,
        "biomes": sorted(b["name"] for b in biomes if b.get("dimension", "overworld") == "overworld"),
        "foods": {f["name"]: f["foodPoints"] for f in foods},
    }


def main(argv: list[str] | None = None) -> int:
    """Console script ``gitm-build-data [--out PATH] [--version 1.11]``."""
    p = argparse.ArgumentParser(description="Regenerate gitm/data/mc1_11.json from the minecraft-data package.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--version", default=MC_VERSION)
    args = p.parse_args(argv)
    from repro_shared.fsio import atomic_write_text

    data = build(args.version)
    atomic_write_text(args.out, json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): {len(data['recipes'])} recipe results, "
          f"{len(data['items'])} items, {len(data['blocks'])} blocks from minecraft-data "
          f"{data['source']['package_version']} pc/{args.version}; dropped {data['source']['dropped_recipes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
