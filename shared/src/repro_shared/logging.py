"""Rank-0 console logging, JSONL (+ TensorBoard) metrics and progress lines with throughput."""

from __future__ import annotations

import json
import logging as _pylogging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from . import dist

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def get_logger(name: str = "repro", out_dir: str | os.PathLike | None = None) -> _pylogging.Logger:
    """A logger that prints INFO on rank 0 and only warnings elsewhere.

    With ``out_dir`` rank 0 also appends to ``out_dir/log.txt``. Calling it again with the same
    name adds no duplicate handlers.
    """
    logger = _pylogging.getLogger(name)
    logger.setLevel(_pylogging.INFO if dist.is_main() else _pylogging.WARNING)
    logger.propagate = False
    if not any(getattr(h, "_repro_console", False) for h in logger.handlers):
        h = _pylogging.StreamHandler(sys.stdout)
        h.setFormatter(_pylogging.Formatter(_FORMAT, "%H:%M:%S"))
        h._repro_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if out_dir is not None and dist.is_main():
        log_file = str(Path(out_dir) / "log.txt")
        if not any(getattr(h, "baseFilename", None) == os.path.abspath(log_file) for h in logger.handlers):
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            fh = _pylogging.FileHandler(log_file)
            fh.setFormatter(_pylogging.Formatter(_FORMAT))
            logger.addHandler(fh)
    return logger


def _to_number(value: Any) -> Any:
    if hasattr(value, "item"):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsWriter:
    """Appends one JSON object per :meth:`log` call to ``out_dir/metrics.jsonl`` (rank 0 only).

    Scalars also go to TensorBoard when it is installed and ``tensorboard=True``.
    """

    def __init__(self, out_dir: str | os.PathLike, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.path = Path(out_dir) / filename
        self._active = dist.is_main()
        self._file = None
        self._tb = None
        if not self._active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tb"))
            except ImportError:
                self._tb = None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` (name -> scalar) at ``step``."""
        if not self._active:
            return
        row = {"step": int(step), "time": round(time.time(), 3)}
        row.update({k: _to_number(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a metrics JSONL file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(
    iterable: Iterable,
    *,
    desc: str = "",
    total: int | None = None,
    log: _pylogging.Logger | None = None,
    every_s: float = 10.0,
    items_per_step: int | None = None,
) -> Iterator:
    """Yield from ``iterable``, logging ``i/total``, steps/s (and items/s) and ETA every ``every_s`` s.

    Only rank 0 logs. ``items_per_step`` (e.g. the global batch size) adds an items/s column.
    """
    log = log or get_logger("repro")
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    start = last = time.perf_counter()
    i = 0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s or (total is not None and i == total):
            last = now
            rate = i / max(now - start, 1e-9)
            parts = [f"{desc} {i}" + (f"/{total}" if total else ""), f"{rate:.2f} it/s"]
            if items_per_step:
                parts.append(f"{rate * items_per_step:.1f} items/s")
            if total:
                parts.append(f"eta {max(total - i, 0) / rate:.0f}s")
            if dist.is_main():
                log.info(" | ".join(parts))
