"""Training checkpoints that are written atomically, verified on load, and resumed automatically.

A checkpoint is two files:

- ``ckpt_<step>.pt``: ``torch.save`` of the full training state, written to a temporary file,
  fsynced and renamed into place;
- ``ckpt_<step>.pt.done``: a small JSON commit marker with the byte size and SHA-256 of the ``.pt``,
  written (atomically) only after the ``.pt`` is complete.

A checkpoint without its marker (the writer was killed), or whose size or hash differ (truncated or
corrupted afterwards), is invalid: :func:`load_checkpoint` refuses it with :class:`CheckpointError`
and ``resume("auto")`` skips it and takes the newest valid one. Loading uses
``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from . import dist
from .fsio import atomic_open, atomic_write_text

FORMAT = "repro-shared/checkpoint-v1"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the objects it is loaded into."""


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """Canonical file name of the checkpoint at ``step`` inside ``directory``."""
    return Path(directory) / f"ckpt_{step:09d}.pt"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- RNG
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------- model/optimizer
def _is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _model_and_optim_state(model: nn.Module, optimizer) -> tuple[dict, dict | None]:
    """Full (unsharded, unwrapped) state dicts; FSDP2 models gather on every rank."""
    model = dist.unwrap_model(model)
    if _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(model, optimizer if optimizer is not None else [], options=opts)
        return msd, (osd if optimizer is not None else None)
    return model.state_dict(), (optimizer.state_dict() if optimizer is not None else None)


def _load_model_and_optim(model: nn.Module, optimizer, msd: dict, osd: dict | None) -> None:
    model = dist.unwrap_model(model)
    if _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=msd,
                       optim_state_dict=osd if optimizer is not None else {}, options=opts)
        return
    own = model.state_dict()
    missing = [k for k in own if k not in msd]
    unexpected = [k for k in msd if k not in own]
    mismatched = [k for k in own if k in msd and tuple(own[k].shape) != tuple(msd[k].shape)]
    if missing or unexpected or mismatched:  # check everything before touching any parameter
        raise CheckpointError(
            "checkpoint does not fit the model: "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}, shape-mismatched {mismatched[:10]}"
        )
    model.load_state_dict(msd)
    if optimizer is not None:
        if osd is None:
            raise CheckpointError("checkpoint has no optimizer state but an optimizer was given")
        optimizer.load_state_dict(osd)


def _plain_config(config: Any) -> Any:
    if config is None:
        return None
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return config


# ---------------------------------------------------------------------------------------- save
def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    step: int = 0,
    config: Any = None,
    extra: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write the full training state to ``path`` atomically, then its commit marker.

    Call it on every rank (FSDP2 gathers shards collectively); only rank 0 writes.

    Args:
        path: target file, usually :func:`checkpoint_path` ``(dir, step)``.
        scheduler, scaler: anything with ``state_dict()`` (torch or timm schedulers, GradScaler).
        config: the resolved run config (OmegaConf or plain), stored for reference.
        extra: further plain values to store (best metric, EMA state dict, ...).
        keep_last: if given, delete all but the newest ``keep_last`` checkpoints in the folder.
    """
    path = Path(path)
    msd, osd = _model_and_optim_state(model, optimizer)
    if dist.is_main():
        state = {
            "format": FORMAT,
            "model": msd,
            "optimizer": osd,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": int(epoch),
            "step": int(step),
            "rng": _rng_state(),
            "config": _plain_config(config),
            "extra": dict(extra or {}),
            "torch_version": str(torch.__version__),
        }
        marker = _marker(path)
        if marker.exists():  # overwriting: invalidate the old marker first
            marker.unlink()
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
        info = {"bytes": path.stat().st_size, "sha256": _sha256(path), "step": int(step), "epoch": int(epoch)}
        atomic_write_text(marker, json.dumps(info))
        if keep_last is not None:
            prune_checkpoints(path.parent, keep_last)
    dist.barrier()
    return path


def prune_checkpoints(directory: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints (by step) in ``directory``."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    for p in _candidates(Path(directory))[keep_last:]:
        for q in (_marker(p), p):
            q.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- load
def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete, uncorrupted checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    marker = _marker(path)
    if not marker.is_file():
        raise CheckpointError(
            f"checkpoint {path} is incomplete: its commit marker {marker.name} is missing "
            "(the writer was probably killed while saving); use an older checkpoint"
        )
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise CheckpointError(f"commit marker {marker} is unreadable: {e}") from e
    size = path.stat().st_size
    if size != info.get("bytes"):
        raise CheckpointError(
            f"checkpoint {path} is truncated or was modified: {size} bytes on disk, {info.get('bytes')} written"
        )
    if _sha256(path) != info.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match the one recorded when it was written")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Verify and load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Nothing is modified unless the file is complete and valid.

    Returns:
        The raw state dict (keys ``model``, ``optimizer``, ``epoch``, ``step``, ``config``, ``extra``, ...).
    """
    path = Path(path)
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a repro-shared training checkpoint (format {state.get('format')!r})")
    if model is not None:
        _load_model_and_optim(model, optimizer, state["model"], state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        _set_rng_state(state["rng"])
    return state


def _candidates(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest step first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


def find_latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Newest valid checkpoint in ``directory`` (invalid ones are reported and skipped), or None."""
    from .logging import get_logger

    for p in _candidates(Path(directory)):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as e:
            get_logger("repro_shared.checkpoint").warning("skipping invalid checkpoint: %s", e)
    return None


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}`` (a non-dict is one leaf under ``prefix`` without its dot)."""
    if not isinstance(tree, Mapping):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten_config(v, f"{prefix}{k}."))
    return out


def config_differences(saved: Mapping, current: Mapping, ignore: Iterable[str] = ()) -> list[str]:
    """``"key: <current> here, <saved> saved"`` for every leaf that differs between two plain (resolved) configs;
    keys equal to an entry of ``ignore``, or starting with an entry that ends in a dot (``"eval."``) or with
    ``entry + "."``, are skipped."""
    ignore = tuple(ignore)
    skip = lambda k: any(k == i or k.startswith(i if i.endswith(".") else i + ".") for i in ignore)
    a, b = flatten_config(saved), flatten_config(current)
    keys = sorted(k for k in set(a) | set(b) if not skip(k) and a.get(k) != b.get(k))
    return [f"{k}: {b.get(k)!r} here, {a.get(k)!r} saved" for k in keys]


def check_same_run(directory: str | os.PathLike, config: Mapping, may_change: Iterable[str] = (),
                   resume_key: str = "train.resume") -> Path | None:
    """The newest valid checkpoint in ``directory`` (None if there is none), after checking that it was written
    by a run with ``config`` (the current resolved config as plain dicts) up to the keys of ``may_change``
    (paths on another machine, logging, checkpoint cadence, ...). Call it before anything is written into the
    folder: continuing another run's checkpoint (another loss, model or schedule) under this run's name, or
    re-evaluating a finished one, is the mistake it catches. Only the config is read (``mmap``), not the tensors.

    Raises:
        ValueError: the checkpoint belongs to a run with another configuration; lists up to 8 differing keys and
            says how to go on (a new folder, ``resume_key=none``, or the checkpoint's path to start from it).
    """
    latest = find_latest_checkpoint(directory)
    if latest is None:
        return None
    saved = torch.load(latest, map_location="cpu", weights_only=True, mmap=True).get("config")
    diff = config_differences(saved, config, may_change) if isinstance(saved, Mapping) else []
    if diff:
        raise ValueError(f"{directory} holds a checkpoint of a run with another configuration "
                         f"({'; '.join(diff[:8])}{'; ...' if len(diff) > 8 else ''}): this output folder belongs to "
                         f"another run. Use a new folder (hydra.run.dir=...), {resume_key}=none to start over in it, "
                         f"or {resume_key}=<checkpoint path> to start from that checkpoint on purpose")
    return latest


def resume(directory: str | os.PathLike, spec: str | os.PathLike | None, **objects: Any) -> dict[str, Any] | None:
    """Resume training state according to ``spec``.

    Args:
        directory: the run's checkpoint folder (searched when ``spec == "auto"``).
        spec: ``None``/``""``/``"none"``: start fresh; ``"auto"``: newest valid checkpoint in
            ``directory`` if any; anything else: the path of one checkpoint, which must be valid.
        objects: ``model=``, ``optimizer=``, ``scheduler=``, ``scaler=`` as for :func:`load_checkpoint`.

    Returns:
        The loaded state, or None when there was nothing to resume.
    """
    if spec in (None, "", "none", "None"):
        return None
    if str(spec) == "auto":
        latest = find_latest_checkpoint(directory)
        return None if latest is None else load_checkpoint(latest, **objects)
    return load_checkpoint(spec, **objects)


# ------------------------------------------------------------------------- official weights
@dataclass
class LoadReport:
    """What :func:`load_state_dict_remapped` did."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"missing in file ({len(self.missing)}): {', '.join(self.missing[:20])}")
        if self.unexpected:
            lines.append(f"unexpected in file ({len(self.unexpected)}): {', '.join(self.unexpected[:20])}")
        for k, s_file, s_model in self.mismatched[:20]:
            lines.append(f"shape mismatch {k}: file {s_file} vs model {s_model}")
        return "\n".join(lines)


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded weights file (top level, or under model/state_dict/module)."""
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "module", "model_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        else:
            obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError("no tensors found in the weights file (looked at the top level and under model/state_dict/module)")
    return obj


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _is_pickle_stream(path: Path) -> bool:
    """True when ``path`` parses as a complete pickle (opcodes only, nothing is executed)."""
    import pickletools

    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure: not a pickle stream
        return False


class UntrustedCheckpointError(CheckpointError):
    """An external file holds pickled objects that weights-only loading refuses (it could run code)."""


def load_external(path: str | os.PathLike, *, trust: bool = False, safe_globals: Iterable[Any] = (),
                  map_location: str | torch.device = "cpu") -> Any:
    """Load a file that comes from outside this run (released weights, a download) without running code.

    Uses ``torch.load(weights_only=True)``; the types in ``safe_globals`` (for example
    ``argparse.Namespace`` in an official container) are allowed in addition to tensors and plain
    containers. With ``trust=True`` the file is unpickled in full: only for files whose source you trust.

    Raises:
        CheckpointError: the file is missing or cannot be read (truncated, corrupt, not a torch file).
        UntrustedCheckpointError: the file holds a pickled type that is not allowed; the message names the
            file, the refused type and the explicit opt-in (``trust_checkpoint=true``).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if trust:
        from .logging import get_logger

        get_logger("repro_shared.checkpoint").warning(
            "loading %s with full pickle (trust_checkpoint=true): it can run code on load", path)
        return torch.load(path, map_location=map_location, weights_only=False)  # trusted: explicit opt-in
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = _REFUSED_GLOBAL.search(str(e))
        if m is None and not _is_pickle_stream(path):  # a text file, random bytes: corrupt, not untrusted
            detail = str(e).rsplit("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0]
            raise CheckpointError(f"weights file {path} cannot be read (truncated, corrupt or not a torch file): "
                                  f"{detail}") from e
        refused = m.group(1) if m else "an unsupported object"
        raise UntrustedCheckpointError(
            f"{path} holds a pickled {refused}, which weights-only loading refuses because unpickling it can run "
            "code. If you trust the source of this file, load it with trust_checkpoint=true; otherwise get a "
            "weights-only copy of it") from e
    except Exception as e:  # noqa: BLE001 - any other failure means the file is unreadable
        raise CheckpointError(f"weights file {path} cannot be read (truncated, corrupt or not a torch file): {e}") from e


def load_weights_file(path: str | os.PathLike, *, trust: bool = False,
                      safe_globals: Iterable[Any] = ()) -> dict[str, torch.Tensor]:
    """Load an external weights file (e.g. officially released) as a flat tensor dict, safely.

    See :func:`load_external` for ``trust`` / ``safe_globals`` and the errors raised.
    """
    return extract_state_dict(load_external(path, trust=trust, safe_globals=safe_globals))


def remap_keys(
    state_dict: Mapping[str, torch.Tensor],
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Iterable[tuple[str, str]] = (),
    drop: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Apply prefix stripping, then regex renames (in order, ``re.sub``), then drop regexes."""
    prefixes, rules = tuple(strip_prefixes), [(re.compile(p), r) for p, r in rename]
    drops = [re.compile(d) for d in drop]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for pre in prefixes:
            if key.startswith(pre):
                key = key[len(pre):]
        for pat, repl in rules:
            key = pat.sub(repl, key)
        if any(d.search(key) for d in drops):
            continue
        out[key] = value
    return out


def load_state_dict_remapped(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Iterable[tuple[str, str]] = (),
    drop: Iterable[str] = (),
    strict: bool = False,
) -> LoadReport:
    """Load differently named weights into ``model`` and report what did not fit.

    Tensors whose remapped name exists in the model with the same shape are loaded; everything
    else is listed in the returned :class:`LoadReport`. With ``strict=True`` any missing,
    unexpected or mismatched key raises :class:`CheckpointError` and the model is left unchanged.
    """
    remapped = remap_keys(state_dict, strip_prefixes=strip_prefixes, rename=rename, drop=drop)
    own = dist.unwrap_model(model).state_dict()
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for key, value in remapped.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in remapped]
    report.loaded = sorted(usable)
    if strict and not report.ok:
        raise CheckpointError(f"weights do not match the model:\n{report}")
    dist.unwrap_model(model).load_state_dict(usable, strict=False)
    return report
