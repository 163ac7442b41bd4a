#!/usr/bin/env bash
# Paper §4 resolution transfer: De-focus Mamba-Base trained at 224 px, tested at 336 px without fine-tuning -> 81.6.
# WEIGHTS: the official defocus_mamba_base_cls.pth (OFFICIAL=true) or our in1k_base checkpoint (OFFICIAL=false).
# The 336 px scale factors (2.25 / 1.5) are our reading of the paper's rule (not stated): see the README.
set -euo pipefail
DATA=${DATA:?set DATA=/path/to/imagenet}
WEIGHTS=${WEIGHTS:?set WEIGHTS=/path/to/defocus_mamba_base_cls.pth or outputs/in1k_base/checkpoints/ckpt_<step>.pt}
defocus-eval experiment=in1k_base_res336 data.root="$DATA" init.path="$WEIGHTS" eval.official="${OFFICIAL:-true}" \
  hydra.run.dir="${OUT:-outputs/in1k_base_res336}"
