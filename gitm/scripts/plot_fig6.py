"""Plot diamond success against learning steps from gitm-eval results (needs matplotlib):
``python scripts/plot_fig6.py outputs/gitm-eval [out.png]``."""

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

root = Path(sys.argv[1])
points = []
for res in root.glob("run_*/results.json"):
    r = json.loads(res.read_text())
    mem = r.get("memory")
    steps = 0 if not mem else json.loads(Path(mem).read_text()).get("extra", {}).get("steps_threshold")
    if steps is not None:
        points.append((max(steps, 1), r["summary"]["diamond"]))
points.sort()
plt.semilogx([p[0] for p in points], [p[1] for p in points], "o-")
plt.xlabel("environment steps of memory learning")
plt.ylabel("ObtainDiamond success (%)")
plt.savefig(sys.argv[2] if len(sys.argv) > 2 else "fig6.png", dpi=120)
