"""``gitm-bench`` (also ``benchmarks/bench_sim.py``): one JSON line per measurement (spec section 10).

Measured in one run on this machine's CPUs:

- ``sim_actions``: structured actions per second inside the simulator, and per second of the whole agent
  loop (decomposer, planner, prompt rendering, parser, simulator), oracle ObtainDiamond, one process;
- ``obtain_diamond_1proc``: oracle episodes per minute on one core (target >= 2,000);
- ``planner_path``: seconds per episode, direct oracle vs. the same oracle through the loopback HTTP
  server and the real ``openai`` client (ratio), with queries and tokens per successful diamond;
- ``decompose_all``: decomposition time of every tech-tree item (target < 1 s);
- ``obtain_diamond_40``: wall time of ``gitm-eval``'s 40 ObtainDiamond episodes on ``--workers`` processes
  (goal < 1 min);
- ``tech_tree``: wall time of the full incremental tech-tree evaluation with the deterministic planner on
  ``--workers`` processes (goal < 5 min), with its coverage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _line(**kw) -> None:
    print(json.dumps(kw), flush=True)


def _episodes(n: int, llm: dict, seed: int = 0) -> tuple[float, list]:
    from .runtime import run_async, run_episode_async

    jobs = [{"goal": "diamond", "count": 1, "seed": seed + i, "env": {"name": "sim", "preset": "paper"},
             "llm": llm, "agent": {}, "step_limit": 12000} for i in range(n)]
    t0 = time.perf_counter()
    out = [run_async(run_episode_async(j)) for j in jobs]
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--episodes", type=int, default=200, help="episodes for the one-process rate")
    p.add_argument("--skip-tech-tree", action="store_true")
    args = p.parse_args(argv)
    env = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}

    from .knowledge.tables import Knowledge
    from .sim.env import SimEnv

    k = Knowledge.default()
    # simulator actions/s (count env.step calls while oracle episodes run)
    calls, in_sim = [0], [0.0]
    orig = SimEnv.step

    def counted(self, action):
        calls[0] += 1
        t = time.perf_counter()
        try:
            return orig(self, action)
        finally:
            in_sim[0] += time.perf_counter() - t

    SimEnv.step = counted
    try:
        dt, res = _episodes(args.episodes, {"kind": "oracle"})
    finally:
        SimEnv.step = orig
    wins = sum(r.success for r, _ in res)
    _line(bench="sim_actions", actions=calls[0], seconds_in_simulator=round(in_sim[0], 3),
          simulator_actions_per_s=round(calls[0] / in_sim[0]), episode_seconds=round(dt, 3),
          actions_per_s_whole_agent_loop=round(calls[0] / dt), **env)
    _line(bench="obtain_diamond_1proc", episodes=args.episodes, seconds=round(dt, 3),
          episodes_per_min=round(60 * args.episodes / dt), success_rate=wins / args.episodes, target_per_min=2000)

    # planner path: direct oracle vs the same oracle over HTTP with the openai client
    from .runtime import Session

    n = 10
    t_direct, _ = _episodes(n, {"kind": "oracle"})
    with Session({"kind": "loopback"}) as s:
        t_http, res = _episodes(n, s.llm)
    ok = [(r, led) for r, led in res if r.success]
    _line(bench="planner_path", episodes=n, direct_s_per_episode=round(t_direct / n, 4),
          loopback_http_s_per_episode=round(t_http / n, 4), http_over_direct=round(t_http / t_direct, 1),
          queries_per_successful_diamond=round(sum(r.queries for r, _ in ok) / max(1, len(ok)), 1),
          tokens_per_successful_diamond=round(sum(l["prompt_tokens"] + l["completion_tokens"] for _, l in ok) / max(1, len(ok))),
          query_budget_paper="<= 30 per sub-goal")

    from .decomposer import OracleDecomposer

    items = k.tech_tree()
    t0 = time.perf_counter()
    nodes = sum(OracleDecomposer(k).tree(i, 1).size() for i in items)
    _line(bench="decompose_all", items=len(items), nodes=nodes, seconds=round(time.perf_counter() - t0, 3), target_s=1.0)

    from .evaluation import ResultsStore, obtain_diamond_jobs, run_pool, run_tech_tree, summarise_tech_tree

    base = {"env": {"name": "sim", "preset": "paper"}, "llm": {"kind": "oracle"}, "agent": {},
            "decomposer": "oracle", "step_limit": 12000}
    with tempfile.TemporaryDirectory() as d:
        store = ResultsStore(Path(d) / "od.jsonl", resume=False)
        t0 = time.perf_counter()
        run_pool(obtain_diamond_jobs(base, 40, 0), store, args.workers, 4)
        _line(bench="obtain_diamond_40", workers=args.workers, seconds=round(time.perf_counter() - t0, 2),
              diamond_rate=sum(r["success"] for r in store.results.values()) / 40, goal_s=60)
        store.close()
        if not args.skip_tech_tree:
            store = ResultsStore(Path(d) / "tt.jsonl", resume=False)
            tbase = {**base, "step_limit": None, "agent": {"query_limit": 100}}
            t0 = time.perf_counter()
            run_tech_tree(tbase, items, 0, store, args.workers, 8)
            head, _ = summarise_tech_tree(list(store.results.values()), items)
            _line(bench="tech_tree", workers=args.workers, seconds=round(time.perf_counter() - t0, 1), goal_s=300,
                  coverage=head["coverage"], items=head["items"], episodes=head["episodes"],
                  mean_success_rate=round(head["mean_success_rate"], 1))
            store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
