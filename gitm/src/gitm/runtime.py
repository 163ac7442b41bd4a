"""Build the agent's parts from a config and run one episode (what every entry point and worker calls).

An episode *job* is a plain dict (picklable, JSON-able) so that it runs the same in-process, in a
process-pool worker, or on a cluster node::

    {"goal": "diamond", "count": 1, "seed": 17, "env": {...}, "llm": {...}, "agent": {...},
     "decomposer": "oracle" | "llm", "memory": {...} | None, "inventory": {...}, "step_limit": 12000}

``llm.kind`` is ``oracle`` | ``noisy_oracle`` (in-process deterministic planners, no HTTP) or
``endpoint`` (an OpenAI-compatible URL). ``loopback`` is turned into ``endpoint`` by :class:`Session`,
which starts :class:`gitm.llm.testing.LoopbackServer` in the parent process.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields
from typing import Any, Callable

from .agent import Agent, AgentConfig, ChatBackend, DirectBackend, EpisodeResult, tree_fn_from
from .decomposer import LLMDecomposer, OracleDecomposer
from .errors import GitmError
from .knowledge.tables import Knowledge
from .memory import Memory
from .planner import NoisyOraclePlanner, OraclePlanner
from .summarizer import LLMSummarizer, offline_summarize

LLM_KINDS = ("oracle", "noisy_oracle", "loopback", "endpoint")
ENV_NAMES = ("sim", "minedojo")
DECOMPOSERS = ("llm", "oracle")
_CACHE: dict[str, Any] = {}


def agent_config(d: dict | None) -> AgentConfig:
    """AgentConfig from a mapping; unknown keys are an error listing the known ones."""
    d = dict(d or {})
    known = {f.name for f in fields(AgentConfig)}
    bad = sorted(set(d) - known)
    if bad:
        raise GitmError(f"unknown agent settings {bad}; known: {', '.join(sorted(known))}")
    if "milestones" in d:
        d["milestones"] = tuple(d["milestones"])
    cfg = AgentConfig(**d)
    if int(cfg.query_limit) < 1:
        raise GitmError(f"agent.query_limit must be >= 1 (queries per sub-goal; paper: 30), got {cfg.query_limit}")
    if cfg.history_k is not None and int(cfg.history_k) < 0:
        raise GitmError(f"agent.history_k must be >= 0 or null (keep the whole chat), got {cfg.history_k}")
    if int(cfg.max_requeue) < 0:
        raise GitmError(f"agent.max_requeue must be >= 0, got {cfg.max_requeue}")
    return cfg


def check_settings(decomposer: str, step_limit: int | None, positive: dict[str, int]) -> None:
    """Validate an entry point's settings before anything starts (one error naming the key).

    Args:
        decomposer: ``llm`` | ``oracle``.
        step_limit: environment steps per episode, or None for no limit.
        positive: config key -> value that must be an integer >= 1 (e.g. ``{"count": 1, "chunk": 4}``).

    Raises:
        GitmError: unknown decomposer (lists the known ones), a step limit < 1, or a value < 1.
    """
    if decomposer not in DECOMPOSERS:
        raise GitmError(f"unknown decomposer {decomposer!r}; known: llm (the paper's LLM decomposer, needs an "
                        f"endpoint), oracle (from the knowledge tables)")
    if step_limit is not None and int(step_limit) < 1:
        raise GitmError(f"step_limit must be >= 1 environment steps or null (no limit), got {step_limit}")
    for key, value in positive.items():
        if int(value) < 1:
            raise GitmError(f"{key} must be >= 1, got {value}")


class Session:
    """Parent-process resources for a run: the loopback server when ``llm.kind=loopback``.

    ``session.llm`` is the resolved llm mapping to put into jobs (``endpoint`` with the server's URL).
    """

    def __init__(self, llm: dict):
        llm = dict(llm)
        kind = llm.get("kind", "oracle")
        if kind not in LLM_KINDS:
            raise GitmError(f"unknown llm.kind {kind!r}; known: {', '.join(LLM_KINDS)}")
        self.server = None
        if kind == "endpoint":
            from .llm.client import LLMConfig

            LLMConfig.from_dict(llm)  # unknown keys or an unset model fail here, not in a worker
        if kind == "loopback":
            from .llm.testing import LoopbackServer

            self.server = LoopbackServer().start()
            llm.update(kind="endpoint", base_url=self.server.base_url, model=llm.get("model") or "gitm-oracle")
        self.llm = llm

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _knowledge() -> Knowledge:
    return Knowledge.default()


def _client(llm: dict):
    from .llm import LLMClient

    key = json.dumps(llm, sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = LLMClient(llm)
    return _CACHE[key]


def _retriever(llm: dict, client):
    key = "retriever:" + json.dumps(llm, sort_keys=True)
    if key not in _CACHE:
        from .knowledge.retriever import EmbeddingRetriever, TfidfRetriever
        from .knowledge.texts import knowledge_snippets

        snippets = knowledge_snippets(_knowledge())
        if llm.get("embedding_model"):
            _CACHE[key] = EmbeddingRetriever(snippets, client.sync_client(), llm["embedding_model"])
        else:
            _CACHE[key] = TfidfRetriever(snippets)
    return _CACHE[key]


def build_parts(job: dict, ledger=None):
    """(backend, summarise, decomposer, client or None) for a job; LLM calls also count into ``ledger``."""
    k = _knowledge()
    llm = dict(job.get("llm") or {"kind": "oracle"})
    kind = llm.get("kind", "oracle")
    with_info = bool((job.get("agent") or {}).get("external_info", True))
    if kind == "loopback":
        raise GitmError("llm.kind=loopback must be resolved by a Session in the parent process")
    if kind in ("oracle", "noisy_oracle"):
        if job.get("decomposer", "oracle") == "llm":
            raise GitmError(f"decomposer=llm needs an LLM endpoint, but llm.kind={kind}; "
                            f"use decomposer=oracle or llm=loopback/openai/vllm/ollama")
        planner = OraclePlanner(k) if kind == "oracle" else NoisyOraclePlanner(k, llm.get("noise"))
        return DirectBackend(planner), offline_summarize, OracleDecomposer(k, with_info), None
    if kind != "endpoint":
        raise GitmError(f"unknown llm.kind {kind!r}; known: {', '.join(LLM_KINDS)}")
    client = _client(llm)

    async def chat(messages: list[dict]) -> str:
        return await client.chat_text(messages, ledger)

    backend = ChatBackend(chat, f"llm:{llm.get('model')}")
    summarise = LLMSummarizer(chat)
    if job.get("decomposer", "oracle") == "llm":
        decomposer = LLMDecomposer(chat, _retriever(llm, client), k, with_info=with_info)
    else:
        decomposer = OracleDecomposer(k, with_info)
    return backend, summarise, decomposer, client


def make_env(job: dict):
    """The environment of a job (``env.name``: sim | minedojo)."""
    env_cfg = dict(job.get("env") or {"name": "sim"})
    name = env_cfg.pop("name", "sim")
    if name == "sim":
        from .sim import SimEnv

        return SimEnv(int(job["seed"]), _knowledge(), env_cfg, step_limit=job.get("step_limit"),
                      inventory=job.get("inventory"))
    if name == "minedojo":
        from .envs.minedojo import MineDojoEnv

        return MineDojoEnv(int(job["seed"]), env_cfg, step_limit=job.get("step_limit"),
                           inventory=job.get("inventory"))
    raise GitmError(f"unknown env {name!r}; known: {', '.join(ENV_NAMES)}")


async def run_episode_async(job: dict, memory: Memory | None = None, on_trace: Callable[[str], None] | None = None,
                            remember_only: set[str] | None = None) -> tuple[EpisodeResult, dict]:
    """Play one job; returns (result, ledger dict of the LLM calls this episode made)."""
    from .llm.client import Ledger

    ledger = Ledger()
    backend, summarise, decomposer, client = build_parts(job, ledger)
    if memory is None and job.get("memory"):
        memory = Memory.from_dict(job["memory"], "job memory")
    env = make_env(job)
    agent = Agent(env, backend, tree_fn_from(decomposer), memory, summarise, agent_config(job.get("agent")),
                  seed=int(job["seed"]), on_trace=on_trace, remember_only=remember_only)
    try:
        result = await agent.run(job["goal"], int(job.get("count", 1)))
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
    return result, (ledger.to_dict() if client is not None else {})


async def close_clients() -> None:
    """Close the LLM clients' HTTP connections of the running event loop."""
    from .llm import LLMClient

    for c in list(_CACHE.values()):
        if isinstance(c, LLMClient):
            await c.aclose()


def run_async(coro):
    """``asyncio.run`` that closes the LLM clients before its event loop ends."""

    async def main():
        try:
            return await coro
        finally:
            await close_clients()

    return asyncio.run(main())


def run_jobs_chunk(jobs: list[dict]) -> list[dict]:
    """Worker entry point: play jobs concurrently (one event loop) and return result dicts."""

    async def main():
        return await asyncio.gather(*(run_episode_async(j) for j in jobs))

    out = []
    for job, (res, ledger) in zip(jobs, run_async(main())):
        d = res.to_dict()
        d.update(id=job["id"], ledger=ledger)
        out.append(d)
    return out
