"""Differences between two resolved run configs: whether a run folder's checkpoint (or search state) may be
continued by the current command, and why a checkpoint does not fit the detector being built."""

from __future__ import annotations

from typing import Any

# Config keys that may differ between a run and its continuation (paths on another machine, logging,
# checkpoint cadence, evaluation); every other key must match for ``train.resume=auto`` to continue a run.
RESUME_MAY_CHANGE = ("device", "train.resume", "train.num_workers", "train.log_every", "train.ckpt_every",
                     "train.ckpt_every_steps", "train.keep_last", "eval.", "data.root", "data.train_ann",
                     "data.train_images", "data.val_ann", "data.val_images", "data.skip_corrupt", "init.path")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key: <current> here, <saved> saved"`` for every leaf that differs between two plain configs
    (keys equal to or starting with an entry of ``ignore`` are skipped)."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if not any(k == i or k.startswith(i) for i in ignore) and a.get(k) != b.get(k))
    return [f"{k}: {b.get(k)!r} here, {a.get(k)!r} saved" for k in keys]
