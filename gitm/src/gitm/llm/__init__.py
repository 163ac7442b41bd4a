"""LLM back end: :class:`LLMClient` (official ``openai`` client, async, retries, cache, ledger) and, in
:mod:`gitm.llm.testing`, the loopback OpenAI-compatible server used by the demo and the tests."""

from .client import Ledger, LLMClient, LLMConfig

__all__ = ["LLMClient", "LLMConfig", "Ledger"]
