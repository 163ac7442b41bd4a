"""Memory summarisation (App. A.4): N successful action lists -> one reference plan.

:class:`LLMSummarizer` is the paper's: a new dialogue whose system message describes the action set and
asks for one universal sequence ("Thoughts: ..." then "Summarized:" and a JSON list); the answer is read
with :func:`gitm.parsing.parse_summary`. :func:`deterministic_summary` is our offline rule, used by the
oracle back ends and the loopback server: keep every distinct (action, object) step that any run needed,
in the order of the run that needed the most distinct steps, then append the rest in first-seen order.
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from .actions import Action
from .decomposer import prompt_text
from .errors import GitmError, PlanParseError
from .parsing import parse_summary
from .planner import default_prompts, fill


def _key(a: Action) -> tuple:
    obj = a.args.get("object")
    return (a.name, json.dumps(obj, sort_keys=True) if isinstance(obj, dict) else obj)


def deterministic_summary(plans: list[list[Action]]) -> list[Action]:
    """The offline summariser (module docstring); deterministic and order-stable."""
    if not plans:
        return []
    base = max(plans, key=lambda p: (len({_key(a) for a in p}), -plans.index(p)))
    out, seen = [], set()
    for a in base:
        if _key(a) not in seen:
            out.append(a)
            seen.add(_key(a))
    for p in plans:
        for a in p:
            if _key(a) not in seen:
                out.append(a)
                seen.add(_key(a))
    return out


def summary_text(plans: list[list[Action]]) -> str:
    """An answer in the summariser's format, built by :func:`deterministic_summary`."""
    acts = deterministic_summary(plans)
    return (f"Thoughts: {len(plans)} runs; keep every step any run needed, once, in the order of the "
            f"most complete run.\nSummarized: {json.dumps([a.to_dict() for a in acts])}")


class LLMSummarizer:
    """``await summarizer(key, plans)`` through ``chat`` (async messages -> text); up to ``attempts`` tries."""

    def __init__(self, chat: Callable[[list[dict]], Awaitable[str]], attempts: int = 3):
        self.chat, self.attempts = chat, attempts
        self.system = fill(prompt_text("summarizer_system.txt"), actions=default_prompts().action_section())
        self.user = prompt_text("summarizer_user.txt")

    def messages(self, key: str, plans: list[list[Action]], state: str = "the sub-goal's prerequisites in the inventory") -> list[dict]:
        seqs = "\n".join(f"{i + 1}. {json.dumps([a.to_dict() for a in p])}" for i, p in enumerate(plans))
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": fill(self.user, goal=f"obtain {key}", state=state, sequences=seqs)}]

    async def __call__(self, key: str, plans: list[list[Action]]) -> list[Action]:
        last = ""
        for _ in range(self.attempts):
            text = await self.chat(self.messages(key, plans))
            try:
                acts = parse_summary(text)
                if acts:
                    return acts
                last = "empty summary"
            except PlanParseError as e:
                last = str(e)
        raise GitmError(f"the summariser gave no valid action list for {key} in {self.attempts} tries: {last}")


async def offline_summarize(key: str, plans: list[list[Action]]) -> list[Action]:
    """The deterministic summariser as an async callable (oracle back ends)."""
    return deterministic_summary(plans)
