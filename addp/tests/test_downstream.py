"""addp-finetune / addp-linprobe on the tiny encoder: start from an addp-train run, train, evaluate, resume."""

import json

import pytest
import torch

from addp.cli import run_finetune, run_linprobe
from addp.models.vit import build_vit
from addp.weights import load_vit_backbone
from repro_shared.checkpoint import CheckpointError

from helpers import cfg_of

TINY = ["device=cpu", "data.limit=128", "train.epochs=2", "train.batch_size=32", "eval.batch_size=128"]


def test_encoder_loads_into_the_finetune_vit_key_by_key(chain):
    root, _, _ = chain
    vit = build_vit("vit_tiny", 10)
    assert sorted(load_vit_backbone(vit, root / "run1")) == ["fc_norm.bias", "fc_norm.weight", "head.bias",
                                                                "head.weight"]
    stages = json.loads((root / "run1" / "stages.json").read_text())
    sd = torch.load(stages["addp"], weights_only=True)["model"]
    assert torch.equal(vit.blocks[3].mlp.fc2.weight, sd["blocks.3.mlp.fc2.weight"])
    kept = build_vit("vit_tiny", 10, keep_tokenizer_norm=True)
    load_vit_backbone(kept, root / "run1", keep_tokenizer_norm=True)
    assert torch.equal(kept.norm_pre.weight, sd["tokenizer_norm.weight"])
    with pytest.raises(CheckpointError, match="does not fit the ViT"):
        load_vit_backbone(build_vit("vit_tiny", 10, img_size=32).__class__(  # a ViT of another width
            img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=4, num_classes=10, global_pool="avg"),
            root / "run1")
    with pytest.raises(ValueError, match="unknown ViT variant 'vit_h'"):
        build_vit("vit_h", 10)


def test_finetune_and_linprobe_from_the_chain(chain, tmp_path):
    root, _, _ = chain
    official_aug = ["aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.re_prob=0.25", "aug.mixup=0.8", "aug.cutmix=1.0"]
    ft = run_finetune(cfg_of(*TINY, *official_aug, f"init.path={root}/run1", f"+output_dir={tmp_path}/ft",
                             name="finetune"))
    assert 0.0 <= ft["top1"] <= 100.0 and ft["max_top1"] >= ft["top1"]
    rows = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val_top1" in r] == [0, 1]
    lp = run_linprobe(cfg_of(*TINY, f"init.path={root}/run1", f"+output_dir={tmp_path}/lp", name="linprobe"))
    assert 0.0 <= lp["top1"] <= 100.0
    # a finished run started again resumes after its last step and reports the same result
    again = run_linprobe(cfg_of(*TINY, f"init.path={root}/run1", f"+output_dir={tmp_path}/lp", name="linprobe"))
    assert again["top1"] == pytest.approx(lp["top1"]) and again["max_top1"] == pytest.approx(lp["max_top1"])


def test_linprobe_trains_only_the_head(chain, tmp_path, monkeypatch):
    from addp.downstream import classify

    seen = {}
    real = classify.train_loop

    def spy(**kw):
        seen["trainable"] = [n for n, p in kw["model"].named_parameters() if p.requires_grad]
        seen["before"] = {n: p.detach().clone() for n, p in kw["model"].named_parameters()}
        out = real(**kw)
        seen["after"] = {n: p.detach().clone() for n, p in kw["model"].named_parameters()}
        return out

    monkeypatch.setattr(classify, "train_loop", spy)
    root, _, _ = chain
    run_linprobe(cfg_of(*TINY, "train.epochs=1", f"init.path={root}/run1", f"+output_dir={tmp_path}/lp1",
                        name="linprobe"))
    assert seen["trainable"] == ["head.1.weight", "head.1.bias"]
    changed = {n for n in seen["before"] if not torch.equal(seen["before"][n], seen["after"][n])}
    assert changed == {"head.1.weight", "head.1.bias"}


def test_detection_and_segmentation_transfer(chain, tmp_path):
    from addp.cli import run_det, run_seg

    root, _, _ = chain
    small = ["device=cpu", "data.num_train=16", "data.num_val=8", "train.epochs=1", "train.batch_size=8",
             f"init.path={root}/run1", f"data.root={tmp_path}/shapes"]
    det = run_det(cfg_of(*small, f"+output_dir={tmp_path}/det", name="det"))
    assert {"bbox_AP", "segm_AP", "train_loss_classifier"} <= set(det) and 0.0 <= det["bbox_AP"] <= 100.0
    seg = run_seg(cfg_of(*small, f"+output_dir={tmp_path}/seg", name="seg"))
    assert 0.0 <= seg["mIoU"] <= 100.0 and seg["train_loss_seg"] > 0
    with pytest.raises(ValueError, match="unknown data.name 'voc'; known: shapes, ade20k"):
        run_seg(cfg_of(*small, "data.name=voc", f"+output_dir={tmp_path}/bad", name="seg"))


def test_linprobe_default_lr_moves_the_lars_head(chain, tmp_path):
    """LARS scales each step by 0.001 x ||w|| / ||g||: the CPU demo's few steps need a large lr, or the head stays
    at its initialisation (top1 at chance). Between step 1 and step 4 the head weight moves by more than 5 %."""
    root, _, _ = chain
    out = tmp_path / "lp"
    run_linprobe(cfg_of(*TINY, "train.ckpt_every=1", "train.keep_last=10", f"init.path={root}/run1",
                        f"+output_dir={out}", name="linprobe"))
    w = {s: torch.load(out / "checkpoints" / f"ckpt_{s:09d}.pt", weights_only=False)["model"]["head.1.weight"]
         for s in (1, 8)}
    assert ((w[8] - w[1]).norm() / w[1].norm()).item() > 0.05
