"""Shared test settings: tiny overrides of addp-train and config composition."""

from hydra import compose, initialize_config_module

SMALL = ["device=cpu", "data.limit=96", "tokenizer.train.epochs=1", "tokenizer.train.batch_size=32",
         "teacher.train.epochs=1", "teacher.train.batch_size=16", "train.epochs=2", "train.batch_size=16",
         "train.ckpt_every=4", "eval.num_samples=16", "eval.batch_size=16", "eval.steps=2",
         "eval.feature_net.epochs=1", "eval.feature_net.batch_size=32"]


def cfg_of(*overrides, name="train"):
    """The composed config ``name`` (train, generate, fid, convert, finetune, linprobe, det, seg)."""
    with initialize_config_module("addp.configs", version_base=None):
        return compose(name, overrides=list(overrides))
