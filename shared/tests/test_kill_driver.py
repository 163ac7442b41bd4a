"""repro_shared.testing: the SIGKILL-at-step driver the packages' exact-resume tests use."""

import subprocess
import sys

import pytest

from repro_shared.testing import main


@pytest.mark.parametrize("argv", [[], ["x", "m:f"], ["3", "no_colon"]])
def test_usage_errors(argv):
    with pytest.raises(SystemExit, match="usage: python -m repro_shared.testing KILL_AFTER MODULE:FUNCTION"):
        main(argv)


def test_kills_right_after_the_nth_optimizer_step(tmp_path):
    mod = tmp_path / "tiny_entry.py"
    mod.write_text(
        "import sys, torch\n"
        "def run():\n"
        "    p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=1.0)\n"
        "    for i in range(5):\n"
        "        p.grad = torch.ones(1); opt.step(); print('step', i + 1, sys.argv[1:], flush=True)\n")
    run = lambda n: subprocess.run([sys.executable, "-m", "repro_shared.testing", str(n), "tiny_entry:run", "a=1"],
                                   cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                   env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    killed = run(3)
    assert killed.returncode == -9 and killed.stdout.splitlines() == ["step 1 ['a=1']", "step 2 ['a=1']"]
    full = run(0)
    assert full.returncode == 0 and len(full.stdout.splitlines()) == 5
