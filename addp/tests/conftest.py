"""Test setup: one thread per process (the machine is shared), small shared helpers."""

import torch

torch.set_num_threads(1)

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # helpers (official_layout) under --import-mode=importlib
