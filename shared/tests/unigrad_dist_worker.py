"""Worker for test_ssl_dense_unigrad: rank r of 2 (env RANK/WORLD_SIZE/MASTER_*) holds rows r::2 of one batch.

Writes ``{loss, grad, corr}`` of its rows with the all-reduced ``F`` to ``OUT.<rank>.pt``.
"""

import sys

import torch
import torch.distributed as tdist

from repro_shared.ssl.dense_unigrad import dense_unigrad_terms

if __name__ == "__main__":
    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    g = torch.Generator().manual_seed(0)
    pred_all, target_all = torch.randn(2, 6, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    pred = pred_all[rank].clone().requires_grad_(True)
    terms = dense_unigrad_terms(pred, target_all[rank], 0.5)
    terms.loss.backward()
    torch.save({"loss": terms.loss.detach(), "grad": pred.grad, "corr": terms.correlation}, f"{sys.argv[1]}.{rank}.pt")
    tdist.destroy_process_group()
