import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
PKG = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def knowledge():
    from gitm.knowledge.tables import Knowledge

    return Knowledge.default()
