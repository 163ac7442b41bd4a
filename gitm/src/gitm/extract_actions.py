"""``gitm-extract-actions``: the paper's structured-action extraction (App. A.2), optional.

The paper asked gpt-3.5-turbo to break each of MineDojo's 3,141 programmatic task descriptions into a
depth-2 tree plan, turned every leaf sentence into a (verb, object, tools, materials) tuple, and kept the
frequent verbs (merging similar ones) as the action set. A reimplementation only needs the final set
(:mod:`gitm.actions`); this script repeats the extraction for anyone who wants to check it. It needs
MineDojo's task list (``pip install 'gitm[minedojo]'``; ``minedojo.tasks.ALL_PROGRAMMATIC_TASK_INSTRUCTIONS``)
or a text file with one task per line, and an OpenAI-compatible endpoint.

    gitm-extract-actions --base-url https://api.openai.com/v1 --model gpt-3.5-turbo [--tasks tasks.txt] [--limit 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path

from .errors import GitmError
from .parsing import loads_tolerant

PROMPT = ("Break the Minecraft task below into a plan tree of depth 2: a list of steps, each with a list of "
          "sub-steps. Then rewrite every sub-step as a tuple [verb, object, tools, materials] (tools and "
          "materials are lists, possibly empty). Answer with JSON: {\"plan\": [...], \"tuples\": [[verb, "
          "object, tools, materials], ...]}.\nTask: ")


def load_tasks(path: str | None) -> list[str]:
    if path:
        return [t.strip() for t in Path(path).read_text().splitlines() if t.strip()]
    try:
        from minedojo.tasks import ALL_PROGRAMMATIC_TASK_INSTRUCTIONS
    except ImportError as e:
        raise GitmError("no --tasks file given and minedojo is not installed (pip install 'gitm[minedojo]')") from e
    return [v[1] if isinstance(v, (list, tuple)) else str(v) for v in ALL_PROGRAMMATIC_TASK_INSTRUCTIONS.values()]


async def extract(tasks: list[str], llm_cfg: dict) -> Counter:
    from .llm import LLMClient

    client = LLMClient(llm_cfg)
    verbs: Counter = Counter()

    async def one(task: str) -> None:
        text = await client.chat_text([{"role": "user", "content": PROMPT + task}])
        try:
            for t in loads_tolerant(text, want=dict).get("tuples", []):
                if isinstance(t, list) and t:
                    verbs[str(t[0]).lower().strip()] += 1
        except GitmError:
            verbs["<unparsed>"] += 1

    await asyncio.gather(*(one(t) for t in tasks))
    await client.aclose()
    return verbs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="gpt-3.5-turbo")
    p.add_argument("--tasks", default=None, help="one task description per line (default: MineDojo's list)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--cache-dir", default=".gitm_cache/llm")
    args = p.parse_args(argv)
    tasks = load_tasks(args.tasks)[: args.limit]
    verbs = asyncio.run(extract(tasks, {"base_url": args.base_url, "model": args.model, "cache_dir": args.cache_dir}))
    print(json.dumps({"tasks": len(tasks), "verbs": verbs.most_common()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
