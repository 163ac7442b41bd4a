#!/usr/bin/env bash
# Paper Table 1: unconditional ImageNet-256 generation, FID / IS with torch-fidelity against the 50,000 val images
# (ViT-B/16: FID 8.9 IS 95.3; ViT-L/16: FID 7.6 IS 105.1; 20 cosine steps; ViT-L 256 linear steps: ablation).
# Usage: IMAGENET_VAL=/data/imagenet/val CKPT=addp-vit-base-16.pth VQGAN=vqgan_jax_strongaug.ckpt GPUS=8 \
#        bash scripts/reproduce_generation.sh [b|l|l256]
set -euo pipefail
IMAGENET_VAL=${IMAGENET_VAL:?set IMAGENET_VAL}; CKPT=${CKPT:?set CKPT}; VQGAN=${VQGAN:?set VQGAN}
GPUS=${GPUS:-8}
case "${1:-b}" in
  b) exp=generate/vit_b_cosine_T20; bs=$((64 / GPUS)) ;;
  l) exp=generate/vit_l_cosine_T20; bs=$((64 / GPUS)) ;;
  l256) exp=generate/vit_l_linear_T256; bs=$((512 / GPUS)) ;;
  *) echo "usage: $0 [b|l|l256]"; exit 2 ;;
esac
torchrun --nproc_per_node="$GPUS" "$(which addp-generate)" experiment=$exp model.path="$CKPT" \
  tokenizer.init.path="$VQGAN" generate.batch_size=$bs hydra.run.dir="outputs/$exp"
# reference set (written once: Resize 256 bilinear + CenterCrop 256 PNGs), then FID / IS
addp-fid fid.generated="outputs/$exp/images" fid.reference=outputs/imagenet_val_256 fid.prepare_from="$IMAGENET_VAL" \
  hydra.run.dir="outputs/$exp/fid"
