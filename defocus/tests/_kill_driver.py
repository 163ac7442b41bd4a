"""Run a defocus console entry point and SIGKILL the process right after its N-th optimizer step.

Usage: python _kill_driver.py KILL_AFTER ENTRY [hydra overrides...]   (KILL_AFTER 0 = never kill)
ENTRY is ``train`` (defocus.cli) or ``detect`` (defocus.detect). The kill comes from a global optimizer
step hook, so it lands at an exact, reproducible step, in the middle of an epoch if the test wants it.
"""

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook


def main() -> None:
    kill_after, entry, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    count = 0

    def hook(optimizer, args, kwargs):
        nonlocal count
        count += 1
        if count == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    if kill_after:
        register_optimizer_step_post_hook(hook)
    sys.argv = [entry, *overrides]
    if entry == "train":
        from defocus.cli import train as fn
    else:
        from defocus.detect import detect as fn
    fn()


if __name__ == "__main__":
    main()
