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
- :mod:`repro_shared.data` -- exactly resumable loaders (per-sample and per-step seeds), image readers
  that name bad files; :mod:`repro_shared.guards` -- non-finite loss checks naming step and term.
- :mod:`repro_shared.ops` -- multi-scale deformable attention (reference + Triton).
- :mod:`repro_shared.ssl`, :mod:`repro_shared.dense`, :mod:`repro_shared.finetune` -- pieces two SSL
  packages share: masking, two-view geometry, momentum schedules; ViT detection/segmentation heads;
  the fine-tuning / linear-probe recipe.
- :mod:`repro_shared.fsio`, :mod:`repro_shared.summary` -- atomic writes and ``repro-summary``; the only
  modules without torch (the core install has no torch; the ``torch`` / ``dense`` extras add it).
"""

__version__ = "0.1.0"
