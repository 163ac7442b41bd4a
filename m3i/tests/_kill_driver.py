"""Run an m3i console entry point and SIGKILL the process right after its N-th optimizer step.

Usage: ``python _kill_driver.py KILL_AFTER ENTRY [hydra overrides...]`` (``KILL_AFTER`` 0 = never kill); ``ENTRY``
is a function of ``m3i.cli`` (``pretrain``, ``finetune``, ``linprobe``). The kill comes from a global optimizer-step
hook, so it lands after an exact, reproducible step (in the middle of an epoch when the test asks for it).
"""

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook


def main() -> None:
    kill_after, entry, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    steps = 0

    def hook(optimizer, args, kwargs):
        nonlocal steps
        steps += 1
        if steps == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    if kill_after:
        register_optimizer_step_post_hook(hook)
    sys.argv = [f"m3i-{entry}", *overrides]
    from m3i import cli

    getattr(cli, entry)()


if __name__ == "__main__":
    main()
