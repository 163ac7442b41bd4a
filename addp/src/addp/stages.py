"""The three training stages of ``addp-train`` and their cache (config -> objects -> :func:`engine.train_loop`).

1. tokenizer: the frozen VQ tokenizer - loaded from ``tokenizer.init.path`` (official or ours), or, in
   the CPU demo, trained (tiny VQGAN, spec §8);
2. teacher: the frozen MAGE token predictor - loaded from ``teacher.init.path``, or trained on the
   token ids of the training images (MAGE pre-training with token dropping);
3. addp: ADDP pre-training (spec §3.2 / §3.5).

Each trained stage lives in ``<cache_dir>/<stage>-<hash>/``: the hash covers everything that changes
the stage's result (its config, the data config, the seed, the precision and the upstream stages), so
a second run with the same settings loads ``final.pt`` instead of training, a changed setting trains
anew, and a killed run resumes the stage from ``checkpoints/`` exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, TensorDataset

from repro_shared import checkpoint, dist
from repro_shared.data import SkipNoneCollate, build_loader, derive_seed
from repro_shared.run import RunContext, check_required_init

from .diffusion import addp_train_step
from .engine import LoopConfig, train_loop
from .losses import masked_token_ce, vq_losses
from .masking import mask_ratio_table, nested_masks, truncnorm_ratio_sampler
from .models.addp import ADDP, ADDP_VARIANTS
from .models.mage import MAGE, MAGE_VARIANTS
from .models.vqgan import VQGAN, VQGAN_PRESETS, VQGANConfig
from .weights import load_addp, load_teacher, load_tokenizer, save_weights

__all__ = ["Stage", "build_image_dataset", "make_loader", "to_plain", "tokenizer_stage", "teacher_stage",
           "addp_stage", "vqgan_build_args", "mage_build_args", "addp_build_args", "encode_dataset"]

# salts of the per-stage initialisation seeds: a stage's initial weights depend on (seed, stage) only, not on
# whether the stages before it were trained in this process or loaded from the cache
_INIT_SALT = {"tokenizer": 1, "teacher": 2, "addp": 3}

# part of every cache key: bump when a change of the code changes what a stage produces
CACHE_VERSION = 2

# config keys that do not change a stage's result (excluded from its cache key)
_NOT_IN_KEY = {"num_workers", "ckpt_every", "keep_last", "log_every", "resume"}


def to_plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (resolved)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _NOT_IN_KEY}
    return obj


class Stage:
    """A cached training stage: ``<cache_dir>/<name>-<hash of key>/`` holding ``checkpoints/`` and ``final.pt``."""

    def __init__(self, cache_dir: str | Path, name: str, key: dict):
        self.name = name
        self.key = {**_strip(key), "cache_version": CACHE_VERSION}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.dir = Path(str(cache_dir)).expanduser() / f"{name}-{digest}"
        self.digest = digest

    @property
    def final(self) -> Path:
        return self.dir / "final.pt"

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "checkpoints"

    def done(self) -> bool:
        """True when ``final.pt`` exists and passes its size / SHA-256 check."""
        try:
            checkpoint.verify_checkpoint(self.final)
            return True
        except checkpoint.CheckpointError:
            return False

    def start(self) -> None:
        if dist.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "key.json").write_text(json.dumps(self.key, indent=2, sort_keys=True, default=str))

    def write_summary(self, summary: dict) -> None:
        if dist.is_main():
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))

    def summary(self) -> dict:
        p = self.dir / "summary.json"
        return json.loads(p.read_text()) if p.is_file() else {}


# ------------------------------------------------------------------------------------------- data
def build_image_dataset(d: DictConfig, split: str = "train") -> Dataset:
    """Images in [0, 1] with labels: the embedded tinted digits, or an ImageNet folder (pre-training crops).

    Raises:
        ValueError: for an unknown ``data.name``.
        FileNotFoundError: for a missing ImageNet folder (naming the path and the layout).
    """
    if d.name == "digits":
        from .data.embedded import TintedDigits

        return TintedDigits(split, int(d.img_size), d.get("limit"))
    if d.name == "imagenet":
        from .data.imagenet import eval_transform, imagenet_folder, pretrain_transform

        tf = pretrain_transform(int(d.img_size), tuple(d.crop_scale)) if split == "train" else eval_transform(int(d.img_size))
        return imagenet_folder(d.root, split, tf, skip_corrupt=bool(d.skip_corrupt))
    raise ValueError(f"unknown data.name {d.name!r}; known: digits, imagenet")


def make_loader(dataset: Dataset, batch_size: int, cfg: DictConfig, key: str):
    """A resumable loader (order and samples seeded by ``cfg.seed``); ``key`` names the batch-size setting."""
    return build_loader(dataset, batch_size=int(batch_size), seed=int(cfg.seed), num_workers=int(cfg.data.num_workers),
                        collate_fn=SkipNoneCollate() if cfg.data.get("skip_corrupt") else None, batch_size_key=key)


def _loop_cfg(t: DictConfig, cfg: DictConfig, lr: float) -> LoopConfig:
    return LoopConfig(epochs=int(t.epochs), lr=lr, warmup_epochs=float(t.warmup_epochs), min_lr=float(t.min_lr),
                      clip_grad=t.get("clip_grad"), precision=str(cfg.precision),
                      grad_scaler_growth_interval=int(t.get("grad_scaler_growth_interval", 2000)),
                      ckpt_every=int(t.ckpt_every), keep_last=int(t.get("keep_last", 2)),
                      log_every=int(t.get("log_every", 10)), seed=int(cfg.seed), resume=t.get("resume", "auto"))


def seed_init(cfg: DictConfig, stage: str) -> None:
    """Seed the global RNGs for building ``stage``'s model from ``(seed, stage)``."""
    torch.manual_seed(derive_seed(int(cfg.seed), _INIT_SALT[stage]))


def _adamw(module: torch.nn.Module, lr: float, t: DictConfig) -> torch.optim.AdamW:
    """AdamW over timm's weight-decay groups: no decay for 1-d tensors and ``*.bias`` (official)."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(module, float(t.weight_decay))
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas))


def _abs_lr(t: DictConfig, world: int) -> float:
    """``lr`` if given, else ``blr * global_batch / 256`` (official)."""
    return float(t.lr) if t.get("lr") is not None else float(t.blr) * int(t.batch_size) * world / 256


# ------------------------------------------------------------------------------------- build args
def vqgan_build_args(tc: DictConfig) -> dict:
    if tc.preset not in VQGAN_PRESETS:
        raise ValueError(f"unknown tokenizer preset {tc.preset!r}; known: {', '.join(VQGAN_PRESETS)}")
    return VQGANConfig(**{**VQGAN_PRESETS[tc.preset], **to_plain(tc.get("overrides") or {})}).to_dict()


def mage_build_args(tc: DictConfig, codebook_size: int, num_tokens: int) -> dict:
    if tc.variant not in MAGE_VARIANTS:
        raise ValueError(f"unknown token-predictor variant {tc.variant!r}; known: {', '.join(MAGE_VARIANTS)}")
    return dict(MAGE_VARIANTS[tc.variant], **to_plain(tc.get("overrides") or {}), codebook_size=codebook_size,
                num_tokens=num_tokens, dropout=float(tc.dropout), attn_impl=str(tc.attn_impl))


def addp_build_args(mc: DictConfig, codebook_size: int) -> dict:
    if mc.variant not in ADDP_VARIANTS:
        raise ValueError(f"unknown ADDP variant {mc.variant!r}; known: {', '.join(ADDP_VARIANTS)}")
    return dict(ADDP_VARIANTS[mc.variant], **to_plain(mc.get("overrides") or {}), codebook_size=codebook_size,
                dropout=float(mc.dropout), drop_path=float(mc.drop_path), attn_impl=str(mc.attn_impl))


def _file_key(path: Path) -> dict:
    return {"file": str(path.resolve()), "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------ stages
def tokenizer_stage(cfg: DictConfig, ctx: RunContext) -> tuple[VQGAN, dict]:
    """The frozen tokenizer and its cache key (loaded from ``tokenizer.init.path`` or trained)."""
    tc = cfg.tokenizer
    path = check_required_init(tc.init, key="tokenizer.init")
    if path is not None:
        tok = load_tokenizer(path, preset=tc.preset, overrides=to_plain(tc.get("overrides") or {}),
                             trust=bool(cfg.trust_checkpoint)).to(ctx.device)
        ctx.log.info("tokenizer: loaded %s", path)
        return tok, _file_key(path)
    build = vqgan_build_args(tc)
    key = {"stage": "tokenizer", "build": build, "train": to_plain(tc.train), "data": to_plain(cfg.data),
           "seed": int(cfg.seed), "precision": str(cfg.precision)}
    stage = Stage(cfg.cache_dir, "tokenizer", key)
    if not stage.done():
        _train_tokenizer(cfg, ctx, stage, build)
    else:
        ctx.log.info("tokenizer: cached in %s (skipping training)", stage.dir)
    tok = load_tokenizer(stage.final).to(ctx.device)
    return tok, {"stage": stage.digest}


def _train_tokenizer(cfg: DictConfig, ctx: RunContext, stage: Stage, build: dict) -> None:
    t = cfg.tokenizer.train
    stage.start()
    ctx.log.info("tokenizer: training in %s", stage.dir)
    seed_init(cfg, "tokenizer")
    model = VQGAN(VQGANConfig(**build)).to(ctx.device)
    dataset = build_image_dataset(cfg.data, "train")
    loader = make_loader(dataset, t.batch_size, cfg, "tokenizer.train.batch_size")
    wrapped = dist.wrap_model(model, "ddp")
    lr = _abs_lr(t, ctx.dist.world_size)
    opt = _adamw(model, lr, t)

    def step(batch):
        x = batch[0].to(ctx.device, non_blocking=True)
        x_rec, z, z_q, _ = wrapped(x, restart_unused_codes=bool(t.restart_dead_codes))
        return {**vq_losses(x, x_rec.float(), z, z_q, float(t.beta)), "x_rec": x_rec}

    means = train_loop(name="tokenizer", model=model, step_fn=step, optimizer=opt, loader=loader,
                       cfg=_loop_cfg(t, cfg, lr), ckpt_dir=stage.ckpt_dir, device=ctx.device, metrics=ctx.metrics,
                       log=ctx.log, predictions=("x_rec",))
    save_weights(stage.final, model, "tokenizer", build)
    stage.write_summary({f"tokenizer_{k}": v for k, v in means.items()})


@torch.no_grad()
def encode_dataset(tokenizer: VQGAN, dataset: Dataset, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Token ids (num_images, N) of every image of ``dataset`` (fixed images: the embedded data)."""
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return torch.cat([tokenizer.encode(images[i:i + batch_size].to(device))[0].cpu()
                      for i in range(0, len(images), batch_size)])


def teacher_stage(cfg: DictConfig, ctx: RunContext, tokenizer: VQGAN, tok_key: dict) -> tuple[MAGE, dict]:
    """The frozen token predictor and its cache key (loaded from ``teacher.init.path`` or trained)."""
    tc = cfg.teacher
    num_tokens = tokenizer.grid_size(int(cfg.data.img_size)) ** 2
    path = check_required_init(tc.init, key="teacher.init")
    if path is not None:
        teacher = load_teacher(path, variant=tc.variant, codebook_size=tokenizer.codebook_size, num_tokens=num_tokens,
                               trust=bool(cfg.trust_checkpoint), dropout=float(tc.dropout),
                               attn_impl=str(tc.attn_impl)).to(ctx.device)
        ctx.log.info("teacher: loaded %s", path)
        return teacher, _file_key(path)
    if cfg.data.name != "digits":
        raise ValueError("training a token predictor is only implemented for the embedded data (data.name=digits); "
                         "set teacher.init.path to a MAGE checkpoint (mage-vitb-1600.pth / mage-vitl-1600.pth)")
    build = mage_build_args(tc, tokenizer.codebook_size, num_tokens)
    key = {"stage": "teacher", "build": build, "train": to_plain(tc.train), "data": to_plain(cfg.data),
           "seed": int(cfg.seed), "precision": str(cfg.precision), "tokenizer": tok_key}
    stage = Stage(cfg.cache_dir, "teacher", key)
    if not stage.done():
        _train_teacher(cfg, ctx, stage, build, tokenizer)
    else:
        ctx.log.info("teacher: cached in %s (skipping training)", stage.dir)
    teacher = load_teacher(stage.final, variant=tc.variant, codebook_size=tokenizer.codebook_size,
                           num_tokens=num_tokens).to(ctx.device)
    return teacher, {"stage": stage.digest}


def _train_teacher(cfg: DictConfig, ctx: RunContext, stage: Stage, build: dict, tokenizer: VQGAN) -> None:
    t = cfg.teacher.train
    stage.start()
    ctx.log.info("teacher: training in %s", stage.dir)
    ids_all = encode_dataset(tokenizer, build_image_dataset(cfg.data, "train"), ctx.device)
    seed_init(cfg, "teacher")
    model = MAGE(**build).to(ctx.device)
    loader = make_loader(TensorDataset(ids_all), t.batch_size, cfg, "teacher.train.batch_size")
    wrapped = dist.wrap_model(model, "ddp")
    lr = _abs_lr(t, ctx.dist.world_size)
    opt = _adamw(model, lr, t)
    m = t.mask
    draw_ratio = truncnorm_ratio_sampler(float(m.ratio_min), float(m.ratio_max), float(m.mu), float(m.std))

    def step(batch):
        ids = batch[0].to(ctx.device, non_blocking=True)
        B, N = ids.shape
        n_drop = math.ceil(N * float(m.ratio_min))
        n_mask = math.ceil(N * draw_ratio())
        drop, mask = nested_masks(B, N, (n_drop, n_mask), device=ids.device)
        logits = wrapped(ids, mask, drop)
        return {"loss": masked_token_ce(logits, ids, mask, float(t.label_smoothing)), "logits": logits}

    means = train_loop(name="teacher", model=model, step_fn=step, optimizer=opt, loader=loader,
                       cfg=_loop_cfg(t, cfg, lr), ckpt_dir=stage.ckpt_dir, device=ctx.device, metrics=ctx.metrics,
                       log=ctx.log, predictions=("logits",))
    save_weights(stage.final, model, "teacher", build)
    stage.write_summary({f"teacher_{k}": v for k, v in means.items()})


def addp_stage(cfg: DictConfig, ctx: RunContext, tokenizer: VQGAN, teacher: MAGE,
               upstream: dict) -> tuple[ADDP, Stage, dict]:
    """ADDP pre-training (spec §3.2, §3.5); returns the trained network, its stage and its build arguments."""
    build = addp_build_args(cfg.model, tokenizer.codebook_size)
    grid = tokenizer.grid_size(int(cfg.data.img_size))
    if build["img_size"] != int(cfg.data.img_size):
        raise ValueError(f"model {cfg.model.variant} expects {build['img_size']}x{build['img_size']} images but "
                         f"data.img_size={cfg.data.img_size}; set data.img_size={build['img_size']}")
    if build["img_size"] // build["patch_size"] != grid:
        raise ValueError(f"the patch grid of {cfg.model.variant} ({build['img_size'] // build['patch_size']}) differs "
                         f"from the tokenizer's token grid ({grid}) at {cfg.data.img_size}px")
    key = {"stage": "addp", "build": build, "train": to_plain(cfg.train), "data": to_plain(cfg.data),
           "seed": int(cfg.seed), "precision": str(cfg.precision), **upstream}
    stage = Stage(cfg.cache_dir, "addp", key)
    if not stage.done():
        _train_addp(cfg, ctx, stage, build, tokenizer, teacher)
    else:
        ctx.log.info("addp: cached in %s (skipping training)", stage.dir)
    model = load_addp(stage.final, variant=cfg.model.variant, codebook_size=tokenizer.codebook_size).to(ctx.device)
    return model, stage, build


def _train_addp(cfg: DictConfig, ctx: RunContext, stage: Stage, build: dict, tokenizer: VQGAN, teacher: MAGE) -> None:
    t = cfg.train
    stage.start()
    ctx.log.info("addp: training in %s", stage.dir)
    seed_init(cfg, "addp")
    model = ADDP(**build).to(ctx.device)
    ctx.log.info("addp: %s, %.2f M trainable parameters", cfg.model.variant,
                 sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    loader = make_loader(build_image_dataset(cfg.data, "train"), t.batch_size, cfg, "train.batch_size")
    wrapped = dist.wrap_model(model, "ddp")
    lr = _abs_lr(t, ctx.dist.world_size)
    opt = _adamw(model, lr, t)
    m = t.mask
    ratios, probs = mask_ratio_table(float(m.ratio_min), float(m.ratio_max), float(m.mu), float(m.std),
                                     int(m.num_steps))

    def step(batch):
        x0 = batch[0].to(ctx.device, non_blocking=True)
        return addp_train_step(wrapped, tokenizer, teacher, x0, ratios, probs, label_smoothing=float(t.label_smoothing),
                               teacher_dropout=str(t.teacher_dropout), max_offset=int(m.max_offset))

    means = train_loop(name="addp", model=model, step_fn=step, optimizer=opt, loader=loader, cfg=_loop_cfg(t, cfg, lr),
                       ckpt_dir=stage.ckpt_dir, device=ctx.device, metrics=ctx.metrics, log=ctx.log,
                       predictions=("logits",), config=cfg)
    save_weights(stage.final, model, "addp", build)
    stage.write_summary({f"addp_{k}": v for k, v in means.items()})
