"""The device check of a GPU session (a few minutes on one H200): the ``gpu`` tests, then the benchmarks.

    python benchmarks/gpu_check.py            # from the addp folder; prints one summary line at the end

1. ``pytest -m gpu tests``: the entry points' defaults on CUDA (loss finite, every parameter / buffer on the GPU),
   bf16 SDPA against the official fp32 math attention;
2. ``bench_addp.py`` on the tiny model (batch 64, fp32) and on the ViT-B-shaped model (batch 64, bf16, 20-step
   generation): images/s for training and sampling and the share of the step in the frozen tokenizer / teacher
   (goal: under 35 %).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("addp gpu-check: no CUDA device; nothing to check (GPU: not run)")
        return 0
    t0 = time.time()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                           cwd=HERE.parent, capture_output=True, text=True)
    print(tests.stdout[-2000:], tests.stderr[-2000:])
    rows = []
    for args in (["--variant", "tiny", "--batch", "64"], ["--variant", "base", "--batch", "64", "--dtype", "bf16"]):
        out = subprocess.run([sys.executable, str(HERE / "bench_addp.py"), "--device", "cuda", *args],
                             capture_output=True, text=True)
        print(out.stdout, out.stderr[-2000:])
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    step = {r["variant"]: r for r in rows if r["bench"] == "train_step"}
    gen = {r["variant"]: r for r in rows if r["bench"] == "generation"}
    base = step.get("base", {})
    print(f"addp gpu-check: tests {'passed' if tests.returncode == 0 else 'FAILED'} | "
          f"ViT-B train {base.get('images_per_s', float('nan')):.1f} img/s, frozen share "
          f"{base.get('frozen_share', float('nan')):.2f} | ViT-B 20-step sampling "
          f"{gen.get('base', {}).get('images_per_s', float('nan')):.1f} img/s | {time.time() - t0:.0f} s")
    return tests.returncode or (0 if len(rows) == 8 else 1)


if __name__ == "__main__":
    sys.exit(main())
