"""Tolerant parsing of LLM answers (spec 2.4): Python literals, trailing commas, fences, prose; fuzzed
malformed/partial answers raise PlanParseError (a counted, failed query) and nothing else."""

import json
import random

import pytest

from gitm.errors import PlanParseError
from gitm.parsing import loads_tolerant, parse_goal, parse_plan, parse_summary

PLAN = {"explanation": None, "thoughts": "get wood first",
        "action_list": [{"name": "explore", "args": {"object": "log", "strategy": "area"}, "expectation": "see a tree"},
                        {"name": "approach", "args": {"object": "log"}, "expectation": ""},
                        {"name": "mine", "args": {"object": "log", "tool": None}, "expectation": "1 log"},
                        {"name": "craft", "args": {"object": {"planks": 4}, "materials": {"log": 1}, "tool": None},
                         "expectation": "4 planks"}]}


def test_plain_json_roundtrip():
    p = parse_plan(json.dumps(PLAN))
    assert [a.name for a in p.actions] == ["explore", "approach", "mine", "craft"]
    assert p.explanation is None and p.actions[3].args["object"] == {"planks": 4}
    assert p.actions[2].args == {"object": "log", "tool": None, "count": 1}


def test_python_literals_trailing_commas_fences_prose():
    text = ("Sure! Here is the plan:\n```json\n{'explanation': None, 'thoughts': 'x', 'action_list': "
            "[{'name': 'digdown', 'args': {'object': 'y=12', 'tool': 'stone_pickaxe',}, 'expectation': '',},],}\n```"
            "\nGood luck.")
    p = parse_plan(text)
    assert p.actions[0].name == "dig_down" and p.actions[0].args["y_level"] == 12
    t2 = '{"explanation": None, "thoughts": "None of it", "action_list": [{"name": "go_back_to_ground", "args": {}, "expectation": "True"}]}'
    p2 = parse_plan(t2)
    assert p2.actions[0].name == "go_up" and p2.thoughts == "None of it" and p2.actions[0].expectation == "True"


def test_unknown_action_is_a_parse_error_listing_actions():
    bad = dict(PLAN, action_list=[{"name": "teleport", "args": {"object": "diamond"}}])
    with pytest.raises(PlanParseError, match="unknown action 'teleport'.*explore"):
        parse_plan(json.dumps(bad))
    with pytest.raises(PlanParseError, match="needs the argument 'object'"):
        parse_plan(json.dumps(dict(PLAN, action_list=[{"name": "mine", "args": {}}])))


def test_goal_with_none_literal():
    g = parse_goal('{"object": "diamond", "count": 1, "material": None, "tool": "iron_pickaxe", "info": "dig"}')
    assert g == {"object": "diamond", "count": 1, "material": None, "tool": "iron_pickaxe", "info": "dig"}
    with pytest.raises(PlanParseError):
        parse_goal('{"count": 1}')


def test_summary_after_marker_or_last_list():
    acts = [{"name": "explore", "args": {"object": "log"}}, {"name": "mine", "args": {"object": "log"}}]
    text = f"Thoughts: the lists [1, 2] differ.\nSummarized: {json.dumps(acts)}"
    assert [a.name for a in parse_summary(text)] == ["explore", "mine"]
    assert [a.name for a in parse_summary(f"some text {json.dumps(acts)} end")] == ["explore", "mine"]


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_answers_never_crash(seed):
    rng = random.Random(seed)
    base = json.dumps(PLAN)
    for _ in range(300):
        s = list(base)
        op = rng.randrange(5)
        if op == 0:
            s = s[: rng.randrange(len(s))]                       # truncated (partial) answer
        elif op == 1:
            for _ in range(rng.randint(1, 5)):                    # deleted characters
                if s:
                    del s[rng.randrange(len(s))]
        elif op == 2:
            for _ in range(rng.randint(1, 5)):                    # inserted junk
                s.insert(rng.randrange(len(s) + 1), rng.choice('{}[],:"\' \nNoneTrue'))
        elif op == 3:
            s = list("The answer is " + base.replace('"', "'"))   # single quotes + prose
        else:
            s = [rng.choice("abc{}[]\"',: 0") for _ in range(rng.randint(0, 80))]
        text = "".join(s)
        try:
            plan = parse_plan(text)
        except PlanParseError:
            continue
        assert all(a.name for a in plan.actions)


def test_loads_tolerant_rejects_non_text():
    with pytest.raises(PlanParseError):
        loads_tolerant(None)
    with pytest.raises(PlanParseError, match="no valid JSON"):
        loads_tolerant("I cannot help with that.")
