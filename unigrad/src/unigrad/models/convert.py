"""Weights from outside: official UniGrad checkpoints -> our ``SiameseNet`` and -> a plain torchvision ResNet.

Official layout (``pretrainer.py`` saves ``{model, optimizer, scaler, step, epoch, F}``; ``model`` is the DDP
state dict): ``module.encoder.<i>.*`` with the Sequential indices 0 conv1, 1 bn1, 4-7 layer1-4;
``module.projector.<l>.<k>.*``; ``module.momentum_encoder.*``, ``module.momentum_projector.*``; ``F`` (C, C) or
None. Our ``SiameseNet`` keeps the same module tree, so "official -> ours" strips ``module.``; "-> torchvision"
renames the encoder's indices. Whether the released ``.pth`` files keep ``F`` / optimizer entries is unknown:
a full checkpoint and a bare state dict are both accepted. Every file is read with ``weights_only=True``
(``repro_shared.checkpoint.load_external``); full unpickling only with ``trust=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from repro_shared.checkpoint import CheckpointError, FORMAT, load_external, verify_checkpoint

__all__ = ["TORCHVISION_NAMES", "split_checkpoint", "official_to_ours", "encoder_state_dict", "to_torchvision_resnet",
           "load_encoder_weights"]

#: official encoder Sequential index -> torchvision ResNet attribute (2 relu, 3 maxpool, 8 avgpool hold no weights)
TORCHVISION_NAMES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def split_checkpoint(obj: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """``(model state dict, F or None)`` of a loaded file: an official checkpoint (``{"model": ..., "F": ...}``), our
    converted file (``{"model": ..., "loss_state": {"F": ...}}``), our training checkpoint (``extra.loss.F``) or a
    bare state dict.

    Raises:
        CheckpointError: no tensor dict found.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a dict of tensors or a checkpoint dict, got {type(obj).__name__}")
    if isinstance(obj.get("model"), dict):
        f = obj.get("F")
        if f is None and isinstance(obj.get("loss_state"), dict):
            f = obj["loss_state"].get("F")
        if f is None and isinstance(obj.get("extra"), dict) and isinstance(obj["extra"].get("loss"), dict):
            f = obj["extra"]["loss"].get("F")
        return obj["model"], f
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found (looked at the top level and under 'model')")
    return tensors, obj.get("F") if isinstance(obj.get("F"), torch.Tensor) else None


def official_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the DDP prefix ``module.``; the rest of the official names are ours.

    Raises:
        CheckpointError: no ``encoder.*`` key (not a UniGrad / SiameseNet state dict).
    """
    out = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if not any(k.startswith("encoder.") for k in out):
        raise CheckpointError("no 'encoder.*' / 'module.encoder.*' keys: not a UniGrad SiameseNet state dict "
                              f"(first keys: {list(out)[:5]})")
    return out


def encoder_state_dict(state_dict: dict[str, torch.Tensor], branch: str = "online") -> dict[str, torch.Tensor]:
    """The encoder's tensors with the ``encoder.`` (or ``momentum_encoder.``) prefix removed (official indices).

    Raises:
        ValueError: unknown ``branch``. CheckpointError: the branch is absent.
    """
    if branch not in ("online", "momentum"):
        raise ValueError(f"branch must be 'online' or 'momentum', got {branch!r}")
    prefix = "encoder." if branch == "online" else "momentum_encoder."
    sd = official_to_ours(state_dict)
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f"no '{prefix}*' keys in the state dict (the {branch} encoder is not in this file)")
    return out


def to_torchvision_resnet(state_dict: dict[str, torch.Tensor], branch: str = "online") -> dict[str, torch.Tensor]:
    """A torchvision ``resnet*`` state dict (``conv1.weight``, ``layer1.0.conv1.weight`` ...) without ``fc``:
    ``torchvision.models.resnet50().load_state_dict(sd, strict=False)`` then reports only ``fc.*`` missing.

    Raises:
        CheckpointError: an encoder key with an index that holds no torchvision weights.
    """
    out = {}
    for k, v in encoder_state_dict(state_dict, branch).items():
        idx, _, rest = k.partition(".")
        if idx not in TORCHVISION_NAMES:
            raise CheckpointError(f"encoder key {k!r} has index {idx}, which is not a torchvision ResNet module: "
                                  "format=torchvision needs a ResNet encoder (resnet18 / resnet50), not tiny_cnn; "
                                  "use format=ours")
        out[f"{TORCHVISION_NAMES[idx]}.{rest}"] = v
    return out


def load_encoder_weights(path: str | os.PathLike, *, branch: str = "online", trust: bool = False
                         ) -> dict[str, torch.Tensor]:
    """Encoder weights (official Sequential indices) from any of: our training checkpoint (verified against its
    commit marker when present), a file written by ``unigrad-convert``, an official checkpoint, a bare state dict.

    Raises:
        CheckpointError / UntrustedCheckpointError: unreadable file, or a pickled type refused (see
            ``repro_shared.checkpoint.load_external``; ``trust=True`` is the explicit opt-in), or a file without
            the encoder (the message names the file).
    """
    path = Path(path)
    if Path(str(path) + ".done").is_file():
        verify_checkpoint(path)
    obj = load_external(path, trust=trust)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = {"model": obj["model"]}
    try:
        sd, _ = split_checkpoint(obj)
        return encoder_state_dict(sd, branch)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}; expected a unigrad-train checkpoint, a unigrad-convert format=ours "
                              "file or an official UniGrad checkpoint") from e
