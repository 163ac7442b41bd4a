"""Bad settings stop before anything runs, with one error naming the key (newcomer report).

Before: ``gitm-play count=0`` crashed inside the loopback server and then blamed the endpoint ("start the
server"), ``gitm-eval chunk=0`` never returned, ``episodes=0`` / ``step_limit=-5`` / ``decomposer=foo`` /
``agent.query_limit=0`` ran and wrote 0 % success as if measured, and ``llm=vllm`` without ``llm.model``
sent the model id ``'???'`` to the server. Also: the memory file written by ``gitm-learn`` did not depend on
the order in which the workers finished.
"""

import json
import os
import subprocess
import sys

import pytest

from gitm import learning
from gitm.errors import GitmError
from gitm.llm.client import LLMConfig
from gitm.runtime import Session, agent_config, check_settings


def run_cli(args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "gitm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("args, message", [
    (("llm", 12000, {"count": 0}), "count must be >= 1, got 0"),
    (("oracle", 12000, {"episodes": -2}), "episodes must be >= 1, got -2"),
    (("oracle", 12000, {"chunk": 0}), "chunk must be >= 1, got 0"),
    (("oracle", 12000, {"memory.n": 0}), "memory.n must be >= 1, got 0"),
    (("oracle", -5, {}), "step_limit must be >= 1 environment steps or null (no limit), got -5"),
    (("foo", 12000, {}), "unknown decomposer 'foo'; known: llm"),
])
def test_check_settings_names_the_key(args, message):
    with pytest.raises(GitmError) as e:
        check_settings(*args)
    assert message in str(e.value)


def test_valid_settings_pass():
    check_settings("oracle", None, {"episodes": 1, "chunk": 1})
    check_settings("llm", 1, {"count": 3})


@pytest.mark.parametrize("agent, message", [
    ({"query_limit": 0}, "agent.query_limit must be >= 1"),
    ({"history_k": -1}, "agent.history_k must be >= 0 or null"),
    ({"max_requeue": -1}, "agent.max_requeue must be >= 0"),
])
def test_agent_numbers_are_checked(agent, message):
    with pytest.raises(GitmError, match=message):
        agent_config(agent)
    assert agent_config({"history_k": None, "query_limit": 1}).query_limit == 1


def test_endpoint_without_model_is_refused_before_any_request():
    with pytest.raises(GitmError, match="llm.model is not set"):
        LLMConfig.from_dict({"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "???"})
    with pytest.raises(GitmError, match="llm.model is not set"):
        Session({"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "???"})
    assert LLMConfig.from_dict({"base_url": "http://x/v1"}).model == "gpt-3.5-turbo"  # unset key: default


def test_cli_bad_numbers_one_error_no_traceback(tmp_path):
    p = run_cli(["play", "count=0", f"hydra.run.dir={tmp_path}/a"], tmp_path)
    assert p.returncode == 2 and "error: count must be >= 1, got 0" in p.stderr
    assert "Traceback" not in p.stderr and "endpoint" not in p.stderr
    p = run_cli(["eval", "chunk=0", "workers=1", f"hydra.run.dir={tmp_path}/b"], tmp_path, timeout=60)  # hung
    assert p.returncode == 2 and "error: chunk must be >= 1, got 0" in p.stderr
    assert not (tmp_path / "b" / "metrics.json").exists()
    p = run_cli(["play", "llm=vllm", f"hydra.run.dir={tmp_path}/c"], tmp_path)
    assert p.returncode == 2 and "error: llm.model is not set" in p.stderr


def test_learn_memory_file_does_not_depend_on_worker_finish_order(tmp_path, monkeypatch):
    episode = {"env": {"name": "sim", "preset": "paper"}, "llm": {"kind": "noisy_oracle"},
               "agent": {"update_memory": True}, "decomposer": "oracle", "step_limit": None}
    args = dict(seed=0, workers=1, chunk=1, max_episodes=6)
    learning.run_learning(["stone_pickaxe"], episode, tmp_path / "in_order.json", **args)
    run_pool = learning.run_pool

    def reversed_pool(jobs, store, *a, **kw):  # as if the workers finished in the opposite order
        return run_pool(list(reversed(jobs)), store, *a, **kw)

    monkeypatch.setattr(learning, "run_pool", reversed_pool)
    learning.run_learning(["stone_pickaxe"], episode, tmp_path / "reversed.json", **args)
    a, b = (tmp_path / "in_order.json").read_bytes(), (tmp_path / "reversed.json").read_bytes()
    assert json.loads(a) == json.loads(b)
    assert a == b
    assert list(json.loads(a)["extra"]["progress"]) == learning.curriculum(["stone_pickaxe"])


def test_memory_row_without_memory_file_is_refused(tmp_path):
    """A paper row that uses the memory (memory.required) used to run silently with an empty memory."""
    p = run_cli(["eval", "experiment=ablation_full", "llm=oracle", "decomposer=oracle", "workers=1",
                 f"hydra.run.dir={tmp_path}/a"], tmp_path, timeout=60)
    assert p.returncode == 2 and "but memory.path is not set" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and not (tmp_path / "a" / "metrics.json").exists()
    p = run_cli(["eval", "experiment=ablation_full", "llm=oracle", "decomposer=oracle", "agent.use_memory=false",
                 "episodes=1", "step_limit=50", "workers=1", f"hydra.run.dir={tmp_path}/b"], tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "b" / "metrics.json").exists()
