"""The LLM back end (spec 6c): the official ``openai`` client against any OpenAI-compatible endpoint.

One :class:`LLMClient` per process gives ``await chat_text(messages) -> str`` with

- a concurrency limit (``asyncio.Semaphore``; episodes of one worker run as concurrent coroutines),
- retries with exponential backoff on connection errors, timeouts, 429 and 5xx (``max_retries``
  attempts; retries are not queries: the agent counts one query per call),
- an on-disk response cache keyed by a SHA-256 of (model, messages, parameters), written atomically, so a
  rerun is reproducible and free,
- a token and cost ledger (:class:`Ledger`).

Unrecoverable endpoint problems raise :class:`~gitm.errors.LLMError` with one sentence that says what to
do: unreachable endpoint (after the retries), refused API key (401), unknown model (404), bad request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from repro_shared.fsio import atomic_write_text

from ..errors import GitmError, LLMError


@dataclass
class LLMConfig:
    """Endpoint settings (Hydra group ``llm``). ``api_key`` None reads ``$OPENAI_API_KEY`` (or a dummy)."""

    base_url: str | None = None
    model: str = "gpt-3.5-turbo"
    api_key: str | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None
    json_mode: bool = False
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    concurrency: int = 8
    cache_dir: str | None = None
    embedding_model: str | None = None
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "LLMConfig":
        d = {k: v for k, v in dict(d or {}).items() if k not in ("kind", "name", "noise")}
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise GitmError(f"unknown llm settings {bad}; known: {', '.join(sorted(known))}")
        if "model" in d and d["model"] in (None, "", "???"):  # "???" = OmegaConf's missing value (configs/llm/vllm.yaml)
            raise GitmError("llm.model is not set: give the model id the endpoint serves, "
                            "e.g. llm.model=Qwen/Qwen2.5-7B-Instruct")
        return cls(**d)


@dataclass
class Ledger:
    """Token and cost counters (per episode or per run; ``merge`` adds another)."""

    queries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    retries: int = 0

    def merge(self, other: "Ledger | dict") -> None:
        o = other if isinstance(other, dict) else asdict(other)
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + o.get(k, 0))

    def to_dict(self) -> dict:
        return asdict(self)


class LLMClient:
    """Async chat completions with limit, retries, cache and ledger (module docstring)."""

    def __init__(self, cfg: LLMConfig | dict):
        self.cfg = cfg if isinstance(cfg, LLMConfig) else LLMConfig.from_dict(cfg)
        if not self.cfg.base_url:
            raise GitmError("llm.base_url is not set: give an OpenAI-compatible endpoint "
                            "(e.g. https://api.openai.com/v1, http://localhost:8000/v1 for vLLM, "
                            "http://localhost:11434/v1 for Ollama) or use llm=oracle / llm=loopback")
        self.api_key = self.cfg.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.ledger = Ledger()
        self._loop = None
        self._client = None
        self._sem = None
        self.cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else None

    # ------------------------------------------------------------------------------------------ setup
    def _ensure(self):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the client and the semaphore belong to one event loop
            import openai

            self._client = openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=self.api_key,
                                              timeout=self.cfg.timeout, max_retries=0)
            self._sem = asyncio.Semaphore(self.cfg.concurrency)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop (call before the loop ends)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = self._loop = self._sem = None

    def sync_client(self):
        """A synchronous ``openai.OpenAI`` for the same endpoint (embeddings at start-up)."""
        import openai

        return openai.OpenAI(base_url=self.cfg.base_url, api_key=self.api_key, timeout=self.cfg.timeout,
                             max_retries=self.cfg.max_retries)

    def _params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"model": self.cfg.model}
        if self.cfg.temperature is not None:
            p["temperature"] = self.cfg.temperature
        if self.cfg.max_tokens is not None:
            p["max_tokens"] = self.cfg.max_tokens
        if self.cfg.json_mode:
            p["response_format"] = {"type": "json_object"}
        return p

    def _cache_path(self, messages: list[dict], params: dict) -> Path | None:
        if self.cache is None:
            return None
        h = hashlib.sha256(json.dumps({"messages": messages, **params}, sort_keys=True).encode()).hexdigest()
        return self.cache / h[:2] / f"{h}.json"

    # ------------------------------------------------------------------------------------------- call
    async def chat_text(self, messages: list[dict], ledger: Ledger | None = None) -> str:
        """One chat completion; returns the assistant text ("" when the server sends none).

        Counts go into ``self.ledger`` and, when given, into ``ledger`` (e.g. one per episode).

        Raises:
            LLMError: unreachable after the retries, 401, 404, 400 (one sentence saying what to do).
        """
        import openai

        params = self._params()
        path = self._cache_path(messages, params)
        ledgers = [self.ledger] + ([ledger] if ledger is not None else [])
        for lg in ledgers:
            lg.queries += 1
        if path is not None and path.is_file():
            try:
                hit = json.loads(path.read_text())
                for lg in ledgers:
                    lg.cache_hits += 1
                return hit["text"]
            except (json.JSONDecodeError, KeyError):
                pass  # a damaged cache entry is ignored and rewritten
        client = self._ensure()
        delay, last = self.cfg.backoff, None
        for attempt in range(self.cfg.max_retries):
            try:
                async with self._sem:
                    resp = await client.chat.completions.create(messages=messages, **params)
                break
            except openai.AuthenticationError as e:
                raise LLMError(f"the endpoint {self.cfg.base_url} refused the API key (HTTP 401): set "
                               f"OPENAI_API_KEY or llm.api_key to a valid key") from e
            except openai.NotFoundError as e:
                raise LLMError(f"the endpoint {self.cfg.base_url} does not know model {self.cfg.model!r} "
                               f"(HTTP 404): set llm.model to a model it serves") from e
            except openai.BadRequestError as e:
                raise LLMError(f"the endpoint {self.cfg.base_url} rejected the request (HTTP 400): {e}") from e
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError) as e:
                last = e
                if attempt + 1 < self.cfg.max_retries:
                    for lg in ledgers:
                        lg.retries += 1
                    await asyncio.sleep(delay)
                    delay *= 2
        else:
            kind = type(last).__name__
            raise LLMError(f"cannot get an answer from the LLM endpoint {self.cfg.base_url} after "
                           f"{self.cfg.max_retries} attempts ({kind}: {last}); start the server or set "
                           f"llm.base_url") from last
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        for lg in ledgers:
            lg.prompt_tokens += pt
            lg.completion_tokens += ct
            lg.cost_usd += pt / 1000 * self.cfg.price_prompt_per_1k + ct / 1000 * self.cfg.price_completion_per_1k
        if path is not None:
            atomic_write_text(path, json.dumps({"text": text, "usage": {"prompt_tokens": pt, "completion_tokens": ct}}))
        return text
