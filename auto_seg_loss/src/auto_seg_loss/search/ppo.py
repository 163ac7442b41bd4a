"""PPO search over curve parameters theta in [0, 1]^D (spec §3.5, official ``autoloss_ppo_bezier.py``).

Per round: draw ``samples_per_round`` thetas from the truncated-normal policy (with ``baseline="mu"`` the
first one is mu itself), obtain a reward for each (the target metric after a proxy training), set
advantages A_b = R_b - R_mu (or R_b - mean R), then take ``update_steps`` Adam steps (constant lr by
default as in the official configs; ``lr_schedule=linear`` is the official alternative) on
mu_x (mu = sigmoid(mu_x); sigma = exp(sigma_x) is never optimised, as in the official code) with the
clipped objective and **per-dimension** ratios:

    r_bd = exp(log p_new(theta_bd) - log p_old(theta_bd))
    L = - sum_d mean_b min(r_bd A_b, clip(r_bd, 1 - eps, 1 + eps) A_b)

State (policy, optimiser, round, sampled thetas and rewards obtained so far) is written atomically after
every reward, so a crashed search resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from repro_shared.fsio import atomic_open, atomic_write_text

from .policy import TruncatedNormal


@dataclass
class SearchConfig:
    rounds: int = 12              # official sample_times
    samples_per_round: int = 32   # official num_samples (8 GPUs x 4 models)
    update_steps: int = 60        # official update_per_sample
    mu_lr: float = 0.2
    clip_eps: float = 0.2
    sigma: float = 0.2
    baseline: str = "mu"          # "mu" | "mean"
    lr_schedule: str = "constant"  # "constant" (official configs) | "linear": mu_lr * (1 - round / (rounds + 1))
    seed: int = 1


@dataclass
class RoundLog:
    round: int
    reward_mu: float | None
    rewards: list = field(default_factory=list)
    mu_after: list = field(default_factory=list)


class PPOSearch:
    """Search state + loop. ``reward_fn(theta (D,) in [0,1], round, index) -> float``.

    ``context``: JSON-like settings outside ``cfg`` that the rewards depend on (target metric, proxy
    training); stored with the state, and a state written with another ``cfg`` or ``context`` is refused
    instead of mixing rewards of two different searches.

    Raises:
        ValueError: bad ``baseline`` / ``lr_schedule``; an unreadable state file, or one written with other
            settings.
    """

    def __init__(self, init_mu: torch.Tensor, cfg: SearchConfig, state_path: str | Path | None = None,
                 context: dict | None = None):
        if cfg.baseline not in ("mu", "mean"):
            raise ValueError(f"baseline must be 'mu' or 'mean', got {cfg.baseline!r}")
        if cfg.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule must be 'constant' or 'linear', got {cfg.lr_schedule!r}")
        self.cfg, self.context = cfg, context
        mu = init_mu.double().clamp(1e-6, 1 - 1e-6)
        self.mu_x = torch.log(mu / (1 - mu)).requires_grad_()
        self.sigma_x = torch.full_like(mu, math.log(cfg.sigma))
        self.optimizer = torch.optim.Adam([self.mu_x], lr=cfg.mu_lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.round = 0
        self.pending: torch.Tensor | None = None  # thetas of the current round
        self.rewards: list[float] = []             # rewards of the current round so far
        self.history: list[dict] = []
        self.state_path = Path(state_path) if state_path else None
        if self.state_path is not None and self.state_path.is_file():
            self._load()

    # ------------------------------------------------------------------ policy
    @property
    def mu(self) -> torch.Tensor:
        return self.mu_x.detach().sigmoid()

    @property
    def sigma(self) -> torch.Tensor:
        return self.sigma_x.exp()

    def policy(self) -> TruncatedNormal:
        return TruncatedNormal(self.mu_x.sigmoid(), self.sigma_x.exp(), 0.0, 1.0)

    def sample_round(self) -> torch.Tensor:
        """(B, D) thetas of one round; row 0 is mu when ``baseline == 'mu'``."""
        b = self.cfg.samples_per_round
        pol = self.policy()
        if self.cfg.baseline == "mu":
            return torch.cat([self.mu.view(1, -1), pol.sample(b - 1, self.generator)], dim=0)
        return pol.sample(b, self.generator)

    def update(self, thetas: torch.Tensor, rewards: torch.Tensor) -> None:
        """The PPO step of one round (``update_steps`` Adam steps on mu_x)."""
        rewards = rewards.double()
        base = rewards[0] if self.cfg.baseline == "mu" else rewards.mean()
        adv = (rewards - base).view(-1, 1)
        with torch.no_grad():
            old_lp = self.policy().log_prob(thetas)
        eps = self.cfg.clip_eps
        factor = 1.0 if self.cfg.lr_schedule == "constant" else 1.0 - self.round / (self.cfg.rounds + 1)
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.mu_lr * factor
        for _ in range(self.cfg.update_steps):
            ratio = (self.policy().log_prob(thetas) - old_lp).exp()
            obj = torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
            loss = -obj.mean(dim=0).sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    # ------------------------------------------------------------------ loop
    def run(self, reward_fn: Callable[[torch.Tensor, int, int], float],
            on_round: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Run the remaining rounds; returns the final mu (D,)."""
        while self.round < self.cfg.rounds:
            if self.pending is None:
                self.pending, self.rewards = self.sample_round(), []
                self._save()
            for i in range(len(self.rewards), len(self.pending)):
                self.rewards.append(float(reward_fn(self.pending[i], self.round, i)))
                self._save()
            r = torch.tensor(self.rewards, dtype=torch.float64)
            self.update(self.pending, r)
            row = {"round": self.round, "reward_mu": self.rewards[0] if self.cfg.baseline == "mu" else None,
                   "reward_mean": float(r.mean()), "reward_max": float(r.max()), "mu": self.mu.tolist()}
            self.history.append(row)
            self.round += 1
            self.pending, self.rewards = None, []
            self._save()
            if on_round is not None:
                on_round(row)
        return self.mu

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.cfg), "context": self.context, "mu_x": self.mu_x.detach().clone(), "sigma_x": self.sigma_x.clone(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "round": self.round, "pending": self.pending, "rewards": list(self.rewards), "history": self.history,
        }

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.state_path, "wb") as f:
            torch.save(self.state_dict(), f)
        atomic_write_text(self.state_path.with_suffix(".json"), json.dumps(
            {"round": self.round, "mu": self.mu.tolist(), "rewards_this_round": self.rewards,
             "history": self.history}, indent=1))

    def _load(self) -> None:
        try:
            st = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
            raise ValueError(f"search state {self.state_path} cannot be read ({e}); move it away to start over") from e
        if st["config"] != asdict(self.cfg):
            raise ValueError(f"search state {self.state_path} was written with config {st['config']}, not "
                             f"{asdict(self.cfg)}; use a fresh output folder or the same settings")
        if st.get("context", self.context) != self.context:
            raise ValueError(f"search state {self.state_path} was written for {st['context']}, not {self.context}; "
                             "use a fresh output folder or the same settings")
        with torch.no_grad():
            self.mu_x.copy_(st["mu_x"])
        self.sigma_x = st["sigma_x"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.generator.set_state(st["generator"])
        self.round, self.pending, self.rewards, self.history = st["round"], st["pending"], st["rewards"], st["history"]
