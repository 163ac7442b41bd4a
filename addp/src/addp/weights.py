"""Weight files: ours (written by ``addp-train`` / ``addp-convert``) and the official releases.

Our file is a ``repro_shared`` checkpoint (atomic, with a SHA-256 commit marker) whose ``extra`` holds
``kind`` ("tokenizer" | "teacher" | "addp") and ``build`` (the constructor arguments), so a file alone
rebuilds its module. Official files are read with ``torch.load(weights_only=True)``
(``repro_shared.checkpoint.load_external``; ``trust_checkpoint=true`` is the explicit opt-in for
containers with other pickled objects), converted (:mod:`addp.convert`) and loaded strictly into the
module the config describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from repro_shared import checkpoint
from repro_shared.checkpoint import CheckpointError

from .convert import (finetune_backbone_state_dict, load_strict, mage_state_dict, split_addp_state_dict,
                      vqgan_state_dict)
from .models.addp import ADDP, build_addp
from .models.mage import MAGE, build_mage
from .models.vqgan import VQGAN, VQGANConfig, build_vqgan

__all__ = ["KINDS", "save_weights", "read_weights", "build_from_record", "load_tokenizer", "load_teacher", "load_addp",
           "resolve_run_file", "load_vit_backbone"]

KINDS = ("tokenizer", "teacher", "addp")

_WHERE = {
    "tokenizer": "the official vqgan_jax_strongaug.ckpt (MAGE README, github.com/LTH14/mage) or a tokenizer "
                 "file written by addp-train (<cache_dir>/tokenizer-*/final.pt)",
    "teacher": "the official mage-vit{b,l}-1600.pth (MAGE README) or a teacher file written by addp-train "
               "(<cache_dir>/teacher-*/final.pt)",
    "addp": "the official addp-vit-{base,large}-16.pth (huggingface.co/Changyao/ADDP) or a model file written by "
            "addp-train (<cache_dir>/addp-*/final.pt)",
}


def save_weights(path: str | Path, module: nn.Module, kind: str, build: dict[str, Any], **extra: Any) -> Path:
    """Write ``module``'s weights with the arguments that rebuild it (atomic, verified on load)."""
    return checkpoint.save_checkpoint(path, model=module, extra={"kind": kind, "build": build, **extra})


def read_weights(path: str | Path | None, kind: str, *, trust: bool = False, key: str = "path") -> dict[str, Any]:
    """Read a weights file of ``kind``.

    Returns:
        ``{"ours": bool, "state_dict": dict, "build": dict | None, "extra": dict}``; for an official ADDP
        file ``state_dict`` is the whole official dict (split it with :func:`split_addp_state_dict`).

    Raises:
        FileNotFoundError: the path is unset or missing; the message says what file is expected and where
            to get it.
        repro_shared.checkpoint.CheckpointError: unreadable file, or one of ours of another kind.
        repro_shared.checkpoint.UntrustedCheckpointError: the file holds pickled objects that weights-only
            loading refuses (opt in with ``trust_checkpoint=true``).
    """
    if not path or not Path(str(path)).expanduser().is_file():
        state = "is not set" if not path else f"= {path!r} does not exist"
        raise FileNotFoundError(f"{kind} {key} {state}; expected {_WHERE[kind]}")
    path = Path(str(path)).expanduser()
    obj = checkpoint.load_external(path, trust=trust)
    if isinstance(obj, dict) and obj.get("format") == checkpoint.FORMAT:
        got = obj.get("extra", {}).get("kind")
        if got != kind:
            raise CheckpointError(f"{path} holds {got!r} weights, but a {kind} file was expected")
        return {"ours": True, "state_dict": obj["model"], "build": obj["extra"].get("build"), "extra": obj["extra"]}
    return {"ours": False, "state_dict": checkpoint.extract_state_dict(obj), "build": None, "extra": {}}


def build_from_record(kind: str, build: dict[str, Any]) -> nn.Module:
    """Rebuild a module from the ``build`` arguments stored in one of our files."""
    if kind == "tokenizer":
        return VQGAN(VQGANConfig(**build))
    if kind == "teacher":
        return MAGE(**build)
    return ADDP(**build)


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def load_tokenizer(path: str | Path | None, *, preset: str = "maskgit_f16_1024", overrides: dict | None = None,
                   trust: bool = False) -> VQGAN:
    """A frozen tokenizer from our file or the official checkpoint (``preset`` describes the latter).

    An official ADDP checkpoint also works: its ``vqgan.*`` tensors are used.
    """
    rec = read_weights(path, "tokenizer", trust=trust, key="tokenizer.path")
    if rec["ours"]:
        module = build_from_record("tokenizer", rec["build"])
        module.load_state_dict(rec["state_dict"])
        return _frozen(module)
    sd = rec["state_dict"]
    if any(k.startswith("vqgan.") for k in sd):
        sd = split_addp_state_dict(sd)["vqgan"]
    module = build_vqgan(preset, **(overrides or {}))
    load_strict(module, vqgan_state_dict(sd), "tokenizer", str(path))
    return _frozen(module)


def load_teacher(path: str | Path | None, *, variant: str, codebook_size: int, num_tokens: int,
                 trust: bool = False, **kwargs: Any) -> MAGE:
    """A frozen MAGE token predictor from our file or an official MAGE / ADDP checkpoint."""
    rec = read_weights(path, "teacher", trust=trust, key="teacher.path")
    if rec["ours"]:
        module = build_from_record("teacher", {**rec["build"], **kwargs})
        module.load_state_dict(rec["state_dict"])
        return _frozen(module)
    sd = rec["state_dict"]
    sd = split_addp_state_dict(sd)["token_predictor"] if any(k.startswith("token_predictor.") for k in sd) \
        else mage_state_dict(sd)
    module = build_mage(variant, codebook_size=codebook_size, num_tokens=num_tokens, **kwargs)
    load_strict(module, sd, "token predictor", str(path))
    return _frozen(module)


def load_addp(path: str | Path | None, *, variant: str, codebook_size: int, trust: bool = False,
              **kwargs: Any) -> ADDP:
    """An ADDP network from our file or an official ADDP checkpoint (weights only; in train mode)."""
    rec = read_weights(path, "addp", trust=trust, key="model.path")
    if rec["ours"]:
        module = build_from_record("addp", {**rec["build"], **kwargs})
        module.load_state_dict(rec["state_dict"])
        return module
    module = build_addp(variant, codebook_size=codebook_size, **kwargs)
    load_strict(module, split_addp_state_dict(rec["state_dict"])["model"], "ADDP", str(path))
    return module


def resolve_run_file(path: str | Path | None, stage: str = "addp") -> str | None:
    """``path`` itself, or, for an ``addp-train`` output folder, the final weights of its ``stage``
    (``stages.json``)."""
    if path and Path(str(path)).is_dir() and (Path(str(path)) / "stages.json").is_file():
        return json.loads((Path(str(path)) / "stages.json").read_text())[stage]
    return path


def load_vit_backbone(vit: nn.Module, path: str | Path, *, keep_tokenizer_norm: bool = False,
                      trust: bool = False) -> list[str]:
    """Load the ADDP encoder of ``path`` (ours, an official ADDP checkpoint, or ``addp-convert``'s
    ``vit_backbone.pt``) into a timm ViT built by :func:`addp.models.vit.build_vit`; the position table is
    resized to the ViT's grid.

    Returns:
        the ViT parameters that stay at their initialisation (``fc_norm.*`` and ``head.*``).

    Raises:
        CheckpointError: when anything else is missing, unexpected or of another shape (keys listed).
    """
    rec = read_weights(resolve_run_file(path), "addp", trust=trust, key="init.path")
    sd = rec["state_dict"] if rec["ours"] else split_addp_state_dict(rec["state_dict"])["model"]
    if keep_tokenizer_norm:  # a vit_backbone.pt export already names it norm_pre
        sd = {("tokenizer_norm." + k[len("norm_pre."):] if k.startswith("norm_pre.") else k): v for k, v in sd.items()}
    grid = vit.patch_embed.grid_size[0]
    backbone = finetune_backbone_state_dict(sd, keep_tokenizer_norm=keep_tokenizer_norm, new_grid=grid)
    report = checkpoint.load_state_dict_remapped(vit, backbone)
    fresh = [k for k in report.missing if k.startswith(("fc_norm.", "head."))]
    if report.unexpected or report.mismatched or len(fresh) != len(report.missing):
        raise CheckpointError(f"the ADDP encoder in {path} does not fit the ViT:\n{report}")
    return fresh
