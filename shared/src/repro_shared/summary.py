"""Print a table of what each demo run measured: ``repro-summary RUN_DIR [RUN_DIR ...]``.

Each run folder is named after its package and holds the ``metrics.json`` that the entry point
wrote (see :func:`repro_shared.run.write_metrics`); a folder without one is reported as failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summarize(run_dirs: list[Path], max_metrics: int = 8) -> tuple[str, bool]:
    """The markdown table and whether every run has its metrics."""
    rows = ["| package | status | metrics (measured on the embedded tiny data, not paper numbers) |", "| --- | --- | --- |"]
    all_ok = True
    for d in run_dirs:
        path = d / "metrics.json"
        if not path.is_file():
            all_ok = False
            rows.append(f"| {d.name} | FAILED (no metrics.json; see {d}/demo.log) | |")
            continue
        metrics = json.loads(path.read_text())
        scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
        scalars.sort(key=lambda kv: "/" in kv[0])  # headline metrics before per-class ones ("AP/car")
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in scalars[:max_metrics])
        more = f" (+{len(scalars) - max_metrics} more in {path})" if len(scalars) > max_metrics else ""
        rows.append(f"| {d.name} | ok | {shown}{more} |")
    return "\n".join(rows), all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    table, ok = summarize(args.run_dirs)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
