"""Entry points end to end on tiny sizes: probes, exact resume after SIGKILL mid-epoch, NaN stop, lr offsets,
bad inputs, fine-tuning / linear probing from a pre-training checkpoint, conversion."""

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from official_layout import official_layout

from repro_shared.checkpoint import CheckpointError, load_checkpoint, verify_checkpoint
from repro_shared.guards import NonFiniteError
from m3i.models.m3i import M3IModel

TINY = ["model.overrides.embed_dim=32", "model.overrides.num_heads=2", "+model.overrides.depth=1", "model.global_dim=32",
        "model.pool_heads=2", "model.decoder_dim=32", "model.decoder_heads=2", "model.predictor_depth=1",
        "model.text.width=32", "model.text.depth=1", "model.text.heads=2", "data.sources.0.limit=48",
        "train.batch_size=16", "train.epochs=2", "probe.enabled=false", "train.log_every=1"]
TINY_FT = ["model.overrides.embed_dim=32", "model.overrides.num_heads=2", "+model.overrides.depth=1", "data.limit=32",
           "train.batch_size=16", "train.epochs=2", "train.log_every=1"]


def compose_cfg(name, overrides, out):
    with initialize_config_module("m3i.configs", version_base=None):
        return compose(name, overrides=[*overrides, f"+output_dir={out}"])


def run_cli(entry, out, overrides, kill_after=0):
    return subprocess.run([sys.executable, "-m", "repro_shared.testing", str(kill_after), f"m3i.cli:{entry}",
                           f"hydra.run.dir={out}", *overrides],
                          capture_output=True, text=True, timeout=900)


def records(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], tuple(sorted(k for k in r if k != "time"))): {k: v for k, v in r.items() if k != "time"}
            for r in rows}


def final_state(out, step):
    return torch.load(out / "checkpoints" / f"ckpt_{step:09d}.pt", weights_only=True)["model"]


def check_exact_resume(tmp_path, entry, overrides, kill_after, iters, last):
    """Run A uninterrupted (in this process), run B as a subprocess SIGKILLed after ``kill_after`` optimizer steps,
    then B again with the same config (in this process, ``train.resume=auto``); returns B's resume step."""
    from m3i.tasks.classify import run_classifier
    from m3i.tasks.pretrain import run_pretrain

    def in_process(out):
        cfg = compose_cfg(entry, overrides, out)
        return run_pretrain(cfg) if entry == "pretrain" else run_classifier(cfg, entry)

    a, b = tmp_path / "uninterrupted", tmp_path / "killed"
    in_process(a)
    pb = run_cli(entry, b, overrides, kill_after)
    assert pb.returncode == -9, pb.stdout[-3000:] + pb.stderr[-3000:]
    steps = sorted(int(p.name[5:14]) for p in (b / "checkpoints").glob("ckpt_*.pt"))
    assert steps[-1] < kill_after and steps[-1] % iters, f"the newest checkpoint must lie inside an epoch: {steps}"
    in_process(b)
    assert f"resumed from step {steps[-1]}" in (b / "log.txt").read_text()
    wa, wb = final_state(a, last), final_state(b, last)
    assert wa.keys() == wb.keys()
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert diff == 0.0, f"final weights differ by {diff}"
    ra = records(a)
    for key, rec in records(b).items():  # every logged record (steps and epochs after the kill included) is identical
        assert ra[key] == rec, (key, ra[key], rec)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    return steps[-1]


def test_pretrain_resume_after_sigkill_mid_epoch_is_exact(tmp_path):
    """3 epochs of 3 steps, a checkpoint every 2 steps; killed after step 5, resumed from step 4 (epoch 1, batch 1):
    the same final weights (EMA target included) and the same logged losses, momentum and lr."""
    over = [*TINY, "train.epochs=3", "train.checkpoint_every=2"]
    assert check_exact_resume(tmp_path, "pretrain", over, kill_after=5, iters=3, last=9) == 4


@pytest.mark.slow
def test_finetune_resume_after_sigkill_mid_epoch_is_exact(tmp_path):
    """Fine-tuning with Mixup/CutMix, RandAugment, random erasing and drop path, InternImage-style EMA."""
    over = [*TINY_FT, "train.epochs=3", "train.checkpoint_every=1", "train.ema=0.99"]
    assert check_exact_resume(tmp_path, "finetune", over, kill_after=4, iters=2, last=6) == 3


def test_pretrain_writes_probes_and_a_nan_prediction_stops_with_the_step_and_term(tmp_path, monkeypatch):
    from m3i.tasks.pretrain import run_pretrain

    cfg = compose_cfg("pretrain", [*TINY, "train.epochs=1", "probe.enabled=true", "probe.limit=60"], tmp_path / "ok")
    res = run_pretrain(cfg)
    for key in ("probe_class_top1", "probe_attr_top1", "probe_dense_miou", "probe_mean", "retrieval_r1",
                "train_loss_intra", "train_loss_inter", "train_loss_cls", "train_loss_txt"):
        assert key in res and res[key] == res[key], key
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["probe_mean"] == pytest.approx(res["probe_mean"])

    forward = M3IModel.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step's inter-view prediction diverges
            out = out._replace(pred_inter=out.pred_inter.clone().fill_(float("nan")))
        return out

    monkeypatch.setattr(M3IModel, "forward", poisoned)
    cfg = compose_cfg("pretrain", [*TINY, "train.checkpoint_every=1"], tmp_path / "nan")
    with pytest.raises(NonFiniteError, match=r"'loss_inter' = nan .* at step 2 \(epoch 0\)"):
        run_pretrain(cfg)
    ckpts = sorted((tmp_path / "nan" / "checkpoints").glob("ckpt_*.pt"))
    assert [p.name for p in ckpts][-1] == "ckpt_000000002.pt"  # the last good checkpoint is intact and newest
    verify_checkpoint(ckpts[-1])


def test_learning_rate_and_momentum_follow_the_official_offsets(tmp_path):
    """SiameseIM/MAE: the lr of step k is the schedule at fractional epoch k / iters, set before the step (step 0
    runs at lr 0 during warmup); the EMA momentum likewise."""
    from m3i.tasks.pretrain import run_pretrain

    run_pretrain(compose_cfg("pretrain", [*TINY, "train.warmup_epochs=2", "train.lr=0.003", "train.epochs=4"],
                             tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    lrs = {r["step"]: r["lr"] for r in rows}
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.003 * (1 / 3) / 2) and lrs[6] == pytest.approx(0.003)
    import math
    mom = {r["step"]: r["momentum"] for r in rows}
    assert mom[0] == pytest.approx(0.99) and mom[6] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 2 / 4) + 1) / 2)


def test_internimage_recipe_lr_runs_one_step_behind_like_the_official_loop(tmp_path):
    from omegaconf import OmegaConf

    from m3i.tasks.classify import _optimizer_and_schedule, build_classifier

    cfg = compose_cfg("finetune", ["model.backbone=internimage", "model.variant=t",
                                   "~model.overrides", "+model.overrides={channels:16,depths:[1,1,1,1],groups:[1,2,4,8]}",
                                   "train.recipe=internimage", "train.blr=2e-5", "train.warmup_lr=1e-7",
                                   "train.warmup_epochs=2", "train.epochs=10", "train.layer_decay=null", "train.min_lr=0",
                                   "train.batch_size=512"], tmp_path)
    model = build_classifier(cfg, "finetune")
    opt, lr_at, _ = _optimizer_and_schedule(cfg, model, "finetune", iters=5, ws=1)
    seen = []
    for k in range(13):
        lr_at(k)
        seen.append(max(g["lr"] for g in opt.param_groups))
    # timm CosineLRScheduler(t_initial=50, warmup_t=10, warmup_lr_init=1e-7), stepped after each step with t = k
    warm = lambda t: 1e-7 + t * (2e-5 - 1e-7) / 10  # noqa: E731
    assert seen[0] == pytest.approx(1e-7) and seen[1] == pytest.approx(1e-7) and seen[2] == pytest.approx(warm(1))
    import math
    assert seen[11] == pytest.approx(0.5 * 2e-5 * (1 + math.cos(math.pi * 10 / 50)))  # the peak region, t = 10
    assert OmegaConf.select(cfg, "train.dcn_lr_mul") is None


def test_finetune_and_linprobe_start_from_a_pretrain_checkpoint_and_convert_writes_its_trunk(tmp_path):
    from m3i.tasks.classify import run_classifier
    from m3i.tasks.convert import run_convert
    from m3i.tasks.pretrain import run_pretrain

    run_pretrain(compose_cfg("pretrain", [*TINY, "train.epochs=1"], tmp_path / "pre"))
    ckpt = sorted((tmp_path / "pre" / "checkpoints").glob("ckpt_*.pt"))[-1]
    res = run_classifier(compose_cfg("finetune", [*TINY_FT, "train.epochs=1", f"init.path={ckpt}"], tmp_path / "ft"),
                         "finetune")
    assert 0.0 <= res["top1"] <= 100.0
    log = (tmp_path / "ft" / "log.txt").read_text()
    assert "init weights from" in log and "'head.weight'" in log
    # weights of another width (the default D 64 config on the D 32 checkpoint): one error naming file and shapes
    with pytest.raises(CheckpointError, match=r"do not fit the vit-tiny trunk .*cls_token: file \(1, 1, 32\) vs model \(1, 1, 64\).*36 missing"):
        run_classifier(compose_cfg("finetune", ["data.limit=32", f"init.path={ckpt}"], tmp_path / "ft_bad"), "finetune")
    res = run_classifier(compose_cfg("linprobe", [*TINY_FT, "train.epochs=1", "model.global_dim=32",
                                                  "model.pool_heads=2", f"init.path={ckpt}",
                                                  "init.branch=target"], tmp_path / "lp"), "linprobe")
    assert "top1" in res
    state = load_checkpoint(sorted((tmp_path / "lp" / "checkpoints").glob("ckpt_*.pt"))[-1])["model"]
    pre = torch.load(ckpt, weights_only=True)["model"]
    # the frozen backbone is exactly the pre-trained EMA target
    assert torch.equal(state["backbone.blocks.0.attn.qkv.weight"], pre["target.backbone.blocks.0.attn.qkv.weight"])
    run_convert(compose_cfg("convert", [f"src={ckpt}", f"out={tmp_path / 'vit.pth'}"], tmp_path / "conv"))
    trunk = torch.load(tmp_path / "vit.pth", weights_only=True)["model"]
    assert "blocks.0.attn.qkv.weight" in trunk and not any(k.startswith("clip_projector") for k in trunk)


def test_convert_cli_on_a_synthetic_official_checkpoint(tmp_path):
    from m3i.tasks.convert import run_convert

    layout = official_layout(16, [1, 1, 1, 1], [1, 2, 4, 8], num_classes=3)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(1) if s == () else torch.randn(s, generator=g)) for k, s in layout.items()}
    torch.save({"model": sd}, tmp_path / "official.pth")
    summary = run_convert(compose_cfg("convert", [f"src={tmp_path / 'official.pth'}", f"out={tmp_path / 'ours.pth'}"],
                                      tmp_path / "c"))
    assert summary["missing"] == [] and summary["unexpected"] == [] and summary["loaded"] == len(sd)
    ours = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    report = json.loads((tmp_path / "ours.pth.report.json").read_text())
    assert report["kind"] == "InternImage-CUSTOM"
    with pytest.raises(ValueError, match="not an InternImage-T"):
        run_convert(compose_cfg("convert", [f"src={tmp_path / 'official.pth'}", "variant=t",
                                            f"out={tmp_path / 'x.pth'}"], tmp_path / "c2"))


def test_bad_inputs_are_one_clear_error(tmp_path):
    from m3i.tasks.classify import run_classifier
    from m3i.tasks.pretrain import run_pretrain

    with pytest.raises(FileNotFoundError, match="data.sources\\[0\\].root='/nonexistent/in1k/train' is not a folder; expected"):
        run_pretrain(compose_cfg("pretrain", [*TINY, "data.sources.0.kind=imagefolder",
                                              "+data.sources.0.root=/nonexistent/in1k/train"], tmp_path / "a"))
    with pytest.raises(ValueError, match="unknown model.backbone 'convnext'; known: vit, internimage"):
        run_pretrain(compose_cfg("pretrain", [*TINY, "model.backbone=convnext"], tmp_path / "b"))
    with pytest.raises(ValueError, match="48 samples, fewer than one batch of 64, .*train.batch_size"):
        run_pretrain(compose_cfg("pretrain", [*TINY, "train.batch_size=64"], tmp_path / "c"))
    with pytest.raises(ValueError, match="unknown train.recipe 'swin'; known: internimage, mae"):
        run_classifier(compose_cfg("finetune", [*TINY_FT, "train.recipe=swin"], tmp_path / "d"), "finetune")
    with pytest.raises(FileNotFoundError, match="init.path is not set. Get it from"):
        run_classifier(compose_cfg("finetune", [*TINY_FT, "init.required=true", "+init.source=somewhere"],
                                   tmp_path / "e"), "finetune")


def test_entry_points_print_user_errors_as_one_line_without_a_traceback(tmp_path):
    """Console entry points: bad input -> exit status 1 and one ``error:`` line (here an unknown ViT variant, which
    was a bare ``KeyError`` from the token-stride lookup before the backbone check)."""
    p = run_cli("pretrain", tmp_path / "run", ["model.variant=huge"])
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr + p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unknown ViT variant 'huge'; known: tiny, vit_base_patch16, vit_large_patch16"]
    assert "unknown ViT variant 'huge'" in (tmp_path / "run" / "log.txt").read_text()


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tmp_path, caplog):
    from PIL import Image

    from m3i.tasks.pretrain import run_pretrain

    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 40), (20 * i, 100, 50)).save(root / c / f"{i}.jpg")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    over = [*TINY, "data.sources.0.kind=imagefolder", f"+data.sources.0.root={root}", "data.sources.0.limit=null",
            "train.batch_size=7", "train.epochs=1", "objective.txt=0", "data.sources.0.targets=[label]"]
    res = run_pretrain(compose_cfg("pretrain", [*over, "data.skip_corrupt=true"], tmp_path / "skip"))
    assert res["train_skipped"] == 1
    assert "broken.jpg" in caplog.text  # the warning names the file
    assert "1 unreadable images were skipped" in (tmp_path / "skip" / "log.txt").read_text()
    with pytest.raises(Exception, match="broken.jpg"):
        run_pretrain(compose_cfg("pretrain", over, tmp_path / "strict"))
