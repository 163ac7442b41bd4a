"""Utilities shared by the paper packages of this monorepo.

Modules (import them explicitly, each is small and has one job):

- :mod:`repro_shared.dist` -- process-group initialisation from torchrun / SLURM / DeepSpeed
  environments, rank helpers, model wrapping for DDP, FSDP2 and DeepSpeed ZeRO.
- :mod:`repro_shared.checkpoint` -- atomic, verified training checkpoints, auto-resume, and a
  remapping loader for official weights.
- :mod:`repro_shared.logging` -- rank-0 console logger, JSONL/TensorBoard metrics, progress lines.
- :mod:`repro_shared.run` -- what every Hydra entry point does first: output folder, resolved
  config, seeding, device choice, final ``metrics.json``.
- :mod:`repro_shared.toydata` -- the embedded default datasets (sklearn digits, procedural shapes
  in COCO format).
"""

__version__ = "0.1.0"
