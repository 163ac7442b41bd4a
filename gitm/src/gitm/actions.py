"""The structured-action set, its aliases, and the feedback contract (spec 2.1, 2.3).

The paper lists actions three times (Table 1, App. A.2, the App. A.3 prompt) and the lists disagree.
We implement their union with the prompt's names as canonical and the others as aliases:
``digdown`` -> ``dig_down`` (the prompt names its argument ``object``; we read it as ``y_level``),
``go_back_to_ground`` -> ``go_up``. ``count`` on ``mine``/``attack`` is our addition ("as many as you
specify"; default 1).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import PlanParseError, UnknownActionError

# name -> (required args, optional args)
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "equip": (("object",), ()),
    "explore": (("object",), ("strategy",)),
    "approach": (("object",), ()),
    "mine": (("object",), ("tool", "count")),
    "attack": (("object",), ("tool", "count")),
    "dig_down": (("y_level",), ("tool",)),
    "go_up": ((), ("tool", "y_level")),
    "build": (("blueprint",), ()),
    "craft": (("object",), ("materials", "tool")),
    "smelt": (("object",), ("materials", "tool")),
    "apply": (("object", "tool"), ()),
    "place": (("object",), ("tool",)),
}
ALIASES = {"digdown": "dig_down", "dig": "dig_down", "go_back_to_ground": "go_up", "goup": "go_up",
           "go_back_to_the_ground": "go_up", "collect": "mine", "kill": "attack", "use": "apply"}


@dataclass(frozen=True)
class Action:
    """One structured action: ``{name, args, expectation}`` (expectation is free text, ignored)."""

    name: str
    args: dict[str, Any]
    expectation: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "args": dict(self.args), "expectation": self.expectation}

    def short(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items() if v is not None)
        return f"{self.name}({args})"


@dataclass
class State:
    """The agent state given to the planner: inventory plus the environment string (spec 6a)."""

    inventory: dict[str, int]
    biome: str
    y_level: int
    underground: bool

    def environment(self) -> str:
        ground = "underground" if self.underground else "on the ground"
        return f"biome: {self.biome}, y_level: {self.y_level}, {ground}"


@dataclass
class Feedback:
    """What the interface reports after each action (spec 2.3, "Feedback message")."""

    action: Action
    success: bool
    message: str
    inventory_delta: dict[str, int]
    state: State
    steps: int = 0
    reason: str = ""  # machine-readable failure class: not_visible, too_far, no_tool, ... ("" on success)
    done: bool = False  # the episode is over (death)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["action"] = self.action.to_dict()
        return d


_INT = re.compile(r"-?\d+")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PlanParseError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    m = _INT.search(str(value))
    if not m:
        raise PlanParseError(f"{what} must be an integer, got {value!r}")
    return int(m.group())


def _as_counts(value: Any, what: str) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: 1}
    if isinstance(value, dict):
        return {str(k): _as_int(v, f"{what}[{k}]") for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return {x: 1 for x in value}
    raise PlanParseError(f"{what} must be a dict of name -> quantity, got {value!r}")


def _none(value: Any) -> Any:
    return None if value in (None, "", "None", "none", "null", "hand") else value


def normalize_action(raw: Any) -> Action:
    """Turn one ``action_list`` entry (a dict from the LLM) into a checked :class:`Action`.

    Resolves aliases, fills optional args with None, coerces counts and y-levels to int and the craft
    ``object``/``materials`` to ``{name: qty}`` dicts.

    Raises:
        UnknownActionError: the name is not an action or alias (the message lists the known ones).
        PlanParseError: the entry is not a dict, or an argument is missing or has a wrong type.
    """
    if not isinstance(raw, dict):
        raise PlanParseError(f"each action must be an object with name and args, got {raw!r}")
    name = str(raw.get("name", "")).strip().lower().replace(" ", "_")
    name = ALIASES.get(name, name)
    if name not in ACTIONS:
        raise UnknownActionError(f"unknown action {raw.get('name')!r}; the actions are "
                                 f"{', '.join(ACTIONS)} (aliases: {', '.join(ALIASES)})")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise PlanParseError(f"args of {name} must be an object, got {args!r}")
    args = {str(k): v for k, v in args.items()}
    if name == "dig_down" and "y_level" not in args:
        for alt in ("object", "ylevel", "y"):
            if alt in args:
                args["y_level"] = args.pop(alt)
                break
    if name == "go_up" and "ylevel" in args:
        args["y_level"] = args.pop("ylevel")
    if name in ("craft", "smelt") and "material" in args and "materials" not in args:
        args["materials"] = args.pop("material")
    required, optional = ACTIONS[name]
    for r in required:
        if _none(args.get(r)) is None:
            raise PlanParseError(f"action {name} needs the argument {r!r}; got args {args!r}")
    out: dict[str, Any] = {}
    for key in required + optional:
        v = _none(args.get(key))
        if key in ("count",):
            v = 1 if v is None else max(1, _as_int(v, f"{name}.count"))
        elif key == "y_level" and v is not None:
            v = _as_int(v, f"{name}.y_level")
        elif name in ("craft", "smelt") and key in ("object", "materials"):
            v = _as_counts(v, f"{name}.{key}")
        elif key == "blueprint":
            v = v if isinstance(v, list) else [v]
        elif v is not None:
            v = str(v)
        out[key] = v
    if name in ("craft", "smelt") and not out["object"]:
        raise PlanParseError(f"action {name} needs a non-empty object, e.g. {{\"planks\": 4}}")
    return Action(name, out, str(raw.get("expectation") or ""))
