"""Hydra entry points: ``gitm-play`` (one goal, readable trace), ``gitm-eval`` (ObtainDiamond milestones or
the tech-tree protocol over many episodes), ``gitm-learn`` (the memory curriculum).

Every run writes into its Hydra folder: the resolved config (``.hydra/``), a log, ``metrics.json``
(headline numbers, read by ``repro-summary``) and a results file that records the planner/model id, the
date, the seeds and the query and step counts. ``gitm-eval`` and ``gitm-learn`` use a folder named after
the command-line overrides, so running the same command again after a kill resumes the run
(``resume=false`` starts over).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from repro_shared.fsio import atomic_write_text

from .errors import GitmError
from .memory import Memory

log = logging.getLogger("gitm")
for _noisy in ("httpx", "httpx2", "openai", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}


def _out_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _write_json(path: Path, obj, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def _label(llm: dict) -> str:
    kind = llm.get("kind", "oracle")
    return kind if kind in ("oracle", "noisy_oracle") else f"{kind}:{llm.get('model')}"


def _base_job(cfg: DictConfig, llm: dict, memory: Memory | None) -> dict:
    from .runtime import agent_config

    agent = _plain(cfg.agent)
    agent_config(agent)  # validate keys early
    return {"env": _plain(cfg.env), "llm": llm, "agent": agent, "decomposer": cfg.decomposer,
            "memory": memory.to_dict() if memory is not None else None, "step_limit": cfg.step_limit}


def _load_memory(cfg: DictConfig) -> Memory | None:
    if cfg.memory.path:
        mem, _ = Memory.load(cfg.memory.path)
        return mem
    return None


def _fail(e: Exception) -> None:
    log.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------------------------- play
@hydra.main(version_base=None, config_path="configs", config_name="play")
def play(cfg: DictConfig) -> None:
    """One goal with a readable trace; writes metrics.json, episode.json and (if updated) memory.json."""
    from .runtime import Session, check_settings, run_async, run_episode_async

    try:
        out = _out_dir()
        check_settings(cfg.decomposer, cfg.step_limit, {"count": cfg.count, "memory.n": cfg.memory.n})
        memory = _load_memory(cfg) or Memory(n=cfg.memory.n, count_summary=cfg.memory.count_summary)
        with Session(_plain(cfg.llm)) as session:
            job = {**_base_job(cfg, session.llm, None), "goal": cfg.goal, "count": int(cfg.count),
                   "seed": int(cfg.seed)}
            from .knowledge.tables import Knowledge

            Knowledge.default().check_item(cfg.goal)
            printer = (lambda line: log.info("%s", line)) if cfg.print_trace else None
            result, ledger = run_async(run_episode_async(job, memory=memory, on_trace=printer))
    except GitmError as e:
        _fail(e)
        return
    if cfg.agent.update_memory:
        memory.save(out / "memory.json")
    entries = sum(len(v) for v in memory.entries.values())
    log.info("memory: %d sub-goals, %d entries, %d summaries", len(memory.entries), entries, memory.summaries)
    metrics = {"success": float(result.success), "steps": result.steps, "queries": result.queries,
               "subgoals": result.subgoals, "parse_failures": result.parse_failures,
               "memory_entries": entries, "tokens": ledger.get("prompt_tokens", 0) + ledger.get("completion_tokens", 0)}
    for m, t in result.milestones.items():
        metrics[f"milestone_step/{m}"] = -1 if t is None else t
    _write_json(out / "metrics.json", metrics, sort_keys=False)  # headline numbers first
    _write_json(out / "episode.json", {"planner": _label(_plain(cfg.llm)), "date": datetime.date.today().isoformat(),
                                       "env": _plain(cfg.env), "result": result.to_dict(with_trace=True),
                                       "ledger": ledger,
                                       "note": ("offline simulator run; not a GITM paper number"
                                                if cfg.env.name == "sim" else "MineDojo run")})
    log.info("%s %d %s: %s in %d steps, %d queries (metrics: %s)", "play", cfg.count, cfg.goal,
             "success" if result.success else f"failed ({result.reason})", result.steps, result.queries,
             out / "metrics.json")


# ----------------------------------------------------------------------------------------------- eval
@hydra.main(version_base=None, config_path="configs", config_name="eval")
def evaluate(cfg: DictConfig) -> None:
    """ObtainDiamond milestones over N episodes, or the incremental tech-tree protocol."""
    from .evaluation import (ResultsStore, check_workers, obtain_diamond_jobs, run_pool, run_tech_tree,
                             summarise_milestones, summarise_tech_tree, timed)
    from .knowledge.tables import Knowledge
    from .runtime import Session, check_settings

    try:
        out = _out_dir()
        workers = check_workers(cfg.workers)
        check_settings(cfg.decomposer, cfg.step_limit,
                       {"episodes": cfg.episodes, "chunk": cfg.chunk, "memory.n": cfg.memory.n})
        memory = _load_memory(cfg)
        if cfg.agent.use_memory and memory is None:
            if cfg.memory.get("required", False):
                raise GitmError("this row uses the memory (agent.use_memory=true) but memory.path is not set: pass "
                                "memory.path=<memory.json written by gitm-learn> (see scripts/reproduce_table2.sh), "
                                "or agent.use_memory=false to run the row without memory")
            log.warning("agent.use_memory=true but memory.path is not set: the agent starts with an empty memory "
                        "(no reference plans); pass memory.path=<gitm-learn memory.json> for the memory rows")
        k = Knowledge.default()
        if cfg.protocol not in ("obtain_diamond", "tech_tree"):
            raise GitmError(f"unknown protocol {cfg.protocol!r}; known: obtain_diamond, tech_tree")
        items = list(cfg.tech_items) if cfg.tech_items else k.tech_tree()
        for it in ([cfg.goal] if cfg.protocol == "obtain_diamond" else items):
            k.check_item(it)
        clock = timed()
        store = ResultsStore(out / "episodes.jsonl", resume=bool(cfg.resume))
        if store.results:
            log.info("resuming: %d episodes already in %s", len(store.results), store.path)
        with Session(_plain(cfg.llm)) as session:
            base = _base_job(cfg, session.llm, memory)
            n_done = [len(store.results)]

            def progress(d: dict) -> None:
                n_done[0] += 1
                if n_done[0] % max(1, cfg.log_every) == 0:
                    log.info("%d episodes done (%.1f s)", n_done[0], clock())

            if cfg.protocol == "obtain_diamond":
                jobs = obtain_diamond_jobs(base, int(cfg.episodes), int(cfg.seed), cfg.goal)
                run_pool(jobs, store, workers, int(cfg.chunk), on_result=progress)
                ids = {j["id"] for j in jobs}
                results = [store.results[i] for i in sorted(ids, key=lambda s: int(s.split("|")[1]))]
                head = summarise_milestones(results, cfg.agent.milestones)
                per = None
            else:
                run_tech_tree(base, items, int(cfg.seed), store, workers, int(cfg.chunk), on_result=progress)
                results = list(store.results.values())
                head, per = summarise_tech_tree(results, items)
        store.close()
    except GitmError as e:
        _fail(e)
        return
    wall = clock()
    metrics = {key: v for key, v in head.items() if isinstance(v, (int, float)) and v is not None}
    if cfg.protocol == "obtain_diamond":  # milestones first, in order, for repro-summary
        metrics = {**{m: metrics.pop(m) for m in cfg.agent.milestones}, **metrics}
    metrics["wall_s"] = wall
    _write_json(out / "metrics.json", metrics, sort_keys=False)  # headline numbers first
    record = {"protocol": cfg.protocol, "planner": _label(_plain(cfg.llm)), "decomposer": cfg.decomposer,
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "env": _plain(cfg.env),
              "agent": _plain(cfg.agent), "seed": int(cfg.seed), "step_limit": cfg.step_limit,
              "memory": cfg.memory.path, "summary": head, "per_item": per, "wall_s": wall,
              "seeds": sorted(r["seed"] for r in results),
              "note": ("offline simulator results; not comparable to the paper's MineDojo numbers"
                       if cfg.env.name == "sim" else "MineDojo results")}
    _write_json(out / "results.json", record)
    if cfg.protocol == "obtain_diamond":
        row = " | ".join(f"{m} {head[m]:.1f}" for m in cfg.agent.milestones)
        log.info("ObtainDiamond (%s, %d episodes): %s | wall %.1f s", record["planner"], head["episodes"], row, wall)
    else:
        log.info("tech tree (%s): coverage %d/%d, mean success %.1f %%, %d episodes, wall %.1f s", record["planner"],
                 head["coverage"], head["items"], head["mean_success_rate"], head["episodes"], wall)


# ---------------------------------------------------------------------------------------------- learn
@hydra.main(version_base=None, config_path="configs", config_name="learn")
def learn(cfg: DictConfig) -> None:
    """The memory curriculum; writes memory.json (atomically, resumable) and memory snapshots."""
    from .evaluation import check_workers, timed
    from .knowledge.tables import Knowledge
    from .learning import curriculum, learning_curve, run_learning, write_snapshots
    from .runtime import Session, check_settings

    try:
        out = _out_dir()
        workers = check_workers(cfg.workers)
        check_settings(cfg.decomposer, cfg.step_limit,
                       {"max_episodes": cfg.max_episodes, "chunk": cfg.chunk, "memory.n": cfg.memory.n})
        k = Knowledge.default()
        goals = list(cfg.goals) if cfg.goals else k.tech_tree()
        for g in goals:
            k.check_item(g)
        clock = timed()
        path = Path(cfg.memory.path) if cfg.memory.path else out / "memory.json"
        with Session(_plain(cfg.llm)) as session:
            agent = {**_plain(cfg.agent), "update_memory": True}
            episode = {"env": _plain(cfg.env), "llm": session.llm, "agent": agent, "decomposer": cfg.decomposer,
                       "step_limit": cfg.step_limit}
            memory, progress = run_learning(
                goals, episode, path, int(cfg.seed), workers, int(cfg.chunk), int(cfg.memory.n),
                bool(cfg.memory.count_summary), int(cfg.max_episodes), bool(cfg.resume),
                on_key=lambda d: log.info("learned %-20s %2d episodes, %2d successes, summarised=%s",
                                          d["key"], d["episodes"], d["successes"], d["summarised"]))
    except GitmError as e:
        _fail(e)
        return
    keys = curriculum(goals)
    curve = learning_curve(progress, keys)
    snaps = write_snapshots(memory, progress, keys, list(cfg.snapshot_steps), out / "snapshots") if cfg.snapshot_steps else []
    metrics = {"subgoals": len(keys), "summarised": sum(1 for p in progress.values() if p["summarised"]),
               "episodes": sum(p["episodes"] for p in progress.values()),
               "successes": sum(p["successes"] for p in progress.values()),
               "steps": curve[-1][0] if curve else 0, "wall_s": clock()}
    _write_json(out / "metrics.json", metrics, sort_keys=False)  # headline numbers first
    _write_json(out / "learning.json", {"planner": _label(_plain(cfg.llm)), "date": datetime.date.today().isoformat(),
                                        "curriculum": keys, "progress": progress,
                                        "curve": [[s, len(ks)] for s, ks in curve],
                                        "snapshots": [str(p) for p in snaps]})
    log.info("memory curriculum: %d sub-goals, %d summarised, %d episodes, %d steps -> %s", metrics["subgoals"],
             metrics["summarised"], metrics["episodes"], metrics["steps"], path)
