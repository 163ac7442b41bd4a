"""What each entry point does, from a resolved config: build, (resume,) run the engine, write metrics."""

from .classify import run_classifier, run_eval
from .convert import run_convert
from .dense import run_detection, run_segmentation
from .fewshot import run_fewshot
from .pretrain import run_pretrain

__all__ = ["run_classifier", "run_eval", "run_convert", "run_detection", "run_segmentation", "run_fewshot",
           "run_pretrain"]
