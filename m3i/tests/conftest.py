"""Test setup: Triton kernels run under the interpreter when there is no GPU, and the benchmarks folder (the
literal official DCNv3 formulation) and the test helpers are importable.

TRITON_INTERPRET must be set before ``triton.jit`` decorates the kernels, i.e. before
``m3i.ops.dcnv3_triton_kernels`` is imported, so it is set here at collection time.
"""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers shared by test files (official_layout, ...)
