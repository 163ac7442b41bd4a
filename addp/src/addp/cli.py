"""Hydra entry points: ``addp-train``, ``addp-generate``, ``addp-fid``, ``addp-convert`` (config -> objects -> engine)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from repro_shared import dist, run

from .stages import addp_stage, teacher_stage, tokenizer_stage

_SAMPLER_KEYS = ("steps", "schedule", "choice_temperature", "temperature_mode", "sampling", "top_p")

def run_train(cfg: DictConfig) -> dict:
    """``addp-train``: tokenizer -> teacher -> ADDP (each loaded, cached or trained), then the tiny-data
    measurements on the embedded digits; writes ``metrics.json``, ``stages.json`` and sample grids."""
    validate_train_config(cfg)
    ctx = run.setup_run(cfg, name="addp")
    t0 = time.perf_counter()
    tokenizer, tok_key = tokenizer_stage(cfg, ctx)
    teacher, teacher_key = teacher_stage(cfg, ctx, tokenizer, tok_key)
    model, stage, build = addp_stage(cfg, ctx, tokenizer, teacher, {"tokenizer": tok_key, "teacher": teacher_key})
    results: dict = {"train_seconds": time.perf_counter() - t0}
    for name in ("tokenizer", "teacher"):
        key = tok_key if name == "tokenizer" else teacher_key
        if "stage" in key:
            results.update(_stage_summary(cfg, name, key["stage"]))
    results.update(stage.summary())
    stages = {"addp": str(stage.final), "tokenizer": _final_of(cfg, "tokenizer", tok_key),
              "teacher": _final_of(cfg, "teacher", teacher_key)}
    if dist.is_main():
        (ctx.out_dir / "stages.json").write_text(json.dumps(stages, indent=2))
    if cfg.eval.enabled and cfg.data.name == "digits" and dist.is_main():
        from .tiny_eval import run_tiny_eval

        t1 = time.perf_counter()
        results.update(run_tiny_eval(cfg, ctx, tokenizer, teacher, model, build))
        results["eval_seconds"] = time.perf_counter() - t1
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    ctx.log.info("metrics: %s", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
    return results


def validate_train_config(cfg: DictConfig) -> None:
    """Fail before any stage trains: unknown names, and image / patch / token-grid sizes that do not fit.

    Raises:
        ValueError: naming the setting to change.
    """
    from .models.mage import MAGE_VARIANTS
    from .stages import addp_build_args, vqgan_build_args

    if cfg.data.name not in ("digits", "imagenet"):
        raise ValueError(f"unknown data.name {cfg.data.name!r}; known: digits, imagenet")
    if cfg.teacher.variant not in MAGE_VARIANTS:
        raise ValueError(f"unknown token-predictor variant {cfg.teacher.variant!r}; known: {', '.join(MAGE_VARIANTS)}")
    tok = vqgan_build_args(cfg.tokenizer)
    build = addp_build_args(cfg.model, tok["n_embed"])
    img, stride = int(cfg.data.img_size), 2 ** (len(tok["ch_mult"]) - 1)
    if build["img_size"] != img:
        raise ValueError(f"model {cfg.model.variant} expects {build['img_size']}x{build['img_size']} images but "
                         f"data.img_size={img}; set data.img_size={build['img_size']} or another model.variant")
    if img % stride or img // stride != img // build["patch_size"]:
        raise ValueError(f"the tokenizer {cfg.tokenizer.preset} (stride {stride}) and the patch size "
                         f"{build['patch_size']} of {cfg.model.variant} give different grids at {img}px")


def _stage_summary(cfg: DictConfig, name: str, digest: str) -> dict:
    p = Path(str(cfg.cache_dir)).expanduser() / f"{name}-{digest}" / "summary.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _final_of(cfg: DictConfig, name: str, key: dict) -> str:
    if "stage" in key:
        return str(Path(str(cfg.cache_dir)).expanduser() / f"{name}-{key['stage']}" / "final.pt")
    return key["file"]


def _generation_inputs(cfg: DictConfig, device: torch.device):
    """(ADDP model, tokenizer) for ``addp-generate``: from an ``addp-train`` run folder (``run_dir``) or
    from ``model.path`` (+ ``tokenizer.init.path``, or the ``vqgan.*`` tensors of an official ADDP file)."""
    from .weights import load_addp, load_tokenizer

    model_path, tok_path = cfg.model.get("path"), cfg.tokenizer.init.get("path")
    if cfg.get("run_dir"):
        stages_file = Path(str(cfg.run_dir)) / "stages.json"
        if not stages_file.is_file():
            raise FileNotFoundError(f"run_dir={cfg.run_dir!r} holds no stages.json (written by addp-train)")
        stages = json.loads(stages_file.read_text())
        model_path, tok_path = stages["addp"], stages["tokenizer"]
    if not model_path:
        raise ValueError("addp-generate needs a model: pass run_dir=<an addp-train output folder> or "
                         "model.path=<ADDP weights> (an official addp-vit-*-16.pth also needs its "
                         "experiment=generate/...; tokenizer.init.path when the file has no vqgan.* tensors)")
    tokenizer = load_tokenizer(tok_path or model_path, preset=cfg.tokenizer.preset,
                               trust=bool(cfg.trust_checkpoint)).to(device)
    model = load_addp(model_path, variant=cfg.model.variant, codebook_size=tokenizer.codebook_size,
                      trust=bool(cfg.trust_checkpoint), attn_impl=str(cfg.model.attn_impl)).to(device).eval()
    return model, tokenizer


def run_generate(cfg: DictConfig) -> dict:
    """``addp-generate``: ``generate.num_samples`` unconditional samples as PNGs (``<index>.png``, RGB).

    Sample ``i`` uses noise seeded by ``(seed, i)`` whatever the batch or process count; processes take
    indices ``rank, rank + world, ...``; existing PNGs are kept, so an interrupted run continues.
    """
    from .sampler import SampleRNG, generate_addp, save_grid, save_pngs

    ctx = run.setup_run(cfg, name="addp")
    g = cfg.generate
    model, tokenizer = _generation_inputs(cfg, ctx.device)
    out = Path(str(g.out_dir)) if g.get("out_dir") else ctx.out_dir / "images"
    todo = [i for i in range(ctx.dist.rank, int(g.num_samples), ctx.dist.world_size)
            if not (out / f"{i:06d}.png").exists()]
    kwargs = {k: g[k] for k in _SAMPLER_KEYS}
    kwargs["tau0"] = float(kwargs.pop("choice_temperature"))
    t0, first = time.perf_counter(), None
    from repro_shared.train import autocast

    for j in range(0, len(todo), int(g.batch_size)):
        idx = todo[j:j + int(g.batch_size)]
        with torch.no_grad(), autocast(ctx.device, str(cfg.precision)):
            images = generate_addp(model, tokenizer, SampleRNG(int(cfg.seed), idx, ctx.device), image_size=model.img_size,
                                   **kwargs)
        save_pngs(images, out, idx)
        if first is None:
            first = images[:64].float()
        ctx.log.info("generated %d / %d", j + len(idx), len(todo))
    seconds = time.perf_counter() - t0
    dist.barrier()
    if first is not None and dist.is_main():
        save_grid(first, ctx.out_dir / "grid.png", nrow=8)
    res = {"num_samples": int(g.num_samples), "generated_here": len(todo), "seconds": seconds,
           "images_per_s": len(todo) / seconds if seconds > 0 and todo else 0.0, "out_dir": str(out)}
    run.write_metrics(ctx.out_dir, res)
    return res


def run_fid(cfg: DictConfig) -> dict:
    """``addp-fid``: FID / IS of a folder of samples against the reference PNGs (torch-fidelity, paper
    protocol); ``fid.prepare_from=<ImageNet val dir>`` first writes the reference set."""
    from .metrics.fid import fid_is, prepare_reference

    ctx = run.setup_run(cfg, name="addp")
    f = cfg.fid
    if f.get("prepare_from"):
        n = prepare_reference(f.prepare_from, f.reference, int(f.size))
        ctx.log.info("reference set: %d PNGs in %s", n, f.reference)
    res = fid_is(f.generated, f.reference, cuda=ctx.device.type == "cuda", batch_size=int(f.batch_size))
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("FID %.2f | IS %.2f +- %.2f", res["fid"], res["is_mean"], res["is_std"])
    return res


def run_convert(cfg: DictConfig) -> dict:
    """``addp-convert``: an official checkpoint -> our weight files (strict key-by-key check).

    ``kind=addp``: ``addp.pt`` (+ ``tokenizer.pt`` / ``teacher.pt`` when the file carries them) and
    ``vit_backbone.pt`` (the encoder in timm ViT names for fine-tuning); ``kind=mage``: ``teacher.pt``;
    ``kind=vqgan``: ``tokenizer.pt``.
    """
    from repro_shared.checkpoint import load_weights_file

    from .convert import finetune_backbone_state_dict, split_addp_state_dict
    from .stages import addp_build_args, mage_build_args, vqgan_build_args
    from .weights import load_addp, load_teacher, load_tokenizer, save_weights

    ctx = run.setup_run(cfg, name="addp")
    c = cfg.convert
    out = Path(str(c.out_dir)) if c.get("out_dir") else ctx.out_dir
    out.mkdir(parents=True, exist_ok=True)
    trust = bool(cfg.trust_checkpoint)
    tok_build = vqgan_build_args(cfg.tokenizer)
    K, grid = tok_build["n_embed"], tok_build["resolution"] // 2 ** (len(tok_build["ch_mult"]) - 1)
    written: dict[str, str] = {}
    if c.kind == "vqgan":
        tok = load_tokenizer(c.src, preset=cfg.tokenizer.preset, trust=trust)
        written["tokenizer"] = str(save_weights(out / "tokenizer.pt", tok, "tokenizer", tok_build))
    elif c.kind == "mage":
        teacher = load_teacher(c.src, variant=cfg.teacher.variant, codebook_size=K, num_tokens=grid * grid, trust=trust)
        written["teacher"] = str(save_weights(out / "teacher.pt", teacher, "teacher",
                                              mage_build_args(cfg.teacher, K, grid * grid)))
    elif c.kind == "addp":
        sd = load_weights_file(c.src, trust=trust)
        parts = split_addp_state_dict(sd)
        model = load_addp(c.src, variant=cfg.model.variant, codebook_size=K, trust=trust)
        written["addp"] = str(save_weights(out / "addp.pt", model, "addp", addp_build_args(cfg.model, K)))
        if parts["vqgan"]:
            tok = load_tokenizer(c.src, preset=cfg.tokenizer.preset, trust=trust)
            written["tokenizer"] = str(save_weights(out / "tokenizer.pt", tok, "tokenizer", tok_build))
        if parts["token_predictor"]:
            teacher = load_teacher(c.src, variant=cfg.teacher.variant, codebook_size=K, num_tokens=grid * grid,
                                   trust=trust)
            written["teacher"] = str(save_weights(out / "teacher.pt", teacher, "teacher",
                                                  mage_build_args(cfg.teacher, K, grid * grid)))
        backbone = finetune_backbone_state_dict(model.state_dict(), keep_tokenizer_norm=bool(c.keep_tokenizer_norm),
                                                new_grid=c.get("new_grid"))
        torch.save(backbone, out / "vit_backbone.pt")
        written["vit_backbone"] = str(out / "vit_backbone.pt")
        ctx.log.info("dropped (unused in every forward / duplicate tokenizer copy): %s", sorted(parts["dropped"]))
    else:
        raise ValueError(f"unknown convert.kind {c.kind!r}; known: addp, mage, vqgan")
    run.write_metrics(ctx.out_dir, {"written": written})
    for k, v in written.items():
        ctx.log.info("%s -> %s", k, v)
    return written


def run_finetune(cfg: DictConfig) -> dict:
    """``addp-finetune``: fine-tune the ADDP encoder (``addp.downstream.classify``)."""
    from .downstream.classify import run_classifier

    return run_classifier(cfg, "finetune")


def run_linprobe(cfg: DictConfig) -> dict:
    """``addp-linprobe``: linear probe on the frozen ADDP encoder (``addp.downstream.classify``)."""
    from .downstream.classify import run_classifier

    return run_classifier(cfg, "linprobe")


def run_det(cfg: DictConfig) -> dict:
    """``addp-det``: Mask R-CNN transfer (``addp.downstream.dense``)."""
    from .downstream.dense import run_detection

    return run_detection(cfg)


def run_seg(cfg: DictConfig) -> dict:
    """``addp-seg``: UperNet transfer (``addp.downstream.dense``)."""
    from .downstream.dense import run_segmentation

    return run_segmentation(cfg)



def _entry(config_name: str, task):
    return hydra.main(version_base=None, config_path="configs", config_name=config_name)(run.report_user_errors("addp")(task))


train = _entry("train", run_train)
generate = _entry("generate", run_generate)
fid = _entry("fid", run_fid)
convert = _entry("convert", run_convert)
finetune = _entry("finetune", run_finetune)
linprobe = _entry("linprobe", run_linprobe)
det = _entry("det", run_det)
seg = _entry("seg", run_seg)
