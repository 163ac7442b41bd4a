"""Entry points as a user runs them: the default demo, bad input, and resume after SIGKILL (issue 17 kind:
a killed evaluation or learning run continues without losing or double-counting episodes)."""

import json
import os
import signal
import subprocess
import sys
import time



def run_cli(args, cwd, timeout=300):
    """Run an entry point in a fresh interpreter (``python -m gitm play|eval|learn``), as a user would."""
    return subprocess.run([sys.executable, "-m", "gitm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_play_default_demo_writes_numeric_metrics_without_torch(tmp_path):
    code = ("import sys; sys.argv=['gitm-play', 'hydra.run.dir=%s']; from gitm.cli import play; play(); "
            "print('TORCH_IMPORTED=%%s' %% ('torch' in sys.modules))" % (tmp_path / "run"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "TORCH_IMPORTED=False" in p.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["success"] == 1.0 and all(isinstance(v, (int, float)) for v in m.values())
    ep = json.loads((tmp_path / "run" / "episode.json").read_text())
    assert ep["planner"] == "loopback:gitm-oracle" and ep["result"]["trace"]
    assert json.loads((tmp_path / "run" / "memory.json").read_text())["format"] == "gitm-memory-v1"


def test_unknown_item_and_bad_keys_are_one_clear_error(tmp_path):
    p = run_cli(["play", "goal=diamnd", "llm=oracle", "decomposer=oracle", f"hydra.run.dir={tmp_path}/a"], tmp_path)
    assert p.returncode == 2 and "unknown item 'diamnd'; did you mean diamond" in p.stderr
    p = run_cli(["eval", "+agent.querylimit=3", f"hydra.run.dir={tmp_path}/b", "workers=1"], tmp_path)
    assert p.returncode == 2 and "unknown agent settings ['querylimit']" in p.stderr
    p = run_cli(["eval", "llm=oracle", "decomposer=llm", f"hydra.run.dir={tmp_path}/c", "workers=1"], tmp_path)
    assert p.returncode == 2 and "decomposer=llm needs an LLM endpoint" in p.stderr


def _kill_when(cmd, cwd, path, ready, timeout=120):
    proc = subprocess.Popen([sys.executable, "-m", "gitm", *cmd], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.time()
    try:
        while time.time() - t0 < timeout and proc.poll() is None:
            if path.exists() and ready(path):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.wait(timeout=30)
    return proc.returncode


def test_eval_resumes_after_sigkill_exactly(tmp_path):
    args = ["eval", "episodes=60", "workers=1", "chunk=1", "env.preset=paper"]
    full = run_cli(args + [f"hydra.run.dir={tmp_path}/full"], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "killed"
    log = run / "episodes.jsonl"
    rc = _kill_when(args + [f"hydra.run.dir={run}"], tmp_path, log,
                    lambda p: p.read_bytes().count(b"\n") >= 12)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = log.read_bytes().count(b"\n")
    assert 12 <= done_before < 60
    with open(log, "ab") as f:  # as if the kill tore the last line
        f.write(b'{"id": "diamond|59", "succ')
    again = run_cli(args + [f"hydra.run.dir={run}"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {done_before} episodes" in again.stdout + again.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert len(lines) == 60 and len({d["id"] for d in lines}) == 60
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b
    ra = sorted(json.loads(l)["seed"] for l in (tmp_path / "full" / "episodes.jsonl").read_text().splitlines())
    assert ra == sorted(d["seed"] for d in lines)


def test_learn_resumes_after_sigkill_with_identical_memory(tmp_path):
    args = ["learn", "goals=[stone_pickaxe]", "workers=1", "max_episodes=8", "snapshot_steps=[500,100000]"]
    full = run_cli(args + [f"hydra.run.dir={tmp_path}/full"], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "killed"
    mem = run / "memory.json"

    def two_keys(p):
        try:
            return len(json.loads(p.read_text())["extra"]["progress"]) >= 2
        except (ValueError, KeyError):
            raise AssertionError("memory.json was read half-written")  # atomic writes: never happens
    rc = _kill_when(args + [f"hydra.run.dir={run}"], tmp_path, mem, two_keys)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    n_keys = len(json.loads(mem.read_text())["extra"]["progress"])
    assert 2 <= n_keys < 7
    again = run_cli(args + [f"hydra.run.dir={run}"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    a = json.loads((tmp_path / "full" / "memory.json").read_text())
    b = json.loads(mem.read_text())
    assert a == b
    m = json.loads((run / "metrics.json").read_text())
    assert m["subgoals"] == 7 and m["summarised"] >= 1
    assert (run / "snapshots" / "memory_step500.json").exists()
