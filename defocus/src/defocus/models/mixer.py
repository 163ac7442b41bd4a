"""De-focus Mamba block: RMSNorm -> mixer (Mamba-1 + learnable bandpass RoPE) -> DropPath residual.

Shapes: ``b`` batch, ``L`` tokens, ``H`` hidden, ``E`` inner size, ``N`` state size, ``R`` dt rank.
Spec §2.2 (block and mixer, exact), §2.3 (bandpass filter parameters), §2.5 (drop path).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import drop_path
from torch import Tensor, nn

from ..ops import selective_scan

__all__ = ["MixerConfig", "RMSNorm", "DefocusMambaMixer", "DefocusMambaBlock", "init_bandpass_freq"]


@dataclass
class MixerConfig:
    """Hyper-parameters of one block (official names: ``MODEL.MAMBA.*``)."""

    hidden_size: int = 768
    intermediate_size: int = 1536
    state_size: int = 16
    time_step_rank: int = 48
    conv_kernel: int = 4
    group_norm_size: int = 64  # head-wise RMS norm group; 0 = off (plain Mamba)
    use_rope: bool = True  # the learnable bandpass frequencies on B and C
    rope_pairing: str = "official"  # "official": N angles for N dims; "paired": N/2 angles, true rotation
    rope_scale_factor: float = 1.0  # positions are divided by this (resolution transfer, §2.3)
    delta_scale_factor: float = 1.0  # Delta is divided by this
    time_step_scale: float = 1.0
    time_step_min: float = 1e-3
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    layer_norm_epsilon: float = 1e-5
    residual_in_fp32: bool = True
    scan_impl: str = "auto"  # "auto" | "ref" | "chunked" | "triton" | "cpu" (fused C++, compiled on first use)
    compile_glue: bool = False  # torch.compile the RoPE of B/C (the only elementwise glue left outside the scan)


def init_bandpass_freq(n: int) -> Tensor:
    """Centre frequencies theta_j = (100^(-j/n) - 0.01) / 0.99, j = 1..n (spec §2.3): 0.747 ... 0.0."""
    j = torch.arange(1, n + 1, dtype=torch.float32)
    return (100.0 ** (-j / n) - 100.0**-1) / (1 - 100.0**-1)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, computed in fp32 (MambaRMSNorm). (..., H) -> (..., H)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class DefocusMambaMixer(nn.Module):
    """Mamba-1 mixer with learnable RoPE on B, C (the bandpass filter) and head-wise RMS norm.

    (b, L, H) -> (b, L, H). Causal: token t only sees tokens <= t (conv is left-padded, the scan is
    a forward recurrence).
    """

    def __init__(self, cfg: MixerConfig):
        super().__init__()
        self.cfg = cfg
        H, E, N, R, k = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
        if cfg.group_norm_size and E % cfg.group_norm_size:
            raise ValueError(f"intermediate_size {E} must be divisible by group_norm_size {cfg.group_norm_size}")
        if cfg.rope_pairing not in ("official", "paired"):
            raise ValueError(f"rope_pairing must be 'official' or 'paired', got {cfg.rope_pairing!r}")
        if cfg.use_rope and N % 2:
            raise ValueError(f"state_size must be even for the RoPE pairs, got {N}")
        self.in_proj = nn.Linear(H, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, kernel_size=k, groups=E, padding=k - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        # S4D-real init of the decay: A = -(1..N) for every channel (spec §2.3)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, H, bias=False)
        if cfg.use_rope:
            n_freq = N if cfg.rope_pairing == "official" else N // 2
            self.freq = nn.Parameter(init_bandpass_freq(n_freq))
        self.reset_dt()

    @torch.no_grad()
    def reset_dt(self) -> None:
        """dt_proj init (spec §2.4): W ~ U(+-R^-0.5 * scale), bias = softplus^-1(dt), dt log-spaced per channel."""
        c = self.cfg
        std = c.time_step_rank**-0.5 * c.time_step_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.linspace(math.log(c.time_step_min), math.log(c.time_step_max), c.intermediate_size))
        dt = dt.clamp(min=c.time_step_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def rope_angles(self, L: int, device) -> Tensor:
        """phi[t, j] = (t / rope_scale_factor) * freq[j], (L, N), positions in fp32 (paper Eq. 6)."""
        dtype = torch.promote_types(self.freq.dtype, torch.float32)  # fp32 angles (float64 modules: float64)
        pos = torch.arange(L, device=device, dtype=dtype) / self.cfg.rope_scale_factor
        freq = self.freq.to(dtype)
        if self.cfg.rope_pairing == "paired":
            freq = freq.repeat_interleave(2)
        return pos[:, None] * freq[None, :]

    @staticmethod
    def apply_rope(x: Tensor, phi: Tensor) -> Tensor:
        """Rotate pairs (2m, 2m+1) of x (..., N) by phi (broadcastable to x), e.g. x (b, L, N), phi (L, N):
        x'[2m] = x[2m] cos phi[2m] - x[2m+1] sin phi[2m];  x'[2m+1] = x[2m+1] cos phi[2m+1] + x[2m] sin phi[2m+1].
        """
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rot = torch.stack((-x2, x1), dim=-1).flatten(-2)
        return x * torch.cos(phi) + rot * torch.sin(phi)

    def ssm_inputs(self, h: Tensor):
        """Project (b, L, H) to the scan inputs: u, dt, z (b, E, L); B, C (b, N, L) with the RoPE applied.

        ``dt`` is the raw ``dt_proj`` output without its bias: the scan adds the bias and applies the softplus
        in fp32 (spec §2.2 step 5), fused in the Triton kernel. B and C are rotated together and come back in
        fp32 (float64 for float64 modules).
        """
        c = self.cfg
        L = h.shape[1]
        u0, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (b, E, L) each
        u = F.silu(self.conv1d(u0)[..., :L])  # causal depthwise conv: left pad k-1, keep the first L
        dt_low, BC = torch.split(self.x_proj(u.transpose(1, 2)), [c.time_step_rank, 2 * c.state_size], -1)
        BC = BC.to(torch.promote_types(BC.dtype, torch.float32)).unflatten(-1, (2, c.state_size))  # (b, L, 2, N)
        if c.use_rope:
            BC = self._rope(BC, self.rope_angles(L, h.device)[:, None, :])
        dt = self.dt_proj.weight @ dt_low.transpose(1, 2)  # (b, E, L), bias added inside the scan
        B, C = BC.permute(2, 0, 3, 1).unbind(0)  # (b, N, L) views
        return u, dt, z, B, C

    def _rope(self, BC: Tensor, phi: Tensor) -> Tensor:
        if self.cfg.compile_glue:
            return _compiled_rope()(BC, phi)
        return self.apply_rope(BC, phi)

    def scan_A_B(self, B: Tensor) -> tuple[Tensor, Tensor]:
        """A = -exp(A_log) (E, N) fp32 and B with ``delta_scale_factor`` s folded in: the scan needs Delta / s, and
        exp((Delta / s) A) = exp(Delta (A / s)), (Delta / s) B u = Delta (B / s) u, so A / s and B / s replace
        a pass over the (b, E, L) Delta."""
        A = -torch.exp(self.A_log.float())
        s = self.cfg.delta_scale_factor
        return (A, B) if s == 1.0 else (A / s, B / s)

    def effective_delta(self, dt: Tensor) -> Tensor:
        """Delta = softplus(dt + b_dt) / delta_scale_factor (b, E, L) in fp32, as the scan uses it (diagnostics)."""
        return F.softplus(dt.float() + self.dt_proj.bias.float()[None, :, None]) / self.cfg.delta_scale_factor

    def forward(self, h: Tensor) -> Tensor:
        c = self.cfg
        u, dt, z, B, C = self.ssm_inputs(h)
        A, B = self.scan_A_B(B)
        # Eq. 2-4 with the fused prologue (bias + softplus) and epilogue (head-wise RMS norm, + D u, * silu(z))
        y = selective_scan(u, dt, A, B, C, D=self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True,
                           group_size=c.group_norm_size, impl=c.scan_impl)
        return self.out_proj(y.transpose(1, 2))


@functools.lru_cache(maxsize=1)
def _compiled_rope():
    return torch.compile(DefocusMambaMixer.apply_rope, dynamic=False)


class DefocusMambaBlock(nn.Module):
    """x + DropPath(Mixer(RMSNorm(x)), p); p is passed at call time (scheduled drop path, §3.2)."""

    def __init__(self, cfg: MixerConfig, use_checkpoint: bool = False):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.mixer = DefocusMambaMixer(cfg)
        self.residual_in_fp32 = cfg.residual_in_fp32
        self.use_checkpoint = use_checkpoint

    def _forward(self, x: Tensor, drop_path_rate: float) -> Tensor:
        residual = x.float() if self.residual_in_fp32 else x
        h = self.mixer(self.norm(x.to(self.norm.weight.dtype)))
        return residual + drop_path(h, drop_prob=drop_path_rate, training=self.training)

    def forward(self, x: Tensor, drop_path_rate: float = 0.0) -> Tensor:
        if self.use_checkpoint and self.training:
            return torch.utils.checkpoint.checkpoint(self._forward, x, drop_path_rate, use_reentrant=False)
        return self._forward(x, drop_path_rate)
