"""Evaluation protocols (spec section 4): ObtainDiamond milestones and the incremental tech-tree protocol.

Episodes are independent jobs (:mod:`gitm.runtime`), run in a process pool (``workers``), ``chunk`` jobs per
task; inside a worker the jobs of one task run as concurrent coroutines (LLM requests overlap, bounded by
``llm.concurrency``).

Resume: every finished episode is appended as one JSON line to ``episodes.jsonl`` (flushed at once). A
killed run started again with the same command reads that file, drops a torn last line, de-duplicates by
job id, and runs only the missing jobs; since a job's result depends only on its seed (memory is frozen
during evaluation), the resumed run's final numbers equal those of an uninterrupted run, with no episode
lost or counted twice (tested with SIGKILL).

Success rates come with exact (Clopper-Pearson) 95 % binomial intervals (``scipy.stats.binomtest``).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable

from .errors import GitmError
from .runtime import run_jobs_chunk

TECH_TREE_STAGES = (20, 50, 100, 200)


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a success rate k/n; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def episode_seed(base: int, goal: str, index: int) -> int:
    """A stable per-episode seed from (base seed, goal, episode index)."""
    return zlib.crc32(f"{base}:{goal}:{index}".encode()) & 0x7FFFFFFF


class ResultsStore:
    """Append-only JSONL of finished episodes keyed by ``id`` (module docstring, "Resume")."""

    def __init__(self, path: str | os.PathLike, resume: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict] = {}
        if self.path.exists() and resume:
            self._load()
        elif self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = raw[: raw.rfind(b"\n") + 1]  # a kill can leave a torn last line
        if len(good) != len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(len(good))
        for line in good.decode("utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                self.results.setdefault(d["id"], d)

    def add(self, d: dict) -> None:
        if d["id"] in self.results:
            return
        self.results[d["id"]] = d
        self._f.write(json.dumps(d, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def run_pool(jobs: list[dict], store: ResultsStore, workers: int, chunk: int,
             next_jobs: Callable[[dict], Iterable[dict]] | None = None,
             on_result: Callable[[dict], None] | None = None,
             fn: Callable[[list[dict]], list[dict]] = run_jobs_chunk) -> None:
    """Run ``jobs`` through ``fn`` in chunks (skipping ids already in ``store``); ``next_jobs(result)`` may
    add jobs as results come. ``workers <= 1`` runs in this process (no pool)."""
    pending = [j for j in jobs if j["id"] not in store.results]

    def take(res: list[dict]) -> None:
        for d in res:
            store.add(d)
            if on_result:
                on_result(d)
            if next_jobs:
                pending.extend(j for j in next_jobs(d) if j["id"] not in store.results)

    if workers <= 1:
        while pending:
            batch, pending[:] = pending[:chunk], pending[chunk:]
            take(fn(batch))
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        running = set()
        while pending or running:
            while pending and len(running) < 2 * workers:
                batch, pending[:] = pending[:chunk], pending[chunk:]
                running.add(pool.submit(fn, batch))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                take(fut.result())


# ------------------------------------------------------------------------------------------ protocols
def obtain_diamond_jobs(base: dict, episodes: int, seed: int, goal: str = "diamond") -> list[dict]:
    return [{**base, "goal": goal, "count": 1, "seed": episode_seed(seed, goal, i), "id": f"{goal}|{i}"}
            for i in range(episodes)]


def summarise_milestones(results: list[dict], milestones: Iterable[str]) -> dict:
    """Milestone success rates (%) with 95 % intervals, mean steps and queries."""
    n = len(results)
    out: dict = {"episodes": n}
    for m in milestones:
        k = sum(1 for r in results if r["milestones"].get(m) is not None)
        lo, hi = binomial_ci(k, n)
        out[m] = 100.0 * k / n if n else 0.0
        out[f"ci95/{m}"] = [round(100 * lo, 1), round(100 * hi, 1)]
    succ = [r for r in results if r["success"]]
    out["success_rate"] = 100.0 * len(succ) / n if n else 0.0
    out["mean_steps_success"] = sum(r["steps"] for r in succ) / len(succ) if succ else None
    out["mean_queries"] = sum(r["queries"] for r in results) / n if n else 0.0
    out["parse_failures"] = sum(r["parse_failures"] for r in results)
    tokens = sum(r.get("ledger", {}).get("prompt_tokens", 0) + r.get("ledger", {}).get("completion_tokens", 0)
                 for r in results)
    out["tokens"] = tokens
    return out


def tech_tree_missing(base: dict, seed: int, store: ResultsStore, item: str) -> list[dict]:
    """The jobs ``item`` still needs under the incremental protocol.

    Stages are cumulative: episodes 0..19; if at most one of them succeeded, episodes up to 49; then 99;
    then 199. A stage is decided only once all its episodes are in, on exactly those episodes, so the
    outcome does not depend on the order in which workers finish (or on a kill and resume).
    """
    done = {int(r["id"].rsplit("|", 1)[1]): r["success"] for r in store.results.values() if r["goal"] == item}
    for s in TECH_TREE_STAGES:
        missing = [i for i in range(s) if i not in done]
        if missing:
            return [{**base, "goal": item, "count": 1, "seed": episode_seed(seed, item, i), "id": f"{item}|{i}"}
                    for i in missing]
        if sum(done[i] for i in range(s)) > 1:
            return []
    return []


def run_tech_tree(base: dict, items: list[str], seed: int, store: ResultsStore, workers: int, chunk: int,
                  on_result: Callable[[dict], None] | None = None) -> None:
    """The incremental protocol (:func:`tech_tree_missing`) for every item, in one process pool."""
    submitted: set[str] = set()

    def fresh(jobs: list[dict]) -> list[dict]:
        out = [j for j in jobs if j["id"] not in submitted]
        submitted.update(j["id"] for j in out)
        return out

    first = [j for item in items for j in fresh(tech_tree_missing(base, seed, store, item))]
    run_pool(first, store, workers, chunk, lambda d: fresh(tech_tree_missing(base, seed, store, d["goal"])), on_result)


def summarise_tech_tree(results: list[dict], items: list[str]) -> tuple[dict, dict]:
    """(headline metrics, per-item table) of the tech-tree protocol."""
    per: dict[str, dict] = {}
    for item in items:
        res = [r for r in results if r["goal"] == item]
        n, k = len(res), sum(r["success"] for r in res)
        lo, hi = binomial_ci(k, n)
        per[item] = {"episodes": n, "successes": k, "success_rate": 100.0 * k / n if n else 0.0,
                     "ci95": [round(100 * lo, 1), round(100 * hi, 1)]}
    covered = sum(1 for v in per.values() if v["successes"] > 0)
    head = {"coverage": covered, "items": len(items), "coverage_pct": 100.0 * covered / max(1, len(items)),
            "mean_success_rate": sum(v["success_rate"] for v in per.values()) / max(1, len(per)),
            "episodes": len(results)}
    return head, per


def check_workers(workers: int) -> int:
    if int(workers) < 0:
        raise GitmError(f"workers must be >= 0 (0 or 1 runs in this process), got {workers}")
    return int(workers)


def timed() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
