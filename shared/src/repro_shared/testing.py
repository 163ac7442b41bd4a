"""Kill a training entry point at an exact optimizer step, for exact-resume tests.

``python -m repro_shared.testing KILL_AFTER MODULE:FUNCTION [hydra overrides ...]`` runs ``MODULE.FUNCTION()``
(a Hydra entry point, e.g. ``sim.cli:pretrain``) with the overrides as its command line and sends the process
SIGKILL right after its ``KILL_AFTER``-th optimizer step (``0``: never). The kill comes from a global
optimizer-step hook, so it lands at a reproducible step, in the middle of an epoch when the test asks for it; what
the run wrote by then is all a resumed run finds, as after a real crash.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

__all__ = ["kill_after_steps", "main"]


def kill_after_steps(n: int):
    """Register a global optimizer-step hook that SIGKILLs this process right after the ``n``-th step (``n >= 1``);
    returns the hook handle (``.remove()`` to undo)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = 0

    def hook(optimizer, args, kwargs):
        nonlocal steps
        steps += 1
        if steps == n:
            os.kill(os.getpid(), signal.SIGKILL)

    return register_optimizer_step_post_hook(hook)


def main(argv: list[str] | None = None) -> None:
    """Command line of the module docstring.

    Raises:
        SystemExit: a usage error (missing arguments, ``KILL_AFTER`` not an integer, target not ``MODULE:FUNCTION``).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit() or ":" not in argv[1]:
        raise SystemExit("usage: python -m repro_shared.testing KILL_AFTER MODULE:FUNCTION [hydra overrides ...]")
    kill_after, target, overrides = int(argv[0]), argv[1], argv[2:]
    module, function = target.split(":", 1)
    fn = getattr(importlib.import_module(module), function)
    if kill_after:
        kill_after_steps(kill_after)
    sys.argv = [f"{module}:{function}", *overrides]
    fn()


if __name__ == "__main__":
    main()
