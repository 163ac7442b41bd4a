"""The offline text-level Minecraft simulator (spec 6a): :class:`SimEnv`, :class:`SimConfig`, :class:`World`."""

from .env import PRESETS, SimConfig, SimEnv
from .world import World

__all__ = ["SimEnv", "SimConfig", "World", "PRESETS"]
