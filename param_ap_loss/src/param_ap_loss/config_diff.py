"""Which config keys a run may change when it continues in its folder (``train.resume=auto``, the search
state); the comparison itself is ``repro_shared.checkpoint.config_differences`` / ``check_same_run``."""

# Config keys that may differ between a run and its continuation (paths on another machine, logging,
# checkpoint cadence, evaluation); every other key must match for ``train.resume=auto`` to continue a run.
RESUME_MAY_CHANGE = ("device", "train.resume", "train.num_workers", "train.log_every", "train.ckpt_every",
                     "train.ckpt_every_steps", "train.keep_last", "eval.", "data.root", "data.train_ann",
                     "data.train_images", "data.val_ann", "data.val_images", "data.skip_corrupt", "init.path")
