"""The real openai client -> HTTP -> parser path against the loopback server (spec 6c, 8.4)."""

import asyncio
import json

import pytest

from gitm.agent import Agent, AgentConfig, ChatBackend, tree_fn_from
from gitm.decomposer import OracleDecomposer
from gitm.errors import LLMError
from gitm.llm import LLMClient, LLMConfig
from gitm.llm.testing import HTTPFailure, LoopbackServer, OracleResponder, ScriptedResponder
from gitm.memory import Memory
from gitm.sim import SimEnv
from gitm.summarizer import LLMSummarizer


def client_for(srv, **kw):
    return LLMClient(LLMConfig(base_url=srv.base_url, model="gitm-oracle", backoff=0.01, **kw))


def forest_seed():
    for s in range(100):
        if SimEnv(s, config={"preset": "easy"}).cell.surface.get("log", 0) > 0:
            return s


def run_agent(srv, goal="planks", count=4, seed=None, memory=None, cfg=None, client=None):
    client = client or client_for(srv)
    seed = forest_seed() if seed is None else seed
    env = SimEnv(seed, config={"preset": "easy"})
    agent = Agent(env, ChatBackend(client.chat_text, "llm:test"), tree_fn_from(OracleDecomposer()), memory,
                  LLMSummarizer(client.chat_text), cfg or AgentConfig(update_memory=memory is not None), seed=seed)
    return asyncio.run(agent.run(goal, count)), client


def planner_requests(srv):
    return [r for r in srv.requests if "first think about a plan" in r["messages"][0]["content"]]


def test_episode_through_http_with_llm_decomposer():
    from gitm.runtime import Session, run_episode_async

    with Session({"kind": "loopback"}) as session:
        job = {"goal": "wooden_pickaxe", "count": 1, "seed": forest_seed(), "env": {"name": "sim", "preset": "easy"},
               "llm": session.llm, "decomposer": "llm", "agent": {}}
        result, ledger = asyncio.run(run_episode_async(job))
        reqs = session.server.requests
    assert result.success and result.planner == "llm:gitm-oracle"
    kinds = {("decomposer" if "prerequisites" in r["messages"][0]["content"] else "planner") for r in reqs}
    assert kinds == {"decomposer", "planner"}
    assert ledger["queries"] == len(reqs) and ledger["prompt_tokens"] > 0


def test_malformed_answer_counts_as_query_then_recovers():
    script = ScriptedResponder(["I think you should get wood. {not json", '{"action_list": [{"name": "fly"}]}'],
                               fallback=OracleResponder())
    with LoopbackServer(script) as srv:
        result, _ = run_agent(srv, "log", 1)
        reqs = planner_requests(srv)
    assert result.success and result.parse_failures == 2
    assert "could not be used" in reqs[1]["messages"][-1]["content"]
    assert "unknown action 'fly'" in reqs[2]["messages"][-1]["content"]


def test_failure_feedback_and_replan_from_failed_action():
    bad = json.dumps({"explanation": None, "thoughts": "mine directly",
                      "action_list": [{"name": "mine", "args": {"object": "log"}, "expectation": "log"}]})
    answers = []

    def oracle_logged(body):
        text = OracleResponder()(body)
        answers.append(text)
        return text

    with LoopbackServer(ScriptedResponder([bad], fallback=oracle_logged)) as srv:
        result, _ = run_agent(srv, "log", 1)
        second = planner_requests(srv)[1]["messages"]
    assert result.success
    last = second[-1]["content"]
    assert last.startswith('Action {"name": "mine"') and "failed: no log is visible; explore first" in last
    assert "revise the plan starting from the failed action" in last
    assert second[-2] == {"role": "assistant", "content": bad}  # the failed plan stays in the chat
    replan = json.loads(answers[0])
    assert replan["explanation"].startswith("the action mine failed")
    assert replan["action_list"][0]["name"] == "explore"


def test_query_limit_fails_subgoal():
    with LoopbackServer(ScriptedResponder(["no JSON here"] * 40)) as srv:
        result, _ = run_agent(srv, "log", 1, cfg=AgentConfig(query_limit=30))
    assert not result.success and result.queries == 30 and result.parse_failures == 30
    assert result.reason == "query limit (30) reached for log"


def test_memory_summarised_at_five_and_reference_injected():
    memory = Memory(n=5)
    with LoopbackServer() as srv:
        seed = forest_seed()
        client = client_for(srv)
        for i in range(5):
            run_agent(srv, "log", 1, seed=seed, memory=memory, client=client)
        summ = [r for r in srv.requests if "several successful action sequences" in r["messages"][0]["content"]]
        assert len(summ) == 1 and memory.summaries == 1
        assert summ[0]["messages"][1]["content"].count("\n5. [") == 1
        ref = memory.reference("log")
        assert [a.name for a in ref] == ["explore", "approach", "mine"]
        n = len(srv.requests)
        run_agent(srv, "log", 1, seed=seed, memory=memory, client=client)
        first_query = next(r for r in srv.requests[n:] if "first think" in r["messages"][0]["content"])
    assert "Reference plan: [" in first_query["messages"][1]["content"]
    assert '"name": "explore"' in first_query["messages"][1]["content"]


def test_retries_do_not_count_and_cache_hits():
    ok = json.dumps({"explanation": None, "thoughts": "", "action_list": []})
    with LoopbackServer(ScriptedResponder([HTTPFailure(500), HTTPFailure(429), ok, "second"])) as srv:
        client = client_for(srv)
        msgs = [{"role": "user", "content": "hi"}]
        assert asyncio.run(client.chat_text(msgs)) == ok
        assert client.ledger.queries == 1 and client.ledger.retries == 2
    with LoopbackServer(ScriptedResponder(["cached answer", "fresh answer"])) as srv:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            c1 = client_for(srv, cache_dir=d)
            assert asyncio.run(c1.chat_text(msgs)) == "cached answer"
            c2 = client_for(srv, cache_dir=d)
            assert asyncio.run(c2.chat_text(msgs)) == "cached answer" and c2.ledger.cache_hits == 1
            assert len(srv.requests) == 1


def test_unreachable_endpoint_is_one_clear_error():
    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", backoff=0.01, timeout=2))
    with pytest.raises(LLMError, match=r"cannot get an answer from the LLM endpoint http://127.0.0.1:9/v1 after 3 attempts"):
        asyncio.run(client.chat_text([{"role": "user", "content": "x"}]))


def test_invalid_api_key_is_one_clear_error():
    with LoopbackServer(api_key="right-key") as srv:
        client = LLMClient(LLMConfig(base_url=srv.base_url, api_key="wrong-key"))
        with pytest.raises(LLMError, match="refused the API key.*OPENAI_API_KEY"):
            asyncio.run(client.chat_text([{"role": "user", "content": "x"}]))
        good = LLMClient(LLMConfig(base_url=srv.base_url, api_key="right-key"))
        with pytest.raises(LLMError, match="HTTP 400"):  # past the key check: the prompt itself is refused
            asyncio.run(good.chat_text([{"role": "user", "content": "x"}]))


def test_non_json_model_is_recorded_not_raised():
    with LoopbackServer(ScriptedResponder(["Sure, I would mine some wood."] * 3)) as srv:
        result, client = run_agent(srv, "log", 1, cfg=AgentConfig(query_limit=3))
    assert not result.success and result.parse_failures == 3 and client.ledger.queries == 3


def test_embeddings_endpoint_and_retriever():
    from gitm.knowledge.retriever import EmbeddingRetriever, TfidfRetriever
    from gitm.knowledge.texts import knowledge_snippets

    snippets = knowledge_snippets()
    assert any(s.startswith("crafting 1 wooden_pickaxe needs 3 planks, 2 stick and crafting_table") for s in snippets)
    top = TfidfRetriever(snippets).search("iron_pickaxe", 3)
    assert any("crafting 1 iron_pickaxe" in s for s in top)
    with LoopbackServer() as srv:
        r = EmbeddingRetriever(snippets[:50], client_for(srv).sync_client(), "gitm-embed")
        assert len(r.search("wooden_pickaxe", 2)) == 2
