"""PAP-loss parameter search (spec §3.6, official ``tools/search.py``).

Policy: independent truncated normals on [0, 1], mean ``mu = sigmoid(m)`` (``m`` learned by Adam),
std ``sigma`` annealed linearly to 0 over the rounds. Each round draws ``samples`` parameter vectors,
trains one proxy detector per vector (reward = COCO AP / 100 on the search-val split; a run whose loss
sticks at 1.0/NaN gets reward 0) and updates ``m`` with the official PPO-style objective (clipping per
dimension on the log-ratio before summing; ``clip_mode="joint"`` gives textbook PPO2).

Layout of one parameter vector (official order): 8 numbers per function (rows H2, I2, I3, I1, H1 of
each head, heads in order), then one lambda dimension per head (``lambda = 10^(2 theta - 1)``).

Unlike the released search, the sampled lambda is applied to the heads (the official code assigns it
to an attribute the heads never read, spec §3.6).

The state is saved after every proxy run as one file (``state.npz``, written atomically, so a kill at
any moment leaves either the old or the new state) plus the official per-array exports ``mu.npy``,
``sigma.npy``, ``sample_theta.npy``, ``sample_reward.npy``. A killed search resumes inside the round it
was in and follows the same trajectory: samples are drawn from ``(seed, round)``, every proxy training
is exactly reproducible (``repro_shared.data`` loader + per-step seeds) and the PPO update is deterministic.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from repro_shared import checkpoint, dist
from repro_shared.fsio import atomic_write_text

from .config_diff import RESUME_MAY_CHANGE
from .ops.piecewise import IDENTITY_THETA, grad_scale_from_theta, theta_to_ctrl

THETA_PER_FUNCTION = 8


# ------------------------------------------------------------------------------------ policy
class TruncatedNormal:
    """Independent normals truncated to [0, 1]; ``mu``, ``sigma``: (D,)."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor):
        self.mu, self.sigma = mu, sigma
        self.std_normal = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))

    def _bounds(self):
        return (0 - self.mu) / self.sigma, (1 - self.mu) / self.sigma

    def sample(self, n: int, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Inverse-CDF sampling; ``uniform`` (n, D) may be injected for tests. -> (n, D) in [0, 1]."""
        alpha, beta = self._bounds()
        if uniform is None:
            uniform = torch.rand(n, self.mu.numel(), generator=generator, dtype=self.mu.dtype).to(self.mu.device)
        ca, cb = self.std_normal.cdf(alpha), self.std_normal.cdf(beta)
        p = ca + uniform * (cb - ca)
        eps = torch.finfo(p.dtype).eps
        x = self.mu + math.sqrt(2) * torch.erfinv(torch.clamp(2 * p - 1, -1 + eps, 1 - eps)) * self.sigma
        return torch.clamp(x, 0, 1).detach()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, D); -inf outside [0, 1]."""
        alpha, beta = self._bounds()
        z = (x - self.mu) / self.sigma
        lp = -torch.log(self.sigma) + self.std_normal.log_prob(z) \
            - torch.log(self.std_normal.cdf(beta) - self.std_normal.cdf(alpha))
        return torch.where((x >= 0) & (x <= 1), lp, torch.full_like(lp, -math.inf))


def policy_lr_factor(step: int, total: int = 100, warmup: int = 30) -> float:
    """Official LambdaLR factor of the policy update: step/warmup, then linear decay to 0 at ``total``."""
    e = step % total
    return e / warmup if e <= warmup else 1 - (e - warmup) / (total - warmup)


def ppo_update(m: torch.Tensor, old_sigma: torch.Tensor, new_sigma: torch.Tensor, thetas: torch.Tensor,
               advantages: torch.Tensor, steps: int = 100, lr: float = 0.01, clip_eps: float = 0.1,
               clip_mode: str = "per_dim", warmup: int = 30) -> None:
    """Official ``argmax``: Adam on the mean logits ``m`` (D,) in place.

    r_b = exp(sum_d [log p_new - log p_old]); the clipped ratio clamps each dimension's log-ratio to
    [log(1 - eps), log(1 + eps)] before summing (``per_dim``) or the joint ratio to [1 - eps, 1 + eps]
    (``joint``); objective mean_b min(r_b A_b, r~_b A_b) is maximised.
    thetas: (B, D) samples drawn with ``old_sigma``; advantages: (B,).
    """
    if clip_mode not in ("per_dim", "joint"):
        raise ValueError(f"unknown clip_mode {clip_mode!r}; use 'per_dim' (official) or 'joint'")
    m.requires_grad_(True)
    opt = torch.optim.Adam([m], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: policy_lr_factor(e, steps, warmup))
    with torch.no_grad():
        old_lp = TruncatedNormal(torch.sigmoid(m), old_sigma).log_prob(thetas)
    for _ in range(steps):
        new_lp = TruncatedNormal(torch.sigmoid(m), new_sigma).log_prob(thetas)
        diff = new_lp - old_lp
        ratio = diff.sum(-1).exp()
        if clip_mode == "per_dim":
            clipped = diff.clamp(math.log(1 - clip_eps), math.log(1 + clip_eps)).sum(-1).exp()
        else:
            clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
        loss = -torch.min(ratio * advantages, clipped * advantages).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    m.requires_grad_(False)


# ------------------------------------------------------------------------------------ space
@dataclass(frozen=True)
class SearchSpace:
    """Heads searched together, e.g. ``("bbox",)`` (RetinaNet, D = 41) or ``("rpn", "roi")`` (D = 82)."""

    heads: tuple[str, ...]
    num_functions: int = 5

    @property
    def dim(self) -> int:
        return len(self.heads) * (self.num_functions * THETA_PER_FUNCTION + 1)

    def initial_mu(self) -> np.ndarray:
        """(D,): identity functions and lambda = 1 (theta_g = 0.5)."""
        fn = list(IDENTITY_THETA) * self.num_functions * len(self.heads)
        return np.array(fn + [0.5] * len(self.heads), dtype=np.float64)

    def to_params(self, theta: np.ndarray | torch.Tensor) -> dict[str, tuple[torch.Tensor, float]]:
        """(D,) -> {head: (control points (F, 12), lambda)}."""
        t = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
        if t.numel() != self.dim:
            raise ValueError(f"theta has {t.numel()} numbers; this search space needs {self.dim}")
        n_fn = self.num_functions * THETA_PER_FUNCTION
        out = {}
        for h, name in enumerate(self.heads):
            rows = t[h * n_fn:(h + 1) * n_fn].view(self.num_functions, THETA_PER_FUNCTION)
            lam = float(grad_scale_from_theta(float(t[len(self.heads) * n_fn + h])))
            out[name] = (theta_to_ctrl(rows), lam)
        return out


# ------------------------------------------------------------------------------------ state
@dataclass
class SearchState:
    """mu/sigma after each completed round (first row = initial), samples and rewards of every round."""

    mu: list[np.ndarray]
    sigma: list[np.ndarray]
    thetas: list[np.ndarray] = field(default_factory=list)  # per round (B, D); last may be the pending round
    rewards: list[np.ndarray] = field(default_factory=list)  # per round (B,), NaN = not evaluated yet

    @property
    def completed_rounds(self) -> int:
        return len(self.mu) - 1

    _FIELDS = ("mu", "sigma", "sample_theta", "sample_reward")

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(self._FIELDS, (np.array(v) for v in (self.mu, self.sigma, self.thetas, self.rewards))))

    def save(self, out_dir: Path) -> None:
        """Write the whole state as one atomic ``state.npz`` (rank 0 only under torchrun), then the
        official per-array ``.npy`` exports and a ``state.json`` summary."""
        if not dist.is_main():
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        tmp = out_dir / ".state.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_dir / "state.npz")
        for name, value in arrays.items():
            tmp = out_dir / f".{name}.tmp.npy"
            np.save(tmp, value)
            os.replace(tmp, out_dir / f"{name}.npy")
        tmp = out_dir / ".state.tmp.json"
        tmp.write_text(json.dumps({"completed_rounds": self.completed_rounds, "pending": len(self.thetas)
                                   > self.completed_rounds}))
        os.replace(tmp, out_dir / "state.json")

    @classmethod
    def load(cls, out_dir: Path) -> "SearchState | None":
        """The state of ``out_dir/state.npz``, or None when there is none."""
        if not (out_dir / "state.npz").is_file():
            return None
        with np.load(out_dir / "state.npz") as z:
            return cls(*[list(z[n]) for n in cls._FIELDS])


# ------------------------------------------------------------------------------------ loop
RewardFn = Callable[[np.ndarray, int], float]  # (theta (D,), worker index) -> reward


def _worker_init(devices: Sequence[str], counter) -> None:
    with counter.get_lock():
        idx = counter.value
        counter.value += 1
    os.environ["PAP_SEARCH_DEVICE"] = devices[idx % len(devices)]


def _call_reward(fn: RewardFn, theta: np.ndarray) -> float:
    return float(fn(theta, 0))


def run_search(reward_fn: RewardFn, space: SearchSpace, out_dir: str | Path, rounds: int = 40, samples: int = 8,
               sigma0: float = 0.2, mu_lr: float = 0.01, update_steps: int = 100, warmup_steps: int = 30,
               clip_eps: float = 0.1, clip_mode: str = "per_dim", seed: int = 42, resume: bool = True,
               devices: Sequence[str] = ("cpu",), log=None, metrics=None) -> SearchState:
    """Run (or resume) the search; returns the final state (``state.mu[-1]`` is the result).

    With more than one device the samples of a round run in parallel, one worker process per device
    (``PAP_SEARCH_DEVICE`` tells the reward function where to run); ``reward_fn`` must be picklable.
    ``metrics`` (a :class:`repro_shared.logging.MetricsWriter`) gets one row per completed round.
    """
    out_dir = Path(out_dir)
    state = SearchState.load(out_dir) if resume else None
    if state is None:
        mu0 = space.initial_mu()
        state = SearchState(mu=[mu0], sigma=[np.full_like(mu0, sigma0)])
    elif log:
        log.info("resuming search at round %d", state.completed_rounds)
    executor = None
    if len(devices) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        executor = ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_worker_init,
                                       initargs=(list(devices), ctx.Value("i", 0)))
    try:
        for t in range(state.completed_rounds, rounds):
            mu, sigma = torch.tensor(state.mu[-1]), torch.tensor(state.sigma[-1])
            if len(state.thetas) == t:  # draw this round's samples (deterministic in (seed, round))
                g = torch.Generator().manual_seed(seed * 100003 + t)
                state.thetas.append(TruncatedNormal(mu, sigma).sample(samples, generator=g).numpy())
                state.rewards.append(np.full(samples, np.nan))
                state.save(out_dir)
            thetas, rewards = state.thetas[t], state.rewards[t]
            todo = [b for b in range(samples) if np.isnan(rewards[b])]
            if executor is None:
                for b in todo:
                    rewards[b] = float(reward_fn(thetas[b], 0))
                    state.save(out_dir)
            else:
                futures = {b: executor.submit(_call_reward, reward_fn, thetas[b]) for b in todo}
                for b, fut in futures.items():
                    rewards[b] = fut.result()
                    state.save(out_dir)
            # sigma annealing: samples of round t used sigma_t; the updated policy uses sigma_{t+1}
            new_sigma = sigma * (rounds - t - 1) / (rounds - t)
            if float(new_sigma.sum()) == 0:
                new_sigma = sigma
            m = torch.logit(mu).clone()
            adv = torch.tensor(rewards - rewards.mean())
            ppo_update(m, sigma, new_sigma, torch.tensor(thetas), adv, update_steps, mu_lr, clip_eps, clip_mode,
                       warmup_steps)
            state.mu.append(torch.sigmoid(m).detach().numpy())
            state.sigma.append(new_sigma.numpy())
            state.save(out_dir)
            if log:
                log.info("round %d: mean reward %.4f max %.4f | sigma %.4f", t, float(rewards.mean()),
                         float(rewards.max()), float(new_sigma.mean()))
            if metrics is not None:
                metrics.log({"round": t, "mean_reward": float(rewards.mean()), "max_reward": float(rewards.max()),
                             "sigma": float(new_sigma.mean()), "mu_mean": float(state.mu[-1].mean())}, step=t + 1)
    finally:
        if executor is not None:
            executor.shutdown()
    return state


# ------------------------------------------------------------------------------------ proxy
@dataclass
class ProxyReward:
    """Reward of one sampled loss: train the detector of ``cfg`` fresh with these PAP parameters and
    return COCO AP / 100 on the search-val split (0 when training fails). Picklable."""

    cfg: dict
    space: SearchSpace
    fail_patience: int = 50

    def __call__(self, theta: np.ndarray, worker: int = 0) -> float:
        from omegaconf import OmegaConf

        from repro_shared.guards import NonFiniteError

        from .cli import train_and_evaluate
        from .engine import TrainingFailed

        cfg = OmegaConf.create(self.cfg)
        device = torch.device(os.environ.get("PAP_SEARCH_DEVICE", cfg.get("device_resolved", "cpu")))
        torch.manual_seed(int(cfg.seed))
        try:
            result = train_and_evaluate(cfg, device, pap_override=self.space.to_params(theta),
                                        fail_patience=self.fail_patience)
        except (TrainingFailed, NonFiniteError):  # official: a diverged proxy gets reward 0
            return 0.0
        ap = result["AP"] / 100
        return ap if math.isfinite(ap) else 0.0


def _devices(spec: Any, own: str) -> list[str]:
    """Devices for parallel proxies. Under torchrun (or ``ddp``) every proxy is one DDP run over all
    ranks, samples run one after another (the official scheme)."""
    if dist.get_world_size() > 1 or spec == "ddp":
        return [own]
    if spec in (None, "auto"):
        n = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    return [str(d) for d in spec]


# Settings a search may change when it continues in its folder (besides RESUME_MAY_CHANGE): more rounds, where
# the proxies run, whether/where it resumes. Everything else shapes the rewards and must match.
SEARCH_MAY_CHANGE = RESUME_MAY_CHANGE + ("search.rounds", "search.devices", "search.resume", "search.out_dir")


def check_search_folder(out_dir: Path, config: dict, resume: bool = True, record: bool = True) -> None:
    """Refuse to continue the search state in ``out_dir`` if it was written with another configuration
    (``search_config.json``, the resolved config of the run that started it), then (``record``) record
    ``config`` there.

    Raises:
        ValueError: ``out_dir`` holds the state of a search with other settings (lists the differing keys).
    """
    saved_file = out_dir / "search_config.json"
    if resume and (out_dir / "state.npz").is_file() and saved_file.is_file():
        diff = checkpoint.config_differences(json.loads(saved_file.read_text()), config, SEARCH_MAY_CHANGE)
        if diff:
            raise ValueError(f"{out_dir} holds the state of a search with another configuration "
                             f"({'; '.join(diff[:8])}{'; ...' if len(diff) > 8 else ''}): its rewards are not "
                             "comparable. Use a new folder (hydra.run.dir=...), or search.resume=false to start over")
    if record and dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved_file, json.dumps(config, indent=1, default=str))


def run_search_from_config(cfg: Any, ctx) -> dict[str, float]:
    """``pap-search`` body: proxy reward from ``cfg`` (model/loss/data/train), search from ``cfg.search``.

    Raises:
        ValueError: the output folder holds the state of a search with other settings (:func:`check_search_folder`).
    """
    from omegaconf import OmegaConf

    from repro_shared.run import check_required_init

    check_required_init(cfg.get("init"))
    sc = cfg.search
    space = SearchSpace(tuple(sc.heads), int(sc.num_functions))
    plain = OmegaConf.to_container(cfg, resolve=True)
    out = Path(sc.get("out_dir") or ctx.out_dir)
    check_search_folder(out, plain, bool(sc.resume))
    plain["device_resolved"] = str(ctx.device)
    reward = ProxyReward(plain, space, int(sc.fail_patience))
    state = run_search(reward, space, out, int(sc.rounds), int(sc.samples), float(sc.sigma0), float(sc.mu_lr),
                       int(sc.update_steps), int(sc.warmup_steps), float(sc.clip_eps), str(sc.clip_mode),
                       int(cfg.seed), bool(sc.resume), _devices(sc.devices, str(ctx.device)), ctx.log, ctx.metrics)
    final = space.to_params(state.mu[-1])
    summary = {name: {"ctrl_points": ctrl.tolist(), "reg_weight": lam} for name, (ctrl, lam) in final.items()}
    if dist.is_main():
        (out / "searched_params.json").write_text(json.dumps(summary, indent=2))
    ctx.log.info("searched parameters written to %s", out / "searched_params.json")
    rewards = np.array(state.rewards)
    return {"rounds": state.completed_rounds, "mean_reward_first_round": float(np.nanmean(rewards[0])),
            "mean_reward_last_round": float(np.nanmean(rewards[-1])), "best_reward": float(np.nanmax(rewards))}
