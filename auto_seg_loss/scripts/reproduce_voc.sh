#!/usr/bin/env bash
# PASCAL VOC 2012 val, DeepLabv3+ R101-D8 (spec §4 table): cross-entropy + the six metric-specific
# Auto Seg-Loss models, each 10k iterations on 4 GPUs x 8 images.
# Usage: VOC_ROOT=/data/VOCdevkit/VOC2012 R101_V1C=/weights/resnet101_v1c-e67eebb6.pth bash scripts/reproduce_voc.sh
# (R101_V1C: https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth, loaded as it is;
#  `asl-convert-backbone <file> <out> --backbone resnet101` checks it offline first)
set -euo pipefail
: "${VOC_ROOT:?set VOC_ROOT to the VOC2012 folder (JPEGImages, SegmentationClass[Aug], ImageSets)}"
: "${R101_V1C:?set R101_V1C to the ImageNet ResNet-101-V1c weights (open-mmlab://resnet101_v1c)}"
NGPU=${NGPU:-4}
for exp in voc_ce voc_miou voc_fwiou voc_macc voc_gacc voc_biou voc_bf1; do
  torchrun --nproc_per_node="$NGPU" --no-python asl-train experiment="$exp" data.root="$VOC_ROOT" \
    init.path="$R101_V1C" hydra.run.dir="outputs/voc/$exp"
done
python - <<'PY'
import json, pathlib
for d in sorted(pathlib.Path("outputs/voc").iterdir()):
    print(d.name, json.loads((d / "metrics.json").read_text()))
PY
