"""Test setup: one thread per process (the machine is shared), small shared helpers."""

import torch

torch.set_num_threads(1)
