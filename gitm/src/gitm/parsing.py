"""Tolerant parsing of LLM answers: plans, goal tuples and memory summaries (spec 2.2, 2.4, 2.6).

LLMs (and the paper's own prompt examples) write Python literals (``None``, ``True``), single quotes,
trailing commas, code fences and prose around the JSON. :func:`loads_tolerant` accepts all of these and
raises :class:`~gitm.errors.PlanParseError` for anything it cannot read, never another exception.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from .actions import Action, normalize_action
from .errors import GitmError, PlanParseError

_FENCE = re.compile(r"```(?:json|python|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS = {"None": "null", "True": "true", "False": "false"}


def _balanced(text: str, start: int) -> str | None:
    """The bracketed span starting at ``text[start]`` (``{`` or ``[``), honouring strings; None if open."""
    stack, quote, esc = [], None, False
    pairs = {"{": "}", "[": "]"}
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return text[start:i + 1]
    return None


def _replace_outside_strings(text: str) -> str:
    out, i, quote = [], 0, None
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c == '"':
            quote = c
            out.append(c)
            i += 1
            continue
        m = re.match(r"\b(None|True|False)\b", text[i:])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            out.append(_PY_LITERALS[m.group(1)])
            i += len(m.group(1))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _try_load(span: str) -> Any:
    for fix in (lambda t: t, lambda t: _TRAILING_COMMA.sub(r"\1", _replace_outside_strings(t))):
        try:
            return json.loads(fix(span))
        except (json.JSONDecodeError, RecursionError):
            pass
    try:
        return ast.literal_eval(_TRAILING_COMMA.sub(r"\1", span))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def loads_tolerant(text: str, want: type | tuple = (dict, list), last: bool = False) -> Any:
    """Parse the first (or ``last``) JSON-like object/array of type ``want`` found in ``text``.

    Raises:
        PlanParseError: nothing parseable of that type is in the text (message quotes its start).
    """
    if not isinstance(text, str):
        raise PlanParseError(f"expected text, got {type(text).__name__}")
    try:  # the common case: the whole answer is valid JSON
        value = json.loads(text)
        if isinstance(value, want):
            return value
    except (json.JSONDecodeError, RecursionError):
        pass
    bodies = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    found = []
    for body in bodies:
        for start, ch in enumerate(body):
            if ch not in "{[":
                continue
            span = _balanced(body, start)
            if span is None:
                continue
            value = _try_load(span)
            if isinstance(value, want):
                found.append(value)
                if not last:
                    return value
        if found:
            return found[-1]
    snippet = text.strip().replace("\n", " ")[:120]
    raise PlanParseError(f"no valid JSON {'/'.join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))} "
                         f"found in the answer: {snippet!r}")


@dataclass
class Plan:
    """A parsed planner answer (spec 2.1): explanation of the last failure, thoughts, actions."""

    explanation: str | None
    thoughts: str
    actions: list[Action]

    def to_dict(self) -> dict:
        return {"explanation": self.explanation, "thoughts": self.thoughts,
                "action_list": [a.to_dict() for a in self.actions]}


def parse_plan(text: str) -> Plan:
    """Parse a planner answer ``{explanation, thoughts, action_list}``.

    Raises:
        PlanParseError: not JSON, no ``action_list`` list, or an entry that is not a valid action
            (UnknownActionError is converted, its message kept).
    """
    obj = loads_tolerant(text, want=dict)
    actions = obj.get("action_list", obj.get("actions"))
    if not isinstance(actions, list):
        raise PlanParseError(f"the plan has no action_list list (keys: {', '.join(map(str, obj))})")
    try:
        parsed = [normalize_action(a) for a in actions]
    except GitmError as e:
        raise PlanParseError(str(e)) from e
    expl = obj.get("explanation")
    return Plan(None if expl in (None, "", "None") else str(expl), str(obj.get("thoughts") or ""), parsed)


def parse_goal(text: str) -> dict:
    """Parse a decomposer answer ``{object, count, material, tool, info}`` (None/"None" -> None).

    Raises:
        PlanParseError: not JSON, or ``object``/``count`` missing or of the wrong type.
    """
    obj = loads_tolerant(text, want=dict)
    if "object" not in obj:
        raise PlanParseError(f"the goal has no 'object' key (keys: {', '.join(map(str, obj))})")
    material = obj.get("material")
    if material in (None, "None", "none", "null", "", {}):
        material = None
    elif isinstance(material, dict):
        try:
            material = {str(k): int(v) for k, v in material.items()}
        except (TypeError, ValueError) as e:
            raise PlanParseError(f"material must map names to integers, got {material!r}") from e
    else:
        raise PlanParseError(f"material must be a dict or None, got {material!r}")
    tool = obj.get("tool")
    tool = None if tool in (None, "None", "none", "null", "") else str(tool)
    try:
        count = int(obj.get("count", 1))
    except (TypeError, ValueError) as e:
        raise PlanParseError(f"count must be an integer, got {obj.get('count')!r}") from e
    return {"object": str(obj["object"]), "count": count, "material": material, "tool": tool,
            "info": str(obj.get("info") or "")}


def parse_summary(text: str) -> list[Action]:
    """Parse a summariser answer: the JSON action list after the last ``Summarized`` marker, else the
    last JSON array in the text (spec 2.6).

    Raises:
        PlanParseError: no list of valid actions found.
    """
    idx = text.lower().rfind("summarized")
    tail = text[idx:] if idx >= 0 else text
    try:
        lst = loads_tolerant(tail, want=list, last=True)
    except PlanParseError:
        lst = loads_tolerant(text, want=list, last=True)
    try:
        return [normalize_action(a) for a in lst]
    except GitmError as e:
        raise PlanParseError(f"the summary holds an invalid action: {e}") from e
