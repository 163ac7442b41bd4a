"""Ghost in the Minecraft (GITM): goal decomposition, planning with feedback, text memory, offline simulator."""

__version__ = "0.1.0"
