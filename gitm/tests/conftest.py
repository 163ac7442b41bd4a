import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
PKG = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def knowledge():
    from gitm.knowledge.tables import Knowledge

    return Knowledge.default()


def run_cli(args, cwd, timeout=300):
    """Run a console entry point of this package in a fresh interpreter (as a user would)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "gitm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
