"""Policy-gradient search of the curve parameters (spec §3.5)."""

from .policy import TruncatedNormal
from .ppo import PPOSearch, SearchConfig

__all__ = ["PPOSearch", "SearchConfig", "TruncatedNormal"]
