#!/usr/bin/env bash
# Cityscapes val transfer of the VOC-searched losses (setting unverified offline, spec §3.6):
# DeepLabv3+ R101-D8, 512x1024 crops, 40k iterations on 4 GPUs x 2 images.
# Usage: CITYSCAPES_ROOT=/data/cityscapes R101_V1C=/weights/resnet101_v1c.pth bash scripts/reproduce_cityscapes.sh
set -euo pipefail
: "${CITYSCAPES_ROOT:?set CITYSCAPES_ROOT (leftImg8bit/, gtFine/ with *_labelTrainIds.png)}"
: "${R101_V1C:?set R101_V1C to the ImageNet ResNet-101-V1c weights}"
NGPU=${NGPU:-4}
for exp in cityscapes_ce cityscapes_miou cityscapes_fwiou cityscapes_macc cityscapes_gacc cityscapes_biou cityscapes_bf1; do
  torchrun --nproc_per_node="$NGPU" --no-python asl-train experiment="$exp" data.root="$CITYSCAPES_ROOT" \
    init.path="$R101_V1C" hydra.run.dir="outputs/cityscapes/$exp"
done
