"""The package's exceptions: each carries one sentence saying what was wrong and what to do."""

from __future__ import annotations


class GitmError(Exception):
    """Base class of every error gitm raises on bad input or a broken environment."""


class UnknownItemError(GitmError, KeyError):
    """An item name that the knowledge tables do not know (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownActionError(GitmError):
    """A structured action name that is not in the action set (the message lists the known ones)."""


class LLMError(GitmError):
    """The LLM endpoint cannot be used: unreachable, refused the key, or unknown model."""


class PlanParseError(GitmError):
    """An LLM answer that is not a usable plan; the agent records it as a failed query (it counts)."""
