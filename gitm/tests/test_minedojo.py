"""The optional MineDojo adapter: a clear message when its requirements are missing; a smoke test when present."""

import pytest

from gitm.errors import GitmError


def test_missing_requirements_give_one_clear_message():
    from gitm.envs.minedojo import MineDojoEnv, requirements_problem

    problem = requirements_problem()
    if problem is None:
        pytest.skip("MineDojo, JDK 8 and a display are all present")
    assert problem.startswith("env=minedojo needs ") and "env=sim" in problem and "internet once" in problem
    with pytest.raises(GitmError, match="env=minedojo needs"):
        MineDojoEnv(0, {})


def test_minedojo_is_not_imported_by_the_package():
    import sys

    import gitm.cli  # noqa: F401
    import gitm.runtime  # noqa: F401  (imported to check it does not import minedojo)
    assert "minedojo" not in sys.modules


def test_minedojo_smoke():
    pytest.importorskip("minedojo")
    from gitm.actions import Action
    from gitm.envs.minedojo import MineDojoEnv, requirements_problem

    if requirements_problem():
        pytest.skip(requirements_problem())
    env = MineDojoEnv(0, {"image_size": [64, 64]}, step_limit=200)
    fb = env.step(Action("explore", {"object": "log", "strategy": "area"}))
    assert fb.state.inventory is not None
    env.close()
