"""Test setup: run Triton kernels under the interpreter when there is no GPU.

TRITON_INTERPRET must be set before ``triton.jit`` decorates the kernels, i.e. before
``defocus.ops.selective_scan_triton`` is imported, so it is set here at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
