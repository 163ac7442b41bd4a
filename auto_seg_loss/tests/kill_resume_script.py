"""Run ``asl-train`` or ``asl-search`` in this process and SIGKILL it after a given optimizer step.

``python kill_resume_script.py {train|search} KILL_AFTER_STEP override...``: the config is composed from the
overrides (as the console scripts would); with ``KILL_AFTER_STEP >= 0`` the process sends itself SIGKILL
right after that many SGD steps (counted over all trainings of the process: for the search, the proxy
trainings of all rewards), i.e. in the middle of an epoch / of a proxy training, with no chance to clean up.
"""

import os
import signal
import sys

import torch

from auto_seg_loss.cli import compose, run_search, run_train


def main(entry: str, kill_after: int, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    if kill_after >= 0:
        step, done = torch.optim.SGD.step, [0]

        def counting_step(self, *args, **kwargs):
            out = step(self, *args, **kwargs)
            done[0] += 1
            if done[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        torch.optim.SGD.step = counting_step
    if entry == "train":
        run_train(compose("train", overrides))
    else:
        run_search(compose("search", overrides))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
