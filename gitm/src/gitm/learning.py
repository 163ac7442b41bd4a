"""Memory learning curriculum (spec 2.6, "the 2 days on 32 cores"; paper Fig. 6).

1. Decompose the target goals and collect the distinct sub-goals (post-order, first occurrence).
2. For each sub-goal play episodes that start with its prerequisites (materials and tool) in the
   inventory; each success adds its executed actions to the memory, which summarises at N=5. A sub-goal
   is done when it has been summarised once, or after ``max_episodes``.
3. Sub-goals are independent, so they run in parallel workers; each worker owns whole sub-goals and
   returns their memory entries, which the parent merges and writes (atomically, with the progress in the
   same file). A killed run resumes with the sub-goals that were not written yet; a sub-goal's episodes
   depend only on (seed, sub-goal, episode index), so nothing is lost or counted twice.

The learning curve's x-axis is the cumulative environment steps of learning, accumulated in curriculum
order; ``snapshots`` writes the memory as it stood at given step counts (for the Fig. 6 analogue).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .decomposer import OracleDecomposer
from .evaluation import ResultsStore, episode_seed, run_pool
from .memory import Memory
from .runtime import _knowledge, run_async, run_episode_async


def curriculum(goals: list[str]) -> list[str]:
    """Distinct sub-goal objects of the goals' trees in post-order (prerequisites first)."""
    dec = OracleDecomposer(_knowledge(), with_info=False)
    seen: list[str] = []
    for g in goals:
        for node in dec.tree(g, 1).postorder():
            if node.goal.object not in seen:
                seen.append(node.goal.object)
    return seen


def start_inventory(key: str) -> dict[str, int]:
    """The prerequisites of one unit of ``key`` (its materials and tool), as the curriculum starts with."""
    g = OracleDecomposer(_knowledge(), with_info=False).goal(key, 1)
    return g.prerequisites()


def learn_chunk(jobs: list[dict]) -> list[dict]:
    """Worker entry point: learn each sub-goal of ``jobs`` (one job = one sub-goal)."""
    return [run_async(_learn_key(j)) for j in jobs]


async def _learn_key(job: dict) -> dict:
    key = job["key"]
    mem = Memory(n=job["memory_n"], count_summary=job["count_summary"])
    episodes = successes = steps = 0
    summarised = False
    for i in range(job["max_episodes"]):
        ep = {**job["episode"], "goal": key, "count": 1, "seed": episode_seed(job["seed"], key, i),
              "inventory": start_inventory(key)}
        before = mem.summaries
        result, _ = await run_episode_async(ep, memory=mem, remember_only={key})
        episodes += 1
        steps += result.steps
        successes += int(result.success)
        if mem.summaries > before:
            summarised = True
            break
    return {"id": key, "key": key, "entries": [e.to_dict() for e in mem.entries.get(key, [])],
            "episodes": episodes, "successes": successes, "steps": steps, "summarised": summarised}


def run_learning(goals: list[str], episode: dict, memory_path: Path, seed: int, workers: int, chunk: int,
                 memory_n: int = 5, count_summary: bool = True, max_episodes: int = 15, resume: bool = True,
                 on_key: Callable[[dict], None] | None = None) -> tuple[Memory, dict]:
    """Run (or resume) the curriculum; returns (memory, progress). The memory file is rewritten
    atomically after every finished sub-goal."""
    keys = curriculum(goals)
    if resume and memory_path.is_file():
        memory, extra = Memory.load(memory_path)
        progress = dict(extra.get("progress", {}))
    else:
        memory, progress = Memory(n=memory_n, count_summary=count_summary), {}
    rank = {k: i for i, k in enumerate(keys)}
    jobs = [{"id": k, "key": k, "seed": seed, "episode": episode, "memory_n": memory_n,
             "count_summary": count_summary, "max_episodes": max_episodes} for k in keys]

    class _Store(ResultsStore):  # progress lives in the memory file, not in a JSONL
        def __init__(self):
            self.results = {k: v for k, v in progress.items()}

        def add(self, d: dict) -> None:
            if d["id"] in self.results:
                return
            memory.entries[d["key"]] = Memory.from_dict(
                {"format": "gitm-memory-v1", "entries": {d["key"]: d["entries"]}}).entries.get(d["key"], [])
            if not memory.entries[d["key"]]:
                memory.entries.pop(d["key"])
            memory.summaries += int(d["summarised"])
            stats = {k: d[k] for k in ("episodes", "successes", "steps", "summarised")}
            progress[d["key"]] = stats
            self.results[d["id"]] = stats
            # curriculum order, not the order in which workers finished: the file's bytes depend only on
            # the run's settings (a resumed run writes the same file as an uninterrupted one)
            ordered = dict(sorted(progress.items(), key=lambda kv: rank.get(kv[0], len(rank))))
            memory.save(memory_path, extra={"progress": ordered, "curriculum": keys})
            if on_key:
                on_key(d)

    run_pool(jobs, _Store(), workers, chunk, fn=learn_chunk)
    return memory, progress


def learning_curve(progress: dict, keys: list[str]) -> list[tuple[int, list[str]]]:
    """Cumulative steps after each sub-goal in curriculum order: [(steps, keys learned so far)]."""
    out, total, learned = [], 0, []
    for k in keys:
        if k in progress:
            total += int(progress[k]["steps"])
            learned.append(k)
            out.append((total, list(learned)))
    return out


def write_snapshots(memory: Memory, progress: dict, keys: list[str], thresholds: list[int], out_dir: Path) -> list[Path]:
    """The memory restricted to the sub-goals learned within each step threshold (Fig. 6 analogue)."""
    curve = learning_curve(progress, keys)
    paths = []
    for t in thresholds:
        learned = next((ks for s, ks in reversed(curve) if s <= t), [])
        snap = Memory(memory.n, memory.count_summary, {k: memory.entries[k] for k in learned if k in memory.entries})
        p = out_dir / f"memory_step{t}.json"
        snap.save(p, extra={"steps_threshold": t, "keys": learned})
        paths.append(p)
    return paths


def load_progress(path: Path) -> dict:
    return json.loads(Path(path).read_text()).get("extra", {}).get("progress", {})
