"""Official De-focus Mamba checkpoints -> this package's state-dict names.

Our names equal the official classification names (spec §2.2), so the map is short:
* checkpoint containers ``{"model": ..., "model_ema": ...}`` -> pick one (the 22k->1k tool uses EMA);
* ``module.`` (DDP) and ``backbone.`` (mmdet detector) prefixes are stripped;
* detection renames ``patch_embed.proj`` to ``patch_embed.projection`` (tools/convert_cls_to_det.py),
  mapped back here;
* IN-22k heads (21,841 classes) can be sliced to IN-1k with ``map22kto1k`` indices (tools/convert_22k_to_1k.py).

Files are read with ``repro_shared.checkpoint.load_external`` (``torch.load(weights_only=True)``): no code in
a downloaded file can run. The official training containers hold, besides tensors, a yacs ``CfgNode``
(``config``), and possibly numpy scalars (accuracies) and an ``argparse.Namespace``; exactly these types are
allowed (:data:`OFFICIAL_SAFE_GLOBALS`; the ``CfgNode`` is rebuilt as a plain ``OrderedDict`` through the
stand-in :class:`OfficialConfigNode`, so yacs need not be installed). Anything else is refused with
``UntrustedCheckpointError`` naming the file and the type; ``trust_checkpoint=true`` is the explicit opt-in
to full unpickling.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from repro_shared import checkpoint

__all__ = ["OFFICIAL_RENAME", "OFFICIAL_SAFE_GLOBALS", "OfficialConfigNode", "read_official",
           "convert_official_state_dict", "slice_22k_heads_to_1k", "load_official"]


class OfficialConfigNode:
    """Weights-only stand-in for yacs' ``CfgNode`` (a dict subclass) stored in official checkpoints as ``config``.

    Unpickling "creates" it through ``__new__``, which returns a plain ``OrderedDict`` (the one mapping type the
    weights-only unpickler lets receive items and attribute state), so the config comes back as nested data
    and no yacs code runs.
    """

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


def _numpy_scalar_globals() -> list:
    try:
        from numpy.core.multiarray import scalar
    except ImportError:  # numpy >= 2
        from numpy._core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")]
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtypes]


OFFICIAL_SAFE_GLOBALS = [(OfficialConfigNode, "yacs.config.CfgNode"), argparse.Namespace, *_numpy_scalar_globals()]

OFFICIAL_STRIP_PREFIXES = ("module.", "backbone.")
OFFICIAL_RENAME = [(r"^patch_embed\.projection\.", "patch_embed.proj.")]


def _pick(obj: Mapping, use_ema: bool) -> Mapping[str, Tensor]:
    key = "model_ema" if use_ema else "model"
    if key in obj and isinstance(obj[key], Mapping):
        return obj[key]
    if use_ema:
        raise KeyError("use_ema=True but the checkpoint has no 'model_ema' entry")
    return checkpoint.extract_state_dict(obj)


def convert_official_state_dict(obj: Mapping, use_ema: bool = False) -> dict[str, Tensor]:
    """Official checkpoint (container or flat state dict) -> our state dict."""
    sd = _pick(obj, use_ema)
    return checkpoint.remap_keys(sd, strip_prefixes=OFFICIAL_STRIP_PREFIXES, rename=OFFICIAL_RENAME)


def slice_22k_heads_to_1k(state_dict: dict[str, Tensor], indices: Sequence[int]) -> dict[str, Tensor]:
    """Keep the 1,000 IN-1k rows of the final layers of both MLP heads (``head.2``, ``head2.2``)."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    out = dict(state_dict)
    for head in ("head.2", "head2.2"):
        for p in ("weight", "bias"):
            key = f"{head}.{p}"
            if key in out:
                out[key] = out[key][idx]
    return out


def read_official(path: str | Path, trust_checkpoint: bool = False):
    """The unpickled content of an official (or our) checkpoint file, read without running code.

    Raises:
        repro_shared.checkpoint.CheckpointError: the file is missing or unreadable.
        repro_shared.checkpoint.UntrustedCheckpointError: it holds a type outside :data:`OFFICIAL_SAFE_GLOBALS`
            (the message names the file and the type); ``trust_checkpoint=True`` loads it with full pickle.
    """
    return checkpoint.load_external(Path(path), trust=trust_checkpoint, safe_globals=OFFICIAL_SAFE_GLOBALS)


def load_official(model: nn.Module, path: str | Path, use_ema: bool = False, strict: bool = True,
                  trust_checkpoint: bool = False):
    """Load an official ``.pth`` (or one of our checkpoints) into ``model``; returns repro_shared's LoadReport.

    Raises: as :func:`read_official`; ``CheckpointError`` with ``strict`` when keys or shapes do not fit.
    """
    sd = convert_official_state_dict(read_official(path, trust_checkpoint), use_ema=use_ema)
    return checkpoint.load_state_dict_remapped(model, sd, strict=strict)
